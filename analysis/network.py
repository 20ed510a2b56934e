"""Cross-host packet matching, NIC-to-NIC latency (L_NET) and RTT decomposition.

Entry point, called by `mbrec analyze` after analysis.clock.align()::

    analyze_network(traces, alignment, tables=None) -> NetworkResult
    NetworkResult.report_section() -> dict   (JSON-ready)
    (tables: optional, the per-host analysis.packets.PacketTable of each trace, reused for the
    per-layer RTT breakdown; without it they are built here when the traces have layer probes)
    analysis.plots_network.plot_network(result, alignment, outdir) -> list of paths

Matching. A wire frame leaves host A at ``dev_hard_start_xmit`` and arrives at host B at
``eth_type_trans`` (before GRO, so one event per frame). On the sender one skb may stand for many
frames (TSO/GSO): a frame matches the skb with the same ack whose sequence range covers the
frame's range, and whose IP id is the frame's minus its index in the skb (Linux numbers a
super-segment's frames consecutively). Pure ACKs (empty range) match on (seq, ack) and IP id.
Addresses and ports are not part of the key, so rewriting between the hosts (NAT) does not break a
match; the 4-tuples are compared afterwards and the rewritten frames counted. A frame with more
than one candidate transmission (a retransmission that the IP id cannot tell apart, duplicate
ACKs) is *ambiguous*: counted, and excluded from both alignment and L_NET.

L_NET. For each matched frame, the one-way delay NIC to NIC, signed (never abs()), in the first
host's timebase of the pair, with its guaranteed interval [lo, hi] from the clock alignment. A
value below zero or an interval entirely below zero means the alignment or the match is wrong, and
is reported, not hidden. Per flow, the side that opened the connection is the client S and the
other the server R (as in the seed): L_NET_1 is S->R, L_NET_2 is R->S.

RTT decomposition. For each request (a run of client data frames) and its response (the following
run of server data frames): the client's NIC-to-NIC RTT (last request frame out, first response
frame in, one clock) = L_NET_1 + server time (request frame in to response frame out, the
server's clock) + L_NET_2. With an affine alignment the parts add up exactly; the report checks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mbrec.events import CONSTANTS, PROBE_IDS

from .clock import Alignment, host_names

XMIT = PROBE_IDS["dev_hard_start_xmit"]
RECV = PROBE_IDS["eth_type_trans"]
SYN, RST, ACK = CONSTANTS["MBREC_TCP_SYN"], CONSTANTS["MBREC_TCP_RST"], CONSTANTS["MBREC_TCP_ACK"]
AF_INET6 = CONSTANTS["MBREC_AF_INET6"]
LOOKBACK = 16  # transmissions examined per frame (same ack, start <= frame start)
M32 = np.int64(0xFFFFFFFF)


# --------------------------------------------------------------------------------------------
# Endpoints

def _mix(v: np.ndarray) -> np.ndarray:
    """A 64-bit mixing step (splitmix64) so endpoint hashes do not collide in practice."""
    v = v.astype(np.uint64)
    with np.errstate(over="ignore"):
        v = (v ^ (v >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        v = (v ^ (v >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return v ^ (v >> np.uint64(31))


def endpoint_hash(addr: np.ndarray, port: np.ndarray) -> np.ndarray:
    """One uint64 per (16-byte address, port)."""
    words = np.ascontiguousarray(addr).view("<u8").reshape(len(addr), 2)
    with np.errstate(over="ignore"):
        h = _mix(words[:, 0]) ^ _mix(words[:, 1] + np.uint64(0x9E3779B97F4A7C15))
        return _mix(h + port.astype(np.uint64))


def flow_hash(ep_a: np.ndarray, ep_b: np.ndarray) -> np.ndarray:
    lo, hi = np.minimum(ep_a, ep_b), np.maximum(ep_a, ep_b)
    with np.errstate(over="ignore"):
        return _mix(lo ^ _mix(hi))


# --------------------------------------------------------------------------------------------
# Matching one direction

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


def _tuple_hash(rec: np.ndarray) -> np.ndarray:
    """One uint64 per record for its (saddr, sport, daddr, dport) as on the wire."""
    with np.errstate(over="ignore"):
        return _mix(endpoint_hash(rec["saddr"], rec["sport"])
                    ^ _mix(endpoint_hash(rec["daddr"], rec["dport"]) + np.uint64(1)))


def _match_keyed(s_grp, send, r_grp, recv, s_tup=None, r_tup=None):
    """The lookback matcher over one grouping: s_grp/r_grp (int64 < 2^31) name the group each
    send/frame belongs to (half the ack); frames match sends of their group with the same ack
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
    count = np.zeros(_n(recv), dtype=np.int64)
    first = np.full(_n(recv), -1, dtype=np.int64)
    act = np.flatnonzero(pos >= 0)   # frames still looking back
    j = pos[act]
    for _ in range(LOOKBACK):
        live = reach[j] >= r_key[act]
        act, j = act[live], j[live]
        if len(act) == 0:
            break
        off = r_key[act] - key[j]  # same group: the sequence offset; other groups: >= 2^32
        span = s_span[j]
        rs = r_span[act]
        # an empty frame (pure ACK) comes only from an empty send, at the same seq
        covers = np.where(span == 0, (off == 0) & (rs == 0),
                          (off < span) & (off + rs <= span) & (rs > 0))
        # IP ids of a super-segment's frames are consecutive from the skb's: the frame's id
        # minus the skb's is its index, which is known exactly when gso_segs was recorded
        # (full-size frames before it; the last frame is number gso_segs - 1)
        # (a "frame" may itself be a GSO chunk: veth hands whole super-segments to the peer)
        delta = (r_id[act] - s_id[j]) & 0xFFFF
        segs, rsegs = s_segs[j], r_segs[act]
        mss = np.maximum(rs // rsegs, 1)
        index = np.where(off == 0, 0, np.where(off + rs >= span, segs - rsegs, off // mss))
        exact = (segs >= 2) | (off + rs >= span) & (off == 0)
        loose = delta < np.maximum(segs, -(-span // np.maximum(rs, 1)))
        id_ok = s_v6[j] | np.where(exact, delta == index, loose)
        ok = covers & (s_ack[j] == r_ack[act]) & (s_flags[j] == r_flags[act]) & id_ok
        if s_tup is not None:
            ok &= s_tup[j] == r_tup[act]
        hit = act[ok]
        count[hit] += 1
        fresh = first[hit] < 0
        first[hit[fresh]] = j[ok][fresh]
        j = j - 1
        more = j >= 0
        act, j = act[more], j[more]
    # back to the callers' orders
    out_count = np.empty_like(count)
    out_first = np.full(_n(recv), -1, dtype=np.int64)
    out_count[r_order] = count
    found = first >= 0
    out_first[r_order[found]] = order[first[found]]
    return out_count, out_first


def match_direction(send: np.ndarray, recv: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(index into send, index into recv, n_ambiguous) for frames `recv` that came from `send`.

    send: pkt records (a structured array or a dict of its columns) at the sender's
    dev_hard_start_xmit; recv: the same at the receiver's eth_type_trans. Two vectorised passes: first within the same 4-tuple (the usual case, and
    immune to two flows that happen to share sequence numbers), then, for frames still
    unmatched, on (ack, seq range, IP id) alone, which tolerates NAT between the hosts.
    """
    empty = np.zeros(0, dtype=np.int64)
    if _n(send) == 0 or _n(recv) == 0:
        return empty, empty, 0
    # group by ack (halved so that (group << 32) + seq stays inside int64): sends of one flow
    # stay nearly in order, which keeps the sort and the lookback cheap
    s_grp = send["ack"].astype(np.int64) >> 1
    r_grp = recv["ack"].astype(np.int64) >> 1
    count, first = _match_keyed(s_grp, send, r_grp, recv, _tuple_hash(send), _tuple_hash(recv))
    rest = np.flatnonzero(count == 0)
    if len(rest):
        c2, f2 = _match_keyed(s_grp, send, r_grp[rest], _take(recv, rest))
        count[rest], first[rest] = c2, f2
    good = np.flatnonzero(count == 1)
    return first[good], good, int((count > 1).sum())


def _tuples_equal(send, a, recv, b) -> np.ndarray:
    """Whether send[a] and recv[b] have the same 4-tuple, compared field by field."""
    return ((send["saddr"][a] == recv["saddr"][b]).all(axis=1)
            & (send["daddr"][a] == recv["daddr"][b]).all(axis=1)
            & (send["sport"][a] == recv["sport"][b]) & (send["dport"][a] == recv["dport"][b]))


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
    """Indices of one probe's events and their columns (gathered per field: copying whole
    records of a padded structured dtype is many times slower)."""
    pkt = trace.events.get("pkt")
    if pkt is None or len(pkt) == 0:
        return np.zeros(0, dtype=np.int64), None
    idx = np.flatnonzero(pkt["probe"] == probe)
    return idx, {f: pkt[f][idx] for f in WIRE_FIELDS}


def match_traces(traces, hosts: list[str] | None = None) -> dict:
    """{(i, j): PairMatches} for every pair of traces i < j with at least one matched frame."""
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
        a, b, amb = match_direction(s, r)
        return DirMatches(si[a], ri[b], s["ts_ns"][a].astype(np.int64),
                          r["ts_ns"][b].astype(np.int64), ~_tuples_equal(s, a, r, b),
                          n_ambiguous=amb, n_frames=len(ri), n_sent=len(si))

    for i in range(len(traces)):
        for j in range(i + 1, len(traces)):
            pm = PairMatches(hosts[i], hosts[j], one(i, j), one(j, i))
            if pm.n_usable:
                out[(i, j)] = pm
    return out


# --------------------------------------------------------------------------------------------
# L_NET

@dataclass
class DirLatency:
    """One direction of one host pair: per matched frame, the delay and its interval (ns)."""

    src: str
    dst: str
    timebase: str
    value: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    s_ns: np.ndarray       # send time, sender's clock
    flow: np.ndarray       # flow hash (in the timebase host's view)
    client_sent: np.ndarray  # True: sent by the flow's client (L_NET_1), False: L_NET_2
    nat: np.ndarray
    n_ambiguous: int
    quality: str


def one_way_delays(pair_to_a, s_ab, r_ab, s_ba, r_ba):
    """Signed delays in a's timebase with guaranteed intervals.

    pair_to_a maps b's clock to a's. A->B: d = a(r) - s; B->A: d = r' - a(s').
    """
    t0 = pair_to_a.t0_to
    e, lo, hi = pair_to_a.map_c(r_ab)
    base = (t0 - np.asarray(s_ab, np.int64)).astype(np.float64)
    fwd = (base + e, base + lo, base + hi)
    e, lo, hi = pair_to_a.map_c(s_ba)
    base = (np.asarray(r_ba, np.int64) - t0).astype(np.float64)
    bwd = (base - e, base - hi, base - lo)
    return fwd, bwd


def _flow_roles(ta, tb, m: PairMatches):
    """Flow hash (in a's view) and 'client sent it' for each matched frame, both directions.

    The client is the endpoint that sent a SYN without ACK; without a SYN in the trace, the
    endpoint with the higher port is taken as the client (the ephemeral side).
    """
    pa = ta.events["pkt"]
    cols = ("saddr", "daddr", "sport", "dport", "tcp_flags")  # gathered per column: fast
    s_ab = {f: pa[f][m.ab.send_idx] for f in cols}   # a's view: src = a
    r_ba = {f: pa[f][m.ba.recv_idx] for f in cols}   # a's view: dst = a
    ea_ab = endpoint_hash(s_ab["saddr"], s_ab["sport"])
    eb_ab = endpoint_hash(s_ab["daddr"], s_ab["dport"])
    ea_ba = endpoint_hash(r_ba["daddr"], r_ba["dport"])
    eb_ba = endpoint_hash(r_ba["saddr"], r_ba["sport"])
    f_ab, f_ba = flow_hash(ea_ab, eb_ab), flow_hash(ea_ba, eb_ba)
    syn_ab = (s_ab["tcp_flags"] & (SYN | ACK)) == SYN
    syn_ba = (r_ba["tcp_flags"] & (SYN | ACK)) == SYN
    a_client_syn = np.unique(f_ab[syn_ab])
    b_client_syn = np.unique(f_ba[syn_ba])
    # port guess, per frame, from a's view
    guess_ab = s_ab["sport"] > s_ab["dport"]
    guess_ba = r_ba["dport"] > r_ba["sport"]
    a_is_client_ab = np.where(np.isin(f_ab, a_client_syn), True,
                              np.where(np.isin(f_ab, b_client_syn), False, guess_ab))
    a_is_client_ba = np.where(np.isin(f_ba, a_client_syn), True,
                              np.where(np.isin(f_ba, b_client_syn), False, guess_ba))
    flows = np.unique(np.concatenate([f_ab, f_ba]))
    guessed = int((~np.isin(flows, np.concatenate([a_client_syn, b_client_syn]))).sum())
    return (f_ab, a_is_client_ab), (f_ba, ~a_is_client_ba), guessed


@dataclass
class PairNetwork:
    a: str
    b: str
    method: str
    quality: str
    ab: DirLatency
    ba: DirLatency
    roles_guessed: int
    requests: dict | None = None


@dataclass
class NetworkResult:
    pairs: list[PairNetwork] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def report_section(self) -> dict:
        """JSON-ready: per pair and direction, L_NET statistics with their intervals."""
        out = {"version": 1, "units": "ns",
               "definition": ("L_NET: NIC-to-NIC one-way delay, sender dev_hard_start_xmit to "
                              "receiver eth_type_trans, signed, in the first host's timebase; "
                              "lo/hi: the guaranteed interval from the clock alignment"),
               "pairs": [], "notes": list(self.notes)}
        for p in self.pairs:
            entry = {"hosts": [p.a, p.b], "timebase": p.a, "clock_method": p.method,
                     "clock_quality": p.quality, "roles_guessed_from_ports": p.roles_guessed,
                     "directions": []}
            for d in (p.ab, p.ba):
                entry["directions"].append(_dir_summary(d))
            entry["L_NET_1"] = _role_summary(p, client_sent=True)
            entry["L_NET_2"] = _role_summary(p, client_sent=False)
            if p.requests is not None:
                entry["rtt_decomposition"] = _requests_summary(p.requests)
            out["pairs"].append(entry)
        return out


def stats(v: np.ndarray) -> dict | None:
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return None
    q = np.percentile(v, [50, 90, 99, 99.9])
    return {"count": int(len(v)), "mean": float(v.mean()), "min": float(v.min()),
            "p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "p99.9": float(q[3]),
            "max": float(v.max())}


def _dir_summary(d: DirLatency) -> dict:
    fin = np.isfinite(d.value)
    width = d.hi - d.lo
    return {"from": d.src, "to": d.dst, "frames": int(len(d.value)),
            "ambiguous_excluded": int(d.n_ambiguous), "nat_rewritten": int(d.nat.sum()),
            "aligned": int(fin.sum()),
            "l_net": stats(d.value), "lo": stats(d.lo), "hi": stats(d.hi),
            "interval_width": stats(width),
            "negative_estimates": int((d.value[fin] < 0).sum()),
            "interval_below_zero": int((d.hi[fin] < 0).sum())}


def _role_summary(p: PairNetwork, client_sent: bool) -> dict:
    parts = []
    for d in (p.ab, p.ba):
        sel = d.client_sent == client_sent
        parts.append((d.value[sel], d.lo[sel], d.hi[sel]))
    v, lo, hi = (np.concatenate(x) for x in zip(*parts))
    return {"direction": "client to server" if client_sent else "server to client",
            "l_net": stats(v), "lo": stats(lo), "hi": stats(hi)}


def analyze_network(traces, alignment: Alignment, tables=None) -> NetworkResult:
    """L_NET per matched frame and RTT decomposition per request, for every aligned host pair.

    tables: optional list of analysis.packets.PacketTable, one per trace (the per-host analysis
    already built them); without it they are built here when a trace has layer probes, for the
    per-layer RTT breakdown.
    """
    hosts = alignment.hosts or host_names(traces)
    matches = alignment.matches or match_traces(traces, hosts)
    res = NetworkResult()
    built = {}  # packet tables built here, by trace index
    for (i, j), m in sorted(matches.items()):
        a, b = hosts[i], hosts[j]
        to_a = alignment.pair(b, a)
        if to_a is None:
            res.notes.append(f"{a} and {b}: frames matched but no clock alignment between them")
            continue
        fwd, bwd = one_way_delays(to_a, *m.constraints())
        roles = _flow_roles(traces[i], traces[j], m)
        (f_ab, c_ab), (f_ba, c_ba), guessed = roles
        ab = DirLatency(a, b, a, *fwd, m.ab.s_ns, f_ab, c_ab, m.ab.nat, m.ab.n_ambiguous,
                        to_a.quality)
        ba = DirLatency(b, a, a, *bwd, m.ba.s_ns, f_ba, c_ba, m.ba.nat, m.ba.n_ambiguous,
                        to_a.quality)
        pn = PairNetwork(a, b, to_a.method, to_a.quality, ab, ba, guessed)
        pair_tables = _tables(traces, tables, i, j, built)
        pn.requests = decompose_rtt(traces[i], traces[j], m, alignment, pair_tables, roles)
        res.pairs.append(pn)
        if to_a.quality == "failed":
            res.notes.append(f"{a}-{b}: clock alignment failed; L_NET left empty (NaN)")
    return res


# --------------------------------------------------------------------------------------------
# RTT decomposition

def _has_layers(trace) -> bool:
    pkt = trace.events.get("pkt")
    return pkt is not None and bool(np.isin(pkt["probe"], [XMIT, RECV], invert=True).any())


def _tables(traces, tables, i, j, built):
    """Packet tables of traces i and j, built on demand (None if either has no layer probes)."""
    if tables is not None:
        return tables[i], tables[j]
    if not (_has_layers(traces[i]) and _has_layers(traces[j])):
        return None
    from . import app
    from .packets import packet_table, prepare
    for k in (i, j):
        if k not in built:  # as analysis.host.analyze_host builds it, copy layer included
            prep = prepare(traces[k].events)
            built[k] = packet_table(traces[k], prep)
            app.attach_copies(built[k], app.copy_pieces(traces[k].events, prep))
    return built[i], built[j]

def _fresh(flow, t, seq, end) -> np.ndarray:
    """Mask of frames whose bytes reach beyond every earlier frame of their flow (by time):
    retransmissions and duplicates are False. Sequence numbers relative to each flow's first."""
    order = np.lexsort((t, flow))
    f, sq, en = flow[order], seq[order].astype(np.int64), end[order].astype(np.int64)
    start = np.r_[True, f[1:] != f[:-1]]
    base = np.maximum.accumulate(np.where(start, np.arange(len(f)), 0))
    rel = (en - sq[base]) & M32
    # running maximum within each flow: offset each flow by a large step so one accumulate works
    gid = np.cumsum(start) - 1
    big = rel + gid * (1 << 33)
    prev = np.r_[-1, np.maximum.accumulate(big)[:-1]]
    out = np.empty(len(f), bool)
    out[order] = start | (big > prev)
    return out


def _runs(is_req: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Run number of each element of (flow, time)-ordered request/response flags."""
    change = np.r_[True, (is_req[1:] != is_req[:-1]) | (flow[1:] != flow[:-1])]
    return np.cumsum(change) - 1


def decompose_rtt(ta, tb, m: PairMatches, alignment: Alignment, tables=None,
                  roles=None) -> dict:
    """Per request/response: the client's NIC RTT and its parts; arrays in the client's clock.

    Requests are runs of client data frames, responses the following run of server data frames,
    per flow, ordered by the client's own clock (its send times and its receive times).
    tables: the two hosts' analysis.packets.PacketTable (a, b), for the per-layer breakdown.
    """
    pa, pb = ta.events["pkt"], tb.events["pkt"]
    (f_ab, c_ab), (f_ba, c_ba), _ = roles or _flow_roles(ta, tb, m)
    len_ab = pa["len"][m.ab.send_idx] if len(m.ab) else np.zeros(0)
    len_ba = pb["len"][m.ba.send_idx] if len(m.ba) else np.zeros(0)
    rows = []
    # orient each frame as client->server or server->client, with both hosts' times and events
    for client_is_a in (True, False):
        fwd, bwd = (m.ab, m.ba) if client_is_a else (m.ba, m.ab)
        f_fwd, f_bwd = (f_ab, f_ba) if client_is_a else (f_ba, f_ab)
        c_fwd, c_bwd = (c_ab, c_ba) if client_is_a else (c_ba, c_ab)
        l_fwd, l_bwd = (len_ab, len_ba) if client_is_a else (len_ba, len_ab)
        cpk, spk = (pa, pb) if client_is_a else (pb, pa)
        # client -> server and server -> client data frames that carry new bytes: a
        # retransmission (often spurious, of an earlier response) must not start a "response"
        req = c_fwd & (l_fwd > 0)
        req[req] = _fresh(f_fwd[req], fwd.s_ns[req], cpk["seq"][fwd.send_idx[req]],
                          cpk["end_seq"][fwd.send_idx[req]])
        rsp = (~c_bwd) & (l_bwd > 0)
        rsp[rsp] = _fresh(f_bwd[rsp], bwd.r_ns[rsp], cpk["seq"][bwd.recv_idx[rsp]],
                          cpk["end_seq"][bwd.recv_idx[rsp]])
        if not req.any() or not rsp.any():
            continue
        flow = np.r_[f_fwd[req], f_bwd[rsp]]
        tc = np.r_[fwd.s_ns[req], bwd.r_ns[rsp]]      # client's clock: send / receive
        ts = np.r_[fwd.r_ns[req], bwd.s_ns[rsp]]      # server's clock: receive / send
        ic = np.r_[fwd.send_idx[req], bwd.recv_idx[rsp]]  # client's pkt events
        is_ = np.r_[fwd.recv_idx[req], bwd.send_idx[rsp]]  # server's pkt events
        isreq = np.r_[np.ones(req.sum(), bool), np.zeros(rsp.sum(), bool)]
        order = np.lexsort((tc, flow))
        flow, tc, ts, ic, is_, isreq = (v[order] for v in (flow, tc, ts, ic, is_, isreq))
        run = _runs(isreq, flow)
        nrun = run[-1] + 1
        # last request frame of a run (client clock), first response frame of a run
        last = np.zeros(nrun, np.int64)
        np.maximum.at(last, run, np.arange(len(run)))  # sorted by time within a flow
        firstidx = np.full(nrun, len(run), np.int64)
        np.minimum.at(firstidx, run, np.arange(len(run)))
        run_req = isreq[firstidx]
        run_flow = flow[firstidx]
        k = np.flatnonzero(run_req[:-1] & ~run_req[1:] & (run_flow[:-1] == run_flow[1:]))
        if len(k) == 0:
            continue
        li, fi = last[k], firstidx[k + 1]
        client, server = (m.a, m.b) if client_is_a else (m.b, m.a)
        ev = {"req_client": ic[li], "req_server": is_[li], "rsp_server": is_[fi],
              "rsp_client": ic[fi]}
        ctab, stab_ = ((tables[0], tables[1]) if client_is_a else (tables[1], tables[0])) \
            if tables is not None else (None, None)
        cpkt, spkt = (pa, pb) if client_is_a else (pb, pa)
        rows.append((client, server, tc[li], ts[li], ts[fi], tc[fi], run_flow[k], ev,
                     (ctab, cpkt), (stab_, spkt)))
    if not rows:
        return {"requests": 0}
    out = {"requests": 0, "per_client": []}
    for client, server, c_out, s_in, s_out, c_in, flow, ev, cside, sside in rows:
        to_c = alignment.pair(server, client)
        t0 = to_c.t0_to
        e_in, lo_in, hi_in = to_c.map_c(s_in)
        e_out, lo_out, hi_out = to_c.map_c(s_out)
        rtt = (c_in - c_out).astype(np.float64)
        base_out = (t0 - c_out).astype(np.float64)
        base_in = (c_in - t0).astype(np.float64)
        l1, l1_lo, l1_hi = base_out + e_in, base_out + lo_in, base_out + hi_in
        l2, l2_lo, l2_hi = base_in - e_out, base_in - hi_out, base_in - lo_out
        server_t = e_out - e_in                       # in the client's timebase
        server_raw = (s_out - s_in).astype(np.float64)  # in the server's own clock
        resid = rtt - (l1 + server_t + l2)
        entry = {
            "client": client, "server": server, "timebase": client,
            "rtt": rtt, "l_net_1": l1, "l_net_1_lo": l1_lo, "l_net_1_hi": l1_hi,
            "server_time": server_t, "server_own_clock": server_raw,
            "l_net_2": l2, "l_net_2_lo": l2_lo, "l_net_2_hi": l2_hi,
            "residual": resid, "flow": flow, "client_out_ns": c_out}
        if cside[0] is not None and sside[0] is not None:
            entry["layers"] = _layer_parts(cside, sside, ev, to_c, l1, l2)
        out["per_client"].append(entry)
        out["requests"] += len(rtt)
    return out


def table_rows(table, pkt: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The packet-table row of each wire event pkt[idx] (-1 where the table has none).

    Joins on (time, seq, direction): the table's wire events are the same events."""
    w = table.wire
    if len(idx) == 0 or len(w["ts"]) == 0:
        return np.full(len(idx), -1, np.int64)
    order = np.lexsort((w["seq"], w["ts"]))
    wt, ws = w["ts"][order].astype(np.int64), w["seq"][order].astype(np.int64)
    wd, wr = w["direction"][order], w["row"][order]
    qt = pkt["ts_ns"][idx].astype(np.int64)
    qs = pkt["seq"][idx].astype(np.int64)
    qd = (pkt["probe"][idx] == RECV).astype(wd.dtype)
    pos = np.searchsorted(wt, qt)
    out = np.full(len(idx), -1, np.int64)
    for k in range(4):  # a few events may share a nanosecond
        j = np.minimum(pos + k, len(wt) - 1)
        hit = (out < 0) & (wt[j] == qt) & (ws[j] == qs) & (wd[j] == qd)
        out[hit] = wr[j][hit]
    return out


SEND_LAYERS = ("L_TCP_{}", "L_IP_{}", "L_NIC_{}")
RECV_LAYERS = ("L_NIC_{}", "L_IP_{}", "L_TCP_{}")


def _layer_parts(cside, sside, ev, to_c, l1, l2) -> dict:
    """Both hosts' layers for each request, named as the seed names them, in client time.

    client: L_TCP_1, L_IP_1, L_NIC_1 (request out), L_NIC_4, L_IP_4, L_TCP_4 (response in);
    server: L_NIC_2, L_IP_2, L_TCP_2 (request in), L_APP_2 (request read to response handed to
    TCP), L_TCP_3, L_IP_3, L_NIC_3 (response out). Total: the request's tcp_transmit_skb to the
    response's first copy to the application, on the client (one clock). The layer times of a
    row are those of its first wire frame (GRO/TSO), so with multi-frame requests or responses
    the parts may not add up exactly: the residual says by how much.
    """
    (ctab, cpkt), (stab_, spkt) = cside, sside
    c_req = ctab.pkt["ts"][np.maximum(table_rows(ctab, cpkt, ev["req_client"]), 0)]
    c_rsp = ctab.pkt["ts"][np.maximum(table_rows(ctab, cpkt, ev["rsp_client"]), 0)]
    s_req = stab_.pkt["ts"][np.maximum(table_rows(stab_, spkt, ev["req_server"]), 0)]
    s_rsp = stab_.pkt["ts"][np.maximum(table_rows(stab_, spkt, ev["rsp_server"]), 0)]
    for arr, q in ((c_req, "req_client"), (c_rsp, "rsp_client"), (s_req, "req_server"),
                   (s_rsp, "rsp_server")):
        side = ctab if q.endswith("client") else stab_
        pk = cpkt if q.endswith("client") else spkt
        arr[table_rows(side, pk, ev[q]) < 0] = -1
    alpha = to_c.alpha  # server durations into the client's timebase

    def d(end, start, scale=1.0):
        ok = (end >= 0) & (start >= 0)
        return np.where(ok, (end - start) * scale, np.nan)

    parts = {}
    for i, name in enumerate(SEND_LAYERS):
        parts[name.format(1)] = d(c_req[:, i + 1], c_req[:, i])
    parts["L_NET_1"] = l1
    for i, name in enumerate(RECV_LAYERS):
        parts[name.format(2)] = d(s_req[:, i + 1], s_req[:, i], alpha)
    parts["L_APP_2"] = d(s_rsp[:, 0], s_req[:, 3], alpha)
    for i, name in enumerate(SEND_LAYERS):
        parts[name.format(3)] = d(s_rsp[:, i + 1], s_rsp[:, i], alpha)
    parts["L_NET_2"] = l2
    for i, name in enumerate(RECV_LAYERS):
        parts[name.format(4)] = d(c_rsp[:, i + 1], c_rsp[:, i])
    total = d(c_rsp[:, 3], c_req[:, 0])
    summed = np.sum([v for v in parts.values()], axis=0)
    return {"parts": parts, "total": total, "residual": total - summed}


def _requests_summary(req: dict) -> dict:
    if not req.get("per_client"):
        return {"requests": 0}
    res = []
    for r in req["per_client"]:
        ok = np.isfinite(r["residual"])
        res.append({
            "client": r["client"], "server": r["server"], "timebase": r["timebase"],
            "requests": int(len(r["rtt"])),
            "parts": ("rtt (client NIC out to NIC in) = l_net_1 + server_time (server NIC in to "
                      "NIC out, in the client's timebase) + l_net_2"),
            "rtt": stats(r["rtt"]), "l_net_1": stats(r["l_net_1"]), "server_time": stats(r["server_time"]),
            "l_net_2": stats(r["l_net_2"]),
            "server_time_negative": int((r["server_own_clock"] < 0).sum()),
            "add_up": {"checked": int(ok.sum()),
                       "max_abs_residual_ns": float(np.abs(r["residual"][ok]).max())
                       if ok.any() else None,
                       "ok": bool(ok.any() and np.abs(r["residual"][ok]).max() < 1.0)},
            "one_way_sum_exceeds_rtt": int((r["l_net_1"] + r["l_net_2"] > r["rtt"] + 1.0).sum()),
        })
        if "layers" in r:
            lay = r["layers"]
            ok = np.isfinite(lay["residual"])
            res[-1]["layers"] = {
                "total": "client tcp_transmit_skb (request) to skb_copy_datagram_iter (response)",
                "complete": int(ok.sum()),
                "parts": {k: stats(v) for k, v in lay["parts"].items()},
                "total_stats": stats(lay["total"]),
                "residual": stats(lay["residual"]),
                "adds_up_within_1ns": int((np.abs(lay["residual"][ok]) < 1.0).sum()),
            }
    return {"requests": int(req["requests"]), "per_client": res}
