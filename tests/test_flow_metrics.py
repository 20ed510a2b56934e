"""The 16 flow metrics against the kernel's own view (ss -tinH, nstat), on lab recordings.

Two sources of runs, one set of tests:
- the recorded fixtures of the `ab`, `bulk`, `lossy` and `rto` scenarios (fixtures/, recorded
  by `mbrec record` in the lab VM, with the namespaces' ss and nstat captured during the run):
  checked in every test run, no VM needed;
- a fresh lab boot of `flows` (marked `lab`), run as bench/flows_check.py in the flows network
  (one recorder for hosts a and b; two connections send 2 MB with 2% loss then stay idle 30 s
  while ss runs, then a transfer through a 3 s blackhole: the exact comparisons, fast
  retransmits and first and backed-off timeouts). With MBREC_LAB_FLOWS_ALL=1 also fresh boots
  of rto, lossy, bulk and ab through the scenario runner, recording with `--probes flows`.
The comparison rules are in mbrec/testing/kernel_view.py and docs/metrics.md. In the iperf3
and ab scenarios ss rarely runs while a flow is quiet, so there the ss checks must pass but
need not exist; in `flows` each must have happened. No timing assertions: counts, exact
values, and a transfer's duration standing out.

Run the checks on an existing output folder with MBREC_FLOWS_LAB_OUT=/path/to/out
(and MBREC_FLOWS_LAB_SCENARIO=name).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from labutil import vm_skip_reason

from mbrec.events import CONSTANTS
from mbrec.testing import kernel_view as kv

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RECORDED = ["ab", "bulk", "lossy", "rto"]  # fixtures/<name>: lab recordings with ss and nstat
LAB = ["flows"] + (["rto", "lossy", "bulk", "ab"] if os.environ.get("MBREC_LAB_FLOWS_ALL") else [])
LOSSY = ("lossy", "rto", "flows")  # scenarios that inject loss: retransmissions must appear
HOSTS = ("a", "b")
CLOSE, STOP = CONSTANTS["MBREC_FLOW_CLOSE"], CONSTANTS["MBREC_FLOW_STOP"]
SEEN_ESTABLISH = CONSTANTS["MBREC_FLOWF_SEEN_ESTABLISH"]
READ, WRITE = CONSTANTS["MBREC_SOCK_READ"], CONSTANTS["MBREC_SOCK_WRITE"]
NEW_SYN_RECV = 12  # TCP_NEW_SYN_RECV


def _lab_skip_reason():
    if os.environ.get("MBREC_FLOWS_LAB_OUT"):  # checks an earlier run's output: no VM needed
        return None
    return vm_skip_reason()


_LAB_MARKS = [pytest.mark.lab] + ([pytest.mark.skip(reason=_lab_skip_reason())] if _lab_skip_reason() else [])
PARAMS = [pytest.param(("fixture", n), id=f"fixture-{n}") for n in RECORDED] + \
         [pytest.param(("lab", n), id=f"lab-{n}", marks=_LAB_MARKS) for n in LAB]
# the runs whose workload (ab or iperf3) counted its own bytes: all but `flows`, whose traffic
# is bench/flows_check.py's
WITH_WORKLOAD = [p for p in PARAMS if p.values[0][1] != "flows"]


class Run:
    """One scenario's output folder, loaded."""

    def __init__(self, name: str, out: Path):
        from mbrec.trace.reader import read_trace
        self.name, self.out = name, out
        self.flow, self.tcp, self.sock, self.ss, self.nstat, self.next_stamp = {}, {}, {}, {}, {}, {}
        self.every_ack, self._checks, self.lost = {}, {}, {}
        one = out / "all.mbrec"  # bench/flows_check.py: one recorder for both namespaces
        netns = json.loads((out / "netns.json").read_text()) if one.exists() else {}
        for h in HOSTS:
            t = read_trace(str(one if one.exists() else out / f"{h}.mbrec"))
            self.every_ack[h] = t.header["options"].get("flow_sample") == 1
            self.lost[h] = dict(t.lost)  # of the trace holding h (all.mbrec: both hosts)
            for name, store in (("flow", self.flow), ("tcp", self.tcp), ("sock", self.sock)):
                ev = t.events.get(name)
                store[h] = ev[ev["netns"] == netns[h]] if netns and ev is not None else ev
            text = "".join((out / f"ss-{h}-{p}.txt").read_text()
                           for p in ("before", "during", "after") if (out / f"ss-{h}-{p}.txt").exists())
            self.ss[h] = kv.parse_ss(text)
            stamps = sorted({int(line.split()[2]) for line in text.splitlines()
                             if line.startswith("# monotonic_ns")})
            self.next_stamp[h] = dict(zip(stamps, stamps[1:]))
            self.nstat[h] = [c for p in ("before", "after")
                             for c in kv.parse_nstat((out / f"nstat-{h}-{p}.jsonl").read_text())]

    def others(self, h, kinds=("tcp", "sock")):
        """(cookie, ts) of every tcp and sock event: they mark windows as busy."""
        parts = [e for e in (self.tcp[h] if "tcp" in kinds else None,
                             self.sock[h] if "sock" in kinds else None) if e is not None and len(e)]
        dt = [("cookie", "<u8"), ("ts", "<u8")]
        if not parts:
            return np.zeros(0, dt)
        out = np.zeros(sum(len(p) for p in parts), dt)
        out["cookie"] = np.concatenate([p["sock_cookie"] for p in parts])
        out["ts"] = np.concatenate([p["ts_ns"] for p in parts])
        return out

    def checks(self, h):
        """Every ss comparison of host h, computed once per run (each metric's test reads them)."""
        if h not in self._checks:
            self._checks[h] = kv.compare_ss(self.ss[h], self.flow[h], self.next_stamp[h],
                                            self.others(h), self.others(h, ("tcp",)),
                                            self.every_ack[h])
        return self._checks[h]

    def data_flows(self, h):
        """Final records of the flows that carried data (not the control connections)."""
        f = kv.final_records(self.flow[h])
        return f[(f["bytes_acked"] > 100_000) | (f["bytes_received"] > 100_000)]

    @property
    def need(self) -> int:
        """Comparisons with ss each metric must have had: only `flows` guarantees quiet reads."""
        return 1 if self.name == "flows" else 0


