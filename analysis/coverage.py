"""What a recording's probe set can and cannot split, from its trace header's probe list.

A recording made with fewer probes than the full function set (``--attach tracepoint``, where
the kernel has no tracepoint at tcp_transmit_skb, ip_queue_xmit or tcp_v4_rcv; or a kernel
lacking some function) has some layers and flow metrics, not others. Per host this module
says which latencies exist and how exact each is, which of the 16 flow metrics (docs/metrics.md)
are exact, approximate or absent, and why; the report carries it (``coverage`` in each host
section) and absent flow metrics are reported as null, never as the 0 the records hold (the
raw flow time series, flow_series.csv, keep the records' columns as recorded).

Statuses: "exact" (the probes the definition names, or tracepoints at the same points),
"approximate" (a nearby point: the reason says how far), "absent" (no probe for it).
"""

from __future__ import annotations

import numpy as np

from mbrec.events import PACKET_PROBES

EXACT, APPROX, ABSENT = "exact", "approximate", "absent"

# The receive IP and TCP layers as one span, where tcp_v4_rcv is not probed (tracepoints).
STACK_NAMES = ("L_STACK_2", "L_STACK_4")
DEFINITIONS = {
    "L_STACK_2": "R receive: skb_copy_datagram_iter delivering the skb's first byte - ip_rcv "
                 "(L_IP_2 + L_TCP_2 as one span, where tcp_v4_rcv is not probed)",
    "L_STACK_4": "S receive: skb_copy_datagram_iter delivering the skb's first byte - ip_rcv "
                 "(L_IP_4 + L_TCP_4 as one span, where tcp_v4_rcv is not probed)",
}

# latency -> the probes it is computed from (both ends must be recorded)
_SEND, _RECV = ("1", "3"), ("2", "4")
NEEDS = {}
for _s in _SEND:
    NEEDS[f"L_TCP_{_s}"] = ("tcp_transmit_skb", "ip_queue_xmit")
    NEEDS[f"L_IP_{_s}"] = ("ip_queue_xmit", "dev_queue_xmit")
    NEEDS[f"L_NIC_{_s}"] = ("dev_queue_xmit", "dev_hard_start_xmit")
    NEEDS[f"W_SND_{_s}"] = ("tcp_sendmsg", "tcp_transmit_skb")
for _r in _RECV:
    NEEDS[f"L_NIC_{_r}"] = ("eth_type_trans", "ip_rcv")
    NEEDS[f"L_IP_{_r}"] = ("ip_rcv", "tcp_v4_rcv")
    NEEDS[f"L_TCP_{_r}"] = ("tcp_v4_rcv", "skb_copy_datagram_iter")
    NEEDS[f"L_STACK_{_r}"] = ("ip_rcv", "skb_copy_datagram_iter")
    NEEDS[f"W_RCV_{_r}"] = ("tcp_v4_rcv", "tcp_recvmsg")
NEEDS["L_APP_1"] = NEEDS["L_APP_2"] = ("skb_copy_datagram_iter", "tcp_transmit_skb")
NEEDS["L_NET"] = ("dev_hard_start_xmit", "eth_type_trans")  # sender's and receiver's

# What a tracepoint stands in for, when it is not at the probe's own point.
TRACEPOINT_NOTES = {
    "dev_queue_xmit": "net_dev_queue, in __dev_queue_xmit once the transmit queue is picked, "
                      "just before the qdisc",
    "dev_hard_start_xmit": "net_dev_start_xmit, per skb handed to the driver (each "
                           "software-GSO segment)",
    "eth_type_trans": "the driver's hand-over to the stack (netif_rx, napi_gro_receive, "
                      "netif_receive_skb[_list] entry), just after eth_type_trans",
    "ip_rcv": "netif_receive_skb (__netif_receive_skb_core), just before ip_rcv",
    "skb_copy_datagram_iter": "skb_copy_datagram_iovec, the copy's offset derived from "
                              "copied_seq (not for a MSG_PEEK read)",
}

