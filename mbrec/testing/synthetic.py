"""Synthetic traces with known content, for tests and benchmarks.

Everything here writes real trace files through the real writer; only the events are made up.
"""

from __future__ import annotations

import ipaddress

import numpy as np

from mbrec.events import CONSTANTS, PKT, PROBE_IDS, SCHEMA_BY_NAME
from mbrec.trace.format import make_header
from mbrec.trace.writer import TraceWriter

AF_INET = CONSTANTS["MBREC_AF_INET"]


def ipv4(addr: str) -> np.ndarray:
    """A 16-byte mbrec address field holding an IPv4 address."""
    out = np.zeros(16, dtype=np.uint8)
    out[:4] = np.frombuffer(ipaddress.IPv4Address(addr).packed, dtype=np.uint8)
    return out


def random_records(schema: str, n: int, seed: int = 0, t0: int = 1_000_000_000) -> np.ndarray:
    """n records of a schema with every field random, timestamps increasing, IPv4 addresses."""
    dtype = SCHEMA_BY_NAME[schema].dtype
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=n * dtype.itemsize, dtype=np.uint8)
    recs = raw.view(dtype).copy()
    recs["ts_ns"] = t0 + np.cumsum(rng.integers(1, 5000, size=n))
    if "family" in dtype.names:
        recs["family"] = AF_INET
        recs["saddr"][:, 4:] = 0
        recs["daddr"][:, 4:] = 0
    if "probe" in dtype.names:
        recs["probe"] = rng.integers(1, 9, size=n)
    return recs


def packet_flow(n_requests: int, *, t0: int = 1_000_000_000, request_len: int = 100,
                response_len: int = 1000, layer_ns: int = 2_000, seed: int = 0) -> np.ndarray:
    """A keep-alive request/response exchange seen at the four send probes of one host.

    Each request leaves 10.0.0.1:40000 for 10.0.0.2:80 and passes tcp_transmit_skb,
    ip_queue_xmit, dev_queue_xmit and dev_hard_start_xmit, layer_ns apart.
    """
    rng = np.random.default_rng(seed)
    send = [PROBE_IDS[p] for p in ("tcp_transmit_skb", "ip_queue_xmit", "dev_queue_xmit",
                                   "dev_hard_start_xmit")]
    recs = np.zeros(n_requests * len(send), dtype=PKT)
    seq = 1 + np.arange(n_requests, dtype=np.uint64) * request_len
    ack = 1 + np.arange(n_requests, dtype=np.uint64) * response_len
    starts = t0 + np.cumsum(rng.integers(50_000, 150_000, size=n_requests))
    for k, probe in enumerate(send):
        r = recs[k::len(send)]
        r["ts_ns"] = starts + k * layer_ns
        r["probe"] = probe
        r["seq"] = seq
        r["end_seq"] = seq + request_len
        r["ack"] = ack
        r["len"] = request_len
        r["tcp_flags"] = CONSTANTS["MBREC_TCP_ACK"] | CONSTANTS["MBREC_TCP_PSH"]
        r["sport"], r["dport"] = 40000, 80
        r["saddr"], r["daddr"] = ipv4("10.0.0.1"), ipv4("10.0.0.2")
        r["family"] = AF_INET
        r["gso_segs"] = 1
        r["sock_cookie"] = 7
        r["netns"] = 4026531840
        r["skb"] = np.uint64(0xFFFF888000000000) + np.arange(n_requests, dtype=np.uint64) * np.uint64(256)
    return recs


def write_trace(path: str, events: dict[str, np.ndarray], *, host: str = "synthetic",
                boot_id: str = "00000000-0000-0000-0000-000000000000",
                kernel: str = "synthetic", batch: int = 65536, lost: dict | None = None,
                clean: bool = True, force: bool = False, trailer: dict | None = None,
                **writer_options) -> str:
    """Write events (schema name -> records) as a trace, in batches, and close it."""
    header = make_header(host=host, boot_id=boot_id, kernel=kernel,
                         options={"synthetic": True})
    with TraceWriter(path, header, force=force, **writer_options) as w:
        for name, recs in events.items():
            sid = SCHEMA_BY_NAME[name].id
            for i in range(0, len(recs), batch):
                w.write_events(sid, recs[i:i + batch])
        if lost:
            w.write_object({"t": "lost", "counts": lost})
        if clean:
            w.close(lost=lost, extra=trailer)
        else:
            w.abandon()
    return path
