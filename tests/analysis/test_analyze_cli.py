"""`mbrec analyze` end to end on synthetic ground-truth traces: outputs, determinism, bad input."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from mbrec.testing.synthetic import write_trace
from mbrec.testing.clientserver import exchanges
from mbrec.trace.format import FORMAT_VERSION, signature


def run(*args, ok=True):
    r = subprocess.run([sys.executable, "-m", "mbrec", "analyze", *args], capture_output=True,
                       text=True)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def gt_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    gt = exchanges(n_flows=3, n_exchanges=10, seed=3)
    paths = {h: write_trace(str(tmp / f"{h}.mbrec"), gt.events[h], host=h,
                            boot_id=gt.hosts[h]["boot_id"],
                            lost={"ip_rcv": 4} if h == "server" else None)
             for h in ("client", "server")}
    return gt, paths, tmp


@pytest.fixture(scope="module")
def analysed(gt_files):
    gt, paths, tmp = gt_files
    out = tmp / "out"
    r = run("-q", paths["client"], paths["server"], "-o", str(out))
    return gt, out, r.stdout


def test_report_json_matches_truth(analysed):
    gt, out, _ = analysed
    rep = json.loads((out / "report.json").read_text())
    assert rep["format"] == "mbrec-report" and rep["version"] == 1
    hosts = {h["host"]: h for h in rep["hosts"]}
    for host in ("client", "server"):
        lat = hosts[host]["latencies"]
        assert sorted(lat) == sorted(gt.truth[host])
        for name, values in gt.truth[host].items():
            assert lat[name]["count"] == len(values)
            assert lat[name]["max"] == values.max()
            assert lat[name]["p50"] == pytest.approx(np.percentile(values, 50))
            assert lat[name]["p99.9"] == pytest.approx(np.percentile(values, 99.9))
    # lost ip_rcv events are attached to the latencies that use ip_rcv, and only to those
    srv = hosts["server"]["latencies"]
    assert srv["L_NIC_2"]["lost_events_affecting"] == 4
    assert srv["L_IP_2"]["lost_events_affecting"] == 4
    assert srv["L_APP_2"]["lost_events_affecting"] == 0
    assert rep["cross_host"]["status"] in ("ok", "not available")
    assert "where the time went" in rep["where_the_time_went"]


def test_flow_metrics_match_truth(analysed):
    gt, out, _ = analysed
    rep = json.loads((out / "report.json").read_text())
    assert len(rep["flows"]) == 6  # 3 flows seen from each host
    for f in rep["flows"]:
        (cookie,) = f["sockets"]
        truth = gt.flows[f["host"]][cookie]
        m = f["metrics"]
        assert m["snapshots"] == truth["snapshots"]
        assert m["CWND"]["snd_cwnd"]["last"] == truth["CWND"]
        assert m["SampleRTT"] == truth["SampleRTT"] and m["SumRTT_us"] == truth["SumRTT_us"]
        assert m["MaxAppWQueue"] == truth["MaxAppWQueue"]
        assert m["Duration_ns"] == truth["Duration_ns"]
        assert m["Duration_exact"] == truth["Duration_exact"]
        assert m["FlightSize"]["packets"]["max"] == truth["max_flight_packets"]
        assert m["RePackets"] == truth["RePackets"]


def test_csvs_and_plots_written(analysed):
    gt, out, _ = analysed
    with open(out / "latencies.csv") as f:
        rows = list(csv.DictReader(f))
    n_truth = sum(len(v) for h in gt.truth.values() for v in h.values())
    assert len(rows) == n_truth
    with open(out / "packets.csv") as f:
        pk = list(csv.DictReader(f))
    assert {r["host"] for r in pk} == {"client", "server"}
    with open(out / "flows.csv") as f:
        assert len(list(csv.DictReader(f))) == 6
    with open(out / "flow_series.csv") as f:
        assert len(list(csv.DictReader(f))) == 6 * 40
    for stem in ("cdf_client", "cdf_server", "breakdown", "flow_client_0", "flow_server_2"):
        for ext in ("png", "svg"):
            p = out / f"{stem}.{ext}"
            assert p.stat().st_size > 1000, p


def test_plots_and_report_are_deterministic(gt_files, analysed):
    """A second analysis (in this process, at another time) gives the same bytes."""
    from mbrec.analysis import plots, report
    from mbrec.analysis.run import analyze
    from mbrec.trace.reader import read_trace

    gt, paths, tmp = gt_files
    _, out, _ = analysed
    out2 = tmp / "out2"
    out2.mkdir()
    a = analyze([read_trace(paths["client"]), read_trace(paths["server"])])
    report.write_json(a.report, str(out2 / "report.json"))
    plots.plot_cdfs(str(out2), "client", a.cdf[0])
    plots.plot_breakdown(str(out2), a.report["hosts"])
    plots.plot_flows(str(out2), "server", a.series[1], a.flow_names[1])
    made = sorted(p.name for p in out2.iterdir())
    assert len(made) == 1 + 2 + 2 + 2 * 3
    for name in made:
        assert (out / name).read_bytes() == (out2 / name).read_bytes(), name
    assert b"Date" not in (out / "breakdown.svg").read_bytes()


def test_terminal_table_shows_lost_events_and_summary(analysed):
    _, _, stdout = analysed
    lines = stdout.splitlines()
    nic2 = next(line for line in lines if line.strip().startswith("L_NIC_2"))
    assert "4 lost" in nic2
    app2 = next(line for line in lines if line.strip().startswith("L_APP_2"))
    assert "lost" not in app2
    assert lines[-1].startswith("where the time went")


def test_per_flow_table(gt_files):
    _, paths, _ = gt_files
    out = run("-q", "--per-flow", paths["server"]).stdout
    assert out.count("flow ") >= 3 and "-> 10.0.0.2:80" in out


def test_single_host_says_why_no_network_latency(gt_files):
    _, paths, _ = gt_files
    out = run("-q", paths["client"]).stdout
    assert "needs the traces of both ends" in out


def _one_line_error(r):
    assert r.returncode == 2
    err = [line for line in r.stderr.splitlines() if line.startswith("mbrec: error:")]
    assert len(err) == 1 and "Traceback" not in r.stderr
    return err[0]


def test_bad_inputs_give_one_line_and_exit_2(tmp_path, gt_files):
    _, paths, _ = gt_files
    junk = tmp_path / "junk.txt"
    junk.write_text("not a trace at all, but long enough to have a signature\n")
    assert "not an mbrec trace" in _one_line_error(run(str(junk), ok=False))
    empty = tmp_path / "empty.mbrec"
    empty.write_bytes(b"")
    assert "is empty" in _one_line_error(run(str(empty), ok=False))
    none = write_trace(str(tmp_path / "none.mbrec"), {}, host="x")
    assert "holds no events" in _one_line_error(run(str(none), ok=False))
    assert "same recording" in _one_line_error(run(paths["client"], paths["client"], ok=False))
    # a newer format version next to a current one
    newer = tmp_path / "newer.mbrec"
    data = open(paths["client"], "rb").read()
    newer.write_bytes(signature(FORMAT_VERSION + 1) + data[len(signature()):])
    msg = _one_line_error(run(paths["server"], str(newer), ok=False))
    assert f"format version {FORMAT_VERSION + 1}" in msg


def test_truncated_and_unclean_trace_is_analysed_with_a_warning(tmp_path):
    gt = exchanges(n_flows=2, n_exchanges=8, seed=4)
    p = write_trace(str(tmp_path / "s.mbrec"), gt.events["server"], host="server", batch=64,
                    frame_bytes=4096, clean=False)
    data = open(p, "rb").read()
    cut = tmp_path / "cut.mbrec"
    cut.write_bytes(data[: int(len(data) * 0.7)])
    r = run("-q", str(cut))
    assert "warning:" in r.stdout and "truncated" in r.stdout
    assert "L_NIC_2" in r.stdout
    head = tmp_path / "head.mbrec"
    head.write_bytes(data[:200])
    assert "no readable header" in _one_line_error(run(str(head), ok=False))


def test_packet_events_only(tmp_path):
    """A trace with only send-side packet events (no flow, socket or receive records)."""
    from mbrec.testing.synthetic import packet_flow
    p = write_trace(str(tmp_path / "a.mbrec"), {"pkt": packet_flow(50)}, host="a")
    out = tmp_path / "out"
    r = run("-q", p, "-o", str(out), "--no-plots")
    assert "L_TCP_1" in r.stdout and "L_NIC_1" in r.stdout
    rep = json.loads((out / "report.json").read_text())
    (flow,) = rep["flows"]
    assert flow["metrics"] is None and flow["client_source"] == "ports"
    assert rep["hosts"][0]["latencies"]["L_IP_1"]["count"] == 50
    assert rep["hosts"][0]["latencies"]["L_IP_1"]["p50"] == 2000  # layer_ns of packet_flow


def test_flow_partitions_give_the_same_results(tmp_path):
    """--partitions: events split by connection on disk and analysed one partition at a time
    give the whole-trace report, the cross-host part included (clock alignment, L_NET, RTT
    decomposition), flows numbered alike, and lost-event attribution."""
    from golden import differences
    from mbrec.testing.clientserver import replicate
    gt = exchanges(n_flows=4, n_exchanges=6, seed=9)
    paths = []
    for h in ("client", "server"):
        paths.append(write_trace(str(tmp_path / f"{h}.mbrec"), replicate(gt.events[h], 5),
                                 host=h, boot_id=gt.hosts[h]["boot_id"], batch=500,
                                 lost={"tcp_v4_rcv": 3} if h == "server" else None))
    whole = json.loads(run("-q", "--json", *paths).stdout)
    assert whole["cross_host"]["status"] == "ok"
    assert whole["cross_host"]["network"]["pairs"][0]["directions"][0]["frames"] > 0
    for n in (4, 7):
        parts = json.loads(run("-q", "--json", "--partitions", str(n), *paths).stdout)
        assert parts.pop("partitions") == n
        assert differences(parts, whole, rtol=1e-9) == []
    whole = json.loads(run("-q", "--json", "--per-flow", *paths).stdout)
    parts = json.loads(run("-q", "--json", "--per-flow", "--partitions", "5", *paths).stdout)
    assert parts.pop("partitions") == 5 and "latencies" in whole["flows"][0]
    assert differences(parts, whole, rtol=1e-9) == []
