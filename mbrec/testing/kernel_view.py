"""The kernel's own view of TCP flows (`ss -tinH`, `nstat`), and how mbrec's flow records must
agree with it. Pure functions over text and record arrays; the lab tests use them on what
`mbrec lab run` captured, and the unit tests on sample text.

What must agree, and why it can be checked exactly although `ss` runs at an unknown instant
after its time stamp (docs/metrics.md, "Checked against the kernel"):
- counters (bytes sent/acked/received/retransmitted, total retransmits) only grow, so the ss
  value lies between mbrec's last record before the stamp and its first record after the read;
- every other field is compared exactly when the flow was quiet around the ss read: between
  those two records no ACK, state or close record and no tcp or sock event (periodic records
  only), and every record from the one to the other agrees on the field;
- fields that only ACK processing changes (ACK_PINNED_FIELDS: the peer's window, MSS, the RTT
  estimator, and cwnd and ssthresh when no retransmission, timeout or recovery (tcp events)
  lies between) are also compared exactly in a busy window of an established flow when every
  ACK was recorded (--flow-sample 1): if the per-ACK records on both sides of the read, and
  all between, hold one value, no ACK changed it and nothing else did;
- ss saw an established flow before its first record past ESTABLISHED (or its close record):
  that record closes the window when the flow ends before the next ss stamp;
- per namespace, the recorded episode counters sum to the nstat counter deltas over the run.
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass, field

import numpy as np

from mbrec.events import CONSTANTS

PERIODIC = CONSTANTS["MBREC_FLOW_PERIODIC"]
ACK = CONSTANTS["MBREC_FLOW_ACK"]
CLOSE = CONSTANTS["MBREC_FLOW_CLOSE"]
TCP_ESTABLISHED = CONSTANTS["MBREC_TCP_ESTABLISHED"]
TCP_PAST_ESTABLISHED = tuple(CONSTANTS[f"MBREC_TCP_{n}"] for n in (
    "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "CLOSING"))
TCP_INFINITE_SSTHRESH = 0x7FFFFFFF
_SERVICES = {"http": 80, "https": 443, "ssh": 22}

# ss field -> flow record field, compared exactly in quiet windows.
EXACT_FIELDS = {
    "cwnd": "snd_cwnd", "mss": "mss_cache", "advmss": "advmss", "snd_wnd": "snd_wnd",
    "unacked": "packets_out", "retrans_out": "retrans_out", "lost": "lost_out",
    "sacked": "sacked_out", "notsent": "app_wqueue", "ssthresh": "snd_ssthresh",
    "packets_in_flight": "packets_in_flight", "delivery_rate": "delivery_rate",
}
# Of those, the fields only ACK processing (tcp_ack, whose exit is recorded) changes, once the
# connection is established: pinned by equal per-ACK records around a busy read. cwnd and
# ssthresh also change on loss (retransmit timer, recovery entry), which emit tcp events.
ACK_PINNED_FIELDS = ("cwnd", "ssthresh", "mss", "advmss", "snd_wnd", "rtt", "rttvar", "minrtt",
                     "delivery_rate")  # tcp_rate_gen, from tcp_ack
LOSS_FIELDS = ("cwnd", "ssthresh")  # pinned only when no tcp event lies between the records
# ss field -> flow record field: counters, bracketed by the records around the read.
COUNTER_FIELDS = {
    "bytes_sent": "bytes_sent", "bytes_acked": "bytes_acked",
    "bytes_received": "bytes_received", "bytes_retrans": "bytes_retrans",
    "total_retrans": "total_retrans",
}
# Fields ss prints as milliseconds with %g: compared after the same rounding.
MS_FIELDS = {"rtt": "srtt_us", "rttvar": "rttvar_us", "minrtt": "min_rtt_us"}
# ss omits these when zero (tcp_info has them, iproute2 prints them only if non-zero).
_ZERO_WHEN_ABSENT = ("unacked", "retrans_out", "total_retrans", "lost", "sacked", "notsent",
                     "bytes_retrans", "bytes_sent", "bytes_acked", "bytes_received")


def _port(text: str) -> int:
    if text.isdigit():
        return int(text)
    if text in _SERVICES:
        return _SERVICES[text]
    return socket.getservbyname(text, "tcp")


def split_endpoint(text: str) -> tuple[str, int]:
    """'10.0.0.1:5201', '[::1]:http', '10.0.0.1%eth0:80' -> (address, port)."""
    addr, _, port = text.rpartition(":")
    addr = addr.strip("[]").split("%")[0]
    if addr.startswith("::ffff:") and "." in addr:
        addr = addr[len("::ffff:"):]
    return addr, _port(port)


def parse_ss_info(info: str) -> dict:
    """The info line of `ss -ti` into numbers (ms fields stay in ms, as printed)."""
    out: dict = {}
    toks = info.split()
    for tok, nxt in zip(toks, toks[1:] + [""]):
        if tok == "delivery_rate":
            # "delivery_rate 120451768bps": with -n, ss prints tcpi_delivery_rate * 8 as %.0f
            m = re.fullmatch(r"(\d+)bps", nxt)
            if m and int(m.group(1)) % 8 == 0:
                out["delivery_rate"] = int(m.group(1)) // 8
            continue
        if ":" not in tok:
            continue
        key, _, val = tok.partition(":")
        if key == "rtt" and "/" in val:
            a, b = val.split("/")
            out["rtt"], out["rttvar"] = float(a), float(b)
        elif key == "retrans" and "/" in val:
            a, b = val.split("/")
            out["retrans_out"], out["total_retrans"] = int(a), int(b)
        elif key == "minrtt":
            out["minrtt"] = float(val)
        elif key in ("cwnd", "ssthresh", "mss", "advmss", "snd_wnd", "unacked", "lost", "sacked",
                     "notsent", "bytes_sent", "bytes_acked", "bytes_received", "bytes_retrans",
                     "pmtu", "rcv_space", "rcv_ssthresh", "segs_out", "segs_in", "delivered"):
            if re.fullmatch(r"\d+", val):
                out[key] = int(val)
    for key in _ZERO_WHEN_ABSENT:
        out.setdefault(key, 0)
    if "delivery_rate" not in toks:  # printed only when non-zero; unparsed (no -n): unknown
        out["delivery_rate"] = 0
    out.setdefault("ssthresh", TCP_INFINITE_SSTHRESH)  # printed only once out of slow start
    out["packets_in_flight"] = (out["unacked"] - out["sacked"] - out["lost"]
                                + out["retrans_out"])
    return out


@dataclass
class SsEntry:
    stamp_ns: int
    state: str
    local: tuple[str, int]
    peer: tuple[str, int]
    info: dict = field(default_factory=dict)


def parse_ss(text: str) -> list[SsEntry]:
    """`ss -tinH` dumps, each preceded by '# monotonic_ns N' (as the lab writes them)."""
    entries: list[SsEntry] = []
    stamp = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("# monotonic_ns"):
            stamp = int(line.split()[2])
            continue
        if line[0] in " \t":
            if entries:
                entries[-1].info.update(parse_ss_info(line))
            continue
        parts = line.split()
        if len(parts) < 5:
            continue
        try:
            entries.append(SsEntry(stamp, parts[0], split_endpoint(parts[3]),
                                   split_endpoint(parts[4])))
        except (OSError, ValueError):
            continue  # an unknown service name: not one of ours
    return [e for e in entries if e.info]


def parse_nstat(text: str) -> list[tuple[int, dict]]:
    """nstat JSON lines as the lab writes them: (monotonic_ns, {counter: value})."""
    out = []
    for line in text.splitlines():
        if line.strip():
            d = json.loads(line)
            out.append((int(d["monotonic_ns"]), d["counters"]))
    return out


def nstat_delta(before: dict, after: dict, names) -> int:
    return sum(int(after.get(n, 0)) - int(before.get(n, 0)) for n in names)


# nstat counters that count exactly what mbrec counts (docs/metrics.md says why).
NSTAT_FAST_RECOVERY = ("TcpExtTCPSackRecovery", "TcpExtTCPRenoRecovery")
NSTAT_TIMEOUTS = ("TcpExtTCPTimeouts",)
NSTAT_RETRANS_SEGS = ("TcpRetransSegs",)


def addr_text(raw: np.ndarray, family: int) -> str:
    import ipaddress
    b = bytes(raw)
    return str(ipaddress.ip_address(b[:4] if family == 2 else b))


def flow_keys(recs: np.ndarray) -> list[tuple]:
    """(local addr, local port, peer addr, peer port) of every record."""
    return [(addr_text(r["saddr"], r["family"]), int(r["sport"]),
             addr_text(r["daddr"], r["family"]), int(r["dport"])) for r in recs]


def ms_matches(ss_ms: float, us: int) -> bool:
    """ss prints tcp_info's microseconds / 1000 with %g (6 significant digits)."""
    return float("%g" % (us / 1000.0)) == ss_ms


