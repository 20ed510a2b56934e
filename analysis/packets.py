"""The per-host packet table: every transmission and every received skb, followed through the layers.

``packet_table(trace) -> PacketTable`` is a pure function of one host's trace (one file = one
host = one clock). It is the interface between the per-host analysis (layer latencies, this
package) and the cross-host analysis (clock alignment and L_NET, analysis/clock.py and
analysis/network.py). Version: ``PACKET_TABLE_VERSION``; fields are only added, never changed.

Flows
-----
A flow is named the same way on every host: its two endpoints (address, port) in a fixed order,
endpoint 0 being the smaller by (address bytes, port). ``FlowTable`` has one row per flow seen on
the host: ``ep_addr`` (n, 2, 16) uint8, ``ep_port`` (n, 2), ``family``, ``local`` (which endpoint
is this host: 0 or 1; -1 when both are, e.g. loopback traffic), ``client`` (0/1: the endpoint that opened the connection, -1 unknown) and
``client_source`` ("syn": a SYN without ACK was seen; "state": a SYN_SENT/SYN_RECV state change;
"ports": inferred from the well-known/ephemeral port; "guess": lower port taken as server).
``FlowTable.key(i)`` gives a hashable name for joining across hosts. A stream is one direction of
a flow: ``stream = 2 * flow + sender`` where sender is the endpoint (0/1) that sends its bytes.
(NAT between hosts renames flows; address/port rewriting is out of scope here.)

Packets
-------
``PacketTable.pkt`` is a dict of equal-length arrays, one row per transmission (send side: one
tcp_transmit_skb call) or per received skb (receive side: one skb at ip_rcv/tcp_v4_rcv, possibly
GRO-merged from several wire frames). Rows for packets whose upper hooks were not seen (missing
hooks, lost events) are still present, anchored on the hooks that were seen.

=============  ========  ==============================================================
field          dtype     meaning
=============  ========  ==============================================================
flow           int64     row in the FlowTable
direction      int8      0 = sent by this host, 1 = received by this host
sender         int8      endpoint (0/1) that sent it; stream = 2 * flow + sender
seq, end_seq   uint32    TCP sequence range as recorded (SYN and FIN count one)
seq64, end64   int64     the same, unwrapped per stream (congruent mod 2^32; the origin is the
                         first value this host saw in the stream, so two hosts may differ by a
                         multiple of 2^32 if they started recording in different wrap epochs)
ack            uint32    acknowledgement number (send side at tcp_transmit_skb: rcv_nxt)
flags          uint8     TCP flags
ip_id          uint16    IP id (from the lowest layer that has an IP header), 0 if unknown
ts             int64     (n, 4) CLOCK_MONOTONIC ns per layer in path order, -1 where unseen.
                         send: tcp_transmit_skb, ip_queue_xmit, dev_queue_xmit, dev_hard_start_xmit
                         receive: eth_type_trans, ip_rcv, tcp_v4_rcv, skb_copy_datagram_iter
                         (first wire frame / first driver event at the wire layer; the copy
                         layer is the copy that delivered the skb's first byte to the app)
n_wire         int32     wire-level events in this row (TSO/GSO segments, GRO-merged frames)
retrans        bool      send: the range starts below bytes already sent (a retransmission);
                         receive: arrived after later bytes (retransmission or reordering)
duplicate      bool      receive: an earlier skb already carried its first byte (TCP drops it)
=============  ========  ==============================================================

``PacketTable.wire`` has one row per wire-level event: driver events (dev_hard_start_xmit) on the
send side and frames (eth_type_trans) on the receive side, which is what cross-host matching
needs: ``row`` (index into pkt, -1 if it matched no packet row), ``event`` (the wire event's
index in the trace's pkt records), ``flow``, ``direction``,
``sender``, ``seq``, ``end_seq``, ``seq64``, ``end64``, ``ack``, ``flags``, ``ip_id``,
``gso_segs``, ``ts``. A frame on a receiver is covered by exactly one sender wire event's range
(TSO: one driver event, several frames).

Matching (within the host) is by sequence ranges, never by skb pointer: a lower send layer's
event belongs to the latest earlier transmission of the same stream whose range covers its first
byte; a receive-side frame belongs to the earliest later skb that covers its first byte. Zero-
length packets (pure ACKs) match on (stream, seq, ack, flags) and time. Known limit: if a
retransmission enters TCP while the original copy of the same bytes is still queued below it
(e.g. held by a long qdisc delay), the lower layers' events are attributed to the retransmission.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mbrec.events import CONSTANTS, PROBE_IDS, RECV_PROBES, SEND_PROBES
from mbrec.analysis.flowid import address_words, mix
from mbrec.analysis.join import NONE, group_ids, grouped_cummax_before, stab, unwrap32
from mbrec.analysis.kernels import (first_occurrences, ipv4_endpoints, nearest_links,
                                    pair_groups)

PACKET_TABLE_VERSION = 1
AF_INET = CONSTANTS["MBREC_AF_INET"]
SYN = CONSTANTS["MBREC_TCP_SYN"]
ACK = CONSTANTS["MBREC_TCP_ACK"]
FIN = CONSTANTS["MBREC_TCP_FIN"]
SOCK_READ = CONSTANTS["MBREC_SOCK_READ"]
SOCK_WRITE = CONSTANTS["MBREC_SOCK_WRITE"]
SEND_IDS = [PROBE_IDS[p] for p in SEND_PROBES]
RECV_IDS = [PROBE_IDS[p] for p in RECV_PROBES]
LAYER_NAMES = {0: SEND_PROBES, 1: RECV_PROBES}
TCP_STATE_SYN_SENT, TCP_STATE_SYN_RECV, TCP_STATE_NEW_SYN_RECV = (
    CONSTANTS[f"MBREC_TCP_{n}"] for n in ("SYN_SENT", "SYN_RECV", "NEW_SYN_RECV"))


assert RECV_IDS == list(range(RECV_IDS[0], RECV_IDS[0] + 4))  # ids in path order
assert SEND_IDS == list(range(SEND_IDS[0], SEND_IDS[0] + 4))


def is_receive(probe: np.ndarray) -> np.ndarray:
    """Receive-path packet probes (eth_type_trans .. skb_copy_datagram_iter)."""
    return (probe >= RECV_IDS[0]) & (probe <= RECV_IDS[-1])


class Columns:
    """A record array read column by column, the fields the analysis reads often copied out once
    and kept contiguous.

    Reading one field of an array of 96-byte records touches every cache line of the array, so
    the fields are copied out together, a cache-sized block of records at a time (2.5x faster
    than a pass per field), the first time any field is asked for. Fields read at most once
    (VIEWED_FIELDS: the addresses, which only the flow identification reads) or never are not
    copied: they are handed out as views of the records. Indexing by field name and len() work
    as on the record array.
    """

    BLOCK = 8192  # records per block: 768 KiB of pkt records, within the L2 cache
    VIEWED_FIELDS = frozenset({"saddr", "daddr", "skb", "netns", "ifindex", "cpu", "tgid"})

    def __init__(self, recs: np.ndarray):
        self.recs = recs
        self.dtype = recs.dtype
        self._cols: dict | None = None

    def __len__(self):
        return len(self.recs)

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self.VIEWED_FIELDS:
            return self.recs[name]
        if self._cols is None:
            self._cols = _split_fields(self.recs, self.VIEWED_FIELDS)
        return self._cols[name]


def _split_fields(recs: np.ndarray, skip: frozenset = frozenset()) -> dict:
    names = [n for n in recs.dtype.names if not n.startswith("pad") and n not in skip]
    cols = {n: np.empty((len(recs),) + recs.dtype[n].shape, recs.dtype[n].base) for n in names}
    for start in range(0, len(recs), Columns.BLOCK):
        block = recs[start:start + Columns.BLOCK]
        for n in names:
            cols[n][start:start + len(block)] = block[n]
    return cols


def take_records(recs: np.ndarray, index: np.ndarray) -> np.ndarray:
    """recs[index] for an array of records, as whole rows of bytes: numpy gathers a structured
    array field by field, 5-12x slower than rows of bytes (measured on 96-byte pkt records)."""
    recs = np.ascontiguousarray(recs)
    rows = recs.view(np.uint8).reshape(len(recs), recs.dtype.itemsize)
    return np.take(rows, index, axis=0).view(recs.dtype).reshape(-1)


def columns(events: dict) -> dict:
    """Wrap every schema's records in Columns (idempotent)."""
    return {k: v if isinstance(v, Columns) else Columns(v) for k, v in events.items()}


