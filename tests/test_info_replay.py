"""`mbrec info` and `mbrec replay` on synthetic traces with known content."""

import json
import subprocess
import sys

import numpy as np
import pytest

from mbrec.testing.synthetic import packet_flow, random_records, write_trace


def run_cli(*args):
    result = subprocess.run([sys.executable, "-m", "mbrec", *args], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def two_hosts(tmp_path):
    """Two traces whose packet timestamps interleave, written in many small batches."""
    a = packet_flow(300, seed=1)
    b = packet_flow(300, seed=2)
    b["ts_ns"] += 777  # interleave with a, never equal
    pa = write_trace(str(tmp_path / "a.mbrec"), {"pkt": a, "flow": random_records("flow", 7)},
                     host="a", batch=64, lost={"ip_rcv": 5})
    pb = write_trace(str(tmp_path / "b.mbrec"), {"pkt": b}, host="b", batch=100, clean=False)
    return pa, pb, a, b


def test_info_shows_the_losses_by_cause(tmp_path):
    detail = {"ring_full": {}, "program_skipped": {"ip_rcv": 3}, "kprobe_missed": {"ip_rcv": 2}}
    p = write_trace(str(tmp_path / "k.mbrec"), {"pkt": packet_flow(50, seed=3)}, host="k",
                    lost={"ip_rcv": 5}, trailer={"lost_detail": detail, "stop_reason": "SIGINT"})
    info = json.loads(run_cli("info", "--json", p))
    assert info["lost_by_cause"] == {"ring_full": 0, "program_skipped": 3, "kprobe_missed": 2}
    assert "  lost by     ring full 0, program skipped 3, kprobe missed 2" in run_cli("info", p).splitlines()


def test_info_json_describes_each_file(two_hosts):
    pa, pb, a, b = two_hosts
    out = [json.loads(line) for line in run_cli("info", "--json", pa, pb).splitlines()]
    ia, ib = out
    assert ia["host"] == "a" and ia["events"]["pkt"] == len(a) and ia["events"]["flow"] == 7
    assert ia["lost_total"] == 5 and ia["clean_stop"] is True
    assert ib["clean_stop"] is False and ib["warnings"]
    assert ia["packet_probe_events"]["dev_queue_xmit"] == 300
    flows_start = int(random_records("flow", 7)["ts_ns"].min())
    assert ia["start_ns"] == min(int(a["ts_ns"].min()), flows_start)
    assert ia["end_ns"] == int(a["ts_ns"].max())
    assert ia["bytes_per_event"] == pytest.approx(ia["file_size"] / (len(a) + 7))


def test_info_text_names_losses_and_unclean_end(two_hosts):
    pa, pb, *_ = two_hosts
    text = run_cli("info", pa, pb)
    assert "ip_rcv 5" in text and "UNCLEAN" in text and "clean stop" in text


def test_replay_merges_files_in_timestamp_order(two_hosts):
    pa, pb, a, b = two_hosts
    rows = [json.loads(line) for line in
            run_cli("replay", "--json", "--type", "pkt", pa, pb).splitlines()]
    assert len(rows) == len(a) + len(b)
    ts = np.array([r["ts_ns"] for r in rows])
    assert (np.diff(ts) >= 0).all()
    assert {r["host"] for r in rows} == {"a", "b"}
    assert rows[0]["saddr"] == "10.0.0.1" and rows[0]["sport"] == 40000


def test_replay_filters(two_hosts):
    pa, pb, a, b = two_hosts
    only_probe = run_cli("replay", "--type", "dev_hard_start_xmit", pa).splitlines()
    assert len(only_probe) == 300 and all("dev_hard_start_xmit" in line for line in only_probe)
    assert run_cli("replay", "--flow", "10.9.9.9", pa) == ""
    assert len(run_cli("replay", "--type", "pkt", "--flow", ":80", pa).splitlines()) == len(a)
    t_end = (int(a["ts_ns"][40]) - int(a["ts_ns"].min())) / 1e9
    window = run_cli("replay", "--type", "pkt", "--time", f"0:{t_end}", pa).splitlines()
    assert len(window) == 40


def test_replay_bad_filter_is_one_line(two_hosts):
    pa, *_ = two_hosts
    result = subprocess.run([sys.executable, "-m", "mbrec", "replay", "--type", "nope", pa],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "nope" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
