"""Regression and ground truth on real traces recorded in the lab (fixtures/<scenario>/).

Every fixture is analysed as a user would (`mbrec analyze *.mbrec --json`, from its folder) and
compared with its committed golden report (`make goldens` regenerates them; review the diff).
Independently of the goldens, each fixture is checked against what the lab configured and what
the workload itself reported: netem delays bound L_NET, ab's completed requests are all found,
a delay in a host's own qdisc shows up in that host's L_NIC and not on the wire.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
from golden import differences

from mbrec.trace.reader import read_trace

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = sorted(p for p in (ROOT / "fixtures").glob("*/") if (p / "ground_truth.json").exists())
MS = 1_000_000
# netem holds every packet at least its delay; under TCG the fastest packet of a run still
# arrives within this much more (measured on the fixtures: 20 to 400 us).
FASTEST_SLACK_NS = 2 * MS

pytestmark = pytest.mark.skipif(not FIXTURES, reason="no fixtures recorded (make fixtures)")


def traces_of(fixture: pathlib.Path) -> list[str]:
    return sorted(p.name for p in fixture.glob("*.mbrec"))


def analyze_json(fixture: pathlib.Path) -> dict:
    result = subprocess.run([sys.executable, "-m", "mbrec", "analyze", *traces_of(fixture),
                             "--json", "--no-plots", "--quiet"], cwd=fixture,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


_cache: dict = {}


def report(fixture: pathlib.Path) -> dict:
    if fixture not in _cache:
        _cache[fixture] = analyze_json(fixture)
    return _cache[fixture]


def truth(fixture: pathlib.Path) -> dict:
    return json.loads((fixture / "ground_truth.json").read_text())


def ids(fixtures):
    return [f.name for f in fixtures]


def with_scenario(*names):
    return [f for f in FIXTURES if truth(f)["scenario"] in names]


@pytest.mark.parametrize("fixture", FIXTURES, ids=ids(FIXTURES))
def test_analysis_matches_the_golden_report(fixture):
    golden = fixture / "golden-report.json"
    assert golden.exists(), f"no golden report in {fixture}: run make goldens"
    diffs = differences(report(fixture), json.loads(golden.read_text()))
    assert diffs == [], f"{len(diffs)} differences, first: {diffs[:5]}"


@pytest.mark.parametrize("fixture", FIXTURES, ids=ids(FIXTURES))
def test_fixture_traces_stay_readable_in_the_format_they_were_recorded_in(fixture):
    """Most fixtures were recorded with format v1 (no sequence deltas), newer ones with v2:
    every later mbrec must read both."""
    for name in traces_of(fixture):
        trace = read_trace(str(fixture / name))
        assert trace.header["format_version"] in (1, 2)
        assert trace.header["format_version"] == 1 or fixture.name == "latency"
        assert trace.clean and trace.warnings == []
        assert sum(len(r) for r in trace.events.values()) > 0


def latency(rep: dict, host: str, name: str) -> dict:
    (section,) = [h for h in rep["hosts"] if h["host"] == host]
    return section["latencies"][name]


@pytest.mark.parametrize("fixture", with_scenario("ab", "asym", "qdisc", "baseline", "two-vm", "latency"),
                         ids=ids(with_scenario("ab", "asym", "qdisc", "baseline", "two-vm", "latency")))
def test_every_completed_request_is_found(fixture):
    """The server turns each request into a response once: one L_APP_2 per completed request."""
    rep, t = report(fixture), truth(fixture)
    ab = [c for g in t["guests"].values() for c in g.get("commands", []) if c["name"] == "ab"]
    assert len(ab) == 1
    completed = ab[0]["parsed"]["complete_requests"]
    assert completed > 0
    assert latency(rep, "b", "L_APP_2")["count"] == completed


def net_directions(rep: dict) -> dict:
    (pair,) = rep["cross_host"]["network"]["pairs"]
    return {f"{d['from']}->{d['to']}": d for d in pair["directions"]}


SHARED_DELAY = [f for f in with_scenario("ab", "asym", "multi", "latency")]


@pytest.mark.parametrize("fixture", SHARED_DELAY, ids=ids(SHARED_DELAY))
def test_netem_delay_bounds_l_net(fixture):
    """On one clock, no frame crosses the wire faster than the netem delay, and the fastest one
    takes about that long: the recorder's timestamps and the matching agree with the lab."""
    rep, t = report(fixture), truth(fixture)
    net = rep["cross_host"]["network"]["pairs"]
    assert rep["cross_host"]["status"] == "ok"
    for pair in net:
        assert pair["clock_quality"] == "exact"
        for d in pair["directions"]:
            delay = t["configured"]["network"][f"{d['from']}->{d['to']}"]["delay_ms"] * MS
            assert d["aligned"] > 0
            assert d["l_net"]["min"] >= delay - 10_000, d
            assert d["l_net"]["min"] <= delay + FASTEST_SLACK_NS, d