@dataclass
class FlowTable:
    ep_addr: np.ndarray      # (n, 2, 16) uint8
    ep_port: np.ndarray      # (n, 2) uint16
    family: np.ndarray       # (n,) uint8
    local: np.ndarray        # (n,) int8
    client: np.ndarray       # (n,) int8, -1 unknown
    client_source: list      # per flow: "syn" | "state" | "ports" | "guess" | "unknown"
    cookies: list = field(default_factory=list)  # per flow: sorted socket cookies seen

    def __len__(self):
        return len(self.family)

    def key(self, i: int) -> tuple:
        """A name for flow i that every host computes the same way (addresses as bytes)."""
        return (int(self.family[i]), bytes(self.ep_addr[i, 0]), int(self.ep_port[i, 0]),
                bytes(self.ep_addr[i, 1]), int(self.ep_port[i, 1]))


@dataclass
class PacketTable:
    host: str
    boot_id: str
    flows: FlowTable
    pkt: dict            # see module docstring
    wire: dict
    version: int = PACKET_TABLE_VERSION

    def __len__(self):
        return len(self.pkt["flow"])


def _local_index(l0, l1, lp, r0, r1, rp):
    lp, rp = lp.astype(np.uint64), rp.astype(np.uint64)
    gt = (l1 > r1) | ((l1 == r1) & ((l0 > r0) | ((l0 == r0) & (lp > rp))))
    return gt.astype(np.int8)


