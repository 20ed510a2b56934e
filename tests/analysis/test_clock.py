"""Clock alignment: hulls, the LP's extreme lines, guaranteed bounds, methods, windows, graphs."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mbrec.analysis import clock
from mbrec.errors import MbrecError
from mbrec.testing import twohost
from mbrec.trace.reader import read_trace


DAY = 86_400 * 10**9


# ------------------------------------------------------------------ hulls

def _brute_lower_hull(x, y):
    """A point is on the lower hull iff some line through it has every point on or above it
    and it is not strictly between two points on a common supporting line (O(n^3))."""
    keep = []
    n = len(x)
    for i in range(n):
        ok = False
        for j in range(n):
            if x[j] == x[i]:
                continue
            m = (y[j] - y[i]) / (x[j] - x[i])
            for mm in (m - 1e-9, m + 1e-9):
                if np.all(y - y[i] - mm * (x - x[i]) >= -1e-6):
                    ok = True
        if n == 1 or ok:
            keep.append(i)
    return keep


@pytest.mark.parametrize("seed", range(8))
def test_lower_hull_is_below_every_point_and_convex(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 1000, 60).astype(float)
    y = rng.integers(0, 1000, 60).astype(float)
    h = clock.lower_hull(x, y)
    hx, hy = x[h], y[h]
    assert np.all(np.diff(hx) > 0)
    slopes = np.diff(hy) / np.diff(hx)
    assert np.all(np.diff(slopes) > 0)  # strictly convex: no collinear vertices kept
    # every point is on or above the hull's piecewise-linear function
    assert np.all(y >= np.interp(x, hx, hy) - 1e-9)
    # the extreme points are vertices: leftmost-lowest and rightmost-lowest
    assert hx[0] == x.min() and hy[0] == y[x == x.min()].min()
    assert hx[-1] == x.max() and hy[-1] == y[x == x.max()].min()
    # and every vertex is really extreme (brute force)
    assert set(h.tolist()) <= set(_brute_lower_hull(x, y))


def test_upper_hull_mirrors_lower():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=200), rng.normal(size=200)
    assert np.array_equal(clock.upper_hull(x, y), clock.lower_hull(x, -y))


# ------------------------------------------------------------------ constraint data without files

def _constraints(n, alpha, beta, dmin_ab, dmin_ba, jitter, span_ns, rng, t0=10**12):
    """Matched frames between A and B under t_B = alpha t_A + beta, true delays in A time."""
    s_ab = t0 + np.sort(rng.integers(0, span_ns, n))
    d_ab = dmin_ab + rng.exponential(jitter, n)
    r_ab = np.round(alpha * (s_ab + d_ab) + beta).astype(np.int64)
    r_ba = t0 + np.sort(rng.integers(0, span_ns, n))
    d_ba = dmin_ba + rng.exponential(jitter, n)
    s_ba = np.round(alpha * (r_ba - d_ba) + beta).astype(np.int64)
    return s_ab, r_ab, s_ba, r_ba


@settings(max_examples=60, deadline=None)
@given(drift_ppm=st.floats(-200, 200), beta_days=st.floats(-3, 3),
       dmin_ab=st.integers(1_000, 200_000), dmin_ba=st.integers(1_000, 200_000),
       n=st.integers(3, 400), span_s=st.floats(0.01, 600), seed=st.integers(0, 2**31))
def test_truth_always_inside_the_guaranteed_bounds(drift_ppm, beta_days, dmin_ab, dmin_ba, n,
                                                   span_s, seed):
    rng = np.random.default_rng(seed)
    alpha, beta = 1 + drift_ppm * 1e-6, beta_days * DAY
    s_ab, r_ab, s_ba, r_ba = _constraints(n, alpha, beta, dmin_ab, dmin_ba, 20_000,
                                          int(span_s * 1e9), rng)
    p = clock.fit_pair(s_ab, r_ab, s_ba, r_ba)
    f = p.fits[0]
    assert f.quality in ("accurate", "approximate")
    # integer rounding of the receive stamps moves a constraint by at most 0.5 ns
    tol = 1.0
    assert f.alpha_min - 1e-12 <= alpha <= f.alpha_max + 1e-12 or f.quality == "approximate"
    t = np.concatenate([s_ab, r_ba, rng.integers(s_ab.min(), s_ab.max() + 1, 50)])
    est, lo, hi = p.map(t)
    true = alpha * t.astype(np.float64) + beta
    assert np.all(lo <= true + tol) and np.all(true <= hi + tol)
    if f.quality == "accurate":
        # and the estimate is inside its own bounds
        assert np.all(lo - tol <= est) and np.all(est <= hi + tol)


def test_equal_minimum_delays_estimate_near_truth():
    rng = np.random.default_rng(1)
    alpha, beta = 1 + 137e-6, 2.5 * DAY
    s_ab, r_ab, s_ba, r_ba = _constraints(20_000, alpha, beta, 50_000, 50_000, 2_000,
                                          int(60e9), rng)
    p = clock.fit_pair(s_ab, r_ab, s_ba, r_ba)
    assert p.quality == "accurate"
    t = np.linspace(s_ab.min(), s_ab.max(), 101).astype(np.int64)
    est = p.map(t)[0]
    err = est - (alpha * t.astype(np.float64) + beta)
    assert np.max(np.abs(err)) < 500  # ns, with 50 us minimum delays
    assert abs((p.alpha - alpha) * 1e6) < 0.05  # ppm
    assert p.width_ns() == pytest.approx(100_000, rel=0.05)  # d_AB,min + d_BA,min


def test_asymmetric_delays_error_is_half_the_asymmetry():
    rng = np.random.default_rng(2)
    alpha, beta = 1 - 80e-6, -1.7 * DAY
    d_ab, d_ba = 90_000, 30_000
    s_ab, r_ab, s_ba, r_ba = _constraints(20_000, alpha, beta, d_ab, d_ba, 2_000,
                                          int(30e9), rng)
    p = clock.fit_pair(s_ab, r_ab, s_ba, r_ba)
    t = np.linspace(s_ab.min(), s_ab.max(), 101).astype(np.int64)
    est, lo, hi = p.map(t)
    true = alpha * t.astype(np.float64) + beta
    # B's clock is estimated late by (d_AB - d_BA) / 2: A->B frames look slower than they are
    assert np.allclose(est - true, (d_ab - d_ba) / 2 * alpha, atol=600)
    assert np.all(lo <= true) and np.all(true <= hi)
    assert "equal minimum one-way delays" in p.summary()["assumption"]


def test_extreme_slopes_match_an_lp_solver():
    from scipy.optimize import linprog  # a test dependency (setup.py extras "test")
    rng = np.random.default_rng(5)
    s_ab, r_ab, s_ba, r_ba = _constraints(300, 1 + 40e-6, 12345.0, 10_000, 25_000, 30_000,
                                          int(2e9), rng, t0=0)
    p = clock.fit_pair(s_ab, r_ab, s_ba, r_ba)
    f = p.fits[0]
    # the LP in well-scaled units (HiGHS is inexact with 1e9-sized coefficients): alpha = 1 + u
    # ppm, x in seconds, residual y - x in microseconds: u x + b <= y - x (A->B), >= (B->A)
    px, py = (s_ab - p.t0_from).astype(float), (r_ab - p.t0_to).astype(float)
    qx, qy = (r_ba - p.t0_from).astype(float), (s_ba - p.t0_to).astype(float)
    A = np.vstack([np.c_[px / 1e9, np.ones_like(px)], -np.c_[qx / 1e9, np.ones_like(qx)]])
    ub = np.r_[(py - px) / 1e3, -(qy - qx) / 1e3]
    bounds = [(-1e4, 1e4), (-1e9, 1e9)]
    lo = linprog([1, 0], A_ub=A, b_ub=ub, bounds=bounds, method="highs")
    hi = linprog([-1, 0], A_ub=A, b_ub=ub, bounds=bounds, method="highs")
    assert (f.alpha_min - 1) * 1e6 == pytest.approx(lo.x[0], abs=1e-4)
    assert (f.alpha_max - 1) * 1e6 == pytest.approx(hi.x[0], abs=1e-4)
    # the upper bound at a time is the LP's maximum of the line's value there
    x0 = float(np.median(px))
    top = linprog([-x0 / 1e9, -1], A_ub=A, b_ub=ub, bounds=bounds, method="highs")
    assert f.hi(np.array([x0]))[0] == pytest.approx(x0 - top.fun * 1e3, abs=1.0)
    bot = linprog([x0 / 1e9, 1], A_ub=A, b_ub=ub, bounds=bounds, method="highs")
    assert f.lo(np.array([x0]))[0] == pytest.approx(x0 + bot.fun * 1e3, abs=1.0)
    # and the bounds there are strictly tighter than the extreme lines' values would claim
    # only when a hull edge is feasible; in any case they contain both extreme lines
    ext = [f.alpha_min * x0 + f.hulls.upper_b(f.alpha_min), f.alpha_max * x0 + f.hulls.upper_b(f.alpha_max)]
    assert f.lo(np.array([x0]))[0] <= min(ext) + 1e-6 and max(ext) <= f.hi(np.array([x0]))[0] + 1e-6


def test_one_direction_only_is_approximate_and_one_sided():
    rng = np.random.default_rng(7)
    s_ab, r_ab, _, _ = _constraints(100, 1.0, 5000.0, 20_000, 20_000, 5_000, int(1e9), rng)
    e = np.zeros(0, np.int64)
    p = clock.fit_pair(s_ab, r_ab, e, e)
    assert p.quality == "approximate"
    assert "one direction" in p.fits[0].note
    assert p.summary()["bound_width_ns"] is None  # infinite: not reported as a number


def test_clock_step_fails_with_evidence_and_windows_recover():
    rng = np.random.default_rng(11)
    t0, span = 10**12, int(20e9)
    s_ab, r_ab, s_ba, r_ba = _constraints(4000, 1.0, 0.0, 20_000, 20_000, 5_000, span, rng, t0)
    step_at, step = t0 + span // 2, 3_000_000  # B's clock jumps 3 ms forward mid-trace
    r_ab = r_ab + np.where(s_ab >= step_at, step, 0)
    s_ba = s_ba + np.where(r_ba >= step_at, step, 0)
    p = clock.fit_pair(s_ab, r_ab, s_ba, r_ba)
    assert p.quality == "failed"
    ev = p.summary()["evidence"]
    assert ev["gap_ns"] > 1_000_000
    # the evidence locates the step to within the frames around it
    assert abs(ev["inconsistent_from_ns"] - step_at) < 50_000_000
    assert "--clock-window" in p.note
    pw = clock.fit_pair(s_ab, r_ab, s_ba, r_ba, window_s=1.0)
    qualities = [f.quality for f in pw.fits]
    assert qualities.count("accurate") >= len(qualities) - 1  # only the step's window fails
    # outside the failing window, the truth is inside the bounds
    t = np.concatenate([s_ab, r_ba])
    est, lo, hi = pw.map(t)
    true = t + np.where(t >= step_at, step, 0)
    ok = np.isfinite(est)
    assert ok.mean() > 0.9
    assert np.all(lo[ok] <= true[ok] + 1) and np.all(true[ok] <= hi[ok] + 1)


def test_windows_follow_an_ntp_slew():
    # B's clock drifts at +100 ppm for 10 s, then is slewed to -100 ppm: no single line fits well
    rng = np.random.default_rng(13)
    t0, span = 10**12, int(20e9)

    def b_of(t):
        x = (t - t0).astype(np.float64)
        k = span / 2
        return t0 + x + np.where(x < k, 100e-6 * x, 100e-6 * k - 100e-6 * (x - k))

    n = 6000
    s_ab = t0 + np.sort(rng.integers(0, span, n))
    r_ab = np.round(b_of(s_ab + 20_000 + rng.exponential(3000, n))).astype(np.int64)
    r_ba = t0 + np.sort(rng.integers(0, span, n))
    s_ba = np.round(b_of(r_ba - 20_000 - rng.exponential(3000, n))).astype(np.int64)
    whole = clock.fit_pair(s_ab, r_ab, s_ba, r_ba)
    assert whole.quality == "failed"  # a bend of 1 ms cannot hide in 40 us of slack
    pw = clock.fit_pair(s_ab, r_ab, s_ba, r_ba, window_s=2.0)
    t = np.concatenate([s_ab, r_ba])
    est, lo, hi = pw.map(t)
    ok = np.isfinite(est)
    assert ok.mean() > 0.85
    true = b_of(t)
    assert np.all(lo[ok] <= true[ok] + 1) and np.all(true[ok] <= hi[ok] + 1)


def test_inverse_maps_back_and_keeps_bounds():
    rng = np.random.default_rng(17)
    alpha, beta = 1 + 190e-6, 0.5 * DAY
    s_ab, r_ab, s_ba, r_ba = _constraints(500, alpha, beta, 30_000, 30_000, 5_000, int(5e9), rng)
    p = clock.fit_pair(s_ab, r_ab, s_ba, r_ba)
    inv = p.inverse()
    tb = np.round(alpha * s_ab.astype(np.float64) + beta).astype(np.int64)
    est, lo, hi = inv.map(tb)
    true_a = (tb - beta) / alpha
    assert np.all(lo <= true_a + 1) and np.all(true_a <= hi + 1)
    assert np.max(np.abs(est - true_a)) < 2_000


# ------------------------------------------------------------------ align() on trace files

def test_shared_clock_detected_from_boot_id(tmp_path):
    a, b, _ = twohost.exchange(50, seed=3)
    pa, pb = twohost.write_pair(tmp_path, a, b, same_boot=True)
    al = clock.align([read_trace(pa), read_trace(pb)])
    p = al.pairs[("a", "b")]
    assert p.method == "shared" and p.quality == "exact"
    s = p.summary()
    assert s["offset_ns"] == 0 and s["drift_ppm"] == 0 and s["bound_width_ns"] == 0
    # asked for packets anyway: the hull must contain the truth (offset 0, drift 0)
    alp = clock.align([read_trace(pa), read_trace(pb)], method="packets")
    pp = alp.pairs[("a", "b")]
    assert pp.method == "packets" and pp.quality == "accurate"
    t = np.array([pp.t0_from], dtype=np.int64)
    est, lo, hi = pp.map(t)
    assert lo[0] <= t[0] <= hi[0]
    assert abs(est[0] - t[0]) < 2_000  # equal delays each way in the generator


def test_shared_refused_for_different_boots(tmp_path):
    a, b, _ = twohost.exchange(20, seed=4)
    pa, pb = twohost.write_pair(tmp_path, a, b)
    with pytest.raises(MbrecError, match="different boot_ids"):
        clock.align([read_trace(pa), read_trace(pb)], method="shared")
    with pytest.raises(MbrecError, match="unknown method"):
        clock.align([read_trace(pa), read_trace(pb)], method="ntp")
    with pytest.raises(MbrecError, match="no trace is from that host"):
        clock.align([read_trace(pa), read_trace(pb)], reference="zz")


@pytest.mark.parametrize("drift_ppm,beta_days", [(0, 0.0), (200, 3.0), (-200, -2.0), (57, 0.3)])
def test_align_recovers_transform_from_files(tmp_path, drift_ppm, beta_days):
    alpha, beta = 1 + drift_ppm * 1e-6, int(beta_days * DAY)
    a, b, truth = twohost.exchange(400, alpha=alpha, beta_ns=beta, dmin_ab=25_000,
                                    dmin_ba=15_000, seed=drift_ppm & 0xFF)
    pa, pb = twohost.write_pair(tmp_path, a, b)
    al = clock.align([read_trace(pa), read_trace(pb)])
    p = al.pairs[("a", "b")]
    assert p.method == "packets" and p.quality == "accurate"
    f = p.fits[0]
    assert f.alpha_min <= alpha <= f.alpha_max
    t = np.concatenate([truth["ab"][:, 0], truth["ba"][:, 0]]).astype(np.int64)
    est, lo, hi = p.map(t)
    true = alpha * t.astype(np.float64) + beta
    assert np.all(lo <= true + 1) and np.all(true <= hi + 1)
    s = p.summary()
    assert s["constraints"]["from_to"] > 0 and s["constraints"]["to_from"] > 0
    assert s["bound_width_ns"] >= 40_000 * 0.99  # never narrower than the minimum RTT


def _anchor_source(anchors):
    it = iter(anchors)
    return lambda: dict(next(it), t="clock")


def _write_with_anchors(tmp_path, name, pkt, boot, anchors):
    from mbrec.testing.synthetic import write_trace
    return write_trace(str(tmp_path / f"{name}.mbrec"), {"pkt": pkt}, host=name, boot_id=boot,
                       clock=_anchor_source(anchors))


def _anchor(mono, real, unc=1000):
    return {"monotonic_ns": int(mono), "realtime_ns": int(real), "boottime_ns": int(mono),
            "uncertainty_ns": unc}


@pytest.mark.parametrize("realtime_error_ns,expect_ok", [(0, True), (-200_000, False)])
def test_realtime_causality_check(tmp_path, realtime_error_ns, expect_ok):
    beta = 2 * 3600 * 10**9
    a, b, _ = twohost.exchange(100, beta_ns=beta, dmin_ab=50_000, dmin_ba=50_000, seed=9)
    wall = 1_700_000_000 * 10**9
    # a's realtime = mono + wall; b's realtime = mono - beta + wall (+ an NTP error)
    anchors_a = [_anchor(0, wall), _anchor(10**11, 10**11 + wall)]
    err = realtime_error_ns
    anchors_b = [_anchor(beta, wall + err), _anchor(beta + 10**11, 10**11 + wall + err)]
    pa = _write_with_anchors(tmp_path, "a", a, "11111111-aaaa", anchors_a)
    pb = _write_with_anchors(tmp_path, "b", b, "22222222-bbbb", anchors_b)
    al = clock.align([read_trace(pa), read_trace(pb)], method="realtime")
    p = al.pairs[("a", "b")]
    c = p.summary()["causality"]
    assert p.method == "realtime" and p.summary()["bound_guaranteed"] is False
    assert c["ok"] is expect_ok
    if expect_ok:
        assert c["from_to"]["violations"] == 0 and c["to_from"]["violations"] == 0
        assert abs(p.offset_ns() - beta) < 1
    else:
        # b's wall clock reads 200 us early: a->b frames (>= 50 us) seem to arrive 150 us
        # before they left; b->a frames look 200 us slower, so only one direction violates
        assert c["from_to"]["violations"] > 0 and c["to_from"]["violations"] == 0
        worst = c["from_to"]["worst_violation_ns"]
        assert 150_000 - 1_000 <= worst <= 150_000
        assert "CAUSALITY VIOLATED" in p.note
    # each anchor read is good to +-half its uncertainty: +-(1 us + 1 us) / 2, so 2 us wide
    assert p.summary()["bound_width_ns"] == pytest.approx(2000)


def test_approximate_falls_back_to_realtime(tmp_path):
    a, b, _ = twohost.exchange(60, beta_ns=10**9, seed=10)
    b_only = b[b["probe"] == twohost.RECV]  # b's sends were not recorded: one direction only
    a_only = a[a["probe"] == twohost.XMIT]
    wall = 1_600_000_000 * 10**9
    pa = _write_with_anchors(tmp_path, "a", a_only, "1", [_anchor(0, wall)] * 2)
    pb = _write_with_anchors(tmp_path, "b", b_only, "2", [_anchor(10**9, wall)] * 2)
    al = clock.align([read_trace(pa), read_trace(pb)])
    p = al.pairs[("a", "b")]
    assert p.quality == "approximate"
    assert "realtime anchors" in p.fits[0].note
    assert abs(p.offset_ns() - 10**9) < 1


def test_three_hosts_through_the_graph(tmp_path):
    # a <-> b and b <-> c talk; a and c never do: c is reached from a through b
    DAYS = [0, int(1.5 * DAY), int(-0.7 * DAY)]
    DRIFT = [0.0, 120e-6, -90e-6]
    ab_a, ab_b, _ = twohost.exchange(200, alpha=1 + DRIFT[1], beta_ns=DAYS[1], seed=21)
    # b is the client towards c: generate in b's true time, then map b's events to b's clock
    bc_b, bc_c, _ = twohost.exchange(200, alpha=(1 + DRIFT[2]) / (1 + DRIFT[1]),
                                      beta_ns=0, seed=22)
    # bc_b is in "true" time: convert to b's clock and c's clock
    t_b = bc_b["ts_ns"].astype(np.float64)
    bc_b["ts_ns"] = np.round((1 + DRIFT[1]) * t_b + DAYS[1]).astype(np.int64)
    t_c = (bc_c["ts_ns"].astype(np.float64)) / ((1 + DRIFT[2]) / (1 + DRIFT[1]))
    bc_c["ts_ns"] = np.round((1 + DRIFT[2]) * t_c + DAYS[2]).astype(np.int64)
    # give the b-c flows other addresses so they are not confused with a-b
    for arr in (bc_b, bc_c):
        for fld in ("saddr", "daddr"):
            arr[fld][:, 2] = 1
    from mbrec.testing.synthetic import write_trace
    b_all = np.concatenate([ab_b, bc_b])
    b_all = b_all[np.argsort(b_all["ts_ns"], kind="stable")]
    paths = [write_trace(str(tmp_path / f"{h}.mbrec"), {"pkt": ev}, host=h, boot_id=h * 8)
             for h, ev in (("a", ab_a), ("b", b_all), ("c", bc_c))]
    traces = [read_trace(p) for p in paths]
    al = clock.align(traces, reference="a")
    assert set(al.pairs) == {("a", "b"), ("b", "c")}
    assert al.transforms["c"].summary()["path"] == ["c", "b", "a"]
    for k, h in enumerate("abc"):
        tr = al.transforms[h]
        t_true = np.linspace(5.0e9, 5.05e9, 11)  # true time, inside both exchanges
        local = np.round((1 + DRIFT[k]) * t_true + DAYS[k]).astype(np.int64)
        est, lo, hi = tr.to_reference(local)
        assert np.all(lo <= t_true + 2) and np.all(t_true <= hi + 2), h
    sc = al.transforms["c"].summary()
    sb = al.transforms["b"].summary()
    assert sc["bound_width_ns"] > sb["bound_width_ns"] > 0  # bounds add up along the path
    assert al.report_section()["reference"] == "a"


@pytest.mark.parametrize("drift_ppm", [150.0, 1900.0, 5000.0, -7000.0, 80000.0])
def test_slope_limited_hulls_give_the_same_answer_as_whole_hulls(drift_ppm):
    # 5000 and -7000 ppm need the second slope range, 80000 ppm the whole hulls
    rng = np.random.default_rng(int(abs(drift_ppm)))
    alpha = 1 + drift_ppm * 1e-6
    s_ab, r_ab, s_ba, r_ba = _constraints(3000, alpha, 3.0 * DAY, 20_000, 35_000, 10_000,
                                          int(10e9), rng)
    p = clock.fit_pair(s_ab, r_ab, s_ba, r_ba)
    f = p.fits[0]
    px, py = (s_ab - p.t0_from).astype(float), (r_ab - p.t0_to).astype(float)
    qx, qy = (r_ba - p.t0_from).astype(float), (s_ba - p.t0_to).astype(float)
    hp, hq = clock.lower_hull(px, py), clock.upper_hull(qx, qy)
    full = clock._Hulls(px[hp], py[hp], qx[hq], qy[hq])
    amin, amax, _ = full.feasible_alpha()
    assert f.alpha_min == amin and f.alpha_max == amax
    assert f.alpha_min <= alpha <= f.alpha_max


def test_windowed_pair_inverts_with_its_bounds():
    rng = np.random.default_rng(19)
    alpha, beta = 1 - 120e-6, 4.0 * DAY
    s_ab, r_ab, s_ba, r_ba = _constraints(3000, alpha, beta, 20_000, 20_000, 5_000, int(12e9), rng)
    p = clock.fit_pair(s_ab, r_ab, s_ba, r_ba, window_s=3.0)
    assert len(p.fits) == 4 and p.quality == "accurate"
    assert len(p.summary()["per_window"]) == 4
    inv = p.inverse()
    tb = np.round(alpha * s_ab.astype(np.float64) + beta).astype(np.int64)
    est, lo, hi = inv.map(tb)
    true_a = (tb - beta) / alpha
    assert np.all(lo <= true_a + 1) and np.all(true_a <= hi + 1)


def test_text_lines_state_method_quality_and_assumption(tmp_path):
    a, b, _ = twohost.exchange(50, alpha=1 + 2e-5, beta_ns=DAY, seed=23)
    pa, pb = twohost.write_pair(tmp_path, a, b)
    (line,) = clock.align([read_trace(pa), read_trace(pb)]).text_lines()
    assert line.startswith("clock a->b: packets, accurate, offset ")
    # a->b: 3 SYNs, 3 handshake ACKs, 50 requests, 50 ACKs; b->a: 3 SYN-ACKs, 50 x 3 frames
    assert "equal minimum one-way delays" in line and "frames 106 / 153" in line
