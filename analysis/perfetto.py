"""The analysis as a Perfetto trace: every host on one timeline, in the reference host's clock.

``write_trace(analysis, path, flow=None, window=None, max_events=MAX_EVENTS) -> dict``

Layout (TrackEvent protos, from the ``perfetto`` package's own ``perfetto_trace_pb2``):

* one process per host, named by host; under it one track per flow ("client -> server"), and
  under each flow one track per latency (L_TCP_1, L_IP_1, ... in path order) with a slice per
  sample (per skb, per wire frame for the receive NIC layer, per turn for L_APP, per call for
  the waits), plus counter tracks for cwnd, flight size, srtt and the send queue from the flow
  snapshots;
* per host pair a "network" track with, per flow, L_NET_1 / L_NET_2: one slice per matched
  frame from the sender's dev_hard_start_xmit to the receiver's eth_type_trans;
* flow arrows: one TrackEvent flow (its own id, one start, one end) per link, from one layer of a
  packet to the next, sender NIC -> L_NET -> receiver NIC across hosts, and from a request's
  last received skb to the L_APP turn to the response's first transmission;
* every timestamp mapped to the reference host's clock with the fitted clock model (the
  estimate); the alignment (method, quality, bound width per host) in the trace's attributes and
  on a "clock alignment" marker, and each L_NET slice's guaranteed interval in its annotations.

Slices on one Perfetto track must nest; packets of one flow overlap in a layer (a qdisc holds
several), so overlapping slices go to extra lanes: sibling tracks of the same name, which the UI
shows as one track with the slices stacked.

Everything up to the encoding is numpy over columns; the encoding is one protobuf message per
event (the protos are the only writer allowed), done in chunks so memory holds the columns
and one chunk of messages, never the whole trace as messages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from mbrec.analysis.latency import NAMES, PROBES_OF
from mbrec.errors import MbrecError

# The size guard: about 2 M slices, 150 MB (the Perfetto UI holds the whole trace in the
# browser's memory)
MAX_EVENTS = 4_000_000
CHUNK = 20_000              # trace packets encoded per write
SEQ_ID = 1                  # one packet sequence: interned names are valid on it
NET_NAMES = ["L_NET_1", "L_NET_2"]
ALL_NAMES = NAMES + NET_NAMES
NAME_ID = {n: i for i, n in enumerate(ALL_NAMES)}
L_NET_ID = [NAME_ID[n] for n in NET_NAMES]
COUNTERS = (("snd_cwnd", "cwnd (segments)"), ("packets_in_flight", "flight size (packets)"),
            ("srtt_us", "srtt (us)"), ("app_wqueue", "send queue (bytes)"))
ANNOTATIONS = ["seq", "end_seq", "ip_id", "retransmission", "duplicate", "lost_events",
               "l_net_ns", "l_net_lo_ns", "l_net_hi_ns", "clock", "negative_estimate"]
ANN_ID = {n: i + 1 for i, n in enumerate(ANNOTATIONS)}


def _layer(name: str) -> tuple[int, int]:
    """(direction 0 send / 1 receive, rank in path order) of a latency name."""
    kind, _, num = name.rpartition("_")
    send = int(num) in (1, 3)
    order = {"L_TCP": 0, "L_IP": 1, "L_NIC": 2} if send else {"L_NIC": 0, "L_IP": 1, "L_TCP": 2}
    return (0 if send else 1), order.get(kind, -1)


# --------------------------------------------------------------------------------------------
# Adapters: the only places that read the analysis' objects (one per source)

@dataclass
class HostView:
    name: str
    samples: dict        # name (index into NAMES), flow, t, dur, row
    rows: dict           # per packet-table row: seq, end_seq, ip_id, retrans, duplicate
    row_flow: np.ndarray  # per packet-table row: its flow
    wire: dict           # per wire event: ts, direction, row
    flow_labels: list    # per flow: "client -> server"
    ep_addr: np.ndarray  # (flows, 2, 16) uint8
    ep_port: np.ndarray  # (flows, 2)
    lost: dict           # probe -> events lost
    series: dict         # flow snapshots: flow, t and the COUNTERS columns


def _host_view(analysis, i: int) -> HostView:
    """What the export needs of host i's results (analysis.host.HostResult and its series)."""
    hr = analysis.results[i]
    s, pk, w = hr.samples, hr.table.pkt, hr.table.wire
    rows = {"seq": pk.get("seq"), "end_seq": pk.get("end_seq"), "ip_id": pk.get("ip_id"),
            "retrans": pk.get("retrans"), "duplicate": pk.get("duplicate")}
    n = len(pk["flow"])
    rows = {k: (np.full(n, -1, np.int64) if v is None else v) for k, v in rows.items()}
    labels = [f"{f['client']} -> {f['server']}" for f in analysis.flow_names[i]]
    return HostView(analysis.names[i],
                    {"name": s["name"], "flow": s["flow"], "t": s["t"], "dur": s["value"],
                     "row": s["row"]},
                    rows, np.asarray(pk["flow"], np.int64),
                    {"ts": w["ts"], "direction": w["direction"], "row": w["row"]},
                    labels, hr.table.flows.ep_addr, hr.table.flows.ep_port,
                    dict(hr.lost or {}), analysis.series[i])