@dataclass
class _Ends:
    """Per event of one schema: the local and remote endpoint as 64-bit words and ports."""

    l0: np.ndarray
    l1: np.ndarray
    lp: np.ndarray
    r0: np.ndarray
    r1: np.ndarray
    rp: np.ndarray
    family: np.ndarray
    cookie: np.ndarray


def _ends(recs: np.ndarray, recv: np.ndarray | None) -> _Ends:
    """pkt records: receive probes have the local endpoint as destination. sock/flow/tcp
    records come from the socket: saddr/sport are local."""
    s0, s1 = address_words(recs["saddr"])
    d0, d1 = address_words(recs["daddr"])
    sp, dp = recs["sport"], recs["dport"]
    if recv is None or not recv.any():
        return _Ends(s0, s1, sp, d0, d1, dp, recs["family"], recs["sock_cookie"])
    return _Ends(np.where(recv, d0, s0), np.where(recv, d1, s1), np.where(recv, dp, sp),
                 np.where(recv, s0, d0), np.where(recv, s1, d1), np.where(recv, sp, dp),
                 recs["family"], recs["sock_cookie"])


def identify_flows(events: dict[str, np.ndarray]) -> tuple[FlowTable, dict[str, tuple]]:
    """Flow index and local endpoint for every event of every schema of one host.

    Returns the FlowTable and, per schema, (flow index, local endpoint index) arrays. Flows are
    grouped by a 64-bit hash of the endpoint pair, then checked field by field against each
    group's first member (a collision falls back to exact grouping). IPv4-only traces take a
    shorter path: an endpoint is one 48-bit integer (address << 16 | port).
    """
    names = [n for n in ("pkt", "sock", "flow", "tcp") if n in events and len(events[n])]
    if not names:
        empty = FlowTable(np.zeros((0, 2, 16), np.uint8), np.zeros((0, 2), np.uint16),
                          np.zeros(0, np.uint8), np.zeros(0, np.int8), np.zeros(0, np.int8), [])
        return empty, {}
    found = _flows_v4(events, names)
    if found is None:
        found = _flows_general(events, names)
    flow, local, rep, ep_addr, ep_port, family, cookie, sizes = found
    nflows = len(rep)
    # both endpoints on this host (loopback, or one file for several namespaces): local = -1
    n_ep1 = np.bincount(flow, weights=local, minlength=nflows)
    n_all = np.bincount(flow, minlength=nflows)
    flow_local = np.where(n_ep1 == 0, 0, np.where(n_ep1 == n_all, 1, -1)).astype(np.int8)
    # sockets per flow: from socket-level records when there are any (few), else packets
    sock_level = np.concatenate([np.full(k, n != "pkt") for n, k in zip(names, sizes)])
    pick = np.nonzero(sock_level)[0] if sock_level.any() else np.arange(len(flow))
    cookies = _cookies_per_flow(flow[pick], cookie[pick], nflows)
    ft = FlowTable(ep_addr=ep_addr, ep_port=ep_port, family=family[rep].astype(np.uint8),
                   local=flow_local, client=np.full(nflows, -1, np.int8),
                   client_source=["unknown"] * nflows, cookies=cookies)
    out: dict[str, tuple] = {}
    start = 0
    for name, k in zip(names, sizes):
        out[name] = (flow[start:start + k], local[start:start + k])
        start += k
    _find_clients(ft, events, out)
    return ft, out


def _flows_v4(events, names):
    """The IPv4 path, or None if any event is not IPv4."""
    los, his, locals_, fam, cookie, sizes = [], [], [], [], [], []
    for n in names:
        recs = events[n]
        recv = is_receive(recs["probe"]) if n == "pkt" else np.zeros(len(recs), bool)
        ends = ipv4_endpoints(recs["saddr"], recs["daddr"], recs["sport"], recs["dport"],
                              recs["family"], recv, AF_INET)
        if ends is None:
            return None
        los.append(ends[0])
        his.append(ends[1])
        locals_.append(ends[2])
        fam.append(recs["family"])
        cookie.append(recs["sock_cookie"])
        sizes.append(len(recs))
    lo, hi, local = np.concatenate(los), np.concatenate(his), np.concatenate(locals_)
    flow, rep = pair_groups(lo, hi)
    ep_addr = np.zeros((len(rep), 2, 16), np.uint8)
    ep_port = np.zeros((len(rep), 2), np.uint16)
    for k, e in enumerate((lo[rep], hi[rep])):
        ep_addr[:, k, :4] = (e >> np.uint64(16)).astype("<u4").view(np.uint8).reshape(-1, 4)
        ep_port[:, k] = (e & np.uint64(0xFFFF)).astype(np.uint16)
    return (flow, local, rep, ep_addr, ep_port, np.concatenate(fam), np.concatenate(cookie),
            sizes)


