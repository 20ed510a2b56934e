"""The lab in QEMU: two boots in all (the smoke check, then the ab scenario). Marked `lab`.

Runs where QEMU can run (root, qemu-system-x86_64, and a cached image or debootstrap to build one); skips with
the reason elsewhere. Under TCG nothing here asserts a timing: counts, structure, and delays that stand out.
"""

import json

import pytest
from labutil import lab, vm_skip_reason

pytestmark = pytest.mark.lab
if vm_skip_reason():
    pytestmark = [pytest.mark.lab, pytest.mark.skip(reason=vm_skip_reason())]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "out"
    r = lab("run", "smoke", "-o", str(out))
    return r, out


def test_smoke_boots_and_reports_accelerator(smoke):
    r, out = smoke
    assert "accelerator" in r.stderr
    assert (out / "console-a.log").read_text().count("mbrec-lab: init") == 1
    assert r.returncode == 0, r.stderr[-2000:]


def test_kprobe_and_fentry_attach_and_fire_on_every_seed_function(smoke):
    r, out = smoke
    result = json.loads((out / "smoke.json").read_text())
    assert result["failures"] == [] and result["pass"]
    for fn in ("__tcp_transmit_skb", "__ip_queue_xmit", "__dev_queue_xmit", "dev_hard_start_xmit",
               "eth_type_trans", "ip_rcv", "ip_list_rcv", "ip_rcv_core", "tcp_v4_rcv", "skb_copy_datagram_iter"):
        for kind in ("kprobe", "fentry"):
            assert result["functions"][fn][kind]["attached"], (fn, kind)
    hits = {fn: result["functions"][fn]["kprobe"]["hits"] for fn in ("ip_rcv", "ip_list_rcv", "ip_rcv_core")}
    assert hits["ip_rcv_core"]["gro_off"] > 0 and hits["ip_rcv"]["gro_off"] > 0


def test_netem_delay_shows_in_ping_rtt(smoke):
    r, out = smoke
    ping = json.loads((out / "smoke.json").read_text())["ping"]
    assert ping["expected_rtt_ms"] == 40
    assert ping["min_rtt_ms"] >= 40  # netem never shortens; the upper bound (slack for TCG) is in smoke.py
    assert ping["ok"]


@pytest.fixture(scope="module")
def ab_run(lab_ab_run):
    return lab_ab_run  # one boot shared with tests/lab/test_record_lab.py


def test_ab_scenario_writes_its_ground_truth(ab_run):
    r, out = ab_run
    assert r.returncode == 0, r.stderr[-2000:]
    truth = json.loads((out / "ground_truth.json").read_text())
    assert truth["scenario"] == "ab" and truth["configured"]["network"]["a->b"]["delay_ms"] == 5
    ab = next(c for c in truth["commands"] if c["name"] == "ab")
    assert ab["exit_status"] == 0
    assert ab["parsed"]["complete_requests"] == 1000 and ab["parsed"]["failed_requests"] == 0
    # 10 ms of round trip injected: no request can be faster
    assert min(ab["parsed"]["percentiles_ms"].values()) >= 10
    applied = {n["direction"]: n for n in truth["guests"]["a"]["netem"]}
    assert applied["a->b"]["ifname"] == "r-b" and applied["b->a"]["ifname"] == "r-a"


def test_ab_scenario_snapshots_each_namespace(ab_run):
    r, out = ab_run
    for host in ("a", "b"):
        assert (out / f"ss-{host}-after.txt").exists() and (out / f"ss-{host}-during.txt").exists()
        after = [json.loads(x) for x in (out / f"nstat-{host}-after.jsonl").read_text().splitlines()]
        assert after[-1]["counters"]["TcpActiveOpens" if host == "a" else "TcpPassiveOpens"] >= 10
    # namespaces are separate: b opened no connection of its own
    b_after = json.loads((out / "nstat-b-after.jsonl").read_text().splitlines()[-1])
    assert b_after["counters"].get("TcpActiveOpens", 0) == 0


def test_ab_scenario_records_each_host_or_says_why_not(ab_run):
    r, out = ab_run
    truth = json.loads((out / "ground_truth.json").read_text())
    assert set(truth["recording"]) == {"a", "b"}
    assert truth["recording"] == {"a": "ok", "b": "ok"}
    from mbrec.trace.reader import read_trace
    for host in ("a", "b"):
        trace = read_trace(str(out / f"{host}.mbrec"))
        assert trace.clean and sum(len(v) for v in trace.events.values()) > 0


def test_a_guest_kernel_crash_voids_the_attempt_and_runs_the_job_once_more(tmp_path):
    # The command crashes the guest's kernel on every boot: the first crash is taken for the emulator's,
    # the job runs again, the second crash is reported; both consoles are kept.
    out = tmp_path / "crash"
    r = lab("run", "--no-record", "-o", str(out), "--", "sh", "-c", "echo c > /proc/sysrq-trigger")
    assert r.returncode != 0
    assert "running the job again" in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("mbrec: error: guest a kernel died (") and "twice" in last, last
    assert "Traceback" not in r.stderr
    truth = json.loads((out / "ground_truth.json").read_text())
    [rerun] = truth["timing"]["reruns"]
    assert rerun["role"] == "a" and rerun["console"] == "console-a-crashed.log"
    assert "sysrq" in (out / "console-a-crashed.log").read_text().lower()
    assert (out / "console-a.log").read_text().count("mbrec-lab: init") == 1