FLOW_METRICS = ("FlightSize", "RWND", "CWND", "MSS", "RePackets", "BSent", "BReceived",
                "fastRetrans", "Timeout", "CurAppWQueue", "MaxAppWQueue", "SampleRTT", "SumRTT",
                "ReadByte", "WriteByte", "Duration")
# report keys of the metrics (analysis/flows.py flow_summaries), where they differ
_METRIC_KEYS = {"SumRTT": ("SumRTT_us",), "Duration": ("Duration_ns", "Duration_exact")}


# a probe's attach kind in the header when it is a tracepoint (raw, or BTF-typed: the same
# tracepoint, read more cheaply)
TRACEPOINT_KINDS = ("raw_tracepoint", "tp_btf")


def probes_of(header: dict) -> dict[str, str]:
    """probe name -> "attach:function" of every probe in the header (one of each name)."""
    out: dict = {}
    for p in header.get("probes", []):
        out.setdefault(p["name"], f"{p.get('attach', '')}:{p.get('function', '')}")
    return out


def applies(header: dict) -> bool:
    """Whether the recording's probe set differs from the full function set: then the report
    says what it covers. (Recordings with all packet probes keep their report unchanged.)"""
    names = probes_of(header)
    return (header.get("options", {}).get("attach") == "tracepoint"
            or bool(names) and not set(PACKET_PROBES) <= set(names))


def _latency(name: str, have: dict) -> dict:
    need = NEEDS[name]
    missing = [p for p in need if p not in have]
    if missing:
        return {"status": ABSENT, "why": f"not recorded: {', '.join(missing)}"}
    if name.startswith("L_STACK") and "tcp_v4_rcv" in have:
        return {"status": ABSENT, "why": "split into L_IP and L_TCP (tcp_v4_rcv is recorded)"}
    notes = [f"{p} = {TRACEPOINT_NOTES[p]}" for p in need
             if p in TRACEPOINT_NOTES and have[p].startswith(TRACEPOINT_KINDS)]
    if notes:
        return {"status": APPROX, "why": "; ".join(notes)}
    return {"status": EXACT, "why": ""}


def _flow_metrics(have: dict) -> dict:
    def via(probe, *kinds):
        return probe in have and have[probe].split(":", 1)[1] in kinds

    out = {}
    if "tcp_ack" not in have and "tcp_state" not in have:
        return {m: {"status": ABSENT, "why": "no flow probes recorded (--probes flows)"}
                for m in FLOW_METRICS}
    if via("tcp_ack", "tcp:tcp_probe"):
        ack = (APPROX, "per-ACK snapshots from tcp_probe, taken before the segment is "
                       "processed: one ACK behind; exact at close and periodic snapshots")
    elif "tcp_ack" in have:
        ack = (EXACT, "")
    else:
        ack = (APPROX, "no per-ACK snapshots: periodic and close snapshots only")
    for m in ("FlightSize", "RWND", "CWND"):
        out[m] = ack
    for m in ("MSS", "RePackets", "BSent", "BReceived"):
        out[m] = (EXACT, "kernel counters, final at close")
    out["fastRetrans"] = ((EXACT, "entries into CA_Recovery (tcp_cong_state_set)")
                          if via("tcp_enter_recovery", "tcp:tcp_cong_state_set") else
                          (EXACT, "") if "tcp_enter_recovery" in have else
                          (ABSENT, "not recorded: tcp_enter_recovery"))
    if via("tcp_timeout", "tcp:tcp_cong_state_set"):
        out["Timeout"] = (APPROX, "entries into CA_Loss (tcp_enter_loss, on every RTO), "
                                  "without the kernel's TCPTimeouts exceptions; no SYN-ACK "
                                  "timeouts of request sockets")
    else:
        out["Timeout"] = (EXACT, "") if "tcp_timeout" in have else \
            (ABSENT, "not recorded: tcp_timeout")
    if via("tcp_sendmsg", "sock:sock_send_length"):
        out["WriteByte"] = (EXACT, "sock_send_length")
        wq = (APPROX, "the send queue is read after sendmsg returned (not before the socket "
                      "is released) and when a writer blocks on a full buffer it is not seen")
    elif "tcp_sendmsg" in have:
        out["WriteByte"], wq = (EXACT, ""), (EXACT, "")
    else:
        out["WriteByte"] = (ABSENT, "not recorded: tcp_sendmsg")
        wq = (APPROX, "snapshots only")
    out["CurAppWQueue"] = out["MaxAppWQueue"] = wq
    out["ReadByte"] = ((EXACT, "") if "tcp_recvmsg" in have
                       else (ABSENT, "not recorded: tcp_recvmsg"))
    rtt = (EXACT, "") if "tcp_rtt" in have else \
        (ABSENT, "no raw RTT samples: no tracepoint sees them (the smoothed RTT is in srtt_us)")
    out["SampleRTT"] = out["SumRTT"] = rtt
    out["Duration"] = ((EXACT, "from the ESTABLISHED transition") if "tcp_state" in have
                       else (APPROX, "from the first record of the flow: a lower bound"))
    return {m: {"status": s, "why": w} for m, (s, w) in out.items()}


