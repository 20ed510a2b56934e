"""The analysis report: report.json (schema in docs/report-format.md), the terminal tables, CSVs.

Pure functions from analysis results to dicts and text; writing files is the only I/O here.
"""

from __future__ import annotations

import json
import os

import numpy as np

from mbrec import __version__
from mbrec.analysis.coverage import mask_flow_metrics, text_lines as coverage_lines
from mbrec.analysis.flows import SERIES
from mbrec.analysis.host import HostSummary
from mbrec.analysis.latency import NAMES, PROBES_OF, QUANTILES, grouped_stats
from mbrec.render import addr_strings

REPORT_FORMAT = "mbrec-report"
REPORT_VERSION = 1
STAT_KEYS = ["count", "mean", "p50", "p90", "p99", "p99.9", "max"]
UNIT_OF = {"L_NIC_2": "wire frame", "L_NIC_4": "wire frame", "L_APP_1": "read-to-send turn",
           "L_APP_2": "read-to-send turn", "W_SND_1": "application write",
           "W_SND_3": "application write"}
DEFINITIONS = {
    "L_TCP_1": "S send: ip_queue_xmit - tcp_transmit_skb, per skb",
    "L_IP_1": "S send: dev_queue_xmit - ip_queue_xmit, per skb",
    "L_NIC_1": "S send: dev_hard_start_xmit - dev_queue_xmit (qdisc), per skb",
    "L_NIC_2": "R receive: ip_rcv of the (GRO-merged) skb - eth_type_trans of each wire frame",
    "L_IP_2": "R receive: tcp_v4_rcv - ip_rcv, per skb",
    "L_TCP_2": "R receive: skb_copy_datagram_iter delivering the skb's first byte - tcp_v4_rcv",
    "L_APP_2": "R: tcp_transmit_skb of the first new response byte - the last copy before it",
    "L_TCP_3": "R send: ip_queue_xmit - tcp_transmit_skb, per skb",
    "L_IP_3": "R send: dev_queue_xmit - ip_queue_xmit, per skb",
    "L_NIC_3": "R send: dev_hard_start_xmit - dev_queue_xmit (qdisc), per skb",
    "L_NIC_4": "S receive: ip_rcv of the (GRO-merged) skb - eth_type_trans of each wire frame",
    "L_IP_4": "S receive: tcp_v4_rcv - ip_rcv, per skb",
    "L_TCP_4": "S receive: skb_copy_datagram_iter delivering the skb's first byte - tcp_v4_rcv",
    "L_APP_1": "S: tcp_transmit_skb of the first new request byte - the last copy before it",
    "W_SND_1": "S send-buffer wait: application write - tcp_transmit_skb of its last byte",
    "W_SND_3": "R send-buffer wait: application write - tcp_transmit_skb of its last byte",
    "W_RCV_2": "R receive-queue wait: tcp_v4_rcv - end of the read returning the skb's last byte",
    "W_RCV_4": "S receive-queue wait: tcp_v4_rcv - end of the read returning the skb's last byte",
}


def _num(x):
    if x is None:
        return None
    x = float(x)
    return None if not np.isfinite(x) else x


def lost_affecting(name: str, lost: dict) -> int:
    return int(sum(lost.get(p, 0) for p in PROBES_OF.get(name, [])))


def latency_stats(samples: dict, group: np.ndarray | None = None, ngroups: int = 1) -> list:
    """[group][name] -> stats dict (ns), for the names that have samples."""
    g = np.zeros(len(samples["name"]), np.int64) if group is None else group
    key = g * len(NAMES) + samples["name"]
    st = grouped_stats(key, samples["value"], ngroups * len(NAMES))
    out: list[dict] = [dict() for _ in range(ngroups)]
    for k in np.nonzero(st["count"] > 0)[0].tolist():
        gi, ni = divmod(k, len(NAMES))
        out[gi][NAMES[ni]] = {s: (int(st[s][k]) if s == "count" else _num(st[s][k]))
                              for s in STAT_KEYS}
    return out


