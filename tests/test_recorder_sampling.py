"""--sample: the numpy reference agrees bit for bit with bpf/mbrec_hash.h, and the decision is
the same in both directions of a flow."""

import shutil
import subprocess

import numpy as np
import pytest

from mbrec import events
from mbrec.testing import sampling


def packets(n, seed=1):
    rng = np.random.default_rng(seed)
    p = np.zeros(n, dtype=events.PKT)
    p["saddr"][:, :4] = rng.integers(0, 256, (n, 4))
    p["daddr"][:, :4] = rng.integers(0, 256, (n, 4))
    p["saddr"][n // 2:, 4:] = rng.integers(0, 256, (n - n // 2, 12))  # some IPv6
    p["sport"] = rng.integers(1, 65536, n)
    p["dport"] = rng.integers(1, 65536, n)
    p["seq"] = rng.integers(0, 2**32, n, dtype=np.uint64)
    p["ack"] = rng.integers(0, 2**32, n, dtype=np.uint64)
    p["len"] = rng.choice([0, 0, 1448, 100], n)
    p["tcp_flags"] = rng.choice([0x10, 0x12, 0x18, 0x11], n)
    return p


def test_reverse_direction_has_the_same_flow_hash():
    p = packets(500)
    fwd = sampling.flow_hash(p["saddr"], p["sport"], p["daddr"], p["dport"])
    rev = sampling.flow_hash(p["daddr"], p["dport"], p["saddr"], p["sport"])
    assert np.array_equal(fwd, rev)


def test_sampling_keeps_about_the_asked_fraction():
    p = packets(40000)
    frac = sampling.kept(p, 3).mean()
    assert 0.10 < frac < 0.15
    assert sampling.kept(p, 0).all()


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_numpy_reference_matches_the_c_hash(tmp_path):
    p = packets(64, seed=7)
    lines = ["#include <stdio.h>", "#include <linux/types.h>", '#include "mbrec_hash.h"',
             "int main(void) { __u32 s[4], d[4]; unsigned sp, dp, key;",
             "while (scanf(\"%x %x %x %x %x %x %x %x %u %u %u\", &s[0], &s[1], &s[2], &s[3],"
             " &d[0], &d[1], &d[2], &d[3], &sp, &dp, &key) == 11)",
             "printf(\"%u\\n\", mbrec_sample_hash(mbrec_flow_hash(s, sp, d, dp), key));",
             "return 0; }"]
    (tmp_path / "h.c").write_text("\n".join(lines))
    exe = tmp_path / "h"
    subprocess.run(["cc", "-O1", "-I", str(events.resources.files("mbrec.bpf")), "-o",
                    str(exe), str(tmp_path / "h.c")], check=True)
    sw = p["saddr"].view("<u4").reshape(-1, 4)
    dw = p["daddr"].view("<u4").reshape(-1, 4)
    key = sampling.seq_key(p)
    stdin = "\n".join(" ".join([*(f"{x:x}" for x in sw[i]), *(f"{x:x}" for x in dw[i]),
                                str(p["sport"][i]), str(p["dport"][i]), str(key[i])])
                      for i in range(len(p)))
    out = subprocess.run([str(exe)], input=stdin, capture_output=True, text=True,
                         check=True).stdout.split()
    want = sampling.sample_hash(sampling.flow_hash(p["saddr"], p["sport"], p["daddr"],
                                                   p["dport"]), key)
    assert [int(x) for x in out] == [int(x) for x in want]
