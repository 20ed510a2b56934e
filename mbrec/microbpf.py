"""MicroBPF's output lines, produced from an mbrec trace, for scripts written against MicroBPF.

The original tools printed one text line per event with a numeric label (MicroBPF's tcpout.py,
tcpin.py, ... below); its post-processing (`nic/process_entries.py`) splits lines
on whitespace and checks the label's token count. mbrec keeps each label's token layout and
fills it with values matched offline, so where the original printed garbage mbrec prints the
right number or no line at all:

  label 1 (tcpout.py, 13 tokens)  1 SADDR:SPORT -> NAT:PORT -> DADDR:DPORT SEQ ACK ABS TOTAL QDISC IP TCP
  label 2 (tcpin.py, 11 tokens)   2 SADDR:SPORT -> DADDR:DPORT SEQ ACK ABS TOTAL MAC IP TCP
  label 3 (tcpack.py, 10 tokens)  3 SADDR:SPORT -> DADDR:DPORT SEQ ACK RTT CWND STATE (FLAGS)
  label 5 (app.py, 7 tokens)      5 SADDR:SPORT -> DADDR:DPORT SEQ ACK APP

ABS is wall-clock seconds (%f) from the trace's clock anchors; every latency is integer
microseconds, truncated, as the original printed them. What differs from the original:

* A line is printed only for a packet seen at every hook its latencies need: the original
  printed u64 wrap-arounds for missed hooks (e.g. MAC = 18446647013531355).
* Packets are matched by sequence range, so TSO/GSO super-segments, GRO merges and
  retransmissions give one correct line each instead of colliding keys.
* Label 1's NAT column is the local endpoint: the original printed gethostbyname(hostname)
  (often 127.0.1.1); mbrec does not record address rewriting between socket and wire.
* Label 3 comes from the per-ACK flow snapshots: SEQ/ACK are rcv_nxt/snd_una at the snapshot
  (the original printed the ACK segment's header seq/ack, read before it was processed), RTT
  the smoothed RTT in us, and FLAGS only ACK, which every segment reaching tcp_ack carries.
* Label 5 is app.py's layout (tcp.py's 14-token label 5 collided with it): APP is L_APP, the
  application's read-to-send turn, never fooled by a delayed pure ACK.
"""

from __future__ import annotations

import numpy as np

from mbrec.events import CONSTANTS, TCP_STATES
from mbrec.render import addr_strings

FLOW_ACK = CONSTANTS["MBREC_FLOW_ACK"]


def wall_seconds(ts_ns: np.ndarray, clocks: list[dict]) -> np.ndarray:
    """CLOCK_MONOTONIC ns to wall-clock seconds, through the nearest earlier clock anchor."""
    ts = np.asarray(ts_ns, dtype=np.int64)
    if not clocks:
        return ts / 1e9
    mono = np.array([c["monotonic_ns"] for c in clocks], dtype=np.int64)
    offset = np.array([c["realtime_ns"] - c["monotonic_ns"] for c in clocks], dtype=np.int64)
    order = np.argsort(mono)
    mono, offset = mono[order], offset[order]
    i = np.clip(np.searchsorted(mono, ts, side="right") - 1, 0, len(mono) - 1)
    return (ts + offset[i]) / 1e9


def _endpoint_names(flows) -> tuple[list[str], list[str]]:
    """Per flow: 'addr:port' of endpoint 0 and of endpoint 1."""
    n = len(flows)
    if n == 0:
        return [], []
    names = []
    for e in (0, 1):
        addrs = addr_strings(flows.ep_addr[:, e, :], flows.family)
        names.append([f"{a}:{p}" for a, p in zip(addrs, flows.ep_port[:, e].tolist())])
    return names[0], names[1]