def flow_names(flows) -> list[dict]:
    """Per flow: client and server as "addr:port" strings and the role source."""
    n = len(flows)
    if n == 0:
        return []
    addrs = addr_strings(flows.ep_addr.reshape(-1, 16), np.repeat(flows.family, 2))
    out = []
    for i in range(n):
        ep = [f"{addrs[2 * i + k]}:{int(flows.ep_port[i, k])}" for k in (0, 1)]
        c = int(flows.client[i])
        c = 0 if c < 0 else c
        local = int(flows.local[i])
        out.append({"client": ep[c], "server": ep[1 - c],
                    "role": "both" if local < 0 else ("client" if local == c else "server"),
                    "client_source": flows.client_source[i]})
    return out


def summarize(hr, per_flow: bool, host_stats: bool = True) -> HostSummary:
    """A host's analysis (analysis.host.HostResult) as the report needs it. host_stats=False:
    the host's latency statistics are left to the caller (a partition's samples are merged
    with the other partitions' first)."""
    rows, nfl = hr.table.pkt, len(hr.table.flows)
    sent = rows["direction"] == 0

    def per_flow_count(mask):
        return np.bincount(rows["flow"][mask], minlength=nfl).astype(np.int64)

    per = latency_stats(hr.samples, hr.samples["flow"], nfl) if (per_flow and nfl) else None
    return HostSummary(hr.host, hr.path, hr.boot_id, hr.clean, hr.table.flows,
                       per_flow_count(sent), per_flow_count(~sent),
                       per_flow_count(sent & rows["retrans"]), int(rows["duplicate"].sum()),
                       latency_stats(hr.samples)[0] if host_stats else {}, per, hr.negative,
                       hr.copies_exact,
                       hr.events, hr.lost, hr.warnings, hr.coverage)


def host_section(name: str, hs: HostSummary, flow_summ: list) -> tuple[dict, list]:
    """The report's entry for one host, and its flows."""
    lat = {k: dict(v) for k, v in hs.latencies.items()}
    for k, v in lat.items():
        v["unit"] = UNIT_OF.get(k, "skb")
        v["lost_events_affecting"] = lost_affecting(k, hs.lost)
    names = flow_names(hs.flows)
    nfl = len(names)
    flow_summ = mask_flow_metrics(flow_summ, hs.coverage)
    flows = []
    for i in range(nfl):
        entry = {"host": name, "flow": i, **names[i], "packets_sent": int(hs.sent[i]),
                 "packets_received": int(hs.received[i]),
                 "retransmissions": int(hs.retransmitted[i]),
                 "sockets": hs.flows.cookies[i] if hs.flows.cookies else [],
                 "metrics": flow_summ[i] if flow_summ else None}
        if hs.flow_latencies is not None:
            entry["latencies"] = hs.flow_latencies[i]
        flows.append(entry)
    roles = [n["role"] for n in names]
    sources = sorted({n["client_source"] for n in names})
    section = {
        "host": name, "path": hs.path, "boot_id": hs.boot_id, "clean": hs.clean,
        "flows": nfl, "client_flows": roles.count("client"), "server_flows": roles.count("server"),
        "roles_from": sources,
        "packets": {"sent": int(hs.sent.sum()), "received": int(hs.received.sum()),
                    "retransmitted": int(hs.retransmitted.sum()),
                    "received_duplicates": int(hs.duplicates)},
        "events": hs.events, "lost": hs.lost, "lost_total": int(sum(hs.lost.values())),
        "copies_placed_by_read_records": hs.copies_exact,
        "negative_latencies_dropped": hs.negative,
        "latencies": {k: lat[k] for k in NAMES if k in lat},
        "warnings": hs.warnings,
    }
    if hs.coverage:
        section["coverage"] = hs.coverage
    return section, flows


