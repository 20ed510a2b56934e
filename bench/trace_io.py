"""Trace writer and reader throughput, on one core, with realistic packet-like records.

    python bench/trace_io.py [--events N] [--level L ...] [--real TRACE ...]

Reports events per CPU-second (process_time, so other load on the machine matters less) for the
writer (msgpack + zstd frames + write) and for the reader (decompress + np.frombuffer +
concatenate), and bytes per event on disk, for 64-byte records (the issue's target) and for
mbrec's 96-byte packet records.
"""

import argparse
import os
import tempfile
import time

import numpy as np

from mbrec.events import PKT, SCHEMA_BY_NAME, Schema
from mbrec.trace.format import make_header
from mbrec.trace.reader import read_trace
from mbrec.trace.writer import TraceWriter

REC64 = np.dtype([("ts_ns", "<u8"), ("skb", "<u8"), ("saddr", "<u4"), ("daddr", "<u4"),
                  ("seq", "<u4"), ("end_seq", "<u4"), ("ack", "<u4"), ("len", "<u4"),
                  ("netns", "<u4"), ("ifindex", "<u4"), ("sport", "<u2"), ("dport", "<u2"),
                  ("ip_id", "<u2"), ("cpu", "<u2"), ("probe", "u1"), ("tcp_flags", "u1"),
                  ("gso_segs", "<u2"), ("pad", "<u4")])
assert REC64.itemsize == 64


def packet_like(dtype, n, seed=0):
    """Records shaped like a real capture: 64 flows, 8 probes per packet, rising seq and time."""
    rng = np.random.default_rng(seed)
    recs = np.zeros(n, dtype=dtype)
    packet = np.arange(n) // 8
    flow = rng.integers(0, 64, size=n // 8 + 1)[packet]
    recs["ts_ns"] = 10**12 + np.cumsum(rng.integers(200, 3000, size=n))
    recs["probe"] = 1 + np.arange(n) % 8
    recs["seq"] = (flow * 7919 * 10**4 + packet * 1448).astype(np.uint32)
    recs["end_seq"] = recs["seq"] + 1448
    recs["ack"] = (flow * 104729 + packet).astype(np.uint32)
    recs["len"] = 1448
    recs["sport"] = 40000 + flow
    recs["dport"] = 80
    recs["skb"] = np.uint64(0xFFFF888000000000) + rng.integers(0, 2**20, size=n).astype(np.uint64) * np.uint64(256)
    recs["cpu"] = rng.integers(0, 2, size=n)
    recs["tcp_flags"] = 0x18
    recs["ip_id"] = packet.astype(np.uint16)
    recs["netns"] = 4026531840
    recs["gso_segs"] = 1
    if dtype == PKT:
        recs["saddr"][:, :4] = [10, 0, 0, 1]
        recs["daddr"][:, :4] = [10, 0, 0, 2]
        recs["family"] = 2
    else:
        recs["saddr"], recs["daddr"] = 0x0100000A, 0x0200000A
    return recs


def bench(dtype, schema_id, n, level, batch=65536):
    recs = packet_like(dtype, n)
    schemas = list(SCHEMA_BY_NAME.values())
    if dtype is REC64:
        schemas.append(Schema(schema_id, "bench64", REC64))
    # as the drain hands them: fresh (rows, record size) byte arrays the writer may encode in place
    raw = [recs[i:i + batch].view(np.uint8).reshape(-1, dtype.itemsize).copy()
           for i in range(0, n, batch)]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.mbrec")
        t0 = time.process_time()
        w = TraceWriter(path, make_header(schemas=schemas), level=level)
        for i, chunk in enumerate(raw):
            w.write_events(schema_id, chunk, count=len(chunk), owned=True)
        w.close()
        t_write = time.process_time() - t0
        size = os.path.getsize(path)
        t0 = time.process_time()
        trace = read_trace(path)
        t_read = time.process_time() - t0
        name = "bench64" if dtype is REC64 else "pkt"
        assert len(trace.events[name]) == n
    return {"record_bytes": dtype.itemsize, "events": n, "level": level,
            "write_Mev_s": n / t_write / 1e6, "read_Mev_s": n / t_read / 1e6,
            "bytes_per_event": size / n}


def real_bytes_per_event(path: str, level: int) -> float:
    """A recorded trace's packet events written again (same records, same batching as the
    recorder's 200 ms frames would give them roughly), bytes per packet event on disk."""
    pkt = read_trace(path).events["pkt"]
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "real.mbrec")
        with TraceWriter(out, make_header(), level=level) as w:
            for i in range(0, len(pkt), 4096):
                w.write_events(1, pkt[i:i + 4096])
        return os.path.getsize(out) / len(pkt)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=4_000_000)
    ap.add_argument("--level", type=int, nargs="*", default=[1, 3])
    ap.add_argument("--real", nargs="*", default=[], metavar="TRACE",
                    help="also rewrite these recorded traces' packet events: bytes per event")
    args = ap.parse_args()
    for path in args.real:
        print(path, " ".join(f"level {lv}: {real_bytes_per_event(path, lv):.2f} B/packet event"
                             for lv in args.level))
    print(f"{'record':>7} {'level':>5} {'write Mev/s':>12} {'read Mev/s':>11} {'B/event':>8}")
    for dtype, sid in ((REC64, 99), (PKT, 1)):
        for level in args.level:
            r = bench(dtype, sid, args.events, level)
            print(f"{r['record_bytes']:>6}B {r['level']:>5} {r['write_Mev_s']:>12.1f} "
                  f"{r['read_Mev_s']:>11.1f} {r['bytes_per_event']:>8.2f}")


if __name__ == "__main__":
    main()