@dataclass
class NetDir:
    """One direction of one host pair: per matched frame, both ends' own clocks and L_NET."""
    src: int             # host index
    dst: int
    pair: tuple          # (a, b) host indices of the pair, a < b
    s_ns: np.ndarray     # sender's clock
    r_ns: np.ndarray     # receiver's clock
    value: np.ndarray    # L_NET estimate (ns, the pair's timebase), NaN if not aligned
    lo: np.ndarray
    hi: np.ndarray
    client_sent: np.ndarray
    quality: str


def _network_view(analysis) -> list[NetDir]:
    """Matched frames and L_NET (analysis.network.NetworkResult and the alignment's matches)."""
    net, al = analysis.network, analysis.alignment
    if net is None or al is None:
        return []
    index = {h: k for k, h in enumerate(analysis.names)}
    out = []
    for p in net.pairs:
        i, j = index[p.a], index[p.b]
        m = al.matches.get((min(i, j), max(i, j)))
        if m is None:
            continue
        for d, dm in ((p.ab, m.ab if i < j else m.ba), (p.ba, m.ba if i < j else m.ab)):
            out.append(NetDir(index[d.src], index[d.dst], (min(i, j), max(i, j)),
                              np.asarray(dm.s_ns, np.int64), np.asarray(dm.r_ns, np.int64),
                              d.value, d.lo, d.hi, d.client_sent, str(d.quality)))
    return out


def _clock_view(analysis) -> tuple[list, dict]:
    """Per host a function local ns -> reference ns (estimate), and the alignment's metadata
    (from the report's cross_host section)."""
    cross = analysis.report.get("cross_host") or {}
    section = cross.get("alignment") or {}
    al = analysis.alignment
    maps = []
    for h in analysis.names:
        tr = al.transforms.get(h) if al is not None else None
        maps.append((lambda t, tr=tr: tr.to_reference(t)[0]) if tr is not None else None)
    meta = {"method": section.get("method", "none"),
            "reference": section.get("reference", analysis.names[0] if analysis.names else ""),
            "status": cross.get("status", "none"), "reason": cross.get("reason", ""),
            "hosts": {e["host"]: {"quality": e.get("quality"), "path": e.get("path"),
                                  "bound_width_ns": e.get("bound_width_ns"),
                                  "offset_ns": e.get("offset_ns"), "drift_ppm": e.get("drift_ppm")}
                      for e in section.get("hosts", [])}}
    for h, m in zip(analysis.names, maps):
        if m is None and len(analysis.names) > 1:  # no clock relation: drawn in its own clock
            meta["hosts"][h] = {"quality": "not aligned: its own clock", "path": [h],
                                "bound_width_ns": None}
    return maps, meta


# --------------------------------------------------------------------------------------------
# Slices, arrows and counters as columns

@dataclass
class _Parts:
    """Columns collected in parts (per host, per network direction), concatenated once."""
    cols: dict = field(default_factory=dict)

    def add(self, **kw):
        for k, v in kw.items():
            self.cols.setdefault(k, []).append(np.asarray(v))

    def done(self, names) -> dict:
        out = {}
        for k in names:
            parts = self.cols.get(k, [])
            out[k] = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return out


# group: the track before lanes; start/end: reference ns; the rest: annotations (-1 / NaN: none)
SLICE_COLS = ("group", "name", "start", "end", "seq", "end_seq", "ip_id", "bits", "lo", "hi",
              "est")
BIT_RETRANS, BIT_DUP, BIT_LOST, BIT_NEG = 1, 2, 4, 8


def _to_ref(fmap, t):
    t = np.asarray(t, np.int64)
    if fmap is None or len(t) == 0:
        return t.copy()
    est = fmap(t)
    return np.where(np.isfinite(est), np.round(est), t).astype(np.int64)


def _flow_selected(h: HostView, flow) -> np.ndarray:
    """Per flow of a host: whether an endpoint matches --flow (as `mbrec replay` parses it)."""
    n = len(h.flow_labels)
    if flow is None:
        return np.ones(n, bool)
    addr, port = flow
    hit = np.zeros(n, bool)
    for k in (0, 1):
        m = np.ones(n, bool)
        if port is not None:
            m &= h.ep_port[:, k] == port
        if addr is not None:
            m &= (h.ep_addr[:, k] == addr).all(axis=1)
        hit |= m
    return hit


@dataclass
class Built:
    slices: dict
    groups: list          # per group: (host or -1 for network, parent key, name id)
    parents: list         # per parent key: (host index or -1, label, pair)
    arrows: np.ndarray    # (n, 2) slice indices: from, to
    counters: dict        # host, ctrack, t, value
    ctracks: list         # per counter track: (parent key, label)
    hosts: list
    meta: dict
    first: int            # reference ns of the first event of all hosts (before --flow)


