"""Flow results: the 16 flow metrics (docs/metrics.md) as time series and a final summary.

Input: one host's flow snapshots (schema "flow"), tcp events and sock events, already assigned
to flows by analysis.packets.identify_flows. Everything is grouped per flow with sorts and
bincounts; the only Python loop is over flows when building the JSON summary.
"""

from __future__ import annotations

import numpy as np

from mbrec.events import CONSTANTS

SEEN_ESTABLISH = CONSTANTS["MBREC_FLOWF_SEEN_ESTABLISH"]
TCP_KIND = {CONSTANTS[f"MBREC_TCP_{n}"]: n.lower()
            for n in ("RTT_SAMPLE", "RETRANSMIT", "RECOVERY", "TIMEOUT", "STATE")}

# Time-series columns, in CSV order: (column, source field or None for derived)
SERIES = ["snd_cwnd", "snd_ssthresh", "srtt_us", "rttvar_us", "min_rtt_us",
          "packets_in_flight", "bytes_in_flight", "snd_wnd", "rcv_wnd", "app_wqueue",
          "max_app_wqueue", "mss_cache", "advmss", "total_retrans", "bytes_sent", "bytes_acked",
          "bytes_received", "bytes_retrans", "fast_recoveries", "timeouts", "timeouts_backoff",
          "rtt_samples", "rtt_sum_us", "read_bytes", "write_bytes", "delivery_rate", "state",
          "reason"]
GAUGES = ["packets_in_flight", "bytes_in_flight", "snd_wnd", "rcv_wnd", "snd_cwnd",
          "snd_ssthresh", "app_wqueue", "srtt_us"]


def flow_series(flow_recs: np.ndarray, flow_idx: np.ndarray) -> dict:
    """Columns of every snapshot, sorted by (flow, time), plus 'flow' and 't'."""
    if len(flow_recs) == 0:
        return {"flow": np.zeros(0, np.int64), "t": np.zeros(0, np.int64)}
    order = np.lexsort((flow_recs["ts_ns"], flow_idx))
    out = {"flow": flow_idx[order].astype(np.int64), "t": flow_recs["ts_ns"][order].astype(np.int64)}
    for c in SERIES:
        out[c] = flow_recs[c][order]
    out["established_ns"] = flow_recs["established_ns"][order]
    out["flags"] = flow_recs["flags"][order]
    return out


def _last_per_group(group: np.ndarray) -> np.ndarray:
    """Index of the last element of each run of equal values (group sorted)."""
    if len(group) == 0:
        return np.zeros(0, np.int64)
    return np.nonzero(np.r_[group[1:] != group[:-1], True])[0]


def flow_summaries(series: dict, nflows: int, tcp: np.ndarray | None, tcp_flow: np.ndarray | None,
                   sock: np.ndarray | None, sock_flow: np.ndarray | None) -> list[dict | None]:
    """Per flow: the 16 metrics at the last snapshot (counters) and over the flow's life
    (gauges: last, mean, max), with cross-checks from discrete tcp events and socket calls."""
    out: list[dict | None] = [None] * nflows
    f = series["flow"]
    counts = np.bincount(f, minlength=nflows) if len(f) else np.zeros(nflows, np.int64)
    last = _last_per_group(f)
    gauge_max, gauge_mean = {}, {}
    for g in GAUGES:
        if len(f):
            v = series[g].astype(np.float64)
            mx = np.full(nflows, np.nan)
            starts = np.r_[0, last[:-1] + 1]
            mx[f[last]] = np.maximum.reduceat(v, starts)
            gauge_max[g] = mx
            gauge_mean[g] = np.bincount(f, weights=v, minlength=nflows) / np.maximum(counts, 1)
    ev_counts = {}
    if tcp is not None and len(tcp):
        for kind, name in TCP_KIND.items():
            sel = tcp["kind"] == kind
            ev_counts[name] = np.bincount(tcp_flow[sel], minlength=nflows)
        rtt = tcp["kind"] == CONSTANTS["MBREC_TCP_RTT_SAMPLE"]
        ev_counts["rtt_sum_us"] = np.bincount(tcp_flow[rtt], weights=tcp["value"][rtt],
                                              minlength=nflows)
    sock_bytes = {}
    if sock is not None and len(sock):
        for kind, name in ((CONSTANTS["MBREC_SOCK_READ"], "read"),
                           (CONSTANTS["MBREC_SOCK_WRITE"], "write")):
            sel = sock["kind"] == kind
            sock_bytes[name] = np.bincount(sock_flow[sel], weights=sock["bytes"][sel],
                                           minlength=nflows)
    at_last = ({c: series[c][last].tolist() for c in SERIES + ["t", "established_ns", "flags"]}
               if len(f) else {})
    for j, i in enumerate(f[last].tolist() if len(f) else []):
        s = {c: at_last[c][j] for c in SERIES}
        t_last = at_last["t"][j]
        est = at_last["established_ns"][j]
        exact = bool(at_last["flags"][j] & SEEN_ESTABLISH)

        def gauge(name):
            return {"last": s[name], "mean": float(gauge_mean[name][i]),
                    "max": float(gauge_max[name][i])}

        out[i] = {
            "snapshots": int(counts[i]),
            "FlightSize": {"packets": gauge("packets_in_flight"), "bytes": gauge("bytes_in_flight")},
            "RWND": {"snd_wnd": gauge("snd_wnd"), "rcv_wnd": gauge("rcv_wnd")},
            "CWND": {"snd_cwnd": gauge("snd_cwnd"), "snd_ssthresh": gauge("snd_ssthresh")},
            "MSS": {"mss_cache": s["mss_cache"], "advmss": s["advmss"]},
            "RePackets": s["total_retrans"],
            "BSent": {"bytes_sent": s["bytes_sent"], "bytes_acked": s["bytes_acked"]},
            "BReceived": s["bytes_received"],
            "fastRetrans": s["fast_recoveries"],
            "Timeout": {"first": s["timeouts"], "backoff": s["timeouts_backoff"]},
            "CurAppWQueue": gauge("app_wqueue"),
            "MaxAppWQueue": max(int(s["max_app_wqueue"]), int(gauge_max["app_wqueue"][i])),
            "SampleRTT": s["rtt_samples"],
            "SumRTT_us": s["rtt_sum_us"],
            "ReadByte": s["read_bytes"],
            "WriteByte": s["write_bytes"],
            "Duration_ns": t_last - est if est else None,
            "Duration_exact": exact,
            "srtt_us": gauge("srtt_us"), "rttvar_us": s["rttvar_us"], "min_rtt_us": s["min_rtt_us"],
            "delivery_rate": s["delivery_rate"], "state": s["state"],
            "last_reason": s["reason"],
        }
    for i in range(nflows):
        extra = {}
        for name, arr in ev_counts.items():
            extra[f"tcp_events_{name}"] = int(arr[i])
        for name, arr in sock_bytes.items():
            extra[f"socket_{name}_bytes"] = int(arr[i])
        if extra:
            if out[i] is None:
                out[i] = {"snapshots": 0}
            out[i]["cross_check"] = extra
    return out