def _us(ns: np.ndarray) -> list[int]:
    return (np.asarray(ns, dtype=np.int64) // 1000).tolist()


def packet_lines(host, clocks: list[dict]) -> list[tuple[int, str]]:
    """Labels 1, 2 and 5 from one host's analysis (analysis.host.analyze_host)."""
    rows, flows = host.table.pkt, host.table.flows
    ep0, ep1 = _endpoint_names(flows)
    out: list[tuple[int, str]] = []
    if len(rows["flow"]) == 0:
        return out
    ts = rows["ts"]
    complete = (ts >= 0).all(axis=1)
    local = flows.local[rows["flow"]]
    for direction in (0, 1):
        idx = np.nonzero(complete & (rows["direction"] == direction))[0]
        if not len(idx):
            continue
        t = ts[idx]
        f = rows["flow"][idx].tolist()
        loc = local[idx].tolist()
        seq, ack = rows["seq"][idx].tolist(), rows["ack"][idx].tolist()
        # send: tcp_transmit_skb, ip_queue_xmit, dev_queue_xmit, driver; ABS at the driver,
        # then TOTAL QDISC IP TCP. receive: eth_type_trans, ip_rcv, tcp_v4_rcv, copy; ABS at
        # eth_type_trans, then TOTAL MAC IP TCP. Layers are differences of adjacent hooks.
        at = 3 if direction == 0 else 0
        total = _us(t[:, 3] - t[:, 0])
        layers = ([t[:, 3] - t[:, 2], t[:, 2] - t[:, 1], t[:, 1] - t[:, 0]] if direction == 0
                  else [t[:, 1] - t[:, 0], t[:, 2] - t[:, 1], t[:, 3] - t[:, 2]])
        l1, l2, l3 = (_us(x) for x in layers)
        wall = wall_seconds(t[:, at], clocks).tolist()
        for k in range(len(idx)):
            me = ep0[f[k]] if loc[k] == 0 else ep1[f[k]]
            peer = ep1[f[k]] if loc[k] == 0 else ep0[f[k]]
            tuple_ = (f"1 {me:<20} -> {me:<20} -> {peer:<20}" if direction == 0
                      else f"2 {peer:<20} -> {me:<20}")
            out.append((int(t[k, at]),
                        f"{tuple_} {seq[k]:<12} {ack[k]:<12} {wall[k]:<20f} {total[k]:<10} "
                        f"{l1[k]:<10} {l2[k]:<10} {l3[k]:<10}"))
    out.extend(_app_lines(host, ep0, ep1))
    return out


def _app_lines(host, ep0, ep1) -> list[tuple[int, str]]:
    """Label 5 (app.py): the request's tuple, remote -> local, with SEQ = the request's end
    (the response's ack) and ACK = the response's first byte, and L_APP in us."""
    from mbrec.analysis.latency import NAME_ID
    s, rows = host.samples, host.table.pkt
    app = np.nonzero((s["name"] == NAME_ID["L_APP_1"]) | (s["name"] == NAME_ID["L_APP_2"]))[0]
    if not len(app):
        return []
    # the response is the transmission whose tcp_transmit_skb time ends the turn
    send = np.nonzero(rows["direction"] == 0)[0]
    key_rows = rows["flow"][send] * 2**40 + rows["ts"][send, 0]
    order = np.argsort(key_rows, kind="stable")
    t_send = s["t"][app] + s["value"][app]
    key = s["flow"][app] * 2**40 + t_send
    pos = np.searchsorted(key_rows[order], key)
    pos = np.minimum(pos, len(order) - 1)
    found = key_rows[order][pos] == key
    resp = send[order[pos[found]]]
    app, t_send = app[found], t_send[found]
    out = []
    local = host.table.flows.local
    for k, r in enumerate(resp.tolist()):
        f = int(rows["flow"][r])
        me = ep0[f] if local[f] == 0 else ep1[f]
        peer = ep1[f] if local[f] == 0 else ep0[f]
        out.append((int(t_send[k]), f"5 {peer:<20} -> {me:<20} {int(rows['ack'][r]):<12} "
                                    f"{int(rows['seq'][r]):<12} {int(s['value'][app[k]]) // 1000:<10}"))
    return out


def ack_lines(flow_recs: np.ndarray) -> list[tuple[int, str]]:
    """Label 3 from the per-ACK flow snapshots (reason ACK)."""
    recs = flow_recs[flow_recs["reason"] == FLOW_ACK]
    if not len(recs):
        return []
    local = addr_strings(recs["saddr"], recs["family"])
    remote = addr_strings(recs["daddr"], recs["family"])
    cols = {k: recs[k].tolist() for k in ("ts_ns", "sport", "dport", "rcv_nxt", "snd_una",
                                           "srtt_us", "snd_cwnd", "state")}
    out = []
    for k in range(len(recs)):
        state = TCP_STATES.get(cols["state"][k], str(cols["state"][k]))
        src = f"{remote[k]}:{cols['dport'][k]}"
        dst = f"{local[k]}:{cols['sport'][k]}"
        out.append((cols["ts_ns"][k],
                    f"3 {src:<20} -> {dst:<20} {cols['rcv_nxt'][k]:<12} {cols['snd_una'][k]:<12} "
                    f"{cols['srtt_us'][k]:<10} {cols['snd_cwnd'][k]:<10} {state:<12} (ACK)"))
    return out


def trace_lines(trace) -> list[str]:
    """Every MicroBPF line one trace yields, in time order."""
    from mbrec.analysis.host import analyze_host
    host = analyze_host(trace)
    lines = packet_lines(host, trace.clocks)
    flow = trace.events.get("flow")
    if flow is not None and len(flow):
        lines.extend(ack_lines(flow))
    lines.sort(key=lambda x: x[0])
    return [line for _, line in lines]