def build(analysis, flow=None) -> Built:
    """All slices, arrows and counters in the reference clock (no window applied yet)."""
    hosts = [_host_view(analysis, i) for i in range(len(analysis.names))]
    maps, meta = _clock_view(analysis)
    net = _network_view(analysis)
    sl = _Parts()
    groups: list = []
    parents: list = []
    gindex: dict = {}
    pindex: dict = {}
    arrow_parts: list[np.ndarray] = []
    host_slice = []  # per host: (sample -> slice index, then the kept samples' columns)
    offset = 0

    def parent(key, host, label, pair=None):
        if key not in pindex:
            pindex[key] = len(parents)
            parents.append((host, label, pair))
        return pindex[key]

    def parents_of(host, values, key_label):
        """Parent key of each value (flow), looked up once per distinct value."""
        if len(values) == 0:
            return np.zeros(0, np.int64)
        uniq, inv = np.unique(values, return_inverse=True)
        return np.array([parent(*key_label(v)) for v in uniq.tolist()], np.int64)[inv]

    def group_ids(host, pkey, name_ids):
        """Group (track before lanes) of each (parent, name) pair."""
        if len(name_ids) == 0:
            return np.zeros(0, np.int32)
        uniq, inv = np.unique(np.stack([pkey, name_ids], axis=1), axis=0, return_inverse=True)
        ids = []
        for k in map(tuple, uniq.tolist()):
            if k not in gindex:
                gindex[k] = len(groups)
                groups.append((host, k[0], k[1]))
            ids.append(gindex[k])
        return np.array(ids, np.int32)[inv.ravel()]

    for hi_, h in enumerate(hosts):
        s = h.samples
        keep = _flow_selected(h, flow)[s["flow"]] if len(s["flow"]) else np.zeros(0, bool)
        idx = np.flatnonzero(keep)
        pkeys = parents_of(hi_, s["flow"][idx],
                           lambda f, hi_=hi_, h=h: (("flow", hi_, f), hi_, h.flow_labels[f]))
        name = s["name"][idx].astype(np.int16)
        t0 = s["t"][idx].astype(np.int64)
        t1 = t0 + s["dur"][idx].astype(np.int64)
        row = s["row"][idx].astype(np.int64)
        has_row = row >= 0
        r = np.maximum(row, 0)
        rw = h.rows

        def take(col, default=-1):
            v = np.asarray(rw[col])[r].astype(np.int64) if len(rw[col]) else np.zeros(len(r), np.int64)
            return np.where(has_row, v, default)
        bits = np.where(take("retrans", 0) > 0, BIT_RETRANS, 0) | \
            np.where(take("duplicate", 0) > 0, BIT_DUP, 0)
        lost_names = {n for n in NAMES if any(h.lost.get(p) for p in PROBES_OF.get(n, []))}
        if lost_names:
            lost_ids = [NAMES.index(n) for n in lost_names]
            bits = bits | np.where(np.isin(name, lost_ids), BIT_LOST, 0)
        start, end = _to_ref(maps[hi_], t0), _to_ref(maps[hi_], t1)
        end = np.maximum(end, start)
        gid = group_ids(hi_, pkeys, name)
        nan = np.full(len(idx), np.nan)
        sl.add(group=gid, name=name, start=start, end=end, seq=take("seq"),
               end_seq=take("end_seq"), ip_id=take("ip_id").astype(np.int32),
               bits=bits.astype(np.int8), lo=nan, hi=nan, est=nan)
        smap = np.full(len(s["flow"]), -1, np.int64)
        smap[idx] = offset + np.arange(len(idx))
        host_slice.append((smap, name, row, idx, s["flow"][idx], t0, t1))
        arrow_parts += _layer_arrows(smap[idx], name, row)
        arrow_parts += _app_arrows(smap[idx], name, s["flow"][idx], t0, t1, row)
        offset += len(idx)

    # the network leg, per host pair and flow
    for d in net:
        hs, hd = hosts[d.src], hosts[d.dst]
        srow = _wire_rows(hs.wire, 0, d.s_ns)
        sflow = np.where(srow >= 0, hs.row_flow[np.maximum(srow, 0)], -1) if len(hs.row_flow) \
            else np.full(len(srow), -1, np.int64)
        ok = sflow >= 0
        if flow is not None and len(sflow):
            ok &= _flow_selected(hs, flow)[np.maximum(sflow, 0)]
        idx = np.flatnonzero(ok)
        a, b = d.pair
        pkeys = parents_of(-1, sflow[idx], lambda f, a=a, b=b, d=d, hs=hs, hd=hd: (
            ("net", a, b, d.src, f), -1, f"{hs.flow_labels[f]} ({hs.name} -> {hd.name})", (a, b)))
        name = np.where(d.client_sent[idx], L_NET_ID[0], L_NET_ID[1]).astype(np.int16)
        start = _to_ref(maps[d.src], d.s_ns[idx])
        end = _to_ref(maps[d.dst], d.r_ns[idx])
        neg = end < start
        end = np.maximum(end, start)
        gid = group_ids(-1, pkeys, name)
        rws = hs.rows
        r = np.maximum(srow[idx], 0)
        col = (lambda c: np.asarray(rws[c])[r].astype(np.int64)) if len(rws["seq"]) else \
            (lambda c: np.full(len(idx), -1, np.int64))
        sl.add(group=gid, name=name, start=start, end=end, seq=col("seq"),
               end_seq=col("end_seq"), ip_id=col("ip_id").astype(np.int32),
               bits=np.where(neg, BIT_NEG, 0).astype(np.int8), lo=d.lo[idx], hi=d.hi[idx],
               est=d.value[idx])
        net_ids = offset + np.arange(len(idx))
        offset += len(idx)
        # sender's NIC slice of the packet -> L_NET -> receiver's NIC slice of the frame
        nic_send = _by_row(host_slice[d.src], lambda n: _layer(n) == (0, 2))
        src_sl = nic_send.get_many(srow[idx])
        arrow_parts.append(np.stack([src_sl, net_ids], axis=1)[src_sl >= 0])
        dst_sl = _recv_nic_slices(host_slice[d.dst], d.r_ns[idx])
        arrow_parts.append(np.stack([net_ids, dst_sl], axis=1)[dst_sl >= 0])
        meta.setdefault("l_net_quality", {})[f"{hs.name}->{hd.name}"] = d.quality

    slices = sl.done(SLICE_COLS)
    arrows = np.concatenate([a.reshape(-1, 2) for a in arrow_parts]) if arrow_parts else \
        np.zeros((0, 2), np.int64)
    counters, ctracks = _counters(hosts, maps, flow, parent)
    # --time counts from the first event of any host, whatever --flow keeps (as in replay)
    firsts = [int(_to_ref(maps[k], [np.min(t)])[0]) for k, h in enumerate(hosts)
              for t in (h.samples["t"], h.series.get("t", ())) if len(t)]
    return Built(slices, groups, parents, arrows.astype(np.int64), counters, ctracks,
                 [h.name for h in hosts], meta, min(firsts, default=0))


