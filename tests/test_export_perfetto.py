"""`mbrec export --format perfetto`: the written file parsed back with Perfetto's own protos, and
the invariants the UI relies on checked on the recorded lab fixtures."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest

from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb  # a dependency of mbrec

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures"
TE = pb.TrackEvent


def export(tmp_path, fixture: str, *args) -> tuple[pathlib.Path, subprocess.CompletedProcess]:
    out = tmp_path / f"{fixture}.perfetto-trace"
    traces = sorted(str(p) for p in (FIX / fixture).glob("*.mbrec"))
    res = subprocess.run([sys.executable, "-m", "mbrec", "export", "--format", "perfetto",
                          *traces, "-o", str(out), *args], capture_output=True, text=True)
    return out, res


def parse(path: pathlib.Path) -> dict:
    """Everything the checks need, read the way the trace processor reads it."""
    trace = pb.Trace.FromString(path.read_bytes())
    tracks, names, ann_names, attrs = {}, {}, {}, {}
    events = []
    for p in trace.packet:
        if p.HasField("track_descriptor"):
            tracks[p.track_descriptor.uuid] = p.track_descriptor
        if p.HasField("interned_data"):
            names.update({e.iid: e.name for e in p.interned_data.event_names})
            ann_names.update({e.iid: e.name for e in p.interned_data.debug_annotation_names})
        if p.HasField("trace_attributes"):
            attrs.update({a.key: (a.string_value or a.long_value)
                          for a in p.trace_attributes.attribute})
        if p.HasField("track_event"):
            events.append((p.timestamp, p.track_event))
    return {"tracks": tracks, "names": names, "ann": ann_names, "attrs": attrs,
            "events": events}


def check_invariants(t: dict) -> dict:
    """Slices nest on each track, timestamps ordered per track, every flow id has exactly one
    start and one end, counters in time order; returns the slices found, by name."""
    tracks = t["tracks"]
    stacks = defaultdict(list)
    last_ts = {}
    flow_start, flow_end = defaultdict(int), defaultdict(int)
    slices = defaultdict(list)
    for ts, te in t["events"]:
        assert te.track_uuid in tracks, "event on a track without a descriptor"
        assert ts >= last_ts.get(te.track_uuid, 0), "timestamps go back on a track"
        last_ts[te.track_uuid] = ts
        if te.type == TE.TYPE_SLICE_BEGIN:
            name = t["names"][te.name_iid]
            ann = {t["ann"][d.name_iid]: d for d in te.debug_annotations}
            rec = {"name": name, "start": ts, "track": te.track_uuid, "ann": ann,
                   "flows": list(te.flow_ids), "terminating": list(te.terminating_flow_ids)}
            stacks[te.track_uuid].append(rec)
            slices[name].append(rec)
            for f in te.flow_ids:
                flow_start[f] += 1
            for f in te.terminating_flow_ids:
                flow_end[f] += 1
        elif te.type == TE.TYPE_SLICE_END:
            assert stacks[te.track_uuid], "slice end without a begin on its track"
            rec = stacks[te.track_uuid].pop()
            rec["end"] = ts
            # nesting: a slice ends no later than its parent would (the parent is still open)
            assert all(ts >= r["start"] for r in stacks[te.track_uuid])
        elif te.type == TE.TYPE_COUNTER:
            assert tracks[te.track_uuid].HasField("counter"), "counter on a slice track"
    assert not any(stacks.values()), "slices left open at the end of the trace"
    assert set(flow_start) == set(flow_end), "a flow id without both ends"
    assert all(v == 1 for v in flow_start.values()) and all(v == 1 for v in flow_end.values())
    return slices


@pytest.fixture(scope="module")
def ab(tmp_path_factory):
    out, res = export(tmp_path_factory.mktemp("ab"), "ab")
    assert res.returncode == 0, res.stderr
    return parse(out), res


def test_ab_invariants_and_layout(ab):
    t, _ = ab
    slices = check_invariants(t)
    tracks = t["tracks"]
    procs = {d.process.process_name for d in tracks.values() if d.HasField("process")}
    assert procs == {"a", "b"}, "one process per host, named by host"
    # every layer of both directions, L_NET both ways and the application turns are there
    for name in ("L_TCP_1", "L_IP_1", "L_NIC_1", "L_NIC_2", "L_IP_2", "L_TCP_2", "L_APP_2",
                 "L_TCP_3", "L_IP_3", "L_NIC_3", "L_NIC_4", "L_IP_4", "L_TCP_4", "L_APP_1",
                 "L_NET_1", "L_NET_2"):
        assert slices[name], f"no {name} slice"
    # L_NET on tracks of their own, outside every host's process
    def root(u):
        while tracks[u].parent_uuid:
            u = tracks[u].parent_uuid
        return tracks[u]
    net_roots = {root(s["track"]).name for s in slices["L_NET_1"] + slices["L_NET_2"]}
    assert net_roots == {"network a <-> b"}
    assert {root(s["track"]).process.process_name for s in slices["L_TCP_1"]} == {"a"}
    # counters from the flow snapshots (fixtures/ab was recorded with the flows probes)
    counters = {d.name for d in tracks.values() if d.HasField("counter")}
    assert {"cwnd (segments)", "flight size (packets)", "srtt (us)",
            "send queue (bytes)"} <= counters


def test_ab_counts_match_the_analysis(ab):
    """As many slices per layer as the analysis has samples (no filter, under the guard)."""
    import json
    t, _ = ab
    slices = check_invariants(t)
    report = json.loads((FIX / "ab" / "golden-report.json").read_text())
    expected = defaultdict(int)
    for host in report["hosts"]:
        for name, st in host["latencies"].items():
            expected[name] += st["count"] if isinstance(st, dict) else 0
    assert expected["L_TCP_1"] > 1000
    for name, count in expected.items():
        assert len(slices[name]) == count, name


def test_ab_arrows_link_layers_and_hosts(ab):
    """A packet's send layers, its L_NET frame and the receiver's layers are linked."""
    t, _ = ab
    slices = check_invariants(t)
    by_flow_start, by_flow_end = {}, {}
    for name, recs in slices.items():
        for r in recs:
            for f in r["flows"]:
                by_flow_start[f] = r
            for f in r["terminating"]:
                by_flow_end[f] = r
    pairs = {(by_flow_start[f]["name"], by_flow_end[f]["name"]) for f in by_flow_start}
    for link in (("L_TCP_1", "L_IP_1"), ("L_IP_1", "L_NIC_1"), ("L_NIC_1", "L_NET_1"),
                 ("L_NET_1", "L_NIC_2"), ("L_NIC_2", "L_IP_2"), ("L_IP_2", "L_TCP_2"),
                 ("L_TCP_2", "L_APP_2"), ("L_APP_2", "L_TCP_3"), ("L_NIC_3", "L_NET_2"),
                 ("L_NET_2", "L_NIC_4")):
        assert link in pairs, f"no arrow {link[0]} -> {link[1]}"
    # across hosts, an arrow's ends are in time order on the aligned timeline (shared clock)
    for f, r in by_flow_start.items():
        if r["name"].startswith("L_NET"):
            assert by_flow_end[f]["start"] >= r["start"]


def test_l_net_slices_carry_their_interval(ab):
    t, _ = ab
    slices = check_invariants(t)
    for r in slices["L_NET_1"] + slices["L_NET_2"]:
        lo, hi = r["ann"]["l_net_lo_ns"].double_value, r["ann"]["l_net_hi_ns"].double_value
        dur = r["end"] - r["start"]
        assert lo - 1 <= dur <= hi + 1
        assert "seq" in r["ann"] and "ip_id" in r["ann"]
    attrs = t["attrs"]
    assert attrs["mbrec.clock.reference"] == "a"
    assert attrs["mbrec.clock.b.quality"] == "exact"  # both VMs of fixtures/ab share one clock


def test_two_vm_mapped_by_the_fitted_clock(tmp_path):
    """Two VMs with their own clocks: b's events are mapped into a's timebase, so each L_NET
    slice (a's send to b's receive, or back) lies inside its guaranteed interval."""
    out, res = export(tmp_path, "two-vm")
    assert res.returncode == 0, res.stderr
    t = parse(out)
    slices = check_invariants(t)
    assert t["attrs"]["mbrec.clock.method"] == "auto"
    assert t["attrs"]["mbrec.clock.b.quality"] in ("accurate", "exact")
    n = 0
    for r in slices["L_NET_1"] + slices["L_NET_2"]:
        lo, hi = r["ann"]["l_net_lo_ns"].double_value, r["ann"]["l_net_hi_ns"].double_value
        if "negative_estimate" in r["ann"]:
            continue
        assert lo - 2 <= r["end"] - r["start"] <= hi + 2
        n += 1
    assert n > 100
    # the wire leg joins the two hosts' own slices on the one timeline: it starts where the
    # sender's NIC slice ends (dev_hard_start_xmit) and ends where the receiver's starts
    # (eth_type_trans), each host mapped by its own clock model
    start_of = {f: r for recs in slices.values() for r in recs for f in r["flows"]}
    end_of = {f: r for recs in slices.values() for r in recs for f in r["terminating"]}
    joined = 0
    for f, src in start_of.items():
        dst = end_of[f]
        if dst["name"].startswith("L_NET"):
            assert src["name"] in ("L_NIC_1", "L_NIC_3") and abs(src["end"] - dst["start"]) <= 1
            joined += 1
        if src["name"].startswith("L_NET") and "negative_estimate" not in src["ann"]:
            assert dst["name"] in ("L_NIC_2", "L_NIC_4") and abs(src["end"] - dst["start"]) <= 1
            joined += 1
    assert joined > 200


def test_flow_and_time_filters(tmp_path, ab):
    t_all, _ = ab
    all_slices = check_invariants(t_all)
    out, res = export(tmp_path, "ab", "--flow", ":38508", "--time", "2:4")
    assert res.returncode == 0, res.stderr
    t = parse(out)
    slices = check_invariants(t)
    flows = {d.name for d in t["tracks"].values() if ":" in d.name}
    assert len(flows) == 3 and all("38508" in f for f in flows)  # a, b, network
    starts = [r["start"] for recs in slices.values() for r in recs]
    first = min(ts for ts, _ in t_all["events"] if ts > 0 and _.type != TE.TYPE_INSTANT)
    assert min(starts) >= first + 2e9 and max(starts) < first + 4e9
    assert sum(map(len, slices.values())) < sum(map(len, all_slices.values())) / 10


def test_size_guard_cuts_to_a_window_and_says_so(tmp_path, ab):
    out, res = export(tmp_path, "ab", "--max-events", "5000")
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("mbrec:")]
    assert len(lines) == 1 and "--time" in lines[0] and "5,000" in lines[0]
    t = parse(out)
    check_invariants(t)
    begins = sum(1 for _, te in t["events"] if te.type == TE.TYPE_SLICE_BEGIN)
    ends = sum(1 for _, te in t["events"] if te.type == TE.TYPE_SLICE_END)
    counters = sum(1 for _, te in t["events"] if te.type == TE.TYPE_COUNTER)
    assert begins == ends and begins + ends + counters <= 5000


def test_bad_input_is_one_line_and_nothing_overwritten(tmp_path):
    out, res = export(tmp_path, "ab", "--flow", "not-an-address:x")
    assert res.returncode != 0 and "--flow" in res.stderr and "Traceback" not in res.stderr
    out.write_bytes(b"keep me")
    out2, res = export(tmp_path, "ab")
    assert out2 == out and res.returncode != 0 and "already exists" in res.stderr
    assert out.read_bytes() == b"keep me"
    out3, res = export(tmp_path, "ab", "--time", "1000:2000", "--force")
    assert res.returncode != 0 and "nothing to export" in res.stderr
    assert out.read_bytes() == b"keep me"


def test_lanes_never_overlap():
    from mbrec.analysis.perfetto import lanes
    rng = np.random.default_rng(3)
    n = 5000
    group = rng.integers(0, 5, n)
    start = rng.integers(0, 10**6, n)
    end = start + rng.integers(0, 3000, n) * (rng.random(n) < 0.9)
    lane = lanes(group, start, end)
    for g in range(5):
        for ln in np.unique(lane[group == g]):
            sel = np.flatnonzero((group == g) & (lane == ln))
            o = np.argsort(start[sel], kind="stable")
            s, e = start[sel][o], end[sel][o]
            assert (s[1:] >= e[:-1]).all()
    assert lane.max() > 0  # the random slices do overlap, so extra lanes were needed


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIX.glob("*/") if any(p.glob("*.mbrec"))))
def test_every_fixture_exports_a_valid_trace(tmp_path, fixture):
    out, res = export(tmp_path, fixture)
    assert res.returncode == 0, res.stderr
    t = parse(out)
    slices = check_invariants(t)
    hosts = {d.process.process_name for d in t["tracks"].values() if d.HasField("process")}
    assert len(hosts) == len(list((FIX / fixture).glob("*.mbrec")))
    assert sum(map(len, slices.values())) > 100


def test_lost_events_mark_the_layers_they_affect(tmp_path):
    """A host that lost events of ip_queue_xmit: its L_TCP and L_IP send slices say so, its
    receive slices do not."""
    from mbrec.analysis import perfetto
    from mbrec.analysis.run import analyze
    from mbrec.trace.reader import read_trace
    a = analyze([read_trace(str(FIX / "ab" / f)) for f in ("a.mbrec", "b.mbrec")])
    a.results[0].lost = {"ip_queue_xmit": 3}
    out = tmp_path / "lost.perfetto-trace"
    perfetto.write_trace(a, str(out))
    slices = check_invariants(parse(out))
    for name, marked in (("L_TCP_1", True), ("L_IP_1", True), ("L_NIC_1", False),
                         ("L_TCP_4", False), ("L_TCP_2", False)):
        assert all(("lost_events" in r["ann"]) == marked for r in slices[name]), name


def test_hosts_without_a_clock_relation_say_so(tmp_path):
    from mbrec.analysis import perfetto
    from mbrec.analysis.run import analyze
    from mbrec.trace.reader import read_trace
    a = analyze([read_trace(str(FIX / "ab" / f)) for f in ("a.mbrec", "b.mbrec")],
                cross_host=False)
    out = tmp_path / "unaligned.perfetto-trace"
    perfetto.write_trace(a, str(out))
    t = parse(out)
    slices = check_invariants(t)
    assert not slices["L_NET_1"]
    assert t["attrs"]["mbrec.clock.b.quality"] == "not aligned: its own clock"
