"""Cross-host matching, signed L_NET with guaranteed intervals, RTT decomposition, report, plots."""

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mbrec.analysis import clock, network
from mbrec.testing import twohost
from mbrec.trace.reader import read_trace


DAY = 86_400 * 10**9


def _run(tmp_path, a, b, **kw):
    pa, pb = twohost.write_pair(tmp_path, a, b, same_boot=kw.pop("same_boot", False))
    traces = [read_trace(pa), read_trace(pb)]
    al = clock.align(traces, **kw)
    return traces, al, network.analyze_network(traces, al)


def _implied_true_delays(m, alpha, beta):
    """The true one-way delays of the matched frames, from the known clock relation (a's time)."""
    d_ab = (m.ab.r_ns - beta) / alpha - m.ab.s_ns
    d_ba = m.ba.r_ns - (m.ba.s_ns - beta) / alpha
    return d_ab, d_ba


def test_every_frame_matched_across_tso(tmp_path):
    a, b, truth = twohost.exchange(120, frames=4, nflows=3, seed=1)
    traces, al, res = _run(tmp_path, a, b)
    m = al.matches[(0, 1)]
    n_b_frames = (b["probe"] == twohost.RECV).sum()
    n_a_frames = (a["probe"] == twohost.RECV).sum()
    assert len(m.ab) == n_b_frames == len(truth["ab"])
    assert len(m.ba) == n_a_frames == len(truth["ba"])
    assert m.ab.n_ambiguous == 0 and m.ba.n_ambiguous == 0 and not m.ab.nat.any()
    # b->a: 120 TSO skbs of 4 frames each (+3 SYN-ACKs): every frame found its skb
    skbs = np.unique(m.ba.send_idx)
    assert len(skbs) == 120 + 3
    # the matching paired the right frames: the implied true delays are the generated ones
    d_ab, d_ba = _implied_true_delays(m, 1.0, 0)
    assert np.allclose(np.sort(d_ab), np.sort(truth["ab"][:, 1]), atol=2.0)
    assert np.allclose(np.sort(d_ba), np.sort(truth["ba"][:, 1]), atol=2.0)


def _retransmit(a, b, same_ip_id):
    """Send a's 10th request again 3 ms later (a retransmission); both copies arrive at b."""
    reqs = np.flatnonzero((a["probe"] == twohost.XMIT) & (a["len"] == 100))
    k = reqs[10]
    src = a[k:k + 1].copy()
    src["ts_ns"] += 3_000_000
    if not same_ip_id:
        src["ip_id"] += 1000
    rx = np.flatnonzero((b["probe"] == twohost.RECV) & (b["seq"] == a["seq"][k])
                        & (b["ack"] == a["ack"][k]) & (b["len"] == 100))
    assert len(rx) == 1
    dst = b[rx].copy()
    dst["ts_ns"] += 3_000_000 + 7_000  # the copy took 7 us longer
    dst["ip_id"] = src["ip_id"]
    a2 = np.concatenate([a, src])
    b2 = np.concatenate([b, dst])
    return (a2[np.argsort(a2["ts_ns"], kind="stable")], b2[np.argsort(b2["ts_ns"], kind="stable")],
            int(a["ts_ns"][k]))


def test_retransmission_matched_to_its_own_arrival(tmp_path):
    a, b, _ = twohost.exchange(60, seed=2)
    a, b, t_orig = _retransmit(a, b, same_ip_id=False)
    _, al, _ = _run(tmp_path, a, b, same_boot=True)
    m = al.matches[(0, 1)]
    assert m.ab.n_ambiguous == 0
    sel = (m.ab.s_ns == t_orig) | (m.ab.s_ns == t_orig + 3_000_000)
    assert sel.sum() == 2
    d = m.ab.r_ns[sel] - m.ab.s_ns[sel]
    assert d[1] - d[0] == 7_000  # each transmission to its own arrival


def test_retransmission_with_equal_ip_ids_is_ambiguous_and_excluded(tmp_path):
    a, b, _ = twohost.exchange(60, seed=2)
    a2, b2, t_orig = _retransmit(a, b, same_ip_id=True)
    _, al, res = _run(tmp_path, a2, b2, same_boot=True)
    m = al.matches[(0, 1)]
    assert m.ab.n_ambiguous == 2  # both arrivals had two candidates
    assert not np.isin([t_orig, t_orig + 3_000_000], m.ab.s_ns).any()
    assert res.report_section()["pairs"][0]["directions"][0]["ambiguous_excluded"] == 2