def _wire_rows(wire, direction: int, ts: np.ndarray) -> np.ndarray:
    """The packet-table row of each wire event at these times (one host's own clock)."""
    sel = np.flatnonzero(np.asarray(wire["direction"]) == direction)
    wt = np.asarray(wire["ts"], np.int64)[sel]
    order = np.argsort(wt, kind="stable")
    wt, wr = wt[order], np.asarray(wire["row"], np.int64)[sel][order]
    if len(wt) == 0:
        return np.full(len(ts), -1, np.int64)
    pos = np.minimum(np.searchsorted(wt, ts), len(wt) - 1)
    return np.where(wt[pos] == ts, wr[pos], -1)


class _RowMap:
    def __init__(self, size):
        self.m = np.full(size + 1, -1, np.int64)

    def get_many(self, rows):
        rows = np.asarray(rows, np.int64)
        return np.where(rows >= 0, self.m[np.clip(rows, 0, len(self.m) - 1)], -1)


def _by_row(hs, pred) -> _RowMap:
    """Packet-table row -> slice index of the one sample per row of the layers pred() picks."""
    smap, name, row, idx, _, _, _ = hs
    ids = [k for k, n in enumerate(NAMES) if pred(n)]
    sel = np.isin(name, ids) & (row >= 0)
    rm = _RowMap(int(row.max()) + 1 if len(row) else 0)
    rm.m[row[sel]] = smap[idx[sel]]
    return rm


def _recv_nic_slices(hs, r_ns) -> np.ndarray:
    """The receive-NIC slice (one per wire frame) starting at each of these receive times."""
    smap, name, row, idx, _, t0, _ = hs
    ids = [k for k, n in enumerate(NAMES) if _layer(n) == (1, 0)]
    sel = np.flatnonzero(np.isin(name, ids))
    t = t0[sel]
    order = np.argsort(t, kind="stable")
    t, sl = t[order], smap[idx[sel]][order]
    if len(t) == 0:
        return np.full(len(r_ns), -1, np.int64)
    pos = np.minimum(np.searchsorted(t, r_ns), len(t) - 1)
    return np.where(t[pos] == r_ns, sl[pos], -1)


def _layer_arrows(slice_ids, name, row) -> list:
    """Within one host: each packet's layer to its next layer (same packet-table row)."""
    out = []
    dirs = np.array([_layer(n)[0] for n in NAMES] + [-1, -1])
    ranks = np.array([_layer(n)[1] for n in NAMES] + [-1, -1])
    d, rk = dirs[name], ranks[name]
    nrows = int(row.max()) + 2 if len(row) else 1
    for direction in (0, 1):
        for a in (0, 1):
            src = np.flatnonzero((d == direction) & (rk == a) & (row >= 0))
            dst = np.flatnonzero((d == direction) & (rk == a + 1) & (row >= 0))
            m = np.full(nrows, -1, np.int64)
            m[row[dst]] = slice_ids[dst]
            to = m[row[src]]
            ok = to >= 0
            out.append(np.stack([slice_ids[src][ok], to[ok]], axis=1))
    return out


