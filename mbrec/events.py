"""Event layouts, derived from the one definition in bpf/mbrec_events.h.

The header is parsed at import: every ``struct mbrec_<name>_event`` becomes a numpy dtype with
C's natural alignment, and every ``#define MBREC_...`` becomes a constant. The trace writer puts
the resulting schemas into each file's header, so readers decode files with the layout that
wrote them, not with whatever this module says today.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import numpy as np

_C_TYPES = {"__u8": "u1", "__u16": "<u2", "__u32": "<u4", "__u64": "<u8"}
_STRUCT_RE = re.compile(r"struct\s+mbrec_(\w+)_event\s*\{(.*?)\};", re.S)
_FIELD_RE = re.compile(r"^\s*(__u8|__u16|__u32|__u64)\s+(\w+)\s*(?:\[(\d+)\])?\s*;", re.M)
_DEFINE_RE = re.compile(r"^#define\s+(MBREC_\w+)\s+(0x[0-9a-fA-F]+|\d+)\s*$", re.M)
_COMMENT_RE = re.compile(r"/\*.*?\*/", re.S)


@dataclass(frozen=True)
class Schema:
    """One event type: its id in trace files, its name, and the record layout."""

    id: int
    name: str
    dtype: np.dtype

    def to_header(self) -> dict:
        """The layout as the trace header stores it (see docs/trace-format.md)."""
        fields = []
        for name in self.dtype.names:
            ftype, offset = self.dtype.fields[name][:2]
            if ftype.subdtype is not None:
                base, shape = ftype.subdtype
                fields.append([name, base.str, offset, shape[0]])
            else:
                fields.append([name, ftype.str, offset, 1])
        return {"id": self.id, "name": self.name, "size": self.dtype.itemsize, "fields": fields}


def dtype_from_header(entry: dict) -> np.dtype:
    """Rebuild a record dtype from a trace header's schema entry."""
    names, formats, offsets = [], [], []
    for name, code, offset, count in entry["fields"]:
        names.append(str(name))
        formats.append((np.dtype(code), (int(count),)) if int(count) != 1 else np.dtype(code))
        offsets.append(int(offset))
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": int(entry["size"])})


def parse_header(text: str) -> tuple[dict[str, int], dict[str, np.dtype]]:
    """Constants and struct dtypes from the text of mbrec_events.h."""
    text = _COMMENT_RE.sub("", text)
    constants = {name: int(value, 0) for name, value in _DEFINE_RE.findall(text)}
    structs = {}
    for struct_name, body in _STRUCT_RE.findall(text):
        names, formats, offsets = [], [], []
        offset = 0
        for ctype, fname, count in _FIELD_RE.findall(body):
            base = np.dtype(_C_TYPES[ctype])
            offset = -(-offset // base.alignment) * base.alignment  # natural alignment
            names.append(fname)
            formats.append((base, (int(count),)) if count else base)
            offsets.append(offset)
            offset += base.itemsize * (int(count) if count else 1)
        align = max(np.dtype(f if isinstance(f, np.dtype) else f[0]).alignment for f in formats)
        size = -(-offset // align) * align
        structs[struct_name] = np.dtype({"names": names, "formats": formats,
                                         "offsets": offsets, "itemsize": size})
    return constants, structs


def header_text() -> str:
    return resources.files("mbrec.bpf").joinpath("mbrec_events.h").read_text()


CONSTANTS, _DTYPES = parse_header(header_text())

SCHEMAS: dict[int, Schema] = {
    CONSTANTS[f"MBREC_SCHEMA_{name.upper()}"]: Schema(CONSTANTS[f"MBREC_SCHEMA_{name.upper()}"],
                                                      name, dtype)
    for name, dtype in _DTYPES.items()
}
SCHEMA_BY_NAME: dict[str, Schema] = {s.name: s for s in SCHEMAS.values()}

PKT = SCHEMA_BY_NAME["pkt"].dtype
SOCK = SCHEMA_BY_NAME["sock"].dtype
FLOW = SCHEMA_BY_NAME["flow"].dtype
TCP = SCHEMA_BY_NAME["tcp"].dtype

# Probe id -> short name ("tcp_transmit_skb"), in path order.
PROBE_NAMES: dict[int, str] = {
    value: name[len("MBREC_PROBE_"):].lower()
    for name, value in CONSTANTS.items()
    if name.startswith("MBREC_PROBE_") and name != "MBREC_PROBE_MAX"
}
PROBE_IDS: dict[str, int] = {name: pid for pid, name in PROBE_NAMES.items()}
SEND_PROBES = ("tcp_transmit_skb", "ip_queue_xmit", "dev_queue_xmit", "dev_hard_start_xmit")
RECV_PROBES = ("eth_type_trans", "ip_rcv", "tcp_v4_rcv", "skb_copy_datagram_iter")
PACKET_PROBES = SEND_PROBES + RECV_PROBES

TCP_FLAG_NAMES = {CONSTANTS[f"MBREC_TCP_{n}"]: n for n in ("FIN", "SYN", "RST", "PSH", "ACK")}
# TCP state number -> the kernel's name for it (the numbers are mbrec_events.h's MBREC_TCP_<name>)
TCP_STATES = {CONSTANTS[f"MBREC_TCP_{n}"]: n for n in (
    "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE",
    "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV")}
