"""Vectorised building blocks for matching events: group ids, sequence unwrapping, range joins.

Everything here takes numpy arrays and returns numpy arrays; nothing loops over events in Python
(the only Python loops run over a small fixed window of candidates).
"""

from __future__ import annotations

import numpy as np

NONE = -1


def group_ids(*cols: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """Dense ids for the distinct rows of the given columns (first column most significant).

    Returns (ids in input order, number of groups, index of one representative row per group).
    Ids are assigned in sorted key order, so equal keys in two calls get comparable ids only if
    the same values are present; use the representatives to name groups.
    """
    n = len(cols[0]) if cols else 0
    if n == 0:
        return np.zeros(0, np.int64), 0, np.zeros(0, np.int64)
    order = np.lexsort(cols[::-1])
    change = np.zeros(n, dtype=bool)
    change[0] = True
    for c in cols:
        sc = c[order]
        change[1:] |= sc[1:] != sc[:-1]
    gid_sorted = np.cumsum(change) - 1
    ids = np.empty(n, np.int64)
    ids[order] = gid_sorted
    return ids, int(gid_sorted[-1]) + 1, order[change]


def unwrap32(stream: np.ndarray, ts: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Unwrap 32-bit sequence numbers per stream into int64, following each stream in time order.

    Consecutive values of one stream (in time) are assumed to be within 2^31 of each other, which
    TCP guarantees for any window. The result is congruent to the input modulo 2^32 and starts at
    the stream's first value (0 <= first < 2^32).
    """
    n = len(value)
    out = np.empty(n, np.int64)
    if n == 0:
        return out
    order = np.lexsort((ts, stream))
    v = value[order].astype(np.int64)
    s = stream[order]
    d = np.empty(n, np.int64)
    d[0] = 0
    d[1:] = ((v[1:] - v[:-1] + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
    first = np.ones(n, dtype=bool)
    first[1:] = s[1:] != s[:-1]
    d[first] = 0
    c = np.cumsum(d)
    start_idx = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    out[order] = v[start_idx] + c - c[start_idx]
    return out


def grouped_cummax_before(group: np.ndarray, ts: np.ndarray, value: np.ndarray,
                          tiebreak: np.ndarray | None = None) -> np.ndarray:
    """For each element, the maximum of value over earlier elements (in time) of its group.

    Returns int64 with np.iinfo(int64).min where there is no earlier element.
    """
    n = len(value)
    lo = np.iinfo(np.int64).min
    out = np.full(n, lo, np.int64)
    if n == 0:
        return out
    keys = (ts, group) if tiebreak is None else (tiebreak, ts, group)
    order = np.lexsort(keys)
    g = group[order]
    v = value[order].astype(np.int64)
    first = np.ones(n, dtype=bool)
    first[1:] = g[1:] != g[:-1]
    # offset each group so a running max never leaks across groups
    rank = np.cumsum(first) - 1
    span = (int(v.max()) - int(v.min()) + 1) if n else 1
    shifted = v - int(v.min()) + rank * span
    run = np.maximum.accumulate(shifted)
    prev = np.empty(n, np.int64)
    prev[1:] = run[:-1]
    prev[0] = lo
    res = np.where(first, lo, prev - rank * span + int(v.min()))
    out[order] = res
    return out


def stab(row_stream: np.ndarray, row_lo: np.ndarray, row_hi: np.ndarray, row_t: np.ndarray,
         q_stream: np.ndarray, q_x: np.ndarray, q_t: np.ndarray, mode: str,
         window: int = 8) -> np.ndarray:
    """For each query, the row of the same stream that covers q_x (row_lo <= q_x < row_hi), with
    the latest time <= q_t (mode "before") or the earliest time >= q_t (mode "after").

    Returns row indices (-1: none). Candidates are looked for among the `window` rows nearest in
    (stream, lo, time) order, which covers retransmitted ranges and GRO/TSO sub-ranges; a query
    whose covering row lies further away (an unusually deep pile of overlapping rows) gets -1.
    """
    nq, nr = len(q_x), len(row_lo)
    best = np.full(nq, NONE, np.int64)
    if nq == 0 or nr == 0:
        return best
    # Position of every query in the rows' (stream, lo, t) order: one merged sort, rows first on
    # ties, then count the rows before each query.
    stream = np.concatenate([row_stream, q_stream]).astype(np.int64)
    lo = np.concatenate([row_lo, q_x]).astype(np.int64)
    t = np.concatenate([row_t, q_t]).astype(np.int64)
    is_q = np.concatenate([np.zeros(nr, np.int8), np.ones(nq, np.int8)])
    order = np.lexsort((is_q, t, lo, stream))
    is_row_sorted = is_q[order] == 0
    rows_before = np.cumsum(is_row_sorted)  # rows at or before each sorted position
    row_order = order[is_row_sorted]  # row indices in sorted order
    qpos = np.empty(nq, np.int64)
    qmask = ~is_row_sorted
    qpos[order[qmask] - nr] = rows_before[qmask]  # p: rows strictly before the query
    s_stream = row_stream[row_order].astype(np.int64)
    s_lo = row_lo[row_order].astype(np.int64)
    s_hi = row_hi[row_order].astype(np.int64)
    s_t = row_t[row_order].astype(np.int64)
    qs = q_stream.astype(np.int64)
    qx = q_x.astype(np.int64)
    qt = q_t.astype(np.int64)
    best_t = np.full(nq, np.iinfo(np.int64).min if mode == "before" else np.iinfo(np.int64).max)
    offsets = range(-window, 0) if mode == "before" else range(-window, window)
    for off in offsets:
        idx = qpos + off
        ok = (idx >= 0) & (idx < nr)
        i = np.where(ok, idx, 0)
        ok &= (s_stream[i] == qs) & (s_lo[i] <= qx) & (s_hi[i] > qx)
        if mode == "before":
            ok &= (s_t[i] <= qt) & (s_t[i] >= best_t)
        else:
            ok &= (s_t[i] >= qt) & (s_t[i] < best_t)
        best_t = np.where(ok, s_t[i], best_t)
        best = np.where(ok, row_order[i], best)
    return best


def first_per_group(group: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Boolean mask: the earliest element of each group (ties: the lowest index)."""
    n = len(group)
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    order = np.lexsort((np.arange(n), ts, group))
    g = group[order]
    first = np.ones(n, dtype=bool)
    first[1:] = g[1:] != g[:-1]
    mask[order[first]] = True
    return mask
