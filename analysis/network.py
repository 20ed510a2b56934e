"""NIC-to-NIC latency (L_NET) and RTT decomposition, from frames matched across hosts.

Two stages, so that the heavy one runs per partition and the cheap one once, after the clocks
are aligned::

    network_inputs(traces, hosts, matches, host_results) -> {(i, j): PairInputs}
        alignment-independent: per host pair, the matched frames with their flow and role, and
        per request the four NIC times and both hosts' layer times (per partition)
    merge_inputs([{(i, j): PairInputs}, ...]) -> {(i, j): PairInputs}
    network_result(inputs, alignment) -> NetworkResult     (after analysis.clock)
    NetworkResult.report_section() -> dict   (JSON-ready)
    analysis.plots_network.plot_network(result, alignment, outdir) -> list of paths

L_NET. For each matched frame (analysis.match), the one-way delay NIC to NIC, signed (never
abs()), in the first host's timebase of the pair, with its guaranteed interval [lo, hi] from the
clock alignment. A value below zero or an interval entirely below zero means the alignment or
the match is wrong, and is reported, not hidden. Per flow, the side that opened the connection
is the client S and the other the server R, by the one role rule of analysis.packets (the first
host's flow table): L_NET_1 is S->R, L_NET_2 is R->S.

RTT decomposition. For each request (a run of client data frames) and its response (the following
run of server data frames): the client's NIC-to-NIC RTT (last request frame out, first response
frame in, one clock) = L_NET_1 + server time (request frame in to response frame out, the
server's clock) + L_NET_2. With an affine alignment the parts add up exactly; the report checks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from mbrec.analysis.clock import Alignment
from mbrec.analysis.flowid import endpoint_hash, flow_hash
from mbrec.analysis.match import M32, RECV, PairMatches

ROLE_FROM_TRAFFIC = ("syn", "state")  # client_source values that saw the opening, not a guess


# --------------------------------------------------------------------------------------------
# Typed columns between the stages

@dataclass
class Frames:
    """One direction of one host pair: the matched frames, alignment-independent."""

    s_ns: np.ndarray         # send time, sender's clock
    r_ns: np.ndarray         # receive time, receiver's clock
    flow: np.ndarray         # uint64 flow hash (analysis.flowid), the same on both hosts
    client_sent: np.ndarray  # True: sent by the flow's client (L_NET_1), False: L_NET_2
    nat: np.ndarray          # the 4-tuple differs between the hosts
    n_ambiguous: int = 0

    def __len__(self):
        return len(self.s_ns)


@dataclass
class RequestRows:
    """Requests of the flows whose client is `client`: the four NIC times, each in its own
    host's clock, and both hosts' per-layer times of the frames (-1 where unseen)."""

    client: str
    server: str
    client_is_a: bool
    c_out: np.ndarray        # last request frame out, client clock
    s_in: np.ndarray         # that frame in, server clock
    s_out: np.ndarray        # first response frame out, server clock
    c_in: np.ndarray         # that frame in, client clock
    flow: np.ndarray
    c_req: np.ndarray | None = None   # (n, 4) client layers of the request frame
    c_rsp: np.ndarray | None = None   # (n, 4) client layers of the response frame
    s_req: np.ndarray | None = None   # (n, 4) server layers of the request frame
    s_rsp: np.ndarray | None = None   # (n, 4) server layers of the response frame

    def __len__(self):
        return len(self.c_out)


@dataclass
class PairInputs:
    a: str
    b: str
    ab: Frames
    ba: Frames
    roles_guessed: set       # flow hashes whose client was inferred from ports
    requests: list           # RequestRows, client a first

    @property
    def n_usable(self) -> int:
        return len(self.ab) + len(self.ba)


def concat(items: list):
    """One dataclass of columns from several: arrays concatenated, counts added, the rest
    taken from the first."""
    first = items[0]
    out = {}
    for f in fields(first):
        vals = [getattr(x, f.name) for x in items]
        if isinstance(vals[0], np.ndarray):
            out[f.name] = np.concatenate(vals)
        elif vals[0] is None:
            out[f.name] = None
        elif isinstance(vals[0], int) and not isinstance(vals[0], bool):
            out[f.name] = sum(vals)
        else:
            out[f.name] = vals[0]
    return type(first)(**out)


def merge_inputs(parts: list[dict]) -> dict:
    """The inputs of every partition as if the traces had been analysed whole."""
    keys = sorted({k for p in parts for k in p})
    out = {}
    for k in keys:
        items = [p[k] for p in parts if k in p]
        reqs: dict = {}
        for it in items:
            for r in it.requests:
                reqs.setdefault(r.client_is_a, []).append(r)
        out[k] = PairInputs(items[0].a, items[0].b, concat([x.ab for x in items]),
                            concat([x.ba for x in items]),
                            set().union(*(x.roles_guessed for x in items)),
                            [concat(reqs[c]) for c in (True, False) if c in reqs])
    return out


# --------------------------------------------------------------------------------------------
# Stage 1 (per partition): frames with flows and roles, request rows

def _frame_roles(hr, idx, sent_by_host: bool):
    """Flow hash and 'sent by the client' for pkt events idx of the host whose analysis is hr,
    by the host's flow table (one role rule, analysis.packets); and which flows were guessed."""
    flow_i, local = hr.flow_ids["pkt"]
    f, loc = flow_i[idx], local[idx].astype(np.int64)
    sender = loc if sent_by_host else 1 - loc
    flows = hr.table.flows
    client_sent = sender == flows.client[f]
    # the connection hash of each frame is its flow's (the hash is the same from either end)
    per_flow = flow_hash(endpoint_hash(flows.ep_addr[:, 0], flows.ep_port[:, 0]),
                         endpoint_hash(flows.ep_addr[:, 1], flows.ep_port[:, 1]))
    h = per_flow[f]
    src = np.asarray(hr.table.flows.client_source, dtype=object)
    guessed = ~np.isin(src[f], ROLE_FROM_TRAFFIC) if len(f) else np.zeros(0, bool)
    return h, client_sent, set(np.unique(h[guessed]).tolist())


