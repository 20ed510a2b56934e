"""Vectorised building blocks for matching events: group ids, sequence unwrapping, range joins.

Everything here takes numpy arrays and returns numpy arrays; nothing loops over events in Python
(the only Python loops run over a small fixed window of candidates).
"""

from __future__ import annotations

import numpy as np

from mbrec.analysis.kernels import look_back, running_max_before, unwrap_to_first

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


def _small(a: np.ndarray) -> np.ndarray:
    """The same non-negative integers in the narrowest dtype (numpy radix-sorts 8/16-bit)."""
    top = int(a.max()) if len(a) else 0
    for dt in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dt).max:
            return a.astype(dt)
    return a


def unwrap32(stream: np.ndarray, ts: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Unwrap 32-bit sequence numbers per stream (small non-negative ids) into int64.

    Fast path, O(n) without sorting: each value is placed within 2^31 of its stream's
    reference (the stream's first value in input order). That is exact for every stream whose
    values span less than 2^31 (about 2 GB of one direction of one connection); the spans are
    checked and the streams that exceed it are unwrapped by following them in time order
    (consecutive values within 2^31, which TCP guarantees). Results are congruent to the input
    modulo 2^32 and equal to it at the reference.
    """
    n = len(value)
    if n == 0:
        return np.empty(0, np.int64)
    out, far = unwrap_to_first(stream, value)
    if far.any():
        sel = np.nonzero(far[stream])[0]
        out[sel] = _unwrap_in_time(stream[sel], ts[sel], value[sel])
    return out


def _unwrap_in_time(stream: np.ndarray, ts: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Unwrap by following each stream in time order (for streams longer than 2^30 bytes)."""
    n = len(value)
    out = np.empty(n, np.int64)
    by_time = np.argsort(ts, kind="stable")
    order = by_time[np.argsort(_small(stream[by_time]), kind="stable")]
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


def stream_time_order(group: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Indices ordering elements by (group, time): a stable time sort (usually a few sorted runs)
    then a stable radix sort of the small group ids."""
    by_time = np.argsort(ts, kind="stable")
    return by_time[np.argsort(_small(group[by_time]), kind="stable")]


def grouped_cummax_before(group: np.ndarray, ts: np.ndarray, value: np.ndarray) -> np.ndarray:
    """For each element, the maximum of value over earlier elements (in time; equal times in
    array order) of its group. Groups are small non-negative ids.

    Returns int64 with np.iinfo(int64).min where there is no earlier element.
    """
    lo = np.iinfo(np.int64).min
    if len(value) == 0:
        return np.full(0, lo, np.int64)
    return running_max_before(np.argsort(ts, kind="stable"), group, value, lo)


def _sort_positions(r_key: np.ndarray, r_t: np.ndarray, q_key: np.ndarray,
                    q_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted by (key, t), and for each query the number of rows <= (q_key, q_t)."""
    nr = len(r_key)
    key = np.concatenate([r_key, q_key])
    # time doubled plus one for queries: rows sort before queries at equal (key, t)
    t = np.concatenate([r_t, q_t]).astype(np.int64)
    t = (t - t.min()) * 2
    t[nr:] += 1
    order = np.lexsort((t, key))
    is_row = order < nr
    rows_before = np.cumsum(is_row)
    qpos = np.empty(len(q_key), np.int64)
    qpos[order[~is_row] - nr] = rows_before[~is_row]
    return order[is_row], qpos


def _composite(stream: np.ndarray, lo: np.ndarray, base: int, span: int) -> np.ndarray:
    return stream.astype(np.int64) * span + (lo.astype(np.int64) - base)


def stab(row_stream: np.ndarray, row_lo: np.ndarray, row_hi: np.ndarray, row_t: np.ndarray,
         q_stream: np.ndarray, q_x: np.ndarray, q_t: np.ndarray, mode: str,
         window: int = 8) -> np.ndarray:
    """For each query, a row of the same stream that covers q_x (row_lo <= q_x < row_hi) at a
    time <= q_t (mode "before") or >= q_t (mode "after"). -1 if none.

    Rows are ordered by (stream, lo, time); the `window` rows before the query's place in that
    order are examined (rows with the query's start, then covering rows with smaller starts:
    a GRO frame or TSO segment inside a bigger skb, a partial retransmission) and the best in
    time wins: the latest at or before q_t ("before") or the earliest at or after q_t ("after").
    A query whose covering row lies further away than `window` rows gets -1.
    """
    nq, nr = len(q_x), len(row_lo)
    best = np.full(nq, NONE, np.int64)
    if nq == 0 or nr == 0:
        return best
    lo_all_min = min(int(row_lo.min()), int(q_x.min()))
    span = max(int(row_lo.max()), int(q_x.max())) - lo_all_min + 1
    n_streams = max(int(row_stream.max()), int(q_stream.max())) + 1
    if n_streams * span < (1 << 62):
        r_key = _composite(row_stream, row_lo, lo_all_min, span)
        q_key = _composite(q_stream, q_x, lo_all_min, span)
    else:  # astronomically long traces: rank the (stream, lo) pairs instead
        ids, _, _ = group_ids(np.concatenate([row_stream, q_stream]).astype(np.int64),
                              np.concatenate([row_lo, q_x]).astype(np.int64))
        r_key, q_key = ids[:nr], ids[nr:]
    # "after" sorts time descending within a start, so looking back from the query finds the
    # earliest row at or after q_t first; "before" sorts ascending and finds the latest first.
    sign = 1 if mode == "before" else -1
    row_order, qpos = _sort_positions(r_key, sign * row_t.astype(np.int64), q_key,
                                      sign * q_t.astype(np.int64))
    return look_back(row_stream[row_order], row_lo[row_order], row_hi[row_order],
                     row_t[row_order], row_order, qpos, q_stream, q_x, q_t, mode == "before",
                     window)
