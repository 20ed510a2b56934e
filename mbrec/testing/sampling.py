"""The --sample decision in numpy: the same function as bpf/mbrec_hash.h, over event arrays.

The analyzer can use it to tell which packets a sampled recording kept on purpose (and so
which unmatched ones are real losses), and tests check it against the C code bit for bit.
"""

from __future__ import annotations

import numpy as np

from mbrec.events import CONSTANTS

_SYN_FIN = CONSTANTS["MBREC_TCP_SYN"] | CONSTANTS["MBREC_TCP_FIN"]


def mix32(h: np.ndarray) -> np.ndarray:
    h = np.asarray(h, dtype=np.uint32).copy()
    with np.errstate(over="ignore"):
        h ^= h >> np.uint32(16)
        h *= np.uint32(0x85EBCA6B)
        h ^= h >> np.uint32(13)
        h *= np.uint32(0xC2B2AE35)
        h ^= h >> np.uint32(16)
    return h


def endpoint_hash(addr16: np.ndarray, port: np.ndarray) -> np.ndarray:
    """addr16: (n, 16) uint8 address bytes; port: (n,) host-order ports."""
    w = np.ascontiguousarray(addr16, dtype=np.uint8).view("<u4").reshape(-1, 4)
    h = mix32(w[:, 3] ^ np.asarray(port, dtype=np.uint32))
    h = mix32(w[:, 2] ^ h)
    h = mix32(w[:, 1] ^ h)
    return mix32(w[:, 0] ^ h)


def flow_hash(saddr, sport, daddr, dport) -> np.ndarray:
    with np.errstate(over="ignore"):
        return endpoint_hash(saddr, sport) + endpoint_hash(daddr, dport)


def sample_hash(flow: np.ndarray, seqkey: np.ndarray) -> np.ndarray:
    return mix32(np.asarray(flow, dtype=np.uint32) ^ mix32(seqkey))


def seq_key(pkt: np.ndarray) -> np.ndarray:
    """seq for packets that occupy sequence space (payload, SYN, FIN), else ack."""
    occupies = (pkt["len"] > 0) | ((pkt["tcp_flags"] & _SYN_FIN) != 0)
    return np.where(occupies, pkt["seq"], pkt["ack"]).astype(np.uint32)


def kept(pkt: np.ndarray, bits: int) -> np.ndarray:
    """Which packet events a --sample BITS recording keeps (all of them for bits=0).

    For skb_copy_datagram_iter events the kernel hashes the skb's first byte, which the event
    does not carry (it holds the copied range): use this for the other probes.
    """
    if bits == 0:
        return np.ones(len(pkt), dtype=bool)
    flow = flow_hash(pkt["saddr"], pkt["sport"], pkt["daddr"], pkt["dport"])
    return (sample_hash(flow, seq_key(pkt)) >> np.uint32(32 - bits)) == 0