def test_nat_between_hosts_still_matches(tmp_path):
    a, b, _ = twohost.exchange(50, seed=3)
    # b sees a's flows from 192.168.7.7:5000+f (a NAT box rewrote them) and answers there
    from mbrec.testing.synthetic import ipv4
    rx = b["probe"] == twohost.RECV
    b["saddr"][rx] = ipv4("192.168.7.7")
    b["sport"][rx] = b["sport"][rx] - 35000
    tx = b["probe"] == twohost.XMIT
    b["daddr"][tx] = ipv4("192.168.7.7")
    b["dport"][tx] = b["dport"][tx] - 35000
    _, al, res = _run(tmp_path, a, b, same_boot=True)
    m = al.matches[(0, 1)]
    assert len(m.ab) == rx.sum() and m.ab.nat.all()
    assert len(m.ba) == (a["probe"] == twohost.RECV).sum() and m.ba.nat.all()
    # flows and roles are still known (a sent the SYNs), seen from a's side
    sec = res.report_section()["pairs"][0]
    assert sec["roles_guessed_from_ports"] == 0
    assert sec["L_NET_1"]["l_net"]["count"] == len(m.ab)


def test_shared_clock_l_net_is_exact(tmp_path):
    a, b, truth = twohost.exchange(200, dmin_ab=40_000, dmin_ba=70_000, seed=4)
    _, al, res = _run(tmp_path, a, b, same_boot=True)
    p = res.pairs[0]
    assert p.method == "shared"
    assert np.array_equal(p.ab.lo, p.ab.hi) and np.array_equal(p.ab.value, p.ab.lo)
    assert np.allclose(np.sort(p.ab.value), np.sort(truth["ab"][:, 1]), atol=2.0)
    assert np.allclose(np.sort(p.ba.value), np.sort(truth["ba"][:, 1]), atol=2.0)
    # L_NET median against the injected delay: 5% + 10 us, as the issue asks of lab traces
    med1 = np.median(p.ab.value)
    assert abs(med1 - np.median(truth["ab"][:, 1])) <= 0.05 * med1 + 10_000


@pytest.mark.parametrize("dmin_ab,dmin_ba", [(30_000, 30_000), (60_000, 20_000)])
def test_l_net_against_injected_delay_across_clocks(tmp_path, dmin_ab, dmin_ba):
    alpha, beta = 1 + 180e-6, int(-2.2 * DAY)
    a, b, truth = twohost.exchange(400, alpha=alpha, beta_ns=beta, dmin_ab=dmin_ab,
                                    dmin_ba=dmin_ba, jitter_ns=3_000, seed=5)
    _, al, res = _run(tmp_path, a, b)
    p = res.pairs[0]
    assert p.quality == "accurate"
    d_ab, d_ba = _implied_true_delays(al.matches[(0, 1)], alpha, beta)
    # every true delay is inside its guaranteed interval, and no interval lies below zero
    for d, dl in ((d_ab, p.ab), (d_ba, p.ba)):
        assert np.all(dl.lo <= d + 1.0) and np.all(d <= dl.hi + 1.0)
        assert np.all(dl.lo >= -1e-3) and np.all(dl.value >= 0)
    # the estimate is off by half the asymmetry, in opposite directions (theory, anchors.md B.1)
    half = (dmin_ab - dmin_ba) / 2
    assert np.median(p.ab.value - d_ab) == pytest.approx(-half, abs=1_500)
    assert np.median(p.ba.value - d_ba) == pytest.approx(+half, abs=1_500)
    # the interval is about the minimum RTT wide
    assert np.median(p.ab.hi - p.ab.lo) == pytest.approx(dmin_ab + dmin_ba, rel=0.1)


@settings(max_examples=15, deadline=None)
@given(drift_ppm=st.floats(-200, 200), beta_days=st.floats(-5, 5),
       dmin_ab=st.integers(2_000, 300_000), dmin_ba=st.integers(2_000, 300_000),
       n=st.integers(2, 150), seed=st.integers(0, 2**31))
