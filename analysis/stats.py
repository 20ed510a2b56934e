"""Exact statistics over samples too many to hold at once: value-sorted runs, one per partition.

Each partition sorts its own latency samples by (name, value) and writes the values to one file
(write_run); the report's statistics per name are then computed over every partition's run
without concatenating them: counts and sums add, and the k-th smallest value of the union is
found by bisection on the value with one searchsorted per run (kth). The quantiles are the ones
analysis.latency.grouped_stats gives in memory (linear interpolation between order statistics),
so a partitioned report has the whole-trace numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mbrec.analysis.latency import NAMES, QUANTILES, quantile_rank, sort_within_groups

CDF_POINTS = 20_000  # values per name drawn for a CDF plot


@dataclass
class Run:
    """One partition's samples of one host: values sorted by (name, value) in `path` (.npy);
    name k's values are values[offsets[k]:offsets[k + 1]]; sums[k] their sum."""

    path: str
    offsets: np.ndarray
    sums: np.ndarray

    def values(self) -> np.ndarray:
        return np.load(self.path, mmap_mode="r")


def write_run(samples: dict, path: str) -> Run:
    """Sort one partition's samples by (name, value) and write the values to path."""
    name = samples["name"].astype(np.int64)
    value = samples["value"].astype(np.int64)
    ordered, count = sort_within_groups(name, value, len(NAMES))
    np.save(path, ordered)
    offsets = np.concatenate([[0], np.cumsum(count)])
    sums = np.bincount(name, weights=value.astype(np.float64), minlength=len(NAMES))
    return Run(path, offsets, sums)


def kth(slices: list[np.ndarray], k: int) -> int:
    """The k-th smallest (0-based) value of the union of sorted int64 arrays."""
    lo = min(int(s[0]) for s in slices if len(s))
    hi = max(int(s[-1]) for s in slices if len(s))
    while lo < hi:  # smallest v with more than k values <= v
        mid = lo + (hi - lo) // 2
        if sum(int(np.searchsorted(s, mid, side="right")) for s in slices) > k:
            hi = mid
        else:
            lo = mid + 1
    return lo


def run_stats(runs: list[Run]) -> dict:
    """{name: {count, mean, p50, p90, p99, p99.9, max}} over every run, for names with samples."""
    out = {}
    arrays = [r.values() for r in runs]
    for i, name in enumerate(NAMES):
        slices = [a[r.offsets[i]:r.offsets[i + 1]] for a, r in zip(arrays, runs)]
        count = sum(len(s) for s in slices)
        if count == 0:
            continue
        st = {"count": count, "mean": float(sum(r.sums[i] for r in runs) / count)}
        for q in QUANTILES:
            rank, frac = quantile_rank(count, q)
            lo, frac = int(rank), float(frac)
            v_lo = float(kth(slices, lo))
            v_hi = float(kth(slices, min(lo + 1, count - 1))) if frac else v_lo
            st[f"p{q * 100:g}"] = v_lo * (1 - frac) + v_hi * frac
        st["max"] = float(max(int(s[-1]) for s in slices if len(s)))
        out[name] = st
    return out


def cdf_values(runs: list[Run], name: str) -> np.ndarray:
    """About CDF_POINTS values of one name spread evenly over its distribution (every
    stride-th value of each run, merged): what a CDF plot needs, at any size."""
    i = NAMES.index(name)
    arrays = [r.values() for r in runs]
    slices = [a[r.offsets[i]:r.offsets[i + 1]] for a, r in zip(arrays, runs)]
    count = sum(len(s) for s in slices)
    if count == 0:
        return np.zeros(0, np.int64)
    stride = max(1, count // CDF_POINTS)
    return np.sort(np.concatenate([np.asarray(s[::stride]) for s in slices]))