@pytest.fixture(scope="module", params=PARAMS)
def run(request, tmp_path_factory):
    source, name = request.param
    if source == "fixture":
        return Run(name, FIXTURES / name)
    if os.environ.get("MBREC_FLOWS_LAB_OUT"):
        if os.environ.get("MBREC_FLOWS_LAB_SCENARIO", "flows") != name:
            pytest.skip(f"MBREC_FLOWS_LAB_OUT holds {os.environ.get('MBREC_FLOWS_LAB_SCENARIO', 'flows')}")
        return Run(name, Path(os.environ["MBREC_FLOWS_LAB_OUT"]))
    out = tmp_path_factory.mktemp(f"flows-{name}") / "out"
    if name == "flows":
        args = ["--timeout", "2700", "--", "python3", "/mnt/src/bench/flows_check.py"]
    else:
        args = ["--record-args", "--probes flows --flow-interval 0.5"]
    r = subprocess.run([sys.executable, "-m", "mbrec", "lab", "run", name, "-o", str(out), *args],
                       capture_output=True, text=True, timeout=3000)
    assert r.returncode == 0, r.stderr[-3000:]
    return Run(name, out)


def _all(run, metrics, kind=None):
    out = []
    for h in HOSTS:
        out += [c for c in run.checks(h) if c.metric in metrics and (kind is None or c.kind == kind)]
    return out