def test_property_l_net_truth_inside_interval(drift_ppm, beta_days, dmin_ab, dmin_ba, n, seed):
    alpha, beta = 1 + drift_ppm * 1e-6, int(beta_days * DAY)
    a, b, _ = twohost.exchange(n, alpha=alpha, beta_ns=beta, dmin_ab=dmin_ab, dmin_ba=dmin_ba,
                                nflows=2, seed=seed)
    with tempfile.TemporaryDirectory() as d:
        traces, al, res = _run(Path(d), a, b)
    pair = al.pairs[("a", "b")]
    assert pair.quality in ("accurate", "approximate")
    f = pair.fits[0]
    if pair.quality == "accurate":
        assert f.alpha_min <= alpha <= f.alpha_max
    d_ab, d_ba = _implied_true_delays(al.matches[(0, 1)], alpha, beta)
    p = res.pairs[0]
    for d, dl in ((d_ab, p.ab), (d_ba, p.ba)):
        assert np.all(dl.lo <= d + 1.0) and np.all(d <= dl.hi + 1.0)


def test_rtt_decomposition_adds_up(tmp_path):
    alpha, beta = 1 - 150e-6, int(0.9 * DAY)
    a, b, _ = twohost.exchange(90, alpha=alpha, beta_ns=beta, nflows=3, frames=2, seed=6)
    _, al, res = _run(tmp_path, a, b)
    req = res.pairs[0].requests
    assert req["requests"] == 90
    r = req["per_client"][0]
    assert r["client"] == "a" and r["server"] == "b"
    # the client's NIC RTT is exact (one clock): first response frame in - request out
    assert np.all(r["rtt"] > 0)
    parts = r["l_net_1"] + r["server_time"] + r["l_net_2"]
    assert np.allclose(parts, r["rtt"], atol=1e-3)
    # one-way parts are inside their intervals and the intervals are not below zero
    assert np.all(r["l_net_1_lo"] <= r["l_net_1"]) and np.all(r["l_net_1"] <= r["l_net_1_hi"])
    assert np.all(r["l_net_1_lo"] >= -1e-3) and np.all(r["l_net_2_lo"] >= -1e-3)
    # MicroBPF's impossible result (one-way sum above the RTT) cannot happen here
    s = res.report_section()["pairs"][0]["rtt_decomposition"]["per_client"][0]
    assert s["add_up"]["ok"] and s["one_way_sum_exceeds_rtt"] == 0
    # the server's part is what b's own clock says, rescaled to a's timebase
    assert np.allclose(r["server_time"], r["server_own_clock"] / al.pairs[("a", "b")].alpha, atol=2)


def test_report_is_strict_json(tmp_path):
    a, b, _ = twohost.exchange(30, alpha=1 + 1e-5, beta_ns=10**12, seed=7)
    _, al, res = _run(tmp_path, a, b)
    text = json.dumps({"clock_alignment": al.report_section(),
                       "network": res.report_section()}, allow_nan=False)
    back = json.loads(text)
    assert back["clock_alignment"]["pairs"][0]["quality"] == "accurate"
    assert back["network"]["pairs"][0]["directions"][0]["negative_estimates"] == 0


def test_failed_alignment_leaves_l_net_empty_with_a_note(tmp_path):
    a, b, _ = twohost.exchange(300, step_at=5_060_000_000, step_ns=5_000_000, seed=8)
    traces, al, res = _run(tmp_path, a, b)
    assert al.pairs[("a", "b")].quality == "failed"
    p = res.pairs[0]
    assert np.isnan(p.ab.value).all()
    assert any("failed" in n for n in res.notes)
    json.dumps(res.report_section(), allow_nan=False)
    s = al.report_section()["pairs"][0]
    assert s["evidence"]["gap_ns"] > 4_000_000
    assert abs(s["evidence"]["inconsistent_from_ns"] - 5_060_000_000) < 2_000_000


def test_no_common_traffic_means_no_pair(tmp_path):
    a, b, _ = twohost.exchange(30, seed=9)
    c = a.copy()
    c["seq"] += 12345  # a different conversation: nothing matches b
    c["ack"] += 999
    from mbrec.testing.synthetic import write_trace
    pa = write_trace(str(tmp_path / "c.mbrec"), {"pkt": c}, host="c", boot_id="c")
    pb = write_trace(str(tmp_path / "b.mbrec"), {"pkt": b}, host="b", boot_id="b")
    al = clock.align([read_trace(pa), read_trace(pb)])
    assert al.pairs == {} and al.unreached == ["b"]
    assert network.analyze_network([read_trace(pa), read_trace(pb)], al).pairs == []