def where_time_went(hosts: list[dict], cross: dict | None) -> str:
    """One line: the largest mean latencies per host (L_* only; waits overlap with them)."""
    parts = []
    for h in hosts:
        lat = [(v["mean"], k) for k, v in h["latencies"].items()
               if k.startswith("L_") and v["mean"] is not None]
        if not lat:
            continue
        lat.sort(reverse=True)
        total = sum(m for m, _ in lat)
        top = ", ".join(f"{k} {m / 1e3:.1f} us ({100 * m / total:.0f}%)" for m, k in lat[:3])
        parts.append(f"{h['host']}: {top}")
    net = []
    for p in (cross or {}).get("network", {}).get("pairs", []):
        for key in ("L_NET_1", "L_NET_2"):
            st = (p.get(key) or {}).get("l_net")
            if st:
                net.append(f"{key} {st['p50'] / 1e3:.1f} us")
    if net:
        parts.append("network (p50): " + ", ".join(net))
    if not parts:
        return "where the time went: no latency could be computed from these traces"
    return "where the time went (largest means per host): " + "; ".join(parts)


def build_report(inputs: list[dict], hosts: list[dict], flows: list[dict], cross: dict,
                 warnings: list[str]) -> dict:
    return {"format": REPORT_FORMAT, "version": REPORT_VERSION, "mbrec_version": __version__,
            "units": {"latency": "ns", "time": "ns, CLOCK_MONOTONIC of the host"},
            "quantiles": [f"p{q * 100:g}" for q in QUANTILES],
            "definitions": DEFINITIONS, "inputs": inputs, "hosts": hosts, "flows": flows,
            "cross_host": cross, "warnings": warnings,
            "where_the_time_went": where_time_went(hosts, cross)}


def _us(v):
    return "-" if v is None else (f"{v / 1e3:.1f}" if v < 1e9 else f"{v / 1e3:.3g}")


def table_text(report: dict, per_flow: bool, clock_lines: tuple[str, ...] | list[str] = ()) -> str:
    """The terminal summary: per host, one line per latency, lost events next to the numbers;
    then how the clocks were aligned (clock_lines) and, last, where the time went."""
    lines = []
    head = f"  {'latency':9s}{'count':>9s}" + "".join(f"{k:>10s}" for k in STAT_KEYS[1:]) + \
           "   (us)  lost events"
    for h in report["hosts"]:
        lost = ", ".join(f"{k} {v}" for k, v in sorted(h["lost"].items())) or "none"
        lines.append(f"host {h['host']} ({h['path']}): server in {h['server_flows']} flows, "
                     f"client in {h['client_flows']}; roles from {'/'.join(h['roles_from']) or '-'}"
                     f"; lost events: {lost}" + ("" if h["clean"] else "; UNCLEAN STOP"))
        lines += coverage_lines(h.get("coverage"))
        if not h["latencies"] and not h["events"].get("pkt"):
            lines.append("  no packet events (a flows-only recording?): layer latencies need "
                         "the packet probes")
        elif not h["latencies"]:
            lines.append("  no layer latency could be computed: no packet was seen at two "
                         "layers (are some probes missing?)")
        else:
            lines.append(head)
            for k, v in h["latencies"].items():
                lost_k = v["lost_events_affecting"]
                lines.append(f"  {k:9s}{v['count']:9d}" +
                             "".join(f"{_us(v[s]):>10s}" for s in STAT_KEYS[1:]) +
                             (f"   {lost_k} lost" if lost_k else ""))
        if h["negative_latencies_dropped"]:
            lines.append(f"  note: {h['negative_latencies_dropped']} negative latencies dropped "
                         "(a mismatch or a clock step; not averaged in)")
        if h["copies_placed_by_read_records"] < 1 and "L_TCP_2" in h["latencies"] or \
                h["copies_placed_by_read_records"] < 1 and "L_TCP_4" in h["latencies"]:
            lines.append("  note: no read records for some copies: receive TCP-layer times use "
                         "the first copy of each skb (approximate for partial reads)")
        lines += _flow_metric_lines(report["flows"], h["host"])
        if per_flow:
            for f in report["flows"]:
                if f["host"] != h["host"] or not f.get("latencies"):
                    continue
                lines.append(f"  flow {f['flow']}: {f['client']} -> {f['server']} "
                             f"(this host is the {f['role']})")
                for k, v in f["latencies"].items():
                    lines.append(f"    {k:9s}{v['count']:7d}" +
                                 "".join(f"{_us(v[s]):>10s}" for s in STAT_KEYS[1:]))
    cross = report.get("cross_host") or {}
    if cross.get("status") == "ok":
        for p in cross.get("network", {}).get("pairs", []):
            for key in ("L_NET_1", "L_NET_2"):
                e = p.get(key) or {}
                st, lo, hi = e.get("l_net"), e.get("lo"), e.get("hi")
                if st:
                    lines.append(f"{'-'.join(p['hosts'])} {key} ({e.get('direction', '')}): "
                                 f"n {st['count']} p50 {_us(st['p50'])} us, p99 "
                                 f"{_us(st['p99'])} us; {_range_label(p)} p50 range "
                                 f"[{_us(lo and lo['p50'])}, {_us(hi and hi['p50'])}] us "
                                 f"(clock {p.get('clock_method')}, {p.get('clock_quality')})")
    elif cross:
        lines.append(f"cross-host: {cross.get('reason', cross.get('status'))}")
    for w in report["warnings"]:
        lines.append(f"warning: {w}")
    lines.extend(clock_lines)
    lines.append(report["where_the_time_went"])
    return "\n".join(lines)


