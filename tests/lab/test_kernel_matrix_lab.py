"""The kernels users run: the ab scenario recorded and analysed on each Debian suite's stock
kernel (tests/lab/test_record_lab.py covers bookworm in depth). Marked `lab`; one boot per
(suite, attach) pair, each image built on first use (a few minutes, then cached).

MBREC_LAB_SUITES (default "trixie,sid") names the suites recorded with the default attach
(fentry), MBREC_LAB_KPROBE_SUITES (default "trixie") those recorded with --attach kprobe as
well; `make check-kernels` runs all three suites both ways. MBREC_KERNELS_OUT=DIR checks earlier runs
in DIR/SUITE-ATTACH instead of booting. Structure and counts only: every
packet probe attached by the expected kind and firing, every request of ab found by the
analysis, every loss accounted for by a cause, clean stops.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from labutil import check_modes, lab, vm_skip_reason

from mbrec.events import PACKET_PROBES, PROBE_IDS
from mbrec.lab.image import SUITES
from mbrec.trace.reader import read_trace

pytestmark = pytest.mark.lab
if vm_skip_reason():
    pytestmark = [pytest.mark.lab, pytest.mark.skip(reason=vm_skip_reason())]


def _suites(var, default):
    names = [s for s in os.environ.get(var, default).split(",") if s]
    unknown = set(names) - set(SUITES)
    assert not unknown, f"{var}: unknown suites {unknown}; known: {list(SUITES)}"
    return names


RUNS = [(s, "fentry") for s in _suites("MBREC_LAB_SUITES", "trixie,sid")] + \
       [(s, "kprobe") for s in _suites("MBREC_LAB_KPROBE_SUITES", "trixie")]
REQUESTS = 1000  # mbrec/lab/scenarios/ab.json


@pytest.fixture(scope="module", params=RUNS, ids=[f"{s}-{a}" for s, a in RUNS])
def run(request, tmp_path_factory):
    suite, attach = request.param
    reuse = Path(os.environ.get("MBREC_KERNELS_OUT", "/nonexistent")) / f"{suite}-{attach}"
    if (reuse / "ground_truth.json").exists():  # an earlier `mbrec lab run ab --suite S -o DIR/S-ATTACH`
        out = reuse
    else:
        out = tmp_path_factory.mktemp(f"{suite}-{attach}") / "ab"
        args = ["run", "ab", "--suite", suite, "-o", str(out)]
        if attach != "fentry":
            args += ["--record-args", f"--attach {attach}"]
        r = lab(*args, timeout=3000)
        assert r.returncode == 0, r.stderr[-3000:]
    a = subprocess.run([sys.executable, "-m", "mbrec", "analyze", str(out / "a.mbrec"),
                        str(out / "b.mbrec"), "-o", str(out / "analysis"), "--no-plots", "--quiet", "--force"],
                       capture_output=True, text=True, timeout=900)
    assert a.returncode == 0, a.stderr[-2000:]
    gt = json.loads((out / "ground_truth.json").read_text())
    report = json.loads((out / "analysis" / "report.json").read_text())
    return suite, attach, gt, {h: read_trace(str(out / f"{h}.mbrec")) for h in "ab"}, report


def test_the_guest_ran_the_suites_kernel(run):
    suite, _, gt, traces, _ = run
    assert gt["suite"] == suite
    kernels = {t.header["kernel"] for t in traces.values()}
    assert len(kernels) == 1
    marker = {"bookworm": "+deb12", "trixie": "+deb13", "sid": "+deb14"}.get(suite)
    if suite == "bookworm":
        assert kernels.pop().startswith("6.1."), kernels  # 6.1.0-N-amd64
    else:
        assert marker in kernels.pop(), kernels


def test_every_probe_attached_with_the_asked_kind_and_firing(run):
    _, attach, _, traces, _ = run
    for host, t in traces.items():
        assert t.clean, host
        assert t.header["options"]["attach"] == attach
        packet = [p for p in t.header["probes"] if p["name"] in PACKET_PROBES]
        assert {p["name"] for p in packet} == set(PACKET_PROBES), host
        assert {p["attach"] for p in packet} == {attach}, host
        pkt = t.events["pkt"]
        for probe in PACKET_PROBES:
            assert int((pkt["probe"] == PROBE_IDS[probe]).sum()) > 0, (host, probe)


def test_every_loss_has_a_cause(run):
    _, attach, _, traces, _ = run
    for host, t in traces.items():
        detail = t.trailer["lost_detail"]
        causes = {"ring_full", "program_skipped"} | ({"kprobe_missed"} if attach == "kprobe" else set())
        assert set(detail) == causes, (host, detail)
        summed = {}
        for counts in detail.values():
            for probe, n in counts.items():
                summed[probe] = summed.get(probe, 0) + n
        assert {k: v for k, v in summed.items() if v} == {k: v for k, v in t.lost.items() if v}, host
        events = sum(len(r) for r in t.events.values())
        # counted, and rare: 7.2 skips more nested fentry runs than 6.1, and how often a softirq
        # hits a kprobe while another runs depends on the emulated CPU's timing (trixie's kprobe
        # run: 1.4 % in docs/kernel-matrix.md, 5.2 % in one CI run): a bound that only
        # a recorder losing events wholesale exceeds
        assert sum(t.lost.values()) <= 0.10 * events, (host, t.lost)


def test_the_analysis_finds_every_request(run):
    """Every request of ab, except at most one per event the trace says was lost (kprobes miss
    runs when a softirq interrupts a kprobe handler: counted, as kprobe_missed)."""
    _, _, gt, traces, report = run
    assert gt["commands"][0]["parsed"]["complete_requests"] == REQUESTS
    pair = report["cross_host"]["network"]["pairs"][0]
    assert pair["clock_method"] == "shared"
    lost = sum(sum(t.lost.values()) for t in traces.values())
    found = pair["rtt_decomposition"]["requests"]
    assert found == REQUESTS if lost == 0 else REQUESTS - lost <= found <= REQUESTS, (found, lost)
    for key in ("L_NET_1", "L_NET_2"):
        assert pair[key]["l_net"]["count"] > 0
    by_host = {h["host"]: h for h in report["hosts"]}
    assert by_host["a"]["client_flows"] == by_host["b"]["server_flows"] > 0
    for name in ("L_TCP_1", "L_IP_1", "L_NIC_1", "L_NIC_4", "L_IP_4", "L_TCP_4"):
        assert by_host["a"]["latencies"][name]["count"] > 0, name
    assert np.isfinite(pair["L_NET_1"]["l_net"]["p50"])


CHECK_SUITES = sorted({s for s, _ in RUNS})


@pytest.mark.parametrize("suite", CHECK_SUITES)
def test_check_gives_its_verdict_on_each_kernel(suite, tmp_path):
    """`mbrec record --check` in each suite's guest: every probe (IPv6 ones too) resolves, all
    three attach kinds attach, and auto picks fentry."""
    out = tmp_path / "check"
    r = lab("run", "--suite", suite, "-o", str(out), "--",
            "python3 -m mbrec record --check --json > /mnt/out/check.json", timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    check = json.loads((out / "check.json").read_text())
    modes, probes = check_modes(check)
    assert set(modes["kprobe"]["probes"]) == probes
    assert not any("absent" in f for f in modes["kprobe"]["probes"].values())
