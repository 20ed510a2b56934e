"""--clock realtime: each host's realtime reading is interpolated over its own anchors, so a
monotonic clock that drifts against realtime is followed, whatever the order of the files."""

import json
import subprocess
import sys

import numpy as np
import pytest

from mbrec.analysis import clock
from mbrec.events import SCHEMA_BY_NAME
from mbrec.trace.format import make_header
from mbrec.testing import twohost
from mbrec.trace.reader import read_trace
from mbrec.trace.writer import TraceWriter


WALL = 1_700_000_000 * 10**9
DRIFT = 300e-6           # b's monotonic clock runs 300 ppm fast against a's (and true time)
BETA = 3600 * 10**9      # and is an hour ahead
UNC = 1_000              # each anchor's read uncertainty


def _write(path, host, boot, pkt, anchors):
    """A trace whose clock anchors are the given (monotonic, realtime) pairs, in order."""
    ends = iter([anchors[0], anchors[-1]])
    w = TraceWriter(path, make_header(host=host, boot_id=boot, kernel="synthetic"),
                    clock=lambda: next(ends))
    w.write_events(SCHEMA_BY_NAME["pkt"].id, pkt)
    for a in anchors[1:-1]:
        w.write_object(a)
    w.close()
    return path


def _anchor(mono, true_t):
    """An anchor read at true time true_t: realtime is exact (int arithmetic: 1.7e18 ns
    does not fit a float64 to the nanosecond)."""
    return {"t": "clock", "monotonic_ns": int(round(mono)), "realtime_ns": WALL + int(true_t),
            "boottime_ns": int(round(mono)), "uncertainty_ns": UNC}


@pytest.fixture(scope="module")
def drifting_pair(tmp_path_factory):
    """a's monotonic clock is true time; b's reads (1 + DRIFT) t + BETA. Both realtime clocks
    are exact (NTP keeps them right), so b's anchors follow its drift: its realtime-minus-
    monotonic offset falls by 300 us each second."""
    tmp = tmp_path_factory.mktemp("rt")
    alpha = 1 + DRIFT
    a, b, truth = twohost.exchange(400, alpha=alpha, beta_ns=BETA, gap_ns=60_000_000, seed=5)
    span = int(max(a["ts_ns"].max(), truth["ab"][:, 0].max())) + 2 * 10**9
    ta = np.arange(0, span, 10**9, dtype=np.float64)                # a's anchors, every second
    tb = np.arange(0.37e9, span, 10**9, dtype=np.float64)            # b's, at other instants
    pa = _write(str(tmp / "a.mbrec"), "a", "aaaa", a, [_anchor(t, t) for t in ta])
    pb = _write(str(tmp / "b.mbrec"), "b", "bbbb", b,
                [_anchor(alpha * t + BETA, t) for t in tb])
    return pa, pb, truth, alpha


@pytest.mark.parametrize("order", ["ab", "ba"])
def test_realtime_follows_a_drifting_monotonic_clock_in_both_file_orders(drifting_pair, order):
    pa, pb, truth, alpha = drifting_pair
    files = [pa, pb] if order == "ab" else [pb, pa]
    al = clock.align([read_trace(p) for p in files], method="realtime")
    pair = al.pair("a", "b")
    t = np.concatenate([truth["ab"][:, 0], truth["ba"][:, 0]]).astype(np.int64)
    est, lo, hi = pair.map(t)
    true = alpha * t.astype(np.float64) + BETA
    # exact up to rounding: the relation is linear and both hosts' anchors describe it
    assert np.max(np.abs(est - true)) < 50
    assert np.all(lo <= true) and np.all(true <= hi)
    assert pair.summary()["drift_ppm"] == pytest.approx(DRIFT * 1e6, abs=0.01)
    # the span is about 30 s: treating b's offset as a constant would be off by milliseconds
    assert (t.max() - t.min()) * DRIFT > 5_000_000


def test_the_two_orders_give_the_same_answer_and_count_the_frames(drifting_pair):
    pa, pb, truth, alpha = drifting_pair
    fwd = clock.align([read_trace(pa), read_trace(pb)], method="realtime")
    rev = clock.align([read_trace(pb), read_trace(pa)], method="realtime")
    t = truth["ab"][:, 0].astype(np.int64)
    e1, e2 = fwd.pair("a", "b").map(t)[0], rev.pair("a", "b").map(t)[0]
    assert np.max(np.abs(e1 - e2)) < 2
    for al in (fwd, rev):
        s = next(iter(al.pairs.values())).summary()
        c, checked = s["constraints"], s["causality"]
        assert c["from_to"] > 0 and c["to_from"] > 0
        assert c["from_to"] + c["to_from"] == (checked["from_to"]["frames"]
                                               + checked["to_from"]["frames"])
        assert s["bound_guaranteed"] is False and checked["ok"]
        line = al.text_lines()[0]
        assert "frames 0 / 0" not in line and "not guaranteed" in line


def test_analyze_labels_the_realtime_interval_as_an_estimate(drifting_pair):
    pa, pb, *_ = drifting_pair
    r = subprocess.run([sys.executable, "-m", "mbrec", "analyze", "-q", "--clock", "realtime",
                        pa, pb], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    net = [line for line in r.stdout.splitlines() if "L_NET" in line and "p50 range" in line]
    assert net and all("estimated (not guaranteed) p50 range" in line for line in net)
    assert "guaranteed p50 range" not in r.stdout.replace("(not guaranteed) p50 range", "")
    r = subprocess.run([sys.executable, "-m", "mbrec", "analyze", "-q", "--json", "--clock",
                        "realtime", pb, pa], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    pairs = json.loads(r.stdout)["cross_host"]["clock"]["pairs"] if "clock" in json.loads(
        r.stdout)["cross_host"] else None
    if pairs is not None:
        assert all(p["bound_guaranteed"] is False for p in pairs)
