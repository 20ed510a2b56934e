"""Cross-host frame matching: which wire frame received on one host is which frame sent by another.

A wire frame leaves host A at ``dev_hard_start_xmit`` and arrives at host B at ``eth_type_trans``
(before GRO, so one event per frame). On the sender one skb may stand for many frames (TSO/GSO):
a frame matches the skb with the same ack whose sequence range covers the frame's range, and whose
IP id is the frame's minus its index in the skb (Linux numbers a super-segment's frames
consecutively). Pure ACKs (empty range) match on (seq, ack) and IP id. Addresses and ports are
not part of the key, so rewriting between the hosts (NAT) does not break a match; the 4-tuples are
compared afterwards and the rewritten frames counted. A frame with more than one candidate
transmission (a retransmission that the IP id cannot tell apart, duplicate ACKs) is *ambiguous*:
counted, and excluded from both clock alignment and L_NET.

    match_traces(traces, hosts) -> {(i, j): PairMatches}
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mbrec.analysis.flowid import address_words, mix, tuple_hash
from mbrec.analysis.kernels import frame_lookback, pair_groups
from mbrec.analysis.packets import Columns, take_records
from mbrec.events import CONSTANTS, PROBE_IDS

XMIT = PROBE_IDS["dev_hard_start_xmit"]
RECV = PROBE_IDS["eth_type_trans"]
SYN, RST, ACK = CONSTANTS["MBREC_TCP_SYN"], CONSTANTS["MBREC_TCP_RST"], CONSTANTS["MBREC_TCP_ACK"]
AF_INET6 = CONSTANTS["MBREC_AF_INET6"]
LOOKBACK = 16  # transmissions examined per frame (same ack, start <= frame start)
M32 = np.int64(0xFFFFFFFF)


def host_names(traces) -> list[str]:
    """Each trace's host name, made unique with a #n suffix where two traces share one."""
    names: list = []
    seen: dict = {}
    for t in traces:
        h = str((t.header or {}).get("host") or "?")
        seen[h] = seen.get(h, 0) + 1
        names.append(h if seen[h] == 1 else f"{h}#{seen[h]}")
    return names



@dataclass
class DirMatches:
    """Frames sent by host `src` and received by host `dst`, matched one to one.

    Indices point into each trace's events["pkt"]. ``s_ns`` is in the sender's clock and
    ``r_ns`` in the receiver's. ``nat`` marks frames whose 4-tuple differs between the hosts.
    """

    send_idx: np.ndarray
    recv_idx: np.ndarray
    s_ns: np.ndarray
    r_ns: np.ndarray
    nat: np.ndarray
    n_ambiguous: int = 0
    n_frames: int = 0     # frames received at dst that were examined
    n_sent: int = 0       # wire sends at src

    def __len__(self):
        return len(self.s_ns)