def _range_label(pair: dict) -> str:
    """Only a packet or shared-clock alignment bounds L_NET; the realtime anchors estimate it."""
    return ("guaranteed" if pair.get("clock_method") in ("shared", "packets")
            else "estimated (not guaranteed)")


MAX_FLOW_LINES = 10


def _flow_metric_lines(flows: list[dict], host: str) -> list[str]:
    """The flows of one host that have flow records, busiest first: a few of the 16 metrics."""
    mine = [f for f in flows if f["host"] == host and f.get("metrics")
            and "CWND" in f["metrics"]]
    if not mine:
        return []
    mine.sort(key=lambda f: -(f["metrics"]["BSent"]["bytes_sent"] + f["metrics"]["BReceived"]))
    width = max(len(f"{f['client']} -> {f['server']}") for f in mine[:MAX_FLOW_LINES]) + 2
    out = [f"  {'role':7s}{'flow':{width}s}{'cwnd':>6s}{'srtt us':>9s}{'retrans':>8s}"
           f"{'fastRe':>7s}{'RTOs':>6s}{'maxWQ':>8s}{'sent':>11s}{'received':>11s}"
           f"{'duration s':>12s}"]
    for f in mine[:MAX_FLOW_LINES]:
        m = f["metrics"]
        dur = m["Duration_ns"]
        dur_s = "-" if dur is None else f"{'>=' if not m['Duration_exact'] else ''}{dur / 1e9:.3f}"
        name = f"{f['client']} -> {f['server']}"
        out.append(f"  {f['role']:7s}{name:{width}s}{m['CWND']['snd_cwnd']['last']:6d}"
                   f"{m['srtt_us']['last']:9d}{m['RePackets']:8d}{m['fastRetrans']:7d}"
                   f"{m['Timeout']['first'] + m['Timeout']['backoff']:6d}{m['MaxAppWQueue']:8d}"
                   f"{m['BSent']['bytes_sent']:11d}{m['BReceived']:11d}{dur_s:>12s}")
    if len(mine) > MAX_FLOW_LINES:
        out.append(f"  ... {len(mine) - MAX_FLOW_LINES} more flows in flows.csv / report.json")
    return out