def _app_arrows(slice_ids, name, flow, t0, t1, row) -> list:
    """Request to response: the last received TCP-layer slice of the flow ending at or before
    the L_APP turn starts -> L_APP -> the send TCP-layer slice starting when the turn ends."""
    app_ids = [NAMES.index("L_APP_1"), NAMES.index("L_APP_2")]
    rcv_tcp = [NAMES.index("L_TCP_2"), NAMES.index("L_TCP_4")]
    snd_tcp = [NAMES.index("L_TCP_1"), NAMES.index("L_TCP_3")]
    app = np.flatnonzero(np.isin(name, app_ids))
    if len(app) == 0:
        return []
    tmin = int(min(t0.min(), t1.min()))
    span = int(max(t0.max(), t1.max())) - tmin + 2
    if (int(flow.max()) + 1) * span >= (1 << 62):  # composite (flow, time) keys would overflow
        return []

    def key(f, t):
        return f.astype(np.int64) * span + (t.astype(np.int64) - tmin)
    out = []
    # request side: the latest receive TCP slice of the flow ending at or before the turn
    rc = np.flatnonzero(np.isin(name, rcv_tcp))
    if len(rc):
        k = key(flow[rc], t1[rc])
        o = np.argsort(k, kind="stable")
        k, rc = k[o], rc[o]
        q = key(flow[app], t0[app])
        pos = np.searchsorted(k, q, side="right") - 1
        ok = (pos >= 0) & (flow[rc[np.maximum(pos, 0)]] == flow[app])
        out.append(np.stack([slice_ids[rc[pos[ok]]], slice_ids[app[ok]]], axis=1))
    sc = np.flatnonzero(np.isin(name, snd_tcp))
    if len(sc):
        k = key(flow[sc], t0[sc])
        o = np.argsort(k, kind="stable")
        k, sc = k[o], sc[o]
        q = key(flow[app], t1[app])
        pos = np.minimum(np.searchsorted(k, q), len(k) - 1)
        ok = k[pos] == q
        out.append(np.stack([slice_ids[app[ok]], slice_ids[sc[pos[ok]]]], axis=1))
    return out


def _counters(hosts, maps, flow, parent):
    cols = _Parts()
    ctracks, cindex = [], {}
    for hi_, h in enumerate(hosts):
        s = h.series
        if len(s.get("flow", ())) == 0:
            continue
        keep = _flow_selected(h, flow)[s["flow"]]
        f = s["flow"][keep]
        t = _to_ref(maps[hi_], s["t"][keep])
        for ci, (col, label) in enumerate(COUNTERS):
            if col not in s:
                continue
            v = np.asarray(s[col])[keep].astype(np.int64)
            uniq, inv = np.unique(f, return_inverse=True)
            ids = []
            for fl in uniq.tolist():
                k = (hi_, fl, ci)
                if k not in cindex:
                    cindex[k] = len(ctracks)
                    ctracks.append((parent(("flow", hi_, fl), hi_, h.flow_labels[fl]), label))
                ids.append(cindex[k])
            cols.add(ctrack=np.array(ids, np.int64)[inv.ravel()], t=t, value=v)
    return cols.done(("ctrack", "t", "value")), ctracks


# --------------------------------------------------------------------------------------------
# Window, size guard, lanes

def apply_window(b: Built, window, max_events: int) -> tuple[dict, dict, np.ndarray, str | None]:
    """Slices, counters and arrows inside --time (seconds after the first event) and within the
    size guard; returns the note to print when the guard cut the trace."""
    s, c = b.slices, b.counters
    first = b.first
    lo, hi = -np.inf, np.inf
    if window is not None:
        lo, hi = first + window[0] * 1e9, first + window[1] * 1e9
    ks = (s["start"] >= lo) & (s["start"] < hi)
    kc = (c["t"] >= lo) & (c["t"] < hi)
    note = None
    n_events = 2 * int(ks.sum()) + int(kc.sum())
    if n_events > max_events:
        # the earliest window of the selection that fits: cut at the time where the guard fills
        t_all = np.sort(np.concatenate([s["start"][ks], s["start"][ks], c["t"][kc]]))
        cut = int(t_all[max_events - 1])
        ks &= s["start"] <= cut
        kc &= c["t"] <= cut
        rel = ((max(lo, first) - first) / 1e9, (cut - first) / 1e9)
        note = (f"the trace would hold {n_events:,} events, more than the Perfetto UI opens "
                f"comfortably ({max_events:,}): wrote only {rel[0]:.3f}:{rel[1]:.3f} s; choose "
                "another window with --time or raise --max-events")
    if ks.all() and kc.all():
        return s, c, b.arrows, note
    new = np.full(len(ks) + 1, -1, np.int64)
    new[:-1][ks] = np.arange(int(ks.sum()))
    a = new[b.arrows] if len(b.arrows) else b.arrows
    a = a[(a >= 0).all(axis=1)] if len(a) else a
    return ({k: v[ks] for k, v in s.items()}, {k: v[kc] for k, v in c.items()}, a, note)