def _match_keyed(s_grp, send, r_grp, recv, s_tup=None, r_tup=None):
    """The lookback matcher over one grouping: s_grp/r_grp (int64 < 2^31) name the group each
    send/frame belongs to (the caller chooses); frames match sends of their group with the same ack
    and, when s_tup/r_tup are given, the same 4-tuple. Returns (count, first) per frame: the
    number of candidate sends and the first one (an index into send)."""
    s_seq = send["seq"].astype(np.int64)
    s_span = (send["end_seq"].astype(np.int64) - s_seq) & M32
    key = (s_grp << 32) | s_seq
    order = np.argsort(key, kind="stable")
    key, s_span = key[order], s_span[order]
    # reach[j]: the furthest (group, end) any transmission up to j covers; a frame whose key
    # lies beyond reach[j] cannot be covered by j or anything before it: the lookback stops
    reach = np.maximum.accumulate(key + s_span)
    s_ack = send["ack"][order].astype(np.int64)
    s_flags = send["tcp_flags"][order] & (SYN | RST | ACK)
    s_id = send["ip_id"][order].astype(np.int64)
    s_v6 = send["family"][order] == AF_INET6
    s_segs = np.maximum(send["gso_segs"][order].astype(np.int64), 1)
    s_tup = None if s_tup is None else s_tup[order]
    # frames in key order too: the lookback then reads the sends' arrays almost sequentially
    r_seq = recv["seq"].astype(np.int64)
    r_key = (r_grp << 32) | r_seq
    r_order = np.argsort(r_key)
    r_key = r_key[r_order]
    r_ack = recv["ack"][r_order].astype(np.int64)
    r_span = ((recv["end_seq"].astype(np.int64) - r_seq) & M32)[r_order]
    r_flags = (recv["tcp_flags"] & (SYN | RST | ACK))[r_order]
    r_id = recv["ip_id"].astype(np.int64)[r_order]
    r_segs = np.maximum(recv["gso_segs"].astype(np.int64), 1)[r_order]
    r_tup = None if r_tup is None else r_tup[r_order]
    pos = np.searchsorted(key, r_key, side="right") - 1
    # per frame, the transmissions before its place that may cover it: the same (group, seq)
    # range and ack, the same flags, and (with the 4-tuples) the same connection; the IP id of
    # a super-segment's frames is consecutive from the skb's, so the frame's id minus the
    # skb's is its index, known exactly when gso_segs was recorded (a "frame" may itself be a
    # GSO chunk: veth hands whole super-segments to the peer)
    sends = {"key": key, "reach": reach, "span": s_span, "ack": s_ack, "flags": s_flags,
             "id": s_id, "v6": s_v6, "segs": s_segs, "tup": s_tup}
    frames = {"key": r_key, "span": r_span, "ack": r_ack, "flags": r_flags, "id": r_id,
              "segs": r_segs, "tup": r_tup}
    count, first = frame_lookback(sends, frames, pos, s_tup is not None, LOOKBACK)
    # back to the callers' orders
    out_count = np.empty_like(count)
    out_first = np.full(_n(recv), -1, dtype=np.int64)
    out_count[r_order] = count
    found = first >= 0
    out_first[r_order[found]] = order[first[found]]
    return out_count, out_first


def match_direction(send: np.ndarray, recv: np.ndarray, nat: bool = True
                    ) -> tuple[np.ndarray, np.ndarray, int]:
    """(index into send, index into recv, n_ambiguous) for frames `recv` that came from `send`.

    send: pkt records (a structured array or a dict of its columns) at the sender's
    dev_hard_start_xmit; recv: the same at the receiver's eth_type_trans. Two vectorised passes:
    first within the same 4-tuple and ack (the usual case: the lookback then sees only the
    connection's own transmissions, so the result does not depend on which other connections
    are in the traces), then, for frames whose 4-tuple no transmission has, against the
    transmissions whose 4-tuple no frame has, on (ack, seq range, IP id) alone: the
    connections rewritten between the hosts (NAT). nat=False: the first pass only (a partition
    whose NAT'd connections are matched in a partition of their own).
    """
    empty = np.zeros(0, dtype=np.int64)
    if _n(send) == 0 or _n(recv) == 0:
        return empty, empty, 0
    s_tup, r_tup = tuple_hash(send), tuple_hash(recv)
    s_key, r_key = _groups(s_tup, send["ack"], r_tup, recv["ack"])
    count, first = _match_keyed(s_key, send, r_key, recv, s_tup, r_tup)
    rest = np.flatnonzero((count == 0) & ~np.isin(r_tup, s_tup))
    nat_sends = np.flatnonzero(~np.isin(s_tup, r_tup))
    if nat and len(rest) and len(nat_sends):
        # group by ack (halved so that (group << 32) + seq stays inside int64): sends of one
        # flow stay nearly in order, which keeps the sort and the lookback cheap
        s_grp = send["ack"][nat_sends].astype(np.int64) >> 1
        r_grp = recv["ack"][rest].astype(np.int64) >> 1
        c2, f2 = _match_keyed(s_grp, _take(send, nat_sends), r_grp, _take(recv, rest))
        count[rest], first[rest] = c2, np.where(f2 >= 0, nat_sends[np.maximum(f2, 0)], -1)
    good = np.flatnonzero(count == 1)
    return first[good], good, int((count > 1).sum())


