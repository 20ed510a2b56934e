"""The pipeline gives the same answers whatever runs it: serial, local processes (-j) and a real
Dask cluster (distributed.LocalCluster with worker processes), in 1, 7 or 64 partitions, on the
recorded fixtures' golden reports; and its failures are one line each."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from golden import differences

from mbrec.analysis.engine import Executor
from mbrec.analysis.pipeline import Options
from mbrec.analysis.run import Plan, analyze_files
from mbrec.errors import MbrecError

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = sorted(p for p in (ROOT / "fixtures").glob("*/") if (p / "golden-report.json").exists())
RTOL = 1e-9


def golden(fixture) -> dict:
    return json.loads((fixture / "golden-report.json").read_text())


def analysed(fixture, monkeypatch, executor=Executor(), partitions=None) -> dict:
    monkeypatch.chdir(fixture)  # the goldens name their traces relative to the fixture
    paths = sorted(p.name for p in fixture.glob("*.mbrec"))
    rep = analyze_files(paths, Plan(Options(), executor, partitions)).report
    if partitions and partitions > 1:
        assert rep.pop("partitions") == partitions
    return rep


def by_name(*names):
    return [f for f in FIXTURES if f.name in names]


@pytest.mark.parametrize("parts", [7, 64])
@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.name for f in FIXTURES])
def test_partitioned_serial_reproduces_the_golden(fixture, parts, monkeypatch):
    assert differences(analysed(fixture, monkeypatch, partitions=parts), golden(fixture),
                       rtol=RTOL) == []


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.name for f in FIXTURES])
def test_local_processes_reproduce_the_golden(fixture, monkeypatch):
    rep = analysed(fixture, monkeypatch, Executor(jobs=2), partitions=7)
    assert differences(rep, golden(fixture), rtol=RTOL) == []


@pytest.fixture(scope="module")
def dask_cluster():
    from distributed import LocalCluster
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=":0", host="127.0.0.1")
    yield cluster
    cluster.close()


@pytest.mark.parametrize("parts", [7, 64])
@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.name for f in FIXTURES])
def test_dask_cluster_reproduces_the_golden(fixture, parts, dask_cluster, monkeypatch):
    rep = analysed(fixture, monkeypatch, Executor(scheduler=dask_cluster.scheduler_address),
                   partitions=parts)
    assert differences(rep, golden(fixture), rtol=RTOL) == []


def test_dask_from_the_command_line(dask_cluster, tmp_path):
    fixture = by_name("ab")[0]
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "mbrec", "analyze", "a.mbrec", "b.mbrec",
                        "--scheduler", dask_cluster.scheduler_address, "--no-plots", "-q",
                        "-o", str(out)], cwd=fixture, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "L_NET_1" in r.stdout
    rep = json.loads((out / "report.json").read_text())
    assert rep["partitions"] >= 4 and rep["cross_host"]["status"] == "ok"


def test_a_scheduler_that_does_not_answer_is_one_line(tmp_path):
    fixture = by_name("ab")[0]
    r = subprocess.run([sys.executable, "-m", "mbrec", "analyze", "a.mbrec", "b.mbrec",
                        "--scheduler", "tcp://127.0.0.1:9", "-q", "--no-plots"], cwd=fixture,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no Dask scheduler answered" in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_an_unreadable_partition_names_itself(tmp_path):
    from mbrec.analysis.partition import split_traces
    from mbrec.analysis.run import _map_one
    fixture = by_name("ab")[0]
    metas = split_traces([str(fixture / "a.mbrec"), str(fixture / "b.mbrec")], 3, str(tmp_path))
    victim = metas[1]["files"][(2, "pkt")]
    os.remove(victim + ".bin")
    with pytest.raises(MbrecError, match=r"partition 2: cannot read the spill file .*t1-p2-pkt"):
        _map_one(metas, ["a", "b"], Options(), 3, str(tmp_path), 2)


def test_traces_of_different_runs_say_why_the_cross_host_part_is_empty(tmp_path):
    from mbrec.testing import twohost
    a, _, _ = twohost.exchange(40, seed=1)
    _, b, _ = twohost.exchange(40, seed=2)
    pa, pb = twohost.write_pair(tmp_path, a, b)
    for parts in (1, 4):
        rep = analyze_files([pa, pb], Plan(partitions=parts)).report
        assert all(h["flows"] > 0 for h in rep["hosts"])
        assert rep["cross_host"]["network"]["pairs"] == []
        assert "no frame of one trace was matched" in rep["cross_host"]["reason"]


def test_one_role_rule_for_layers_and_l_net(tmp_path):
    """The client opened the connection (its SYN is recorded at tcp_transmit_skb) but has the
    lower port and no SYN reached the wire probes: a rule of 'SYN among matched frames, else
    the higher port' would call the server the client and swap L_NET_1 and L_NET_2."""
    from mbrec.testing import twohost
    from mbrec.events import CONSTANTS
    syn = CONSTANTS["MBREC_TCP_SYN"]
    a, b, _ = twohost.exchange(60, nflows=2, seed=3)
    for ev in (a, b):
        for end in ("sport", "dport"):
            ev[end][ev[end] == 80] = 50000   # server port above the client's 40000+
    a = twohost.add_layers(a, 1000)
    wire = np.isin(a["probe"], [twohost.XMIT, twohost.RECV])
    a = a[~(wire & ((a["tcp_flags"] & syn) != 0))]
    b = b[(b["tcp_flags"] & syn) == 0]
    pa, pb = twohost.write_pair(tmp_path, a, b)
    for parts in (1, 3):
        rep = analyze_files([pa, pb], Plan(partitions=parts)).report
        flows_a = [f for f in rep["flows"] if f["host"] == "a"]
        assert {f["client_source"] for f in flows_a} == {"syn"}
        assert all(f["client"].startswith("10.0.0.1:") for f in flows_a)
        pair = rep["cross_host"]["network"]["pairs"][0]
        ab = next(d for d in pair["directions"] if d["from"] == "a")
        assert pair["L_NET_1"]["l_net"]["count"] == ab["aligned"] > 0
        assert pair["roles_guessed_from_ports"] == 0