def network_inputs(traces, hosts: list[str], matches: dict, host_results: list) -> dict:
    """{(i, j): PairInputs} for every matched pair: what L_NET and the RTT decomposition need
    that does not depend on the clock alignment. host_results: analysis.host.HostResult per
    trace (flow tables and roles; their packet tables give the per-layer breakdown)."""
    out = {}
    for (i, j), m in sorted(matches.items()):
        hr = host_results[i]
        f_ab, c_ab, g1 = _frame_roles(hr, m.ab.send_idx, True)
        f_ba, c_ba, g2 = _frame_roles(hr, m.ba.recv_idx, False)
        ab = Frames(m.ab.s_ns, m.ab.r_ns, f_ab, c_ab, m.ab.nat, m.ab.n_ambiguous)
        ba = Frames(m.ba.s_ns, m.ba.r_ns, f_ba, c_ba, m.ba.nat, m.ba.n_ambiguous)
        tables = (host_results[i].table, host_results[j].table) \
            if _has_layers(traces[i]) and _has_layers(traces[j]) else None
        reqs = request_rows(traces[i], traces[j], m, ab, ba, tables)
        out[(i, j)] = PairInputs(hosts[i], hosts[j], ab, ba, g1 | g2, reqs)
    return out


def _has_layers(trace) -> bool:
    from mbrec.analysis.match import XMIT
    pkt = trace.events.get("pkt")
    if pkt is None:
        return False
    probe = pkt["probe"]
    step = 1 << 16  # a block at a time: the first almost always answers
    return any(bool(((b != XMIT) & (b != RECV)).any())
               for b in (probe[i:i + step] for i in range(0, len(probe), step)))


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


