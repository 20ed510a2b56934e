"""The lab's host-side logic without QEMU: scenarios, mirrors, recipe hash, output parsing."""

import json
import os
import re
import subprocess
import sys

import pytest

from mbrec.errors import MbrecError
from mbrec.lab import image, scenario, topology, vm, workload


@pytest.mark.parametrize("name", scenario.names())
def test_every_shipped_scenario_validates(name):
    s = scenario.load(name)
    assert s["timeout_s"] > 0 and {"a", "b"} <= set(s["hosts"])


def test_required_scenarios_exist():
    assert {"ab", "bulk", "lossy", "rto", "multi", "asym", "qdisc", "two-vm", "smoke"} <= set(scenario.names())


def test_unknown_scenario_names_the_known_ones():
    with pytest.raises(MbrecError, match="known: .*ab"):
        scenario.load("no-such-scenario")


@pytest.mark.parametrize("bad, match", [
    ({"hosts": ["a"]}, "hosts must include a and b"),
    ({"hosts": ["a", "b"], "network": {"a->x": {}}}, "not 'x->y'"),
    ({"hosts": ["a", "b"], "network": {"a->b": {"delay": 5}}}, "netem settings"),
    ({"hosts": ["a", "b", "c"], "network": {"a->b": {"delay_ms": 5}, "c->b": {"delay_ms": 9}}}, "must agree"),
    ({"hosts": ["a", "b"], "vms": 2, "host_egress": {"a": {"delay_ms": 1}}}, "two-VM"),
    ({"hosts": ["a", "b"], "workload": [{"host": "a"}]}, "needs name, host"),
    ({"hosts": ["a", "b"], "colour": 1}, "unknown field"),
])
def test_bad_scenarios_fail_with_one_line(bad, match):
    with pytest.raises(MbrecError, match=match):
        scenario.validate(bad, "test")


def test_expand_names_hosts_by_address():
    assert scenario.expand("ab http://{b}/ {a}") == "ab http://10.0.2.1/ 10.0.1.1"


def test_host_mirrors_read_deb822_and_list(tmp_path):
    (tmp_path / "debian.sources").write_text(
        "Types: deb\n# comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security/\n"
        "Suites: bookworm-security\nComponents: main\n")
    (tmp_path / "other.list").write_text("deb [arch=amd64] https://elsewhere.example/apt stable main\n")
    m = image.host_mirrors(tmp_path, tmp_path / "absent")
    assert m == {"main": "http://mirror.example/debian", "security": "http://mirror.example/debian-security"}
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "x.list").write_text("deb http://old.example/debian bookworm main\n")
    assert image.host_mirrors(legacy, tmp_path / "absent")["main"] == "http://old.example/debian"


def test_recipe_hash_follows_the_recipe():
    r = image.recipe({"main": "http://m/debian", "security": "http://m/security"})
    h = image.recipe_hash(r)
    assert h == image.recipe_hash(json.loads(json.dumps(r)))
    assert h != image.recipe_hash({**r, "packages": r["packages"] + ["tcpdump"]})


def test_netem_arguments():
    assert topology.netem_args({"delay_ms": 5, "jitter_ms": 1, "loss_pct": 2, "rate_mbit": 100}) == \
        ["netem", "delay", "5ms", "1ms", "loss", "2%", "rate", "100mbit"]
    assert topology.netem_args({}) == ["netem"]


AB_REPORT = """Concurrency Level:      10
Time taken for tests:   3.512 seconds
Complete requests:      1000
Failed requests:        0
Keep-Alive requests:    1000
Requests per second:    284.74 [#/sec] (mean)
Time per request:       35.120 [ms] (mean)
Percentage of the requests served within a certain time (ms)
  50%     34
  99%     52
 100%     61 (longest request)
"""


def test_parse_ab_report():
    p = workload.parse_output("ab -k -c 10 -n 1000 http://10.0.2.1/", AB_REPORT)
    assert p["complete_requests"] == 1000 and p["failed_requests"] == 0
    assert p["time_per_request_ms"] == 35.12 and p["percentiles_ms"] == {50: 34.0, 99: 52.0, 100: 61.0}


def test_accelerator_can_be_forced(monkeypatch):
    monkeypatch.setenv("MBREC_LAB_ACCEL", "tcg")
    assert vm.detect_accel()[0] == "tcg"
    monkeypatch.delenv("MBREC_LAB_ACCEL")
    accel, why = vm.detect_accel()
    assert accel in ("kvm", "tcg") and why


def test_qemu_never_gets_user_networking(tmp_path):
    img = image.Image(tmp_path, tmp_path / "r.img", tmp_path / "k", tmp_path / "i", {})
    argv = vm.qemu_argv(img, "a", tmp_path, tmp_path, tmp_path / "c.log", "tcg", memory_mb=512, cpus=1,
                        netdev=None, keep=False)
    text = " ".join(argv)
    assert "-nic none" in text and not any(a.startswith("user") for a in argv) and "snapshot=on" in text and "readonly=on" in text