def test_plots_written_and_deterministic(tmp_path):
    from mbrec.analysis import plots_network
    a, b, _ = twohost.exchange(80, alpha=1 + 3e-5, beta_ns=7 * 10**12, seed=12)
    traces, al, res = _run(tmp_path, a, b)
    files = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        files.append(plots_network.plot_network(res, al, str(out)))
    names = sorted(os.path.basename(p) for p in files[0])
    assert names == sorted(f"{s}.{e}" for s in ("clock_a_b", "lnet_a_b", "waterfall_a_b")
                           for e in ("png", "svg"))
    for p0, p1 in zip(sorted(files[0]), sorted(files[1])):
        assert Path(p0).read_bytes() == Path(p1).read_bytes(), p0
    svg = (tmp_path / "out0" / "clock_a_b.svg").read_text()
    assert "Date" not in svg and "<dc:date>" not in svg


@pytest.mark.parametrize("same_boot", [True, False])
def test_rtt_decomposition_into_both_hosts_layers(tmp_path, same_boot):
    alpha, beta = (1.0, 0) if same_boot else (1 + 60e-6, int(1.1 * DAY))
    a, b, _ = twohost.exchange(80, alpha=alpha, beta_ns=beta, nflows=2, seed=13)
    a = twohost.add_layers(a, 2_000)  # client layers: 2 us each
    b = twohost.add_layers(b, 3_000)  # server layers: 3 us each (b's clock)
    _, al, res = _run(tmp_path, a, b, same_boot=same_boot)
    r = res.pairs[0].requests["per_client"][0]
    lay = r["layers"]
    parts = lay["parts"]
    assert list(parts) == ["L_TCP_1", "L_IP_1", "L_NIC_1", "L_NET_1", "L_NIC_2", "L_IP_2",
                           "L_TCP_2", "L_APP_2", "L_TCP_3", "L_IP_3", "L_NIC_3", "L_NET_2",
                           "L_NIC_4", "L_IP_4", "L_TCP_4"]
    for k in ("L_TCP_1", "L_IP_1", "L_NIC_1", "L_NIC_4", "L_IP_4", "L_TCP_4"):
        assert np.all(parts[k] == 2_000), k
    for k in ("L_NIC_2", "L_IP_2", "L_TCP_2", "L_TCP_3", "L_IP_3", "L_NIC_3"):
        # b's durations in a's timebase: exact with one clock, within the drift's bound else
        assert np.allclose(parts[k], 3_000 / alpha, atol=0.5 if same_boot else 10), k
    assert np.all(parts["L_APP_2"] > 0)
    # the client's own clock measures the total; the parts add up to it
    assert np.all(np.isfinite(lay["total"]))
    assert np.allclose(lay["residual"], 0, atol=1e-3)
    assert np.allclose(lay["total"], r["rtt"] + 6 * 2_000)
    s = res.report_section()["pairs"][0]["rtt_decomposition"]["per_client"][0]["layers"]
    assert s["complete"] == 80 and s["adds_up_within_1ns"] == 80


def test_flows_sharing_sequence_numbers_are_told_apart_by_their_tuples(tmp_path):
    # a second flow, identical in sequence numbers, acks and IP ids, 300 ns later, other port
    a, b, truth = twohost.exchange(50, nflows=1, seed=14)
    a2, b2 = a.copy(), b.copy()
    for arr in (a2, b2):
        arr["ts_ns"] += 300
        c2s = arr["dport"] == 80
        arr["sport"][c2s] += 1
        arr["dport"][~c2s] += 1
    a = np.concatenate([a, a2])
    b = np.concatenate([b, b2])
    a, b = a[np.argsort(a["ts_ns"], kind="stable")], b[np.argsort(b["ts_ns"], kind="stable")]
    _, al, res = _run(tmp_path, a, b, same_boot=True)
    m = al.matches[(0, 1)]
    assert m.ab.n_ambiguous == 0 and m.ba.n_ambiguous == 0
    assert len(m.ab) == 2 * len(truth["ab"]) and len(m.ba) == 2 * len(truth["ba"])
    # each frame with its own flow's send: the delays are the generated ones, twice
    d_ab, d_ba = _implied_true_delays(m, 1.0, 0)
    assert np.allclose(np.sort(d_ab), np.sort(np.repeat(truth["ab"][:, 1], 2)), atol=2.0)
    assert np.allclose(np.sort(d_ba), np.sort(np.repeat(truth["ba"][:, 1], 2)), atol=2.0)
    assert not m.ab.nat.any()