def request_rows(ta, tb, m: PairMatches, ab: Frames, ba: Frames, tables=None) -> list:
    """Per client side: its requests (runs of client data frames) and the responses that follow
    (the next run of server data frames), per flow, ordered by the client's own clock.

    tables: the two hosts' analysis.packets.PacketTable (a, b), for the per-layer breakdown.
    """
    pa, pb = ta.events["pkt"], tb.events["pkt"]
    len_ab = pa["len"][m.ab.send_idx] if len(m.ab) else np.zeros(0)
    len_ba = pb["len"][m.ba.send_idx] if len(m.ba) else np.zeros(0)
    rows = []
    # orient each frame as client->server or server->client, with both hosts' times and events
    for client_is_a in (True, False):
        fwd, bwd = (m.ab, m.ba) if client_is_a else (m.ba, m.ab)
        ffwd, fbwd = (ab, ba) if client_is_a else (ba, ab)
        l_fwd, l_bwd = (len_ab, len_ba) if client_is_a else (len_ba, len_ab)
        cpk = pa if client_is_a else pb
        # client -> server and server -> client data frames that carry new bytes: a
        # retransmission (often spurious, of an earlier response) must not start a "response"
        req = ffwd.client_sent & (l_fwd > 0)
        req[req] = _fresh(ffwd.flow[req], fwd.s_ns[req], cpk["seq"][fwd.send_idx[req]],
                          cpk["end_seq"][fwd.send_idx[req]])
        rsp = (~fbwd.client_sent) & (l_bwd > 0)
        rsp[rsp] = _fresh(fbwd.flow[rsp], bwd.r_ns[rsp], cpk["seq"][bwd.recv_idx[rsp]],
                          cpk["end_seq"][bwd.recv_idx[rsp]])
        if not req.any() or not rsp.any():
            continue
        flow = np.r_[ffwd.flow[req], fbwd.flow[rsp]]
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
        r = RequestRows(client, server, client_is_a, tc[li], ts[li], ts[fi], tc[fi], run_flow[k])
        if tables is not None:
            ctab, stab_ = (tables[0], tables[1]) if client_is_a else (tables[1], tables[0])
            r.c_req = _layer_times(ctab, ic[li])
            r.c_rsp = _layer_times(ctab, ic[fi])
            r.s_req = _layer_times(stab_, is_[li])
            r.s_rsp = _layer_times(stab_, is_[fi])
        rows.append(r)
    return rows


def table_rows(table, idx: np.ndarray) -> np.ndarray:
    """The packet-table row of each wire event pkt[idx] of the table's trace (-1 where the
    table has none)."""
    w = table.wire
    if len(idx) == 0 or len(w["event"]) == 0:
        return np.full(len(idx), -1, np.int64)
    row_of = np.full(max(int(w["event"].max()), int(idx.max())) + 1, -1, np.int64)
    row_of[w["event"]] = w["row"]
    return row_of[idx]


def _layer_times(table, idx) -> np.ndarray:
    """(n, 4) layer times of the packet-table rows of wire events pkt[idx]; -1 where none."""
    rows = table_rows(table, idx)
    ts = table.pkt["ts"][np.maximum(rows, 0)].astype(np.int64)
    ts[rows < 0] = -1
    return ts