def _assert_checks(checks, need):
    bad = [c for c in checks if not c.ok]
    assert not bad, bad[:10]
    assert len(checks) >= need, f"only {len(checks)} comparisons"


def test_every_flow_is_recorded_from_establishment_to_an_end_record(run):
    for h in HOSTS:
        f = run.flow[h]
        assert f is not None and len(f), h
        final = kv.final_records(f)
        assert np.isin(final["reason"], [CLOSE, STOP]).all()
        assert (final["flags"] & SEEN_ESTABLISH).all()  # every flow began after recording
        seen = {(e.local, e.peer) for e in run.ss[h]}
        keys = {((k[0], k[1]), (k[2], k[3])) for k in kv.flow_keys(f)}
        assert seen <= keys, seen - keys
        assert len(run.data_flows(h)) >= 1


def test_m01_flightsize(run):
    _assert_checks(_all(run, {"packets_in_flight", "unacked", "retrans_out", "lost", "sacked"}), run.need)
    for h in HOSTS:
        f = run.flow[h]
        assert (f["bytes_in_flight"] == (f["snd_nxt"] - f["snd_una"]).astype(np.uint32)).all()
        assert (f["packets_in_flight"] == f["packets_out"] - f["sacked_out"] - f["lost_out"]
                + f["retrans_out"]).all()


def test_m02_rwnd(run):
    _assert_checks(_all(run, {"snd_wnd"}), run.need)
    for h in HOSTS:
        assert (run.data_flows(h)["rcv_wnd"] > 0).all()


def test_m03_cwnd(run):
    _assert_checks(_all(run, {"cwnd", "ssthresh"}), run.need)


def test_m04_mss(run):
    _assert_checks(_all(run, {"mss", "advmss"}), run.need)


def test_m05_repackets(run):
    _assert_checks(_all(run, {"total_retrans", "bytes_retrans"}), run.need)
    for h in HOSTS:
        t0, t1 = run.nstat[h][0][1], run.nstat[h][-1][1]
        assert kv.episode_totals(run.flow[h])["total_retrans"] == \
            kv.nstat_delta(t0, t1, kv.NSTAT_RETRANS_SEGS), h
    if run.name in LOSSY:
        assert kv.episode_totals(run.flow["a"])["total_retrans"] > 0


def test_m06_bsent(run):
    _assert_checks(_all(run, {"bytes_sent", "bytes_acked"}), 4 * run.need)


def test_m07_breceived(run):
    _assert_checks(_all(run, {"bytes_received"}), 2 * run.need)


def test_m08_fast_retrans(run):
    for h in HOSTS:
        t0, t1 = run.nstat[h][0][1], run.nstat[h][-1][1]
        assert kv.episode_totals(run.flow[h])["fast_recoveries"] == \
            kv.nstat_delta(t0, t1, kv.NSTAT_FAST_RECOVERY), h
    if run.name in ("lossy", "flows"):  # random loss on a data transfer
        assert kv.episode_totals(run.flow["a"])["fast_recoveries"] > 0


def test_m09_timeouts(run):
    """TCPTimeouts also counts request sockets' SYN-ACK timeouts (no flow yet): mbrec has them
    as tcp TIMEOUT events with old_state TCP_NEW_SYN_RECV, so flows + those = the counter."""
    for h in HOSTS:
        t0, t1 = run.nstat[h][0][1], run.nstat[h][-1][1]
        ev = run.tcp[h] if run.tcp[h] is not None else np.zeros(0, dtype=[("kind", "u1"), ("old_state", "u1")])
        synack = int(((ev["kind"] == CONSTANTS["MBREC_TCP_TIMEOUT"]) & (ev["old_state"] == NEW_SYN_RECV)).sum())
        assert kv.episode_totals(run.flow[h])["timeouts"] + synack == \
            kv.nstat_delta(t0, t1, kv.NSTAT_TIMEOUTS), h
    if run.name in ("rto", "flows"):
        final = kv.final_records(run.flow["a"])
        assert final["timeouts"].sum() > 0 and final["timeouts_backoff"].sum() > 0
        ev = run.tcp["a"]
        timeouts = ev[(ev["kind"] == CONSTANTS["MBREC_TCP_TIMEOUT"]) & (ev["old_state"] != NEW_SYN_RECV)]
        assert (timeouts["value"] == 0).sum() == final["timeouts"].sum()