def test_one_vm_topology_puts_every_host_behind_the_router():
    layout = topology.Layout(["a", "b", "c"], 1, "a")
    root, per_ns = topology.topology_commands(layout, ["a", "b", "c"])
    assert root[0] == "netns add r"
    for h, n in (("a", 1), ("b", 2), ("c", 3)):
        assert f"netns add {h}" in root and f"link set r-{h} netns r" in root
        assert f"addr add 10.0.{n}.254/24 dev r-{h}" in per_ns["r"]
        assert per_ns[h][-2:] == [f"route add default via 10.0.{n}.254", f"route add ::/0 via fd00:0:0:{n}::fe"]
        assert f"addr add fd00:0:0:{n}::1/64 dev eth0 nodad" in per_ns[h]
        assert f"addr add fd00:0:0:{n}::fe/64 dev r-{h} nodad" in per_ns["r"]
    # netem for x->y sits on the router's interface toward y
    s = scenario.load("asym")
    targets = {d: (ns, i) for d, ns, i, _ in topology.network_targets(topology.Layout(s["hosts"], 1, "a"), s)}
    assert targets == {"a->b": ("r", "r-b"), "b->a": ("r", "r-a")}


def test_two_vm_topology_routes_through_vm_b():
    a_root, a_ns = topology.topology_commands(topology.Layout(["a", "b"], 2, "a"), ["a", "b"])
    assert a_ns == {} and "addr add 10.0.1.1/24 dev eth0" in a_root
    assert "addr add fd00:0:0:1::1/64 dev eth0 nodad" in a_root and "route add ::/0 via fd00:0:0:1::fe" in a_root
    layout_b = topology.Layout(["a", "b"], 2, "b")
    b_root, b_ns = topology.topology_commands(layout_b, ["a", "b"])
    assert "addr add 10.0.1.254/24 dev eth0" in b_root and "addr add 10.0.2.254/24 dev r-b" in b_root
    assert list(b_ns) == ["b"]
    s = scenario.load("two-vm")
    targets = {d: (ns, i) for d, ns, i, _ in topology.network_targets(layout_b, s)}
    assert targets == {"a->b": (None, "r-b"), "b->a": (None, "eth0")}
    assert topology.network_targets(topology.Layout(["a", "b"], 2, "a"), s) == []


def test_qdisc_scenario_delays_a_own_egress_only():
    s = scenario.load("qdisc")
    targets = topology.network_targets(topology.Layout(s["hosts"], 1, "a"), s)
    assert [(d, ns, i) for d, ns, i, _ in targets] == [("a egress", "a", "eth0")]


def test_lab_run_needs_root(monkeypatch):
    from mbrec.lab import run
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(MbrecError, match="needs root"):
        run.run("ab", None, vms=None, keep=False, out=None, record=True, timeout_s=None)


def test_missing_tools_name_their_apt_package(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(MbrecError, match="apt-get install qemu-system-x86"):
        vm.require_qemu()
    with pytest.raises(MbrecError, match="apt-get install debootstrap"):
        image.require_tools(("debootstrap", "debootstrap"))


def test_unreachable_mirror_is_one_line():
    with pytest.raises(MbrecError, match="Debian mirror unreachable: http://127.0.0.1:9/dists/bookworm"):
        image.check_mirror("http://127.0.0.1:9")


def test_build_refuses_without_disk_space(monkeypatch, tmp_path):
    import collections
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/" + name)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr("shutil.disk_usage", lambda path: usage(10 << 30, 9 << 30, 1 << 30))
    with pytest.raises(MbrecError, match="not enough disk space"):
        image.build()


def test_each_suite_has_its_own_recipe_and_the_default_is_bookworm():
    mirrors = {"main": "http://m/debian", "security": "http://m/security"}
    hashes = {s: image.recipe_hash(image.recipe(mirrors, suite_name=s)) for s in image.SUITES}
    assert len(set(hashes.values())) == len(image.SUITES)
    assert image.recipe(mirrors)["suite"] == "bookworm"
    assert hashes["bookworm"] == image.recipe_hash(image.recipe(mirrors))


def test_unknown_suite_is_one_line_naming_the_known_ones():
    with pytest.raises(MbrecError, match="unknown lab suite 'buster'; the known suites are bookworm, trixie, sid"):
        image.suite("buster")
    r = subprocess.run([sys.executable, "-m", "mbrec", "lab", "build", "--suite", "buster"], capture_output=True,
                       text=True)
    assert r.returncode != 0 and r.stdout == ""
    assert r.stderr.strip().splitlines() == ["mbrec: error: unknown lab suite 'buster'; the known suites are "
                                             "bookworm, trixie, sid"]


def test_a_suite_the_host_does_not_list_borrows_the_hosts_debian_mirrors(tmp_path):
    (tmp_path / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n")
    m = image.host_mirrors(tmp_path, tmp_path / "absent", suite_name="trixie")
    assert m == {"main": "http://mirror.example/debian", "security": "http://mirror.example/debian-security"}


def test_lab_list_names_every_suite_and_whether_it_is_built(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "mbrec", "lab", "list"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    for s in image.SUITES:
        assert re.search(rf"^  {s} .*; not built$", r.stdout, re.M), r.stdout
    assert re.search(r"^  ab ", r.stdout, re.M)


def test_scenarios_name_ipv6_addresses():
    assert scenario.expand("ab http://[{b6}]/ {a6}") == "ab http://[fd00:0:0:2::1]/ fd00:0:0:1::1"
    for name in ("ipv6", "dual-stack"):
        s = scenario.load(name)
        assert any("[{b6}]" in w["cmd"] for w in s["workload"]), name