def coverage(header: dict) -> dict | None:
    """The host's coverage section, or None where the probe set is the full one."""
    if not applies(header):
        return None
    have = probes_of(header)
    lat = {n: _latency(n, have) for n in NEEDS}
    return {"attach": header.get("options", {}).get("attach"),
            "latencies": lat, "flow_metrics": _flow_metrics(have),
            "definitions": {n: DEFINITIONS[n] for n in STACK_NAMES
                            if lat[n]["status"] != ABSENT}}


def stack_samples(table, client: np.ndarray, name_id: dict) -> tuple | None:
    """L_STACK_2/4 samples (name, flow, t, value, row) of the received rows that have ip_rcv
    and a copy, for a recording without tcp_v4_rcv; None if there are none. client: per row,
    whether the receiving endpoint is the flow's client (then the name is L_STACK_4)."""
    rows = table.pkt
    ts = rows["ts"]
    ok = (rows["direction"] == 1) & (ts[:, 1] >= 0) & (ts[:, 3] >= 0)
    idx = np.nonzero(ok)[0]
    if not len(idx):
        return None
    name = np.where(client[idx], name_id["L_STACK_4"], name_id["L_STACK_2"])
    return name, rows["flow"][idx], ts[idx, 1], ts[idx, 3] - ts[idx, 1], idx


def mask_flow_metrics(summaries: list, cov: dict | None) -> list:
    """The per-flow metric summaries with every absent metric set to None (its records hold
    0, which is no measurement)."""
    if not cov:
        return summaries
    absent = [m for m, c in cov["flow_metrics"].items() if c["status"] == ABSENT]
    for s in summaries:
        if not s or "CWND" not in s:
            continue
        for m in absent:
            for key in _METRIC_KEYS.get(m, (m,)):
                if key in s:
                    s[key] = None
    return summaries


def text_lines(cov: dict | None) -> list[str]:
    """The terminal's lines for one host: what this probe set splits and what it cannot."""
    if not cov:
        return []
    lat = cov["latencies"]
    by = {s: [n for n, c in lat.items() if c["status"] == s] for s in (EXACT, APPROX, ABSENT)}
    lines = [f"  probe set ({cov['attach']}): latencies exact {', '.join(by[EXACT]) or '-'}; "
             f"approximate {', '.join(by[APPROX]) or '-'}; absent {', '.join(by[ABSENT]) or '-'}"]
    notes = dict.fromkeys(part for n in by[APPROX] for part in lat[n]["why"].split("; "))
    lines += [f"    ~ {note}" for note in notes]
    fm = cov["flow_metrics"]
    fby = {s: [m for m, c in fm.items() if c["status"] == s] for s in (EXACT, APPROX, ABSENT)}
    lines.append(f"  flow metrics: exact {', '.join(fby[EXACT]) or '-'}; approximate "
                 f"{', '.join(fby[APPROX]) or '-'}; absent (not reported) "
                 f"{', '.join(fby[ABSENT]) or '-'}")
    return lines