@pytest.mark.parametrize("fixture", with_scenario("latency"), ids=ids(with_scenario("latency")))
def test_median_l_net_is_the_netem_delay(fixture):
    """One request at a time (nothing queues) and 40 ms each way: the median frame took the
    configured delay, within 5 % + 10 us, in each direction. TCG's emulated forwarding
    through the router adds about 0.3 ms a frame, which is why the delay is this large."""
    rep, t = report(fixture), truth(fixture)
    for d in net_directions(rep).values():
        delay = t["configured"]["network"][f"{d['from']}->{d['to']}"]["delay_ms"] * MS
        assert d["aligned"] >= 300
        assert delay <= d["l_net"]["p50"] <= delay * 1.05 + 10_000, (d["l_net"], delay)


@pytest.mark.parametrize("fixture", with_scenario("asym"), ids=ids(with_scenario("asym")))
def test_asymmetric_delays_are_told_apart(fixture):
    """2 ms one way, 20 ms back: the directions' fastest frames differ by the asymmetry."""
    d = net_directions(report(fixture))
    gap = d["b->a"]["l_net"]["min"] - d["a->b"]["l_net"]["min"]
    assert abs(gap - 18 * MS) < FASTEST_SLACK_NS


@pytest.mark.parametrize("fixture", with_scenario("qdisc"), ids=ids(with_scenario("qdisc")))
def test_a_delay_in_the_senders_qdisc_is_its_nic_layer_not_the_wire(fixture):
    rep = report(fixture)
    assert latency(rep, "a", "L_NIC_1")["p50"] >= 10 * MS
    assert net_directions(rep)["a->b"]["l_net"]["p50"] < 10 * MS


@pytest.mark.parametrize("fixture", with_scenario("two-vm"), ids=ids(with_scenario("two-vm")))
def test_two_kernels_are_aligned_from_packets(fixture):
    rep = report(fixture)
    (pair,) = rep["cross_host"]["alignment"]["pairs"]
    assert pair["quality"] == "accurate"
    assert pair["method"] == "packets"
    for d in net_directions(rep).values():
        assert d["aligned"] > 0
        assert d["interval_below_zero"] == 0  # L_NET >= 0 within its guaranteed interval
        assert d["interval_width"]["max"] > 0


def recorded_flows(fixture: pathlib.Path) -> bool:
    return "flows" in read_trace(str(fixture / "a.mbrec")).header["options"]["probe_groups"]


FLOW_FIXTURES = [f for f in FIXTURES if recorded_flows(f)]


@pytest.mark.parametrize("fixture", FLOW_FIXTURES, ids=ids(FLOW_FIXTURES))
def test_flow_episodes_equal_the_namespaces_own_counters(fixture):
    """Per host, over the run: fast-recovery entries, retransmission timeouts and retransmitted
    segments summed over mbrec's flows equal the kernel's nstat counters for the namespace
    (docs/metrics.md says why these counters count exactly these events)."""
    from mbrec.testing import kernel_view as kv
    for name in traces_of(fixture):
        host = name.removesuffix(".mbrec")
        totals = kv.episode_totals(read_trace(str(fixture / name)).events["flow"])
        before = kv.parse_nstat((fixture / f"nstat-{host}-before.jsonl").read_text())[-1][1]
        after = kv.parse_nstat((fixture / f"nstat-{host}-after.jsonl").read_text())[-1][1]
        assert totals == {
            "fast_recoveries": kv.nstat_delta(before, after, kv.NSTAT_FAST_RECOVERY),
            "timeouts": kv.nstat_delta(before, after, kv.NSTAT_TIMEOUTS),
            "total_retrans": kv.nstat_delta(before, after, kv.NSTAT_RETRANS_SEGS)}, host


@pytest.mark.parametrize("fixture", with_scenario("lossy"), ids=ids(with_scenario("lossy")))
def test_random_loss_gives_fast_retransmits(fixture):
    a = read_trace(str(fixture / "a.mbrec")).events["flow"]
    from mbrec.testing import kernel_view as kv
    assert kv.episode_totals(a)["fast_recoveries"] > 0


@pytest.mark.parametrize("fixture", with_scenario("rto"), ids=ids(with_scenario("rto")))
def test_a_blackhole_gives_retransmission_timeouts(fixture):
    from mbrec.testing import kernel_view as kv
    a = read_trace(str(fixture / "a.mbrec")).events["flow"]
    assert kv.episode_totals(a)["timeouts"] > 0


def saturated_pixels(png: pathlib.Path) -> int:
    """Pixels in colour: data series, never axes, text or grid (black, grey, white)."""
    import matplotlib.image
    img = matplotlib.image.imread(str(png))[..., :3].reshape(-1, 3)
    mx, mn = img.max(axis=1), img.min(axis=1)
    return int(((mx - mn) > 0.3).sum())


@pytest.mark.parametrize("fixture", FIXTURES[:3], ids=ids(FIXTURES[:3]))
def test_plots_are_drawn_with_data(fixture, tmp_path):
    result = subprocess.run([sys.executable, "-m", "mbrec", "analyze", *traces_of(fixture),
                             "-o", str(tmp_path), "--quiet"], cwd=fixture, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    pngs = sorted(tmp_path.glob("*.png"))
    assert pngs, "no plots written"
    for png in pngs:
        assert (tmp_path / (png.stem + ".svg")).exists()
        assert saturated_pixels(png) > 200, f"{png.name} shows no data"
