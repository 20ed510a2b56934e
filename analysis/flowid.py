"""Connection identity: one hash for an endpoint, one for a connection, one partition key.

Every host names a connection by its two endpoints (address, port), so the same connection gets
the same ``flow_hash`` on every host whatever the direction of the record: that is what lets the
partitioned analysis put every host's events of a connection into one partition. Addresses are
16 bytes (IPv4 in the first four), read as two little-endian 64-bit words.
"""

from __future__ import annotations

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix(v: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads bits so sums of mixed words make good 64-bit hashes."""
    v = np.asarray(v).astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        v ^= v >> np.uint64(30)
        v *= np.uint64(0xBF58476D1CE4E5B9)
        v ^= v >> np.uint64(27)
        v *= np.uint64(0x94D049BB133111EB)
        v ^= v >> np.uint64(31)
    return v


def address_words(addr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two little-endian 64-bit words of (n, 16) address bytes, without copying where the
    bytes are contiguous."""
    w = addr.view("<u8") if addr.ndim == 2 and addr.strides[-1] == 1 else \
        np.ascontiguousarray(addr, dtype=np.uint8).reshape(-1, 16).view("<u8")
    return w[:, 0], w[:, 1]


def endpoint_hash(addr: np.ndarray, port: np.ndarray) -> np.ndarray:
    """One uint64 per (16-byte address, port)."""
    w0, w1 = address_words(addr)
    with np.errstate(over="ignore"):
        h = mix(w0) ^ mix(w1 + GOLDEN)
        return mix(h + port.astype(np.uint64))


def flow_hash(ep_a: np.ndarray, ep_b: np.ndarray) -> np.ndarray:
    """A connection's hash from its endpoints' hashes, the same whichever end comes first."""
    lo, hi = np.minimum(ep_a, ep_b), np.maximum(ep_a, ep_b)
    with np.errstate(over="ignore"):
        return mix(lo ^ mix(hi))


def record_flow_hash(recs) -> np.ndarray:
    """flow_hash of every record (pkt, sock, flow and tcp records all carry both endpoints)."""
    return flow_hash(endpoint_hash(recs["saddr"], recs["sport"]),
                     endpoint_hash(recs["daddr"], recs["dport"]))


def tuple_hash(recs) -> np.ndarray:
    """One uint64 per record for its (saddr, sport, daddr, dport) as on the wire (directed)."""
    with np.errstate(over="ignore"):
        return mix(endpoint_hash(recs["saddr"], recs["sport"])
                   ^ mix(endpoint_hash(recs["daddr"], recs["dport"]) + np.uint64(1)))


def partition_of(flow_hashes: np.ndarray, parts: int) -> np.ndarray:
    """The partition of every record from its record_flow_hash: the connection's hash modulo
    the partition count, so a connection's events of every host and schema land together."""
    return (flow_hashes % np.uint64(parts)).astype(np.int64)