def test_nat_rewritten_connections_are_matched_in_every_partitioning(tmp_path):
    """A NAT box between the hosts renames every connection, so no two hosts hash it alike:
    its frames meet in the NAT partition and give the whole-trace L_NET."""
    from mbrec.testing import twohost
    from mbrec.testing.synthetic import ipv4
    a, b, _ = twohost.exchange(80, nflows=5, seed=4)
    rx, tx = b["probe"] == twohost.RECV, b["probe"] == twohost.XMIT
    b["saddr"][rx], b["sport"][rx] = ipv4("192.168.7.7"), b["sport"][rx] - 35000
    b["daddr"][tx], b["dport"][tx] = ipv4("192.168.7.7"), b["dport"][tx] - 35000
    pa, pb = twohost.write_pair(tmp_path, a, b)
    whole = analyze_files([pa, pb], Plan()).report
    dirs = whole["cross_host"]["network"]["pairs"][0]["directions"]
    assert [d["nat_rewritten"] for d in dirs] == [rx.sum(), (a["probe"] == twohost.RECV).sum()]
    for parts in (3, 7):
        rep = analyze_files([pa, pb], Plan(partitions=parts)).report
        assert rep.pop("partitions") == parts
        assert differences(rep["cross_host"], whole["cross_host"], rtol=RTOL) == []
        assert differences(rep["hosts"], whole["hosts"], rtol=RTOL) == []


def _sigint_as_a_shell_starts_it():
    """A process inherits an ignored SIGINT (and Python then leaves it ignored): a command
    started from a terminal has the default, whatever this test process was left with."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("jobs", [1, 2])
def test_ctrl_c_stops_cleanly(tmp_path, jobs):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) mid-analysis: exit
    130 with one line, spill files removed, no report, no worker left running."""
    import signal
    import time

    from mbrec.testing.synthetic import write_trace
    from mbrec.testing.clientserver import exchanges, replicate
    gt = exchanges(n_flows=4, n_exchanges=50, seed=11)
    # big enough that the analysis is still running well after the first spill file appears
    paths = [write_trace(str(tmp_path / f"{h}.mbrec"), replicate(gt.events[h], 150), host=h,
                         boot_id=f"{h}-boot") for h in ("client", "server")]
    spill, out = tmp_path / "spill", tmp_path / "out"
    spill.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "mbrec", "analyze", *paths, "-q",
                             "--no-plots", "--partitions", "32", "-j", str(jobs),
                             "--spill-dir", str(spill), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_sigint_as_a_shell_starts_it)
    deadline = time.monotonic() + 120
    while not any(spill.glob("mbrec-spill-*/t0-*.bin")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["mbrec: interrupted"], err
    assert list(spill.iterdir()) == []
    assert not (out / "report.json").exists()
    time.sleep(0.5)
    ps = subprocess.run(["ps", "-o", "stat=,pid=,args=", "-g", str(proc.pid)],
                        capture_output=True, text=True).stdout.splitlines()
    running = [line for line in ps if not line.lstrip().startswith("Z")]  # exited, unreaped
    assert running == [], ps  # no process of the group is left running


def _die(item):
    """A worker that dies outright (as an out-of-memory kill would leave it)."""
    os._exit(3)


def test_a_local_worker_that_dies_fails_the_run_in_one_line():
    from mbrec.analysis.engine import run_map
    with pytest.raises(MbrecError, match=r"a worker process died while analysing partition 5"):
        run_map(_die, [5, 6], Executor(jobs=2), describe=lambda p: f"partition {p}")


def test_a_dask_worker_that_dies_fails_the_run_in_one_line():
    import dask
    from distributed import LocalCluster

    from mbrec.analysis.engine import run_map
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                               dashboard_address=":0", host="127.0.0.1")
        try:
            with pytest.raises(MbrecError, match=r"Dask workers died analysing partition 5"):
                run_map(_die, [5], Executor(scheduler=cluster.scheduler_address),
                        describe=lambda p: f"partition {p}")
        finally:
            cluster.close()


def test_the_plan_splits_large_traces_for_speed_and_keeps_small_ones_whole(tmp_path):
    # partitions_for only looks at the files' sizes: sparse files stand in for traces
    from mbrec.analysis.run import EVENTS_PER_PARTITION, MIN_SPLIT_FOR_SPEED, RAW_BYTES_PER_EVENT, \
        RAW_PER_FILE_BYTE, partitions_for
    per_part = EVENTS_PER_PARTITION * RAW_BYTES_PER_EVENT // RAW_PER_FILE_BYTE  # file bytes
    small, large = tmp_path / "small.mbrec", tmp_path / "large.mbrec"
    with open(small, "wb") as f:
        f.truncate(per_part * (MIN_SPLIT_FOR_SPEED - 1))
    with open(large, "wb") as f:
        f.truncate(per_part * 10 * MIN_SPLIT_FOR_SPEED)
    roomy = Plan(memory=1 << 40)  # the memory rule alone would keep both whole
    assert partitions_for([str(small)], roomy) == 1
    assert partitions_for([str(large)], roomy) == 10 * MIN_SPLIT_FOR_SPEED
    assert partitions_for([str(large)], Plan(memory=1 << 40, partitions=1)) == 1
    # packets.csv and latencies.csv need whole traces: with them, only memory splits
    assert partitions_for([str(large)], Plan(memory=1 << 40, per_event_files=True)) == 1