def lanes(group: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Lane of each slice so that slices of one group and lane never overlap (they may touch).

    Slices that start after every earlier slice of their group has ended take lane 0 without
    a search (numpy); only the overlapping rest is placed one by one, greedily."""
    n = len(group)
    lane = np.zeros(n, np.int64)
    if n == 0:
        return lane
    order = np.lexsort((start, group))
    g, st, en = group[order], start[order], end[order]
    new_group = np.r_[True, g[1:] != g[:-1]]
    # the latest end among the group's earlier slices
    prev_end = np.empty(n, np.int64)
    prev_end[1:] = _group_cummax(en, new_group)[:-1]
    prev_end[new_group] = np.iinfo(np.int64).min
    clash = st < prev_end
    if clash.any():
        lanes_out = np.zeros(n, np.int64)
        # one greedy pass over the clusters that contain a clash
        cluster = np.cumsum(~clash) - 1
        busy = np.unique(cluster[clash])
        members = np.flatnonzero(np.isin(cluster, busy))
        ends: list = []
        cur = -1
        for k in members.tolist():
            c = cluster[k]
            if c != cur:
                cur, ends = c, []
            s_k = st[k]
            for ln, e in enumerate(ends):
                if e <= s_k:
                    ends[ln] = en[k]
                    lanes_out[k] = ln
                    break
            else:
                lanes_out[k] = len(ends)
                ends.append(en[k])
        lane[order] = lanes_out
    return lane


def _group_cummax(v: np.ndarray, new_group: np.ndarray) -> np.ndarray:
    """Running maximum of v that restarts at every group start."""
    out = v.copy()
    starts = np.flatnonzero(new_group)
    bounds = np.r_[starts, len(v)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        out[a:b] = np.maximum.accumulate(v[a:b])
    return out


# --------------------------------------------------------------------------------------------
# Encoding

def write_trace(analysis, path: str, *, flow=None, window=None, max_events: int = MAX_EVENTS,
                force: bool = False) -> dict:
    """Build and write the trace; returns a summary (counts, bytes, note if cut)."""
    b = build(analysis, flow)
    slices, counters, arrows, note = apply_window(b, window, max_events)
    b.slices = b.counters = b.arrows = None  # the window's copies are what is written
    if len(slices["start"]) == 0 and len(counters["t"]) == 0:
        raise MbrecError("nothing to export: no slice or counter matches the --flow/--time "
                         "selection (see `mbrec info` for the traces' time spans and flows)")
    if os.path.exists(path) and not force:
        raise MbrecError(f"{path} already exists: choose another name or pass --force")
    tmp = path + ".partial"
    try:
        with open(tmp, "wb") as f:
            stats = _encode(f, b, slices, counters, arrows)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise MbrecError(f"cannot write {path}: {e.strerror}") from None
    stats["note"] = note
    stats["bytes"] = os.path.getsize(path)
    return stats


def _encode(f, b: Built, slices: dict, counters: dict, arrows: np.ndarray) -> dict:
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

    TE = pb.TrackEvent
    shift = 0
    tmin = min(int(slices["start"].min()) if len(slices["start"]) else 0,
               int(counters["t"].min()) if len(counters["t"]) else 0)
    if tmin < 0:  # a host's events before the reference booted: keep timestamps unsigned
        shift = -tmin
        b.meta["timestamps_shifted_ns"] = shift
    first_ts = (int(slices["start"].min()) if len(slices["start"]) else
                int(counters["t"].min())) + shift

    out = pb.Trace()

    def flush(force=False):
        nonlocal out
        if force or len(out.packet) >= CHUNK:
            f.write(out.SerializeToString())
            out = pb.Trace()

    # --- descriptors: processes, flow groups, slice tracks (with lanes), counters
    uuid = iter(range(1, 1 << 62))
    proc_uuid = {}
    for hi_, name in enumerate(b.hosts):
        u = proc_uuid[hi_] = next(uuid)
        p = out.packet.add()
        p.track_descriptor.uuid = u
        p.track_descriptor.process.pid = 1000 + hi_
        p.track_descriptor.process.process_name = name
    net_root = {}
    parent_uuid = {}
    used = {b.groups[g][1] for g in np.unique(slices["group"]).tolist()}
    used |= {b.ctracks[c][0] for c in np.unique(counters["ctrack"]).tolist()}
    for pk, (host, label, pair) in enumerate(b.parents):
        if pk not in used:
            continue
        if host < 0 and pair not in net_root:
            u = net_root[pair] = next(uuid)
            p = out.packet.add()
            p.track_descriptor.uuid = u
            p.track_descriptor.name = f"network {b.hosts[pair[0]]} <-> {b.hosts[pair[1]]}"
            p.track_descriptor.description = ("L_NET per matched frame: sender "
                                              "dev_hard_start_xmit to receiver eth_type_trans")
        u = parent_uuid[pk] = next(uuid)
        p = out.packet.add()
        td = p.track_descriptor
        td.uuid = u
        td.parent_uuid = proc_uuid[host] if host >= 0 else net_root[pair]
        td.name = label
        td.child_ordering = pb.TrackDescriptor.EXPLICIT
    lane = lanes(slices["group"], slices["start"], slices["end"])
    track_key = slices["group"] * (int(lane.max()) + 1 if len(lane) else 1) + lane
    keys, track_of = np.unique(track_key, return_inverse=True)
    nl = int(lane.max()) + 1 if len(lane) else 1
    track_uuid = np.empty(len(keys), np.int64)
    for k, key in enumerate(keys.tolist()):
        g, ln = divmod(key, nl)
        host, pk, name_id = b.groups[g]
        u = next(uuid)
        track_uuid[k] = u
        p = out.packet.add()
        td = p.track_descriptor
        td.uuid = u
        td.parent_uuid = parent_uuid[pk]
        td.name = ALL_NAMES[name_id]
        td.sibling_order_rank = _order_rank(ALL_NAMES[name_id])
        flush()
    ctrack_uuid = []
    for pk, label in b.ctracks:
        u = next(uuid)
        ctrack_uuid.append(u)
        if pk not in parent_uuid:  # none of its values is in the window
            continue
        p = out.packet.add()
        td = p.track_descriptor
        td.uuid = u
        td.parent_uuid = parent_uuid[pk]
        td.name = label
        td.sibling_order_rank = 100 + [c[1] for c in COUNTERS].index(label)
        td.counter.SetInParent()
    meta_uuid = next(uuid)
    p = out.packet.add()
    p.track_descriptor.uuid = meta_uuid
    p.track_descriptor.name = "clock alignment"
    p.track_descriptor.description = _alignment_text(b.meta)

    # --- metadata: the alignment as trace attributes and on an instant marker
    p = out.packet.add()
    for k, v in _alignment_attrs(b.meta).items():
        a = p.trace_attributes.attribute.add()
        a.key = k
        if isinstance(v, int):
            a.long_value = v
        else:
            a.string_value = str(v)
    # interned names (one sequence), then the marker
    p = out.packet.add()
    p.trusted_packet_sequence_id = SEQ_ID
    p.sequence_flags = pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
    for i, event_name in enumerate(ALL_NAMES + ["clock alignment"]):
        e = p.interned_data.event_names.add()
        e.iid, e.name = i + 1, event_name
    for ann, i in ANN_ID.items():
        e = p.interned_data.debug_annotation_names.add()
        e.iid, e.name = i, ann
    p = out.packet.add()
    p.timestamp = first_ts
    p.trusted_packet_sequence_id = SEQ_ID
    p.sequence_flags = pb.TracePacket.SEQ_NEEDS_INCREMENTAL_STATE
    te = p.track_event
    te.type = TE.TYPE_INSTANT
    te.track_uuid = meta_uuid
    te.name_iid = len(ALL_NAMES) + 1
    for k, v in _alignment_attrs(b.meta).items():
        d = te.debug_annotations.add()
        d.name = k
        if isinstance(v, int):
            d.int_value = v
        else:
            d.string_value = str(v)
    flush(True)

    # --- events in time order: ends of slices first at equal times, then begins (each
    # zero-length slice's end right after its begin), counters last
    n = len(slices["start"])
    nc = len(counters["t"])
    st, en = slices["start"] + shift, slices["end"] + shift
    zero = en == st
    ev_t = np.concatenate([st, en, counters["t"] + shift])
    ev_cls = np.concatenate([np.ones(n, np.int8), np.where(zero, 1, 0).astype(np.int8),
                             np.full(nc, 2, np.int8)])
    ev_idx = np.concatenate([np.arange(n), np.arange(n), np.arange(nc)])
    ev_phase = np.concatenate([np.zeros(n, np.int8), np.ones(n, np.int8), np.zeros(nc, np.int8)])
    ev_kind = np.concatenate([np.zeros(n, np.int8), np.ones(n, np.int8), np.full(nc, 2, np.int8)])
    order = np.lexsort((ev_phase, ev_idx, ev_cls, ev_t))
    del ev_cls, ev_phase
    # arrows: per slice, outgoing ids and incoming (terminating) ids, as CSR
    fid = np.arange(1, len(arrows) + 1, dtype=np.uint64)
    o_src = np.argsort(arrows[:, 0], kind="stable") if len(arrows) else np.zeros(0, np.int64)
    o_dst = np.argsort(arrows[:, 1], kind="stable") if len(arrows) else np.zeros(0, np.int64)
    src_off = np.searchsorted(arrows[o_src, 0], np.arange(n + 1)) if len(arrows) else np.zeros(n + 1, np.int64)
    dst_off = np.searchsorted(arrows[o_dst, 1], np.arange(n + 1)) if len(arrows) else np.zeros(n + 1, np.int64)
    src_ids, dst_ids = fid[o_src], fid[o_dst]
    s_track = track_uuid[track_of]
    c_track = np.asarray(ctrack_uuid, np.int64)[counters["ctrack"]] if nc else np.zeros(0, np.int64)
    BEGIN, END, COUNTER = TE.TYPE_SLICE_BEGIN, TE.TYPE_SLICE_END, TE.TYPE_COUNTER
    NEEDS = pb.TracePacket.SEQ_NEEDS_INCREMENTAL_STATE
    a_seq, a_end, a_ipid, a_lost = ANN_ID["seq"], ANN_ID["end_seq"], ANN_ID["ip_id"], \
        ANN_ID["lost_events"]
    a_re, a_dup, a_neg = ANN_ID["retransmission"], ANN_ID["duplicate"], \
        ANN_ID["negative_estimate"]
    a_est, a_lo, a_hi = ANN_ID["l_net_ns"], ANN_ID["l_net_lo_ns"], ANN_ID["l_net_hi_ns"]
    n_written = 0
    last_slice = max(n - 1, 0)
    for lo in range(0, len(order), CHUNK):
        sel = order[lo:lo + CHUNK]
        # this chunk's columns gathered once as Python lists (cheap per element in the loop)
        kind = ev_kind[sel]
        idx = ev_idx[sel]
        si = np.minimum(idx, last_slice)        # a counter's index clipped into the slices
        ci = np.minimum(idx, max(nc - 1, 0))
        is_c = kind == 2
        track_l = np.where(is_c, c_track[ci] if nc else 0, s_track[si] if n else 0).tolist()
        value_l = np.where(is_c, counters["value"][ci] if nc else 0, 0).tolist()
        cols = ({k: slices[k][si].tolist() for k in ("name", "seq", "end_seq", "ip_id", "bits",
                                                     "est", "lo", "hi")} if n else {})
        nxt = np.minimum(si + 1, n)
        out_a, out_z = src_off[si].tolist(), src_off[nxt].tolist()
        in_a, in_z = dst_off[si].tolist(), dst_off[nxt].tolist()
        for k, (t, kd) in enumerate(zip(ev_t[sel].tolist(), kind.tolist())):
            p = out.packet.add()
            p.timestamp = t
            p.trusted_packet_sequence_id = SEQ_ID
            te = p.track_event
            te.track_uuid = track_l[k]
            if kd == 1:
                te.type = END
                continue
            if kd == 2:
                te.type = COUNTER
                te.counter_value = value_l[k]
                continue
            p.sequence_flags = NEEDS
            te.type = BEGIN
            te.name_iid = cols["name"][k] + 1
            if out_z[k] > out_a[k]:
                te.flow_ids.extend(src_ids[out_a[k]:out_z[k]].tolist())
            if in_z[k] > in_a[k]:
                te.terminating_flow_ids.extend(dst_ids[in_a[k]:in_z[k]].tolist())
            seq = cols["seq"][k]
            if seq >= 0:
                d = te.debug_annotations.add()
                d.name_iid, d.uint_value = a_seq, seq
                d = te.debug_annotations.add()
                d.name_iid, d.uint_value = a_end, cols["end_seq"][k]
                d = te.debug_annotations.add()
                d.name_iid, d.uint_value = a_ipid, cols["ip_id"][k]
            bits = cols["bits"][k]
            if bits:
                for bit, aid in ((BIT_RETRANS, a_re), (BIT_DUP, a_dup), (BIT_NEG, a_neg)):
                    if bits & bit:
                        d = te.debug_annotations.add()
                        d.name_iid, d.bool_value = aid, True
                if bits & BIT_LOST:
                    d = te.debug_annotations.add()
                    d.name_iid = a_lost
                    d.string_value = "this host lost events of a probe this layer uses"
            est = cols["est"][k]
            if est == est:  # L_NET: the estimate and its guaranteed interval
                for aid, v in ((a_est, est), (a_lo, cols["lo"][k]), (a_hi, cols["hi"][k])):
                    d = te.debug_annotations.add()
                    d.name_iid, d.double_value = aid, v
        n_written += len(sel)
        flush(True)
    flush(True)
    return {"slices": int(n), "counters": int(nc), "arrows": int(len(arrows)),
            "tracks": int(len(keys)), "trace_events": int(n_written)}


def _order_rank(name: str) -> int:
    """Tracks in path order: send layers, then receive layers, then the rest."""
    if name in NET_NAMES:
        return NET_NAMES.index(name)
    d, r = _layer(name)
    if r >= 0:
        return 10 * (d + 1) + r
    return 50 + NAMES.index(name)


def _alignment_attrs(meta: dict) -> dict:
    out = {"mbrec.clock.method": meta.get("method") or "none",
           "mbrec.clock.reference": meta.get("reference") or "",
           "mbrec.clock.status": meta.get("status") or ""}
    if meta.get("reason"):
        out["mbrec.clock.reason"] = meta["reason"]
    for h, e in meta.get("hosts", {}).items():
        out[f"mbrec.clock.{h}.quality"] = e.get("quality") or "?"
        w = e.get("bound_width_ns")
        out[f"mbrec.clock.{h}.bound_width_ns"] = int(w) if w is not None else "unbounded"
        out[f"mbrec.clock.{h}.path"] = " -> ".join(e.get("path") or [h])
    for pair, q in meta.get("l_net_quality", {}).items():
        out[f"mbrec.l_net.{pair}.clock_quality"] = q
    if "timestamps_shifted_ns" in meta:
        out["mbrec.timestamps_shifted_ns"] = int(meta["timestamps_shifted_ns"])
    return out


def _alignment_text(meta: dict) -> str:
    parts = []
    for h, e in meta.get("hosts", {}).items():
        w = e.get("bound_width_ns")
        parts.append(f"{h}: {e.get('quality')}, bound "
                     + ("unbounded" if w is None else f"{w / 1e3:.1f} us"))
    return (f"every timestamp is in {meta.get('reference')}'s clock (method "
            f"{meta.get('method')}; {', '.join(parts) or meta.get('reason') or 'one host'}): "
            "estimates; each L_NET slice carries its guaranteed interval")