def test_m10_cur_app_wqueue(run):
    _assert_checks(_all(run, {"notsent"}), run.need)
    for h in HOSTS:
        f = run.flow[h]
        f = f[kv.in_socket_context(f)]  # periodic snapshots may straddle an update
        assert (f["app_wqueue"] == np.maximum((f["write_seq"] - f["snd_nxt"]).astype(np.int32), 0)).all()


def test_m11_max_app_wqueue(run):
    for h in HOSTS:
        f = run.flow[h]
        life = kv.lives(f["sock_cookie"], f["ts_ns"], f)  # kprobe ids are reused addresses
        order = np.lexsort((f["ts_ns"], life, f["sock_cookie"]))
        f, life = f[order], life[order]
        assert (f["max_app_wqueue"] >= f["app_wqueue"]).all()
        same = (f["sock_cookie"][1:] == f["sock_cookie"][:-1]) & (life[1:] == life[:-1])
        assert (f["max_app_wqueue"][1:][same] >= f["max_app_wqueue"][:-1][same]).all()
    if run.name in ("bulk", "lossy", "rto", "flows"):  # the sender fills its send buffer
        assert run.data_flows("a")["max_app_wqueue"].max() > 0


def test_m12_m13_sample_rtt_and_sum_rtt_are_the_estimators_raw_samples(run):
    for h in HOSTS:
        for f in run.data_flows(h):
            assert f["rtt_samples"] > 0 and f["rtt_sum_us"] >= f["rtt_samples"] * f["min_rtt_us"]
    res = [kv.rtt_estimator_residuals(run.flow[h]) for h in HOSTS]
    assert sum(len(r) for r in res) > 20
    # every pair of consecutive records is explained by the raw samples recorded between them,
    # except where a tcp_rtt run was lost, which the trace counts (a kprobe misses a run when a
    # softirq hits it while another kprobe runs: docs/kernel-matrix.md); each loss spoils one pair
    bad = sum(int((np.abs(r) >= 2).sum()) for r in res)
    one_trace = (run.out / "all.mbrec").exists()  # bench/flows_check.py: both hosts in one
    lost = sum(run.lost[h].get("tcp_rtt", 0) for h in (HOSTS[:1] if one_trace else HOSTS))
    assert bad <= lost, (bad, lost, max(float(np.abs(r).max()) for r in res if len(r)))


def test_srtt_rttvar_minrtt_as_ss_prints_them(run):
    _assert_checks(_all(run, {"rtt", "rttvar", "minrtt"}), run.need)


def test_delivery_rate_as_ss_prints_it(run):
    """tcp_info's delivery rate, which ss prints in bits/s: exact, from the same two fields."""
    _assert_checks(_all(run, {"delivery_rate"}), run.need)
    assert (run.data_flows("a")["delivery_rate"] > 0).all()  # a sends in every scenario


def _sock_checks(run, h, kind, counter):
    s = run.sock[h]
    s = s[s["kind"] == kind] if s is not None else s
    final = kv.final_records(run.flow[h])
    if s is not None and len(s):
        s_life = kv.lives(s["sock_cookie"], s["ts_ns"], run.flow[h])
    f_life = kv.lives(final["sock_cookie"], final["ts_ns"], run.flow[h])
    for f, life in zip(final, f_life):
        mine = s[(s["sock_cookie"] == f["sock_cookie"]) & (s_life == life)]
        mine = mine[np.argsort(mine["ts_ns"], kind="stable")]
        assert int(mine["bytes"].astype(np.int64).sum()) == int(f[counter])
        span = (mine["seq_end"] - mine["seq_start"]).astype(np.int64) - mine["bytes"]
        assert np.isin(span, [0, 1]).all()  # a read may also consume the FIN
        assert (mine["seq_start"][1:] == mine["seq_end"][:-1]).all()  # contiguous calls
        assert (mine["bytes"] <= mine["requested"]).all()
    return final


