"""The vectorised building blocks: unwrapping, range joins, hash grouping, grouped statistics."""

import numpy as np
import pytest

from mbrec.analysis.join import _unwrap_in_time, stab, unwrap32
from mbrec.analysis.latency import QUANTILES, grouped_stats
from mbrec.analysis.packets import hash_groups


@pytest.mark.parametrize("step", [100, 400_000])  # short streams, and one spanning > 2^32
def test_unwrap_recovers_monotonic_streams(step):
    rng = np.random.default_rng(1)
    n = 100_000
    stream = rng.integers(0, 4, n)
    truth = np.zeros(n, np.int64)
    for s in range(4):
        m = stream == s
        truth[m] = int(rng.integers(0, 2**32)) + np.cumsum(rng.integers(0, step if s == 0 else 50,
                                                                        m.sum()))
    wrapped = (truth & 0xFFFFFFFF).astype(np.uint32)
    got = unwrap32(stream, np.arange(n), wrapped)
    assert ((got - truth) % 2**32 == 0).all()
    for s in range(4):  # the same shift for every element of a stream
        d = got[stream == s] - truth[stream == s]
        assert (d == d[0]).all()
    ref = _unwrap_in_time(stream, np.arange(n), wrapped)
    for s in range(4):
        m = stream == s
        assert (got[m] - ref[m] == got[m][0] - ref[m][0]).all()


def test_stab_before_and_after():
    # two transmissions of [100, 200) at t=10 and t=50, one of [200, 300) at t=20
    s = np.zeros(3, np.int64)
    lo, hi, t = np.array([100, 100, 200]), np.array([200, 200, 300]), np.array([10, 50, 20])
    q_x = np.array([100, 150, 100, 250, 99, 300])
    q_t = np.array([15, 60, 5, 25, 20, 30])
    before = stab(s, lo, hi, t, np.zeros(6, np.int64), q_x, q_t, "before")
    assert before.tolist() == [0, 1, -1, 2, -1, -1]
    after = stab(s, lo, hi, t, np.zeros(6, np.int64), q_x, q_t, "after")
    assert after.tolist() == [1, -1, 0, -1, -1, -1]
    # other streams never match
    assert (stab(s, lo, hi, t, np.ones(6, np.int64), q_x, q_t, "before") == -1).all()


def test_hash_groups_handles_slot_collisions():
    rng = np.random.default_rng(2)
    keys = rng.integers(0, 2**63, 5000, dtype=np.int64).astype(np.uint64)
    h = keys[rng.integers(0, 5000, 200_000)]
    gid, reps = hash_groups(h, bits=8)  # 256 slots for 5000 keys: mostly collisions
    assert len(reps) == len(np.unique(h))
    assert (h[reps][gid] == h).all()


def test_grouped_stats_match_numpy():
    rng = np.random.default_rng(3)
    g = rng.integers(0, 5, 10_000)
    v = rng.exponential(1000, 10_000).astype(np.int64)
    st = grouped_stats(g, v, 6)
    assert st["count"][5] == 0 and np.isnan(st["mean"][5])
    for k in range(5):
        x = v[g == k]
        assert st["count"][k] == len(x) and st["max"][k] == x.max()
        assert st["mean"][k] == pytest.approx(x.mean())
        for q in QUANTILES:
            assert st[f"p{q * 100:g}"][k] == pytest.approx(np.percentile(x, q * 100))


@pytest.mark.parametrize("ngroups", [1, 7, 300])
def test_grouped_stats_by_selection_and_by_sorting_agree_exactly(ngroups, monkeypatch):
    import mbrec.analysis.latency as latency
    rng = np.random.default_rng(ngroups)
    g = rng.integers(0, ngroups, 20_000)
    v = rng.exponential(1000, 20_000).astype(np.int64)
    results = []
    for limit in (10 ** 9, -1):  # every group count selected, then every one sorted
        monkeypatch.setattr(latency, "SELECT_MAX_GROUPS", limit)
        results.append(grouped_stats(g, v, ngroups + 1))
    for key, values in results[0].items():
        assert np.array_equal(values, results[1][key], equal_nan=True), key