@dataclass
class Check:
    metric: str       # ss field
    flow: tuple
    stamp_ns: int
    kind: str         # "exact" (quiet window), "pinned" (equal per-ACK records) or "bracket"
    ss: float
    ours: tuple       # the record values used
    ok: bool


def compare_ss(entries: list[SsEntry], recs: np.ndarray, next_stamp: dict[int, int],
               other_ts: np.ndarray | None = None, tcp_ts: np.ndarray | None = None,
               every_ack: bool = False) -> list[Check]:
    """Every check that ss and the flow records allow (see the module doc).

    recs: one host's flow records (any reason); next_stamp: ss stamp -> the next stamp (the
    read happened before it); other_ts: (cookie, ts) pairs of tcp and sock events, which also
    mark a window as busy, as do ACK, state and close records (periodic ones do not);
    tcp_ts: (cookie, ts) of the tcp events alone, and every_ack: the trace holds a record of
    every ACK (flow_sample 1): both together allow the ACK-pinned comparisons in busy windows.
    """
    checks: list[Check] = []
    if len(recs) == 0:
        return checks
    keys = flow_keys(recs)
    by_flow: dict[tuple, list[int]] = {}
    for i, k in enumerate(keys):
        by_flow.setdefault(k, []).append(i)
    for e in entries:
        k = (e.local[0], e.local[1], e.peer[0], e.peer[1])
        idx = by_flow.get(k)
        if not idx:
            continue
        rows = np.array(idx)
        ts = recs["ts_ns"][rows]
        order = np.argsort(ts, kind="stable")
        rows, ts = rows[order], ts[order]
        end = next_stamp.get(e.stamp_ns, e.stamp_ns + 5_000_000_000)
        if e.state == "ESTAB":
            # ss saw the flow established, so it read before the flow's first record past
            # ESTABLISHED (TCP never returns to it): a flow closing before the next stamp
            # still has a record after the read
            states = recs["state"][rows]
            past = np.flatnonzero((ts > e.stamp_ns) & (np.isin(states, TCP_PAST_ESTABLISHED)
                                                       | (recs["reason"][rows] == CLOSE)))
            if len(past):
                end = min(end, int(ts[past[0]]))
        b = np.searchsorted(ts, e.stamp_ns, side="right") - 1
        a = np.searchsorted(ts, end, side="left")
        if b < 0 or a >= len(ts):
            continue
        # a socket id can be reused by a later flow with the same 4-tuple: same cookie required
        if recs["sock_cookie"][rows[b]] != recs["sock_cookie"][rows[a]]:
            continue
        before, after, between = recs[rows[b]], recs[rows[a]], recs[rows[b + 1:a]]
        window = recs[rows[b:a + 1]]
        quiet = bool(np.all(between["reason"] == PERIODIC))
        if quiet and other_ts is not None and len(other_ts):
            quiet = not _events_between(other_ts, before, after)
        # busy, but every ACK recorded and nothing else changing the ACK-pinned fields
        pinned = quiet or (every_ack and tcp_ts is not None
                           and bool(np.all(np.isin(between["reason"], [PERIODIC, ACK])))
                           and int(before["state"]) == TCP_ESTABLISHED)
        loss_free = quiet or (tcp_ts is not None and not _events_between(tcp_ts, before, after))
        for ssf, rf in COUNTER_FIELDS.items():
            v = e.info[ssf]
            checks.append(Check(ssf, k, e.stamp_ns, "bracket", v,
                                (int(before[rf]), int(after[rf])),
                                int(before[rf]) <= v <= int(after[rf])))
        if not pinned:
            continue
        for ssf, rf in EXACT_FIELDS.items():
            if ssf not in e.info or np.any(window[rf] != before[rf]):
                continue
            if not quiet and (ssf not in ACK_PINNED_FIELDS or (ssf in LOSS_FIELDS and not loss_free)):
                continue
            v = e.info[ssf]
            checks.append(Check(ssf, k, e.stamp_ns, "exact" if quiet else "pinned", v, (int(before[rf]),),
                                v == int(before[rf])))
        for ssf, rf in MS_FIELDS.items():
            if ssf not in e.info or np.any(window[rf] != before[rf]):
                continue
            if not quiet and ssf not in ACK_PINNED_FIELDS:
                continue
            v = e.info[ssf]
            checks.append(Check(ssf, k, e.stamp_ns, "exact" if quiet else "pinned", v, (int(before[rf]),),
                                ms_matches(v, int(before[rf]))))
    return checks


