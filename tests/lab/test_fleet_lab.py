"""`mbrec fleet record` in the lab: VM a records a and b over ssh (sshd in both VMs, keys made
for the run) around ab, collects both traces, and `mbrec analyze RUN/ --clock packets` aligns
the two kernels' clocks from the packets. Marked `lab`; one two-VM boot.

Under TCG nothing here asserts a timing: structure, counts, and the delay netem injected.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from labutil import lab, vm_skip_reason

from mbrec.trace.reader import read_trace

pytestmark = pytest.mark.lab
if vm_skip_reason():
    pytestmark = [pytest.mark.lab, pytest.mark.skip(reason=vm_skip_reason())]

DELAY_NS = 5_000_000  # the scenario's netem, each way
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@pytest.fixture(scope="module")
def fleet_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fleet") / "out"
    r = lab("run", "fleet", "-o", str(out), timeout=3600)
    return r, out


def test_fleet_records_both_vms_over_ssh(fleet_run):
    r, out = fleet_run
    log = (out / "fleet.log").read_text() if (out / "fleet.log").exists() else ""
    assert r.returncode == 0, r.stderr[-2000:] + log[-2000:]
    m = json.loads((out / "run" / "run.json").read_text())
    assert m["status"] == "ok" and m["command_exit"] == 0, m
    traces = {}
    for h in m["hosts"]:
        assert h["status"] == "ok" and h["recorder_exit"] == 0 and h["stopped_by"] == "SIGINT", h
        assert h["check"]["uid"] == 0 and h["check"]["mbrec_version"]
        t = read_trace(str(out / "run" / h["trace"]))
        assert t.clean and t.host == h["name"]
        traces[h["name"]] = t
    assert traces["a"].header["boot_id"] != traces["b"].header["boot_id"]  # two kernels
    assert traces["b"].header["options"]["netns_spec"] == ["b"]
    gt = json.loads((out / "ground_truth.json").read_text())
    (ab,) = gt["commands"]
    assert ab["parsed"]["complete_requests"] == 1000 and ab["parsed"]["failed_requests"] == 0
    assert not (out / ".fleet-keys").exists()  # the run's keys are gone with it


def test_fleet_run_directory_analysed_with_packet_clocks(fleet_run):
    r, out = fleet_run
    assert r.returncode == 0
    p = subprocess.run([sys.executable, "-m", "mbrec", "analyze", str(out / "run"), "--clock",
                        "packets", "--json", "--no-plots", "-q"], capture_output=True, text=True,
                       timeout=1800)
    assert p.returncode == 0, p.stderr[-2000:]
    report = json.loads(p.stdout)
    assert sorted(h["host"] for h in report["hosts"]) == ["a", "b"]
    # the same results as the two-vm scenario's own recording (its committed fixture): every
    # latency, and one server-side request latency per ab request
    two_vm = json.loads((FIXTURES / "two-vm" / "golden-report.json").read_text())
    ours = {h["host"]: h["latencies"] for h in report["hosts"]}
    for h in two_vm["hosts"]:
        assert set(ours[h["host"]]) == set(h["latencies"]), h["host"]
    for name in ("L_TCP_2", "L_APP_2"):
        assert ours["b"][name]["count"] == 1000
    cross = report["cross_host"]
    (pair,) = cross["alignment"]["pairs"]
    assert pair["method"] == "packets" and pair["quality"] == "accurate"
    (net,) = cross["network"]["pairs"]
    for d in net["directions"]:
        assert d["aligned"] > 0 and d["interval_below_zero"] == 0
        # every frame crossed netem's 5 ms: the guaranteed interval of each reaches it
        assert d["hi"]["min"] >= DELAY_NS