def test_m14_read_bytes(run):
    for h in HOSTS:
        final = _sock_checks(run, h, READ, "read_bytes")
        # an application may close with data unread (iperf3 does): never more than received
        assert (final["read_bytes"] <= final["bytes_received"]).all()
    assert sum(int(run.data_flows(h)["read_bytes"].sum()) for h in HOSTS) > 100_000


def test_m15_write_bytes(run):
    for h in HOSTS:
        final = _sock_checks(run, h, WRITE, "write_bytes")
        # everything written was sent once (first transmissions = sent - retransmitted)
        done = final[final["app_wqueue"] == 0]
        assert ((done["bytes_sent"] - done["bytes_retrans"]) == done["write_bytes"]).all()
    assert sum(int(run.data_flows(h)["write_bytes"].sum()) for h in HOSTS) > 100_000


IPERF3_COOKIE = 37  # iperf3 opens every connection with its 36-character cookie and a NUL


@pytest.mark.parametrize("run", WITH_WORKLOAD, indirect=True)
def test_m14_m15_equal_the_workloads_own_byte_counts(run):
    """ReadByte and WriteByte against what the application itself counted: ab's "Total
    transferred" (every byte it read) and iperf3's sender and receiver byte counts (its data
    stream, after the cookie it writes first)."""
    ab, iperf = run.out / "ab.out", run.out / "iperf3.out"
    if ab.exists():
        text = ab.read_text()
        total = int(re.search(r"^Total transferred:\s+(\d+) bytes", text, re.M).group(1))
        client = kv.final_records(run.flow["a"])
        server = kv.final_records(run.flow["b"])
        client, server = client[client["dport"] == 80], server[server["sport"] == 80]
        assert int(client["read_bytes"].sum()) == total
        assert int(server["write_bytes"].sum()) == total
        assert int(server["read_bytes"].sum()) == int(client["write_bytes"].sum()) > 0
    elif iperf.exists():
        d = json.loads(iperf.read_text())
        port = d["start"]["connected"][0]["local_port"]
        stream = d["end"]["streams"][0]
        sender = kv.final_records(run.flow["a"])
        receiver = kv.final_records(run.flow["b"])
        sender, receiver = sender[sender["sport"] == port], receiver[receiver["dport"] == port]
        assert len(sender) == len(receiver) == 1
        assert int(sender["write_bytes"][0]) == stream["sender"]["bytes"] + IPERF3_COOKIE
        assert int(receiver["read_bytes"][0]) == stream["receiver"]["bytes"] + IPERF3_COOKIE
    else:
        raise AssertionError(f"{run.name}: no ab or iperf3 output in {run.out}")


def test_m16_duration(run):
    for h in HOSTS:
        f = run.flow[h]
        est = f[f["established_ns"] > 0]  # 0: a record taken before the handshake completed
        assert (est["established_ns"] <= est["ts_ns"]).all()
        assert (f["established_ns"][(f["flags"] & SEEN_ESTABLISH) == 0] == 0).all()  # all seen opening
        final = kv.final_records(f)
        assert (final["established_ns"] > 0).all()
        assert (final["established_ns"] >= run.nstat[h][0][0] - 600e9).all()  # not boot time
    if run.name in ("bulk", "lossy", "rto", "flows"):  # iperf3 -t 5+, or 8 s idle: >= 4 s
        d = run.data_flows("a")
        assert ((d["ts_ns"] - d["established_ns"]) > 4e9).all()