def _events_between(events: np.ndarray, before, after) -> bool:
    """Whether any (cookie, ts) event of before's socket lies strictly between the records."""
    mine = events[events["cookie"] == before["sock_cookie"]]["ts"]
    return bool(np.any((mine > before["ts_ns"]) & (mine < after["ts_ns"])))


def lives(cookies: np.ndarray, ts: np.ndarray, recs: np.ndarray) -> np.ndarray:
    """Which life of its socket id each event (cookie, ts) belongs to: the number of CLOSE
    records of that id before it. With fentry the id is the socket cookie, unique for the boot,
    and every event has life 0; with kprobes it is the socket's address, which the kernel
    reuses for a later socket once the first has closed (the recorder drops the id's state at
    the close, so each life starts afresh)."""
    out = np.zeros(len(cookies), np.int64)
    closes = recs[recs["reason"] == CLOSE]
    if len(closes) == 0 or len(cookies) == 0:
        return out
    c = np.concatenate([np.asarray(cookies, np.uint64), closes["sock_cookie"]])
    t = np.concatenate([np.asarray(ts, np.uint64), closes["ts_ns"]])
    is_close = np.r_[np.zeros(len(cookies), bool), np.ones(len(closes), bool)]
    order = np.lexsort((is_close, t, c))  # an event at a close's instant precedes it
    closed = np.cumsum(is_close[order])
    cc = c[order]
    start = np.r_[True, cc[1:] != cc[:-1]]
    before_group = np.maximum.accumulate(np.where(start, closed - is_close[order], 0))
    query = ~is_close[order]
    out[order[query]] = (closed - before_group)[query]
    return out