def write_json(report: dict, path: str) -> None:
    def default(o):
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.floating):
            return _num(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
        return str(o)
    with open(path, "w") as f:
        json.dump(report, f, indent=1, default=default, allow_nan=False)
        f.write("\n")


def _savetxt(f, prefix: str, cols: list[np.ndarray]) -> None:
    if not cols or len(cols[0]) == 0:
        return
    arr = np.column_stack([np.asarray(c, np.int64) for c in cols])
    fmt = prefix + ",".join(["%d"] * arr.shape[1])
    np.savetxt(f, arr, fmt=fmt)


PACKET_COLUMNS = ["host", "flow", "direction", "seq", "end_seq", "ack", "flags", "ip_id",
                  "n_wire", "retrans", "duplicate", "ts_layer1", "ts_layer2", "ts_layer3",
                  "ts_layer4"]


def write_csvs(outdir: str, host_names: list[str], results: list | None,
               series: list[dict]) -> list:
    """packets.csv and latencies.csv (from whole analyses: results, the HostResult per host;
    None when analysed in partitions), flow_series.csv (flows.csv: write_flows_csv)."""
    paths = []
    if results is not None:
        p = os.path.join(outdir, "packets.csv")
        with open(p, "w") as f:
            f.write(",".join(PACKET_COLUMNS) + "\n")
            for name, hr in zip(host_names, results):
                r = hr.table.pkt
                _savetxt(f, f"{name},", [r["flow"], r["direction"], r["seq"], r["end_seq"],
                                         r["ack"], r["flags"], r["ip_id"], r["n_wire"],
                                         r["retrans"], r["duplicate"], *r["ts"].T])
        paths.append(p)
        p = os.path.join(outdir, "latencies.csv")
        with open(p, "w") as f:
            f.write("host,name,flow,t_ns,value_ns,packet_row\n")
            for name, hr in zip(host_names, results):
                s = hr.samples
                for ni in np.unique(s["name"]).tolist():
                    sel = s["name"] == ni
                    _savetxt(f, f"{name},{NAMES[ni]},", [s["flow"][sel], s["t"][sel],
                                                         s["value"][sel], s["row"][sel]])
        paths.append(p)
    p = os.path.join(outdir, "flow_series.csv")
    with open(p, "w") as f:
        f.write("host,flow,t_ns," + ",".join(SERIES) + "\n")
        for name, s in zip(host_names, series):
            if len(s["flow"]):
                _savetxt(f, f"{name},", [s["flow"], s["t"], *[s[c] for c in SERIES]])
    paths.append(p)
    return paths


FLOW_COLUMNS = ["host", "flow", "client", "server", "role", "client_source", "packets_sent",
                "packets_received", "retransmissions", "snapshots", "cwnd_last", "srtt_us_last",
                "RePackets", "bytes_sent", "bytes_acked", "BReceived", "fastRetrans",
                "timeouts", "timeouts_backoff", "MaxAppWQueue", "SampleRTT", "SumRTT_us",
                "ReadByte", "WriteByte", "Duration_ns", "Duration_exact", "mss_cache"]


def write_flows_csv(outdir: str, flows: list[dict]) -> str:
    p = os.path.join(outdir, "flows.csv")
    with open(p, "w") as f:
        f.write(",".join(FLOW_COLUMNS) + "\n")
        for e in flows:  # one line per flow: the number of flows is small
            m = e.get("metrics") or {}
            row = [e["host"], e["flow"], e["client"], e["server"], e["role"],
                   e["client_source"], e["packets_sent"], e["packets_received"],
                   e["retransmissions"], m.get("snapshots", 0)]
            if "CWND" in m:
                row += [m["CWND"]["snd_cwnd"]["last"], m["srtt_us"]["last"], m["RePackets"],
                        m["BSent"]["bytes_sent"], m["BSent"]["bytes_acked"], m["BReceived"],
                        m["fastRetrans"], m["Timeout"]["first"], m["Timeout"]["backoff"],
                        m["MaxAppWQueue"], m["SampleRTT"], m["SumRTT_us"], m["ReadByte"],
                        m["WriteByte"], m["Duration_ns"], int(m["Duration_exact"]),
                        m["MSS"]["mss_cache"]]
            else:
                row += [""] * (len(FLOW_COLUMNS) - len(row))
            f.write(",".join("" if v is None else str(v) for v in row) + "\n")
    return p
