"""Trace files built object by object, with valid checksums: for tests of what the reader does
with a file that is well-formed zstd and msgpack but odd in its content."""

from __future__ import annotations

import copy

import msgpack
import zstandard

from mbrec.events import SCHEMA_BY_NAME
from mbrec.testing.synthetic import packet_flow, random_records
from mbrec.trace.format import FORMAT_VERSION, make_header, seq_deltas, signature

_PACKER = msgpack.Packer(use_bin_type=True)
PKT_ID = SCHEMA_BY_NAME["pkt"].id


def pack(obj) -> bytes:
    return _PACKER.pack(obj)


def frame(payload: bytes) -> bytes:
    """One zstd frame with content size and checksum, as the writer makes them."""
    return zstandard.ZstdCompressor(level=1, write_checksum=True).compress(payload)


def assemble(frames: list[list], version: int = FORMAT_VERSION, seqs=None) -> bytes:
    """The bytes of a trace whose frames hold these objects; v3 frames get their sequence
    numbers (0, 1, ... unless seqs says otherwise; None in seqs leaves a frame without one)."""
    out = [signature(version)]
    for i, objs in enumerate(frames):
        seq = (i if seqs is None else seqs[i]) if version >= 3 else None
        head = [{"t": "frame", "seq": seq}] if seq is not None else []
        out.append(frame(b"".join(pack(o) for o in head + list(objs))))
    return b"".join(out)


def events_object(records, schema="pkt") -> dict:
    """An events object as the writer makes it (sequence ranges as deltas)."""
    recs = records.copy()
    deltas = seq_deltas(recs.dtype.names)
    for f, base in deltas:
        recs[f] -= recs[base]
    obj = {"t": "events", "s": SCHEMA_BY_NAME[schema].id, "n": len(recs),
           "data": recs.tobytes()}
    if deltas:
        obj["d"] = deltas
    return obj


def clock(mono: int = 1_000_000_000, unc: int = 100) -> dict:
    return {"t": "clock", "monotonic_ns": mono, "realtime_ns": 1_700_000_000 * 10**9 + mono,
            "boottime_ns": mono, "uncertainty_ns": unc}


def good_frames(n_frames: int = 4, per_frame: int = 50, host: str = "a") -> list[list]:
    """A valid trace's frames: header and clock, events (pkt and tcp), lost, note, trailer."""
    header = make_header(host=host, kernel="crafted", boot_id="b00t", options={"crafted": True})
    pkt = packet_flow(n_frames * per_frame // 4 + 1)[:n_frames * per_frame]
    tcp = random_records("tcp", n_frames * 5, seed=3)
    frames = [[header, clock()]]
    for i in range(n_frames):
        frames.append([events_object(pkt[i * per_frame:(i + 1) * per_frame]),
                       events_object(tcp[i * 5:(i + 1) * 5], "tcp"), clock(2 * 10**9 + i)])
    frames.append([{"t": "lost", "counts": {"ip_rcv": 2}},
                   {"t": "note", "kind": "command", "argv": ["ab"], "status": 0}])
    counts = {PKT_ID: len(pkt), SCHEMA_BY_NAME["tcp"].id: len(tcp)}
    frames.append([clock(9 * 10**9), {"t": "trailer", "end_monotonic_ns": 9 * 10**9,
                                     "events": counts, "lost": {"ip_rcv": 2}, "clean": True,
                                     "stop_reason": "SIGINT"}])
    return frames


def with_header(frames, **changes) -> list[list]:
    """A deep copy of frames whose header has these keys changed (None deletes one)."""
    out = copy.deepcopy(frames)
    for k, v in changes.items():
        if v is None:
            out[0][0].pop(k, None)
        else:
            out[0][0][k] = v
    return out