def test_ipv6_frames_match_without_ip_ids(tmp_path):
    a, b, truth = twohost.exchange(60, frames=3, seed=15)
    for arr in (a, b):
        arr["family"] = 10
        arr["ip_id"] = 0
        for fld in ("saddr", "daddr"):
            arr[fld][:, 4:15] = 0x11  # a 16-byte address
    _, al, res = _run(tmp_path, a, b, same_boot=True)
    m = al.matches[(0, 1)]
    assert len(m.ab) == len(truth["ab"]) and len(m.ba) == len(truth["ba"])
    d_ab, d_ba = _implied_true_delays(m, 1.0, 0)
    assert np.allclose(np.sort(d_ba), np.sort(truth["ba"][:, 1]), atol=2.0)


def test_traces_without_packet_events_align_to_nothing(tmp_path):
    from mbrec.testing.synthetic import random_records, write_trace
    pa = write_trace(str(tmp_path / "a.mbrec"), {"sock": random_records("sock", 10)}, host="a",
                     boot_id="1")
    pb = write_trace(str(tmp_path / "b.mbrec"), {"sock": random_records("sock", 10, seed=1)},
                     host="b", boot_id="2")
    traces = [read_trace(pa), read_trace(pb)]
    al = clock.align(traces)
    assert al.pairs == {} and al.unreached == ["b"]
    res = network.analyze_network(traces, al)
    assert res.pairs == []
    json.dumps({"a": al.report_section(), "n": res.report_section()}, allow_nan=False)


def _one(probe, t, seq, end, ack, ip_id, segs=1, src="10.0.0.2", dst="10.0.0.1", sport=80,
         dport=40000, flags=0x18):
    return twohost._recs(1, probe, t, src, dst, sport, dport, seq, end, ack, flags, ip_id, segs)


def test_retransmitted_tail_of_a_super_segment_and_veth_super_frames():
    from mbrec.analysis.match import match_direction
    X, R = twohost.XMIT, twohost.RECV
    # b sends a 2-segment skb [1000, 2501) ids 50, 51; its tail [2448, 2501) is lost and
    # retransmitted with id 52. Then a 2-segment skb [2501, 5397) that a veth peer receives
    # whole (one "frame" of gso_segs 2, id 53).
    send = np.concatenate([_one(X, 100, 1000, 2501, 7, 50, segs=2),
                           _one(X, 900, 2448, 2501, 7, 52),
                           _one(X, 1000, 2501, 5397, 7, 53, segs=2)])
    recv = np.concatenate([_one(R, 150, 1000, 2448, 7, 50),
                           _one(R, 950, 2448, 2501, 7, 52),
                           _one(R, 1050, 2501, 5397, 7, 53, segs=2)])
    si, ri, amb = match_direction(send, recv)
    assert amb == 0
    assert dict(zip(ri.tolist(), si.tolist())) == {0: 0, 1: 1, 2: 2}
    # had the original tail arrived (id 51), it belongs to the first skb
    recv2 = np.concatenate([recv, _one(R, 160, 2448, 2501, 7, 51)])
    si, ri, amb = match_direction(send, recv2)
    assert amb == 0 and dict(zip(ri.tolist(), si.tolist()))[3] == 0


def test_spurious_retransmission_does_not_start_a_response(tmp_path):
    a, b, _ = twohost.exchange(40, nflows=1, frames=2, seed=16)
    # b retransmits the last frame of response 10 after a has already sent request 11
    rsp = np.flatnonzero((b["probe"] == twohost.XMIT) & (b["len"] == 2000))
    req = np.flatnonzero((a["probe"] == twohost.XMIT) & (a["len"] == 100))
    k = rsp[10]
    t_after = int(a["ts_ns"][req[11]]) + 1_000
    rt = b[k:k + 1].copy()
    rt["seq"] = rt["seq"] + 1000
    rt["len"] = 1000
    rt["gso_segs"] = 1
    rt["ip_id"] += 40000
    rt["ts_ns"] = t_after
    arr = _one(twohost.RECV, t_after + 25_000, int(rt["seq"][0]), int(rt["end_seq"][0]),
               int(rt["ack"][0]), int(rt["ip_id"][0]), flags=int(rt["tcp_flags"][0]))
    b2 = np.concatenate([b, rt])
    a2 = np.concatenate([a, arr])
    a2, b2 = a2[np.argsort(a2["ts_ns"], kind="stable")], b2[np.argsort(b2["ts_ns"], kind="stable")]
    _, al, res = _run(tmp_path, a2, b2, same_boot=True)
    assert len(al.matches[(0, 1)].ba) == (a2["probe"] == twohost.RECV).sum()
    s = res.report_section()["pairs"][0]["rtt_decomposition"]["per_client"][0]
    assert s["requests"] == 40
    assert s["server_time_negative"] == 0 and s["one_way_sum_exceeds_rtt"] == 0