def _flows_general(events, names):
    """Any address family: endpoints ordered by (address words, port), hashed, verified."""
    ends = [_ends(events[n], is_receive(events[n]["probe"]) if n == "pkt" else None)
            for n in names]
    cat = {f: np.concatenate([getattr(e, f) for e in ends])
           for f in ("l0", "l1", "lp", "r0", "r1", "rp", "family", "cookie")}
    local = _local_index(cat["l0"], cat["l1"], cat["lp"], cat["r0"], cat["r1"], cat["rp"])
    swap = local.astype(bool)
    a0 = np.where(swap, cat["r0"], cat["l0"]), np.where(swap, cat["r1"], cat["l1"])
    a1 = np.where(swap, cat["l0"], cat["r0"]), np.where(swap, cat["l1"], cat["r1"])
    p0 = np.where(swap, cat["rp"], cat["lp"]).astype(np.uint64)
    p1 = np.where(swap, cat["lp"], cat["rp"]).astype(np.uint64)
    fam = cat["family"].astype(np.uint64)
    cols = (fam, a0[1], a0[0], p0, a1[1], a1[0], p1)
    with np.errstate(over="ignore"):  # multiply-add with odd constants, one final mix
        h = a0[0] * np.uint64(0x9E3779B97F4A7C15) + a0[1] * np.uint64(0xC2B2AE3D27D4EB4F)
        h += a1[0] * np.uint64(0x165667B19E3779F9) + a1[1] * np.uint64(0xD6E8FEB86659FD93)
        h += (p0 << np.uint64(16) | p1) * np.uint64(0xFF51AFD7ED558CCD) + fam
        h = mix(h)
    flow, rep = hash_groups(h)
    if any((c != c[rep][flow]).any() for c in cols):  # a hash collision: exact grouping
        flow, _, rep = group_ids(*cols)
    words0 = np.stack([a0[0][rep], a0[1][rep]], axis=1).astype("<u8")
    words1 = np.stack([a1[0][rep], a1[1][rep]], axis=1).astype("<u8")
    ep_addr = np.stack([words0.view(np.uint8).reshape(-1, 16),
                        words1.view(np.uint8).reshape(-1, 16)], axis=1)
    ep_port = np.stack([p0[rep], p1[rep]], axis=1).astype(np.uint16)
    return (flow, local, rep, ep_addr, ep_port, cat["family"], cat["cookie"],
            [len(e.family) for e in ends])


