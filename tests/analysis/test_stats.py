"""Exact statistics over value-sorted runs equal the whole-array statistics."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mbrec.analysis.latency import NAMES, grouped_stats
from mbrec.analysis.stats import cdf_values, kth, run_stats, write_run


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(-10**12, 10**12), min_size=0, max_size=40), min_size=1,
                max_size=6),
       st.data())
def test_kth_of_the_union_of_sorted_runs(runs, data):
    slices = [np.sort(np.array(r, np.int64)) for r in runs]
    allv = np.sort(np.concatenate(slices))
    if len(allv) == 0:
        return
    k = data.draw(st.integers(0, len(allv) - 1))
    assert kth(slices, k) == allv[k]


@settings(max_examples=40, deadline=None)
@given(parts=st.integers(1, 6), n=st.integers(0, 2000), seed=st.integers(0, 2**31))
def test_run_stats_equal_the_in_memory_statistics(tmp_path_factory, parts, n, seed):
    rng = np.random.default_rng(seed)
    name = rng.integers(0, 4, n)
    # heavy ties and a wide range, as latencies have
    value = np.where(rng.random(n) < 0.3, 1000, rng.integers(0, 10**9, n)).astype(np.int64)
    where = rng.integers(0, parts, n)
    d = tmp_path_factory.mktemp("runs")
    runs = [write_run({"name": name[where == p], "value": value[where == p]},
                      str(d / f"r{p}.npy")) for p in range(parts)]
    got = run_stats(runs)
    want = grouped_stats(name, value, len(NAMES))
    for i, nm in enumerate(NAMES):
        if want["count"][i] == 0:
            assert nm not in got
            continue
        for key in ("count", "mean", "p50", "p90", "p99", "p99.9", "max"):
            assert np.isclose(got[nm][key], want[key][i], rtol=1e-12, atol=0), (nm, key)


def test_cdf_values_spread_over_the_distribution(tmp_path):
    value = np.arange(100_000, dtype=np.int64)[::-1]
    runs = [write_run({"name": np.zeros(50_000, np.int64), "value": value[p::2]},
                      str(tmp_path / f"r{p}.npy")) for p in range(2)]
    v = cdf_values(runs, NAMES[0])
    assert 10_000 <= len(v) <= 40_000 and np.all(np.diff(v) >= 0)
    assert v[0] <= 10 and v[-1] >= 99_990
    assert abs(np.median(v) - 50_000) < 200
