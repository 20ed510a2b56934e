"""Connection identity: one hash for an endpoint, one for a connection, one partition key.

Every host names a connection by its two endpoints (address, port), so the same connection gets
the same ``flow_hash`` on every host whatever the direction of the record: that is what lets the
partitioned analysis put every host's events of a connection into one partition. Addresses are
16 bytes (IPv4 in the first four), read as two little-endian 64-bit words.

The rules are the scalar functions below (compiled by numba); the array functions run them in
one pass over the records' own fields, which numpy needed a dozen full-array passes for.
"""

from __future__ import annotations

import numba
import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(cache=True, inline="always")
def mix1(x):
    """splitmix64's finaliser: every input bit reaches every output bit (so sums of mixed words
    make good 64-bit hashes)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@numba.njit(cache=True, inline="always")
def _endpoint(w0, w1, port):
    return mix1((mix1(w0) ^ mix1(w1 + GOLDEN)) + np.uint64(port))


@numba.njit(cache=True, inline="always")
def _connection(a, b):
    return mix1(min(a, b) ^ mix1(max(a, b)))


@numba.njit(cache=True)
def _mix_all(v):
    out = np.empty(len(v), np.uint64)
    for i in range(len(v)):
        out[i] = mix1(np.uint64(v[i]))
    return out


@numba.njit(cache=True)
def _endpoints(words, port):
    out = np.empty(len(port), np.uint64)
    for i in range(len(port)):
        out[i] = _endpoint(words[i, 0], words[i, 1], port[i])
    return out


@numba.njit(cache=True)
def _connections(a, b):
    out = np.empty(len(a), np.uint64)
    for i in range(len(a)):
        out[i] = _connection(a[i], b[i])
    return out


@numba.njit(cache=True)
def _record_hashes(s, sport, d, dport, directed):
    out = np.empty(len(sport), np.uint64)
    for i in range(len(sport)):
        a = _endpoint(s[i, 0], s[i, 1], sport[i])
        b = _endpoint(d[i, 0], d[i, 1], dport[i])
        out[i] = mix1(a ^ mix1(b + np.uint64(1))) if directed else _connection(a, b)
    return out


def mix(v: np.ndarray) -> np.ndarray:
    """mix1 of every element (as uint64)."""
    return _mix_all(np.asarray(v).astype(np.uint64, copy=False).ravel())


def address_words(addr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two little-endian 64-bit words of (n, 16) address bytes, without copying where the
    bytes are contiguous and 8-byte aligned (the compiled passes need aligned words)."""
    w = _words(addr)
    return w[:, 0], w[:, 1]


def _words(addr: np.ndarray) -> np.ndarray:
    if addr.ndim == 2 and addr.strides[-1] == 1 and addr.strides[0] % 8 == 0 \
            and addr.ctypes.data % 8 == 0:
        return addr.view("<u8")
    return np.ascontiguousarray(addr, dtype=np.uint8).reshape(-1, 16).view("<u8")


def endpoint_hash(addr: np.ndarray, port: np.ndarray) -> np.ndarray:
    """One uint64 per (16-byte address, port)."""
    return _endpoints(_words(addr), np.asarray(port))


def flow_hash(ep_a: np.ndarray, ep_b: np.ndarray) -> np.ndarray:
    """A connection's hash from its endpoints' hashes, the same whichever end comes first."""
    return _connections(np.asarray(ep_a, np.uint64), np.asarray(ep_b, np.uint64))


def record_flow_hash(recs) -> np.ndarray:
    """flow_hash of every record (pkt, sock, flow and tcp records all carry both endpoints)."""
    return _record_hashes(_words(recs["saddr"]), recs["sport"],
                          _words(recs["daddr"]), recs["dport"], False)


def tuple_hash(recs) -> np.ndarray:
    """One uint64 per record for its (saddr, sport, daddr, dport) as on the wire (directed)."""
    return _record_hashes(_words(recs["saddr"]), recs["sport"],
                          _words(recs["daddr"]), recs["dport"], True)


def partition_of(flow_hashes: np.ndarray, parts: int) -> np.ndarray:
    """The partition of every record from its record_flow_hash: the connection's hash modulo
    the partition count, so a connection's events of every host and schema land together.
    In the smallest unsigned type that holds it (a stable sort of it is then a radix sort)."""
    return (flow_hashes % np.uint64(parts)).astype(np.min_scalar_type(max(parts - 1, 0)))