def _groups(s_tup, s_ack, r_tup, r_ack) -> tuple[np.ndarray, np.ndarray]:
    """Dense ids (< 2^31) of (4-tuple, ack) for sends and frames, one numbering for both."""
    with np.errstate(over="ignore"):
        hs = s_tup ^ mix(s_ack.astype(np.uint64) + np.uint64(0x632BE59BD9B4E019))
        hr = r_tup ^ mix(r_ack.astype(np.uint64) + np.uint64(0x632BE59BD9B4E019))
    ids, _ = pair_groups(np.concatenate([hs, hr]), np.zeros(len(hs) + len(hr), np.uint64))
    return ids[:len(hs)], ids[len(hs):]


def _tuples_equal(send, a, recv, b) -> np.ndarray:
    """Whether send[a] and recv[b] have the same 4-tuple, compared field by field (addresses
    as two 64-bit words)."""
    same = (send["sport"][a] == recv["sport"][b]) & (send["dport"][a] == recv["dport"][b])
    for field in ("saddr", "daddr"):
        s0, s1 = address_words(send[field])
        r0, r1 = address_words(recv[field])
        same &= (s0[a] == r0[b]) & (s1[a] == r1[b])
    return same


WIRE_FIELDS = ("ts_ns", "seq", "end_seq", "ack", "tcp_flags", "ip_id", "family", "gso_segs",
               "saddr", "daddr", "sport", "dport")


def _n(records) -> int:
    return len(records["seq"])


def _take(records, idx):
    """records[idx] for a structured array or a dict of columns."""
    if isinstance(records, dict):
        return {k: v[idx] for k, v in records.items()}
    return records[idx]


@dataclass
class PairMatches:
    """Both directions between traces i (host a) and j (host b)."""

    a: str
    b: str
    ab: DirMatches
    ba: DirMatches

    @property
    def n_usable(self) -> int:
        return len(self.ab) + len(self.ba)

    def constraints(self):
        """(s_ab, r_ab, s_ba, r_ba): the alignment's input, int64 ns."""
        return self.ab.s_ns, self.ab.r_ns, self.ba.s_ns, self.ba.r_ns


def _wire(trace, probe: int) -> tuple[np.ndarray, dict | None]:
    """Indices of one probe's events and their columns: the events' records gathered as rows
    of bytes, then split into fields a cache-sized block at a time (a strided pass per field
    over all the records was 3x slower)."""
    pkt = trace.events.get("pkt")
    if pkt is None or len(pkt) == 0:
        return np.zeros(0, dtype=np.int64), None
    idx = np.flatnonzero(pkt["probe"] == probe)
    cols = Columns(take_records(pkt, idx))
    return idx, {f: cols[f] for f in WIRE_FIELDS}


def match_traces(traces, hosts: list[str] | None = None, nat: bool = True) -> dict:
    """{(i, j): PairMatches} for every pair of traces i < j with at least one matched frame
    (nat: as match_direction)."""
    hosts = hosts or host_names(traces)
    sends = [_wire(t, XMIT) for t in traces]
    recvs = [_wire(t, RECV) for t in traces]
    out = {}

    def one(i, j):
        si, s = sends[i]
        ri, r = recvs[j]
        if s is None or r is None:
            return DirMatches(*(np.zeros(0, np.int64),) * 4, np.zeros(0, bool),
                              n_sent=len(si), n_frames=len(ri))
        a, b, amb = match_direction(s, r, nat)
        return DirMatches(si[a], ri[b], s["ts_ns"][a].astype(np.int64),
                          r["ts_ns"][b].astype(np.int64), ~_tuples_equal(s, a, r, b),
                          n_ambiguous=amb, n_frames=len(ri), n_sent=len(si))

    for i in range(len(traces)):
        for j in range(i + 1, len(traces)):
            pm = PairMatches(hosts[i], hosts[j], one(i, j), one(j, i))
            if pm.n_usable:
                out[(i, j)] = pm
    return out