# --------------------------------------------------------------------------------------------
# Stage 2 (once, after the clock alignment): L_NET with intervals, the RTT parts

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
    flow: np.ndarray       # flow hash (analysis.flowid)
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
        out: dict = {"version": 1, "units": "ns",
               "definition": ("L_NET: NIC-to-NIC one-way delay, sender dev_hard_start_xmit to "
                              "receiver eth_type_trans, signed, in the first host's timebase; "
                              "lo/hi: the guaranteed interval from the clock alignment"),
               "pairs": [], "notes": list(self.notes)}
        for p in self.pairs:
            entry: dict = {"hosts": [p.a, p.b], "timebase": p.a, "clock_method": p.method,
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


def network_result(inputs: dict, alignment: Alignment) -> NetworkResult:
    """L_NET per matched frame and RTT decomposition per request, for every aligned host pair."""
    res = NetworkResult()
    for (i, j), pi in sorted(inputs.items()):
        a, b = pi.a, pi.b
        to_a = alignment.pair(b, a)
        if to_a is None:
            res.notes.append(f"{a} and {b}: frames matched but no clock alignment between them")
            continue
        fwd, bwd = one_way_delays(to_a, pi.ab.s_ns, pi.ab.r_ns, pi.ba.s_ns, pi.ba.r_ns)
        ab = DirLatency(a, b, a, fwd[0], fwd[1], fwd[2], pi.ab.s_ns, pi.ab.flow, pi.ab.client_sent, pi.ab.nat,
                        pi.ab.n_ambiguous, to_a.quality)
        ba = DirLatency(b, a, a, bwd[0], bwd[1], bwd[2], pi.ba.s_ns, pi.ba.flow, pi.ba.client_sent, pi.ba.nat,
                        pi.ba.n_ambiguous, to_a.quality)
        pn = PairNetwork(a, b, to_a.method, to_a.quality, ab, ba, len(pi.roles_guessed))
        pn.requests = request_result(pi.requests, alignment)
        res.pairs.append(pn)
        if to_a.quality == "failed":
            res.notes.append(f"{a}-{b}: clock alignment failed; L_NET left empty (NaN)")
    return res


def analyze_network(traces, alignment: Alignment, host_results: list | None = None
                    ) -> NetworkResult:
    """Both stages over whole traces (the matches are those alignment.matches holds);
    host_results: analysis.host.HostResult per trace, analysed here when not given."""
    if host_results is None:
        from mbrec.analysis.host import analyze_host
        host_results = [analyze_host(t) for t in traces]
    return network_result(network_inputs(traces, alignment.hosts, alignment.matches,
                                         host_results), alignment)


def request_result(rows: list, alignment: Alignment) -> dict:
    """Per client side: the RTT and its parts in the client's timebase."""
    if not rows:
        return {"requests": 0}
    out: dict = {"requests": 0, "per_client": []}
    for r in rows:
        to_c = alignment.pair(r.server, r.client)
        t0 = to_c.t0_to
        e_in, lo_in, hi_in = to_c.map_c(r.s_in)
        e_out, lo_out, hi_out = to_c.map_c(r.s_out)
        rtt = (r.c_in - r.c_out).astype(np.float64)
        base_out = (t0 - r.c_out).astype(np.float64)
        base_in = (r.c_in - t0).astype(np.float64)
        l1, l1_lo, l1_hi = base_out + e_in, base_out + lo_in, base_out + hi_in
        l2, l2_lo, l2_hi = base_in - e_out, base_in - hi_out, base_in - lo_out
        server_t = e_out - e_in                       # in the client's timebase
        server_raw = (r.s_out - r.s_in).astype(np.float64)  # in the server's own clock
        resid = rtt - (l1 + server_t + l2)
        entry = {
            "client": r.client, "server": r.server, "timebase": r.client,
            "rtt": rtt, "l_net_1": l1, "l_net_1_lo": l1_lo, "l_net_1_hi": l1_hi,
            "server_time": server_t, "server_own_clock": server_raw,
            "l_net_2": l2, "l_net_2_lo": l2_lo, "l_net_2_hi": l2_hi,
            "residual": resid, "flow": r.flow, "client_out_ns": r.c_out}
        if r.c_req is not None:
            entry["layers"] = _layer_parts(r, to_c.alpha, l1, l2)
        out["per_client"].append(entry)
        out["requests"] += len(rtt)
    return out


SEND_LAYERS = ("L_TCP_{}", "L_IP_{}", "L_NIC_{}")
RECV_LAYERS = ("L_NIC_{}", "L_IP_{}", "L_TCP_{}")


def _layer_parts(r: RequestRows, alpha: float, l1, l2) -> dict:
    """Both hosts' layers for each request, named as the seed names them, in client time.

    client: L_TCP_1, L_IP_1, L_NIC_1 (request out), L_NIC_4, L_IP_4, L_TCP_4 (response in);
    server: L_NIC_2, L_IP_2, L_TCP_2 (request in), L_APP_2 (request read to response handed to
    TCP), L_TCP_3, L_IP_3, L_NIC_3 (response out). Total: the request's tcp_transmit_skb to the
    response's first copy to the application, on the client (one clock). The layer times of a
    row are those of its first wire frame (GRO/TSO), so with multi-frame requests or responses
    the parts may not add up exactly: the residual says by how much. alpha: server durations
    into the client's timebase.
    """
    c_req, c_rsp, s_req, s_rsp = r.c_req, r.c_rsp, r.s_req, r.s_rsp

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
