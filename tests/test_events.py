"""The numpy layouts parsed from bpf/mbrec_events.h agree with what a C compiler makes of it."""

import shutil
import subprocess

import numpy as np
import pytest

from mbrec import events

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")


def c_layout(tmp_path) -> dict:
    """sizeof and offsetof of every field, as the host C compiler computes them."""
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "mbrec_events.h"',
             "int main(void) {"]
    for schema in events.SCHEMAS.values():
        s = f"struct mbrec_{schema.name}_event"
        lines.append(f'printf("{schema.name} size %zu\\n", sizeof({s}));')
        for field in schema.dtype.names:
            lines.append(f'printf("{schema.name} {field} %zu %zu\\n", offsetof({s}, {field}), '
                         f'sizeof((({s} *)0)->{field}));')
    lines.append("return 0; }")
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    header_dir = events.resources.files("mbrec.bpf")
    exe = tmp_path / "layout"
    subprocess.run(["cc", "-I", str(header_dir), "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    result = {}
    for line in out.splitlines():
        parts = line.split()
        if parts[1] == "size":
            result[(parts[0], None)] = int(parts[2])
        else:
            result[(parts[0], parts[1])] = (int(parts[2]), int(parts[3]))
    return result


def test_parsed_layouts_match_the_c_compiler(tmp_path):
    layout = c_layout(tmp_path)
    for schema in events.SCHEMAS.values():
        assert schema.dtype.itemsize == layout[(schema.name, None)], schema.name
        for field in schema.dtype.names:
            ftype, offset = schema.dtype.fields[field][:2]
            assert (offset, ftype.itemsize) == layout[(schema.name, field)], (schema.name, field)


def test_every_schema_and_probe_is_known():
    assert {s.name for s in events.SCHEMAS.values()} >= {"pkt", "sock", "flow", "tcp"}
    assert set(events.PACKET_PROBES) <= set(events.PROBE_IDS)
    assert len(set(events.PROBE_IDS.values())) == len(events.PROBE_IDS)


def test_header_schema_round_trips_to_the_same_dtype():
    for schema in events.SCHEMAS.values():
        assert events.dtype_from_header(schema.to_header()) == schema.dtype


def test_parser_applies_natural_alignment():
    _, structs = events.parse_header("""
        struct mbrec_x_event {
            __u8 a;
            __u64 b;   /* aligned to 8 */
            __u16 c[3];
        };""")
    dt = structs["x"]
    assert dt.fields["b"][1] == 8
    assert dt.fields["c"][1] == 16
    assert dt.itemsize == 24
    assert np.zeros(1, dt)["c"].shape == (1, 3)