def final_records(recs: np.ndarray) -> np.ndarray:
    """The last record of every flow (its CLOSE or STOP record when the recorder saw it end):
    one per socket id and life (see lives)."""
    if len(recs) == 0:
        return recs
    life = lives(recs["sock_cookie"], recs["ts_ns"], recs)
    order = np.lexsort((recs["ts_ns"], life, recs["sock_cookie"]))
    r, life = recs[order], life[order]
    last = np.r_[(r["sock_cookie"][1:] != r["sock_cookie"][:-1]) | (life[1:] != life[:-1]), True]
    return r[last]


def episode_totals(recs: np.ndarray) -> dict[str, int]:
    """Sums over flows of the counters nstat also keeps, from each flow's last record."""
    f = final_records(recs)
    return {"fast_recoveries": int(f["fast_recoveries"].sum()),
            "timeouts": int(f["timeouts"].sum()) + int(f["timeouts_backoff"].sum()),
            "total_retrans": int(f["total_retrans"].sum())}


def in_socket_context(recs: np.ndarray) -> np.ndarray:
    """Records taken inside the kernel's own processing of the socket (per ACK, state change,
    close), where its fields are consistent with each other. Periodic and stop snapshots are
    read from user space's timer program while another CPU may be updating the socket, so one
    of them can hold fields from either side of an update (seen once in 6,500 records)."""
    return ~np.isin(recs["reason"], [PERIODIC, CONSTANTS["MBREC_FLOW_STOP"]])


def rtt_estimator_residuals(recs: np.ndarray) -> np.ndarray:
    """For consecutive per-ACK records of one flow that took exactly one RTT sample m between
    them: srtt_after - (7/8 srtt_before + m/8), in us. The kernel's estimator does exactly this
    on srtt<<3 (tcp_rtt_estimator), so with raw samples the residual is within rounding (|r| <
    2 us); with smoothed values in place of samples it would not be."""
    life = lives(recs["sock_cookie"], recs["ts_ns"], recs)
    keep = in_socket_context(recs)
    recs, life = recs[keep], life[keep]
    order = np.lexsort((recs["ts_ns"], life, recs["sock_cookie"]))
    r, life = recs[order], life[order]
    same = (r["sock_cookie"][1:] == r["sock_cookie"][:-1]) & (life[1:] == life[:-1])
    dn = r["rtt_samples"][1:].astype(np.int64) - r["rtt_samples"][:-1]
    ok = same & (dn == 1) & (r["srtt_us"][:-1] > 0)
    m = (r["rtt_sum_us"][1:].astype(np.int64) - r["rtt_sum_us"][:-1])[ok]
    s0 = r["srtt_us"][:-1][ok].astype(np.float64)
    s1 = r["srtt_us"][1:][ok].astype(np.float64)
    out = s1 - (s0 * 7 / 8 + m / 8)
    return out
