"""`mbrec record --check` on this machine's own kernel, for real: the attach kinds are tried by
loading empty programs, so what it says must agree with what the kernel allows."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mbrec.recorder.check import ATTACH_ORDER

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="--check tries attaching: root")


def check(*args):
    cmd = [sys.executable, "-m", "mbrec", "record", "--check", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@needs_root
def test_the_verdict_is_the_first_attach_kind_that_works_here():
    r = check("--json")
    found = json.loads(r.stdout)
    usable = [m["kind"] for m in found["modes"] if m["usable"]]
    assert found["verdict"] == next((k for k in ATTACH_ORDER if k in usable), None)
    assert r.returncode == (0 if found["verdict"] else 1)
    facts = {f["name"]: f for f in found["facts"]}
    assert facts["privileges"]["ok"] and facts["kernel"]["ok"]
    if not facts["kernel functions"]["ok"]:  # e.g. our machines: no kprobes
        assert "fentry" not in usable and "kprobe" not in usable
        assert facts["kernel functions"]["fix"]
    # every attach kind asked for by name agrees with the overall findings
    for kind in ATTACH_ORDER:
        r = check("--attach", kind)
        assert r.returncode == (0 if kind in usable else 1), (kind, r.stdout[-500:])
        assert r.stdout.strip().splitlines()[-1].startswith("verdict: mbrec record ")


@needs_root
def test_tracepoint_mode_on_this_kernel_names_each_tracepoint():
    found = json.loads(check("--json").stdout)
    tp = next(m for m in found["modes"] if m["kind"] == "tracepoint")
    if tp["usable"]:
        assert tp["probes"]["dev_hard_start_xmit"] == "net:net_dev_start_xmit"
        assert all(":" in v for v in tp["probes"].values())
        # this kernel has BTF and takes BTF-typed tracepoints (tests/test_tp_btf.py)
        assert "BTF-typed ones load too" in tp["detail"], tp["detail"]


def test_without_root_it_resolves_but_does_not_attach_and_fails():
    from mbrec.recorder.check import render, run_check
    found = run_check("auto", root=False)
    assert found.verdict is None
    assert all(not m.usable for m in found.modes)
    lines = render(found)
    assert any("not root" in line for line in lines)
    assert any("run as root" in line for line in lines)
    assert lines[-1].startswith("verdict: mbrec record cannot record")