def hash_groups(h: np.ndarray, bits: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Dense group ids for equal 64-bit hashes in O(n), with a numpy 'hash table': each element
    writes its index into a slot chosen by the hash's top bits and reads back the winner; where
    the winner has the same hash, that is the group. Slot collisions between different hashes
    (rare with few groups) are resolved by sorting only those elements.
    Returns (group id per element, one representative index per group, in first-seen order)."""
    n = len(h)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    slot = (h >> np.uint64(64 - bits)).astype(np.int64)
    table = np.full(1 << bits, -1, np.int64)
    table[slot[::-1]] = np.arange(n - 1, -1, -1)  # the first element of each slot wins
    winner = table[slot]
    same = h[winner] == h
    rep_of = np.where(same, winner, -1)
    rest = np.nonzero(~same)[0]
    if len(rest):
        _, first, inv = np.unique(h[rest], return_index=True, return_inverse=True)
        rep_of[rest] = rest[first][inv.ravel()]
    reps = np.nonzero(rep_of == np.arange(n))[0]  # representatives, in index order
    dense = np.full(n, -1, np.int64)
    dense[reps] = np.arange(len(reps))
    return dense[rep_of], reps


def _cookies_per_flow(flow, cookie, nflows) -> list:
    keep = np.nonzero(cookie != 0)[0]
    result: list[list] = [[] for _ in range(nflows)]
    if len(keep) == 0:
        return result
    with np.errstate(over="ignore"):
        h = mix(cookie[keep].astype(np.uint64)) + mix(flow[keep].astype(np.uint64))
    _, rep = hash_groups(h)
    for f, c in zip(flow[keep][rep].tolist(), cookie[keep][rep].tolist()):  # one per socket
        result[int(f)].append(int(c))
    return result


def _find_clients(ft: FlowTable, events: dict, ids: dict) -> None:
    """Fill ft.client: who opened each connection, from SYNs, then state changes, then ports."""
    n = len(ft)
    client = np.full(n, -1, np.int8)
    source = np.array(["unknown"] * n, dtype=object)
    if "pkt" in ids:
        pkt = events["pkt"]
        flow, local = ids["pkt"]
        syn = (pkt["tcp_flags"] & (SYN | ACK)) == SYN
        if syn.any():
            recv = is_receive(pkt["probe"])
            sender = np.where(recv, 1 - local, local)[syn]
            f = flow[syn]
            order = np.argsort(pkt["ts_ns"][syn], kind="stable")[::-1]  # earliest written last
            client[f[order]] = sender[order]
            source[f[order]] = "syn"
    if "tcp" in ids:
        tcp = events["tcp"]
        flow, local = ids["tcp"]
        state = tcp["kind"] == CONSTANTS["MBREC_TCP_STATE"]
        opener = state & (tcp["new_state"] == TCP_STATE_SYN_SENT)
        accepter = state & np.isin(tcp["new_state"], [TCP_STATE_SYN_RECV, TCP_STATE_NEW_SYN_RECV])
        for mask, who in ((opener, local), (accepter, 1 - local)):
            todo = mask & (client[flow] < 0)
            client[flow[todo]] = who[todo]
            source[flow[todo]] = "state"
    todo = client < 0
    if todo.any():
        p0 = ft.ep_port[:, 0].astype(np.int64)
        p1 = ft.ep_port[:, 1].astype(np.int64)
        # the server has the well-known port; else the client has the ephemeral one
        srv0 = ((p0 < 1024) & (p1 >= 1024)) | ((p1 >= 32768) & (p0 < 32768))
        srv1 = ((p1 < 1024) & (p0 >= 1024)) | ((p0 >= 32768) & (p1 < 32768))
        guess = np.where(srv0, 1, np.where(srv1, 0, np.where(p0 <= p1, 1, 0)))
        src = np.where(srv0 | srv1, "ports", "guess")
        client[todo] = guess[todo]
        source[todo] = src[todo]
    ft.client = client
    ft.client_source = source.tolist()


@dataclass
class Prepared:
    """One host's events with flows identified and sequence numbers unwrapped (shared by the
    packet table and the application analysis, so both use the same unwrapping)."""

    flows: FlowTable
    ids: dict             # schema -> (flow, local endpoint) per event
    events: dict          # schema -> Columns of the host's records
    pkt_stream: np.ndarray
    pkt_seq64: np.ndarray
    pkt_end64: np.ndarray
    sock_stream: np.ndarray
    sock_seq64: np.ndarray
    sock_end64: np.ndarray


def prepare(events: dict) -> Prepared:
    """Identify flows and unwrap every sequence number of one host in one pool per stream:
    packet seq (sender's stream), packet ack (the other stream), socket write ranges (the local
    endpoint's stream) and read ranges (the remote endpoint's stream)."""
    events = columns(events)
    flows, ids = identify_flows(events)
    z = np.zeros(0, np.int64)
    pkt = events.get("pkt")
    sock = events.get("sock")
    streams, times, values = [], [], []
    if "pkt" in ids:
        flow, local = ids["pkt"]
        recv = is_receive(pkt["probe"])
        sender = np.where(recv, 1 - local, local).astype(np.int64)
        pst = 2 * flow + sender
        has_ack = (pkt["tcp_flags"] & ACK) != 0
        streams += [pst, (2 * flow + 1 - sender)[has_ack]]
        times += [pkt["ts_ns"], pkt["ts_ns"][has_ack]]
        values += [pkt["seq"], pkt["ack"][has_ack]]
    if "sock" in ids:
        flow, local = ids["sock"]
        reads = sock["kind"] == SOCK_READ
        sst = 2 * flow + np.where(reads, 1 - local, local)
        streams.append(sst)
        times.append(sock["ts_ns"])
        values.append(sock["seq_start"])
    if not streams:
        return Prepared(flows, ids, events, z, z, z, z, z, z)
    u = unwrap32(np.concatenate(streams).astype(np.int64),
                 np.concatenate(times).astype(np.int64), np.concatenate(values))
    n_pkt = len(pkt) if "pkt" in ids else 0
    if n_pkt:
        pseq = u[:n_pkt]
        pend = pseq + ((pkt["end_seq"].astype(np.int64) - pkt["seq"].astype(np.int64)) & 0xFFFFFFFF)
    else:
        pst, pseq, pend = z, z, z
    if "sock" in ids:
        sseq = u[len(u) - len(sock):]
        send_ = sseq + ((sock["seq_end"].astype(np.int64) - sock["seq_start"].astype(np.int64)) & 0xFFFFFFFF)
    else:
        sst, sseq, send_ = z, z, z
    return Prepared(flows, ids, events, pst, pseq, pend, sst, sseq, send_)


def _match(rows: dict, q: dict, mode: str) -> np.ndarray:
    """Row index per query event: ranged events by range cover, zero-length by exact key."""
    out = np.full(len(q["t"]), NONE, np.int64)
    r_rng = rows["end64"] > rows["seq64"]
    q_rng = q["end64"] > q["seq64"]
    ri, qi = np.nonzero(r_rng)[0], np.nonzero(q_rng)[0]
    if len(ri) and len(qi):
        hit = stab(rows["stream"][ri], rows["seq64"][ri], rows["end64"][ri], rows["t"][ri],
                   q["stream"][qi], q["seq64"][qi], q["t"][qi], mode)
        out[qi] = np.where(hit >= 0, ri[np.maximum(hit, 0)], NONE)
    ri, qi = np.nonzero(~r_rng)[0], np.nonzero(~q_rng)[0]
    if len(ri) and len(qi):
        key, _, _ = group_ids(np.concatenate([rows["stream"][ri], q["stream"][qi]]),
                              np.concatenate([rows["seq64"][ri], q["seq64"][qi]]),
                              np.concatenate([rows["ack"][ri], q["ack"][qi]]).astype(np.int64),
                              np.concatenate([rows["flags"][ri], q["flags"][qi]]).astype(np.int64))
        rk, qk = key[:len(ri)], key[len(ri):]
        zero_r, zero_q = np.zeros(len(ri), np.int64), np.zeros(len(qi), np.int64)
        hit = stab(rk, zero_r, zero_r + 1, rows["t"][ri], qk, zero_q, q["t"][qi], mode)
        out[qi] = np.where(hit >= 0, ri[np.maximum(hit, 0)], NONE)
    return out


_ROW_FIELDS = ("flow", "direction", "sender", "stream", "seq", "end_seq", "seq64", "end64",
               "ack", "flags", "ip_id")


def _links(ev: dict, mode: str) -> np.ndarray:
    """Per event, the event it most likely continues: among events with the same stream and
    start (data) or the same (stream, seq, ack, flags) (zero-length), in time order, the nearest
    earlier one at a smaller layer ("before": send path) or the nearest later one at a larger
    layer ("after": receive path). -1 where there is none, e.g. a GRO frame inside a merged skb
    or a software-GSO segment: those go to the range search (stab).

    Two passes: first the same key plus the IP id (which the layers that see an IP header share,
    so packets queued together, like duplicate ACKs waiting in a qdisc or a receive backlog,
    pair one to one), then the key alone for the events still unlinked (the send path's upper
    layers run before the IP header exists)."""
    n = len(ev["t"])
    if n == 0:
        return np.full(0, NONE, np.int64)
    zl = ev["end64"] <= ev["seq64"]
    stream_kind = ev["stream"].astype(np.int64) * 2 + zl
    ack_flags = np.where(zl, (ev["ack"].astype(np.int64) << 8) | ev["flags"], 0)
    before = mode == "before"
    ip_id = ev["ip_id"].astype(np.int64)
    by_key = nearest_links((stream_kind, ev["seq64"], ack_flags, np.zeros(n, np.int64)),
                           ev["layer"], before)
    if not (ip_id != 0).any():
        return by_key
    by_key_and_id = nearest_links((stream_kind, ev["seq64"], ack_flags, ip_id), ev["layer"],
                                  before)
    return np.where(by_key_and_id >= 0, by_key_and_id, by_key)


def _first_of_each(key: np.ndarray) -> np.ndarray:
    """Boolean mask of the first occurrence of each key value (array order)."""
    mask = np.zeros(len(key), bool)
    if len(key):
        _, first = np.unique(key, return_index=True)
        mask[first] = True
    return mask


def _chain(ev: dict, layers: list[int], mode: str, multi_layer: int) -> tuple[dict, np.ndarray]:
    """Follow one direction's events through its layers.

    ev: per-event arrays (one direction of one host), with "layer" 0..3 in path order.
    layers: the order in which layers are attached (the first one anchors rows).
    mode: "before" (send: each next layer happens after the anchor) or "after" (receive).
    multi_layer: the layer where one row may own several events (the wire layer).
    Returns (rows, row index per event).
    """
    n = len(ev["t"])
    # per-CPU rings interleave events; time-ordered input (synthetic, merged) skips the sort
    in_time_order = n < 2 or bool((ev["t"][1:] >= ev["t"][:-1]).all())
    if not in_time_order:
        by_time = np.argsort(ev["t"], kind="stable")
        ev = {k: v[by_time] for k, v in ev.items()}
    link = _links(ev, mode)
    row_of_event = np.full(n, NONE, np.int64)
    first = np.nonzero(ev["layer"] == layers[0])[0]
    rows = {f: ev[f][first] for f in _ROW_FIELDS}
    ts = np.full((len(first), 4), NONE, np.int64)
    ts[:, layers[0]] = ev["t"][first]
    n_wire = np.zeros(len(first), np.int32)
    if layers[0] == multi_layer:
        n_wire += 1
    row_of_event[first] = np.arange(len(first))
    for k, layer in enumerate(layers[1:], start=1):
        idx = np.nonzero(ev["layer"] == layer)[0]
        if len(idx) == 0:
            continue
        # the event it continues (same start, nearest in time) already has a row: take it
        hit = np.where(link[idx] >= 0, row_of_event[np.maximum(link[idx], 0)], NONE)
        hit[link[idx] < 0] = NONE
        rest = np.nonzero(hit < 0)[0]
        if len(rest):  # sub-ranges (GRO frames, GSO segments) and orphans: search by range
            seen = ts[:, layers[:k]]
            present = seen >= 0
            if mode == "before":  # the row's latest time so far
                ref_t = np.where(present, seen, np.iinfo(np.int64).min).max(axis=1)
            else:  # the row's earliest time so far
                ref_t = np.where(present, seen, np.iinfo(np.int64).max).min(axis=1)
            qi = idx[rest]
            q = {f: ev[f][qi] for f in ("stream", "seq64", "end64", "ack", "flags")}
            q["t"] = ev["t"][qi]
            hit[rest] = _match(dict(rows, t=ref_t), q, mode)
        # One event per row and layer, except several at the wire layer with distinct starts.
        # Later duplicates (same row, same start) become rows of their own.
        ok = hit >= 0
        if ok.any():
            cand = np.nonzero(ok)[0]
            if layer == multi_layer:
                s64 = ev["seq64"][idx[cand]]
                dkey = hit[cand] * (int(s64.max()) - int(s64.min()) + 1) + (s64 - s64.min())
                firsts = _first_of_each(dkey)
            else:
                firsts = first_occurrences(hit[cand], len(rows["flow"]))
            ok[cand[~firsts]] = False
        # matched: fill the layer time (earliest), count wire events
        mi = np.nonzero(ok)[0]
        if len(mi):
            r = hit[mi]
            cur = ts[:, layer]
            tmp = np.full(len(rows["flow"]), np.iinfo(np.int64).max, np.int64)
            np.minimum.at(tmp, r, ev["t"][idx[mi]])
            upd = tmp < np.iinfo(np.int64).max
            ts[upd, layer] = np.where(cur[upd] >= 0, np.minimum(cur[upd], tmp[upd]), tmp[upd])
            if layer == multi_layer:
                n_wire += np.bincount(r, minlength=len(n_wire)).astype(np.int32)
            row_of_event[idx[mi]] = r
            # IP id: from the lowest layer that carries one (only if the row has none yet)
            has = (rows["ip_id"][r] == 0) & (ev["ip_id"][idx[mi]] != 0)
            rows["ip_id"][r[has]] = ev["ip_id"][idx[mi][has]]
        # unmatched: new rows anchored at this layer
        new = idx[~ok]
        if len(new):
            base = len(rows["flow"])
            for f in _ROW_FIELDS:
                rows[f] = np.concatenate([rows[f], ev[f][new]])
            add = np.full((len(new), 4), NONE, np.int64)
            add[:, layer] = ev["t"][new]
            ts = np.concatenate([ts, add])
            n_wire = np.concatenate([n_wire, np.full(len(new), int(layer == multi_layer),
                                                     np.int32)])
            row_of_event[new] = base + np.arange(len(new))
    rows["ts"] = ts
    rows["n_wire"] = n_wire
    if in_time_order:
        return rows, row_of_event
    out = np.empty(n, np.int64)
    out[by_time] = row_of_event
    return rows, out


def packet_table(trace, prepared: Prepared | None = None) -> PacketTable:
    """The packet table of one host's trace (see the module docstring). Pure: reads trace only.

    The receive rows' copy layer (ts[:, 3]) is filled by analysis.app.attach_copies, which needs
    the socket read records; ``analysis.host.analyze_host`` does both.
    """
    prep = prepared if prepared is not None else prepare(trace.events)
    flows, ids = prep.flows, prep.ids
    pkt = prep.events.get("pkt")
    header = trace.header or {}
    if pkt is None or len(pkt) == 0 or "pkt" not in ids:
        return PacketTable(str(header.get("host", "?")), str(header.get("boot_id", "")), flows,
                           _empty_rows(), _empty_wire())
    flow, local = ids["pkt"]
    probe = pkt["probe"].astype(np.int64)
    recv = is_receive(probe)
    known = recv | ((probe >= min(SEND_IDS)) & (probe <= max(SEND_IDS)))
    ts = pkt["ts_ns"].astype(np.int64)
    sender = np.where(recv, 1 - local, local).astype(np.int8)
    stream, seq64, end64 = prep.pkt_stream, prep.pkt_seq64, prep.pkt_end64
    layer = np.where(recv, probe - RECV_IDS[0], probe - SEND_IDS[0])
    col = pkt
    ev_all = {"flow": flow, "direction": recv.astype(np.int8), "sender": sender,
              "stream": stream, "seq": col["seq"], "end_seq": col["end_seq"], "seq64": seq64,
              "end64": end64, "ack": col["ack"], "flags": col["tcp_flags"],
              "ip_id": col["ip_id"], "t": ts, "layer": layer, "gso_segs": col["gso_segs"]}
    parts, wires = [], []
    for direction in (0, 1):
        sel = np.nonzero(known & (recv == bool(direction)) & (layer < 3 if direction else True))[0]
        ev = {k: v[sel] for k, v in ev_all.items()}
        if direction == 0:
            rows, row_of = _chain(ev, [0, 1, 2, 3], "before", multi_layer=3)
            wire_sel = np.flatnonzero(ev["layer"] == 3)  # an index: one nonzero, not one a field
        else:  # the copy layer (3) is attached by analysis.app from the read byte ranges
            rows, row_of = _chain(ev, [2, 1, 0], "after", multi_layer=0)
            wire_sel = np.flatnonzero(ev["layer"] == 0)
        first_t = _first_time(rows["ts"])
        rows["retrans"] = _behind(rows, first_t)
        rows["duplicate"] = (_duplicate(rows, first_t) if direction
                             else np.zeros(len(rows["flow"]), bool))
        rows["first_t"] = first_t
        parts.append(rows)
        w = {k: ev[k][wire_sel] for k in ("flow", "direction", "sender", "seq", "end_seq",
                                           "seq64", "end64", "ack", "flags", "ip_id",
                                           "gso_segs")}
        w["ts"] = ev["t"][wire_sel]
        w["row"] = row_of[wire_sel]
        w["event"] = sel[wire_sel]
        wires.append(w)
    offset = len(parts[0]["flow"])
    wires[1]["row"] = np.where(wires[1]["row"] >= 0, wires[1]["row"] + offset, NONE)
    keys = list(_ROW_FIELDS) + ["ts", "n_wire", "retrans", "duplicate"]
    rows = {k: np.concatenate([parts[0][k], parts[1][k]]) for k in keys}
    first_t = np.concatenate([parts[0]["first_t"], parts[1]["first_t"]])
    wire = {k: np.concatenate([wires[0][k], wires[1][k]]) for k in wires[0]}
    # order rows by their first seen time, for readable output
    order = np.argsort(first_t, kind="stable")
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    rows = {k: v[order] for k, v in rows.items()}
    wire["row"] = np.where(wire["row"] >= 0, inv[np.maximum(wire["row"], 0)], NONE)
    rows["flow"] = rows["flow"].astype(np.int64)
    return PacketTable(str(header.get("host", "?")), str(header.get("boot_id", "")), flows,
                       rows, wire)


def _first_time(ts: np.ndarray) -> np.ndarray:
    """Per row, its earliest layer time (rows have at least one)."""
    return np.where(ts >= 0, ts, np.iinfo(np.int64).max).min(axis=1)


def _behind(rows: dict, t: np.ndarray) -> np.ndarray:
    """Data rows whose range starts below the highest byte already seen in their stream (t:
    each row's first time)."""
    data = rows["end64"] > rows["seq64"]
    out = np.zeros(len(t), dtype=bool)
    if data.any():
        prev = grouped_cummax_before(rows["stream"][data], t[data], rows["end64"][data])
        out[np.nonzero(data)[0]] = rows["seq64"][data] < prev
    return out


def _duplicate(rows: dict, t: np.ndarray) -> np.ndarray:
    """Received data skbs whose first byte an earlier-arriving skb already carried: TCP drops
    them, so they reach no application and get no copy-layer latency. Only skbs that arrived
    behind later bytes can be duplicates, so only those are searched for (t: each row's first
    time)."""
    out = np.zeros(len(rows["flow"]), dtype=bool)
    cand = np.nonzero(rows["retrans"])[0]
    if len(cand) == 0:
        return out
    data = (rows["end64"] > rows["seq64"]) & np.isin(rows["stream"], rows["stream"][cand])
    di = np.nonzero(data)[0]
    st, lo, hi = rows["stream"][di], rows["seq64"][di], rows["end64"][di]
    # any skb that arrived strictly earlier and covers the first byte (e.g. a tail-loss probe
    # resending the last bytes of a GRO-merged skb, or a spurious retransmission)
    first = stab(st, lo, hi, t[di], rows["stream"][cand], rows["seq64"][cand], t[cand] - 1,
                 "before")
    out[cand] = first >= 0
    return out


def _empty_rows() -> dict:
    d = {f: np.zeros(0, np.int64) for f in _ROW_FIELDS}
    d["ts"] = np.zeros((0, 4), np.int64)
    d["n_wire"] = np.zeros(0, np.int32)
    d["retrans"] = np.zeros(0, bool)
    d["duplicate"] = np.zeros(0, bool)
    return d


def _empty_wire() -> dict:
    d = {f: np.zeros(0, np.int64) for f in ("flow", "direction", "sender", "seq", "end_seq",
                                             "seq64", "end64", "ack", "flags", "ip_id",
                                             "gso_segs", "ts", "row", "event")}
    return d
