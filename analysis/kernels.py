"""Compiled kernels for the analysis passes that numpy needs sorts or many full-array passes for.

Each kernel is a pure function of arrays (arrays in, arrays out) compiled by numba, with the
same result as the numpy formulation it replaces: one pass over the events (with a hash table
where numpy needed an argsort and a handful of gathers). Compiled code is cached next to this file
(numba's ``cache=True``), so only the first run on a machine pays the compile.

Hash tables here are open-addressed with linear probing, sized to a power of two at least twice
the number of keys they can hold, keyed on exact values (no hash is trusted for equality).
"""

from __future__ import annotations

import numba
import numpy as np

from mbrec.analysis.flowid import GOLDEN as _GOLDEN
from mbrec.analysis.flowid import mix1 as _mix


def _table_bits(n: int) -> int:
    return max(4, int(2 * max(n, 1) - 1).bit_length())


@numba.njit(cache=True)
def _pair_groups(lo, hi, bits):
    n = len(lo)
    mask = (1 << bits) - 1
    slot_group = np.full(1 << bits, -1, np.int64)
    group = np.empty(n, np.int64)
    reps = np.empty(n, np.int64)
    ngroups = 0
    for i in range(n):
        h = _mix(lo[i] * _GOLDEN + hi[i])
        s = np.int64(h >> np.uint64(64 - bits))
        while True:
            g = slot_group[s]
            if g < 0:
                slot_group[s] = ngroups
                reps[ngroups] = i
                group[i] = ngroups
                ngroups += 1
                break
            r = reps[g]
            if lo[r] == lo[i] and hi[r] == hi[i]:
                group[i] = g
                break
            s = (s + 1) & mask
    return group, reps[:ngroups].copy()


def pair_groups(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense ids for equal (lo, hi) pairs of uint64, in first-seen order.

    Returns (group id per element, index of each group's first element)."""
    lo = np.ascontiguousarray(lo, np.uint64)
    hi = np.ascontiguousarray(hi, np.uint64)
    return _pair_groups(lo, hi, _table_bits(len(lo)))


@numba.njit(cache=True)
def _nearest_links(w0, w1, w2, w3, layer, before, bits):
    n = len(w0)
    mask = (1 << bits) - 1
    slot_group = np.full(1 << bits, -1, np.int32)
    rep = np.empty(n, np.int32)
    nearest = np.empty((n, 4), np.int32)  # per group: the latest (or next) event per layer
    link = np.full(n, -1, np.int64)
    ngroups = 0
    for k in range(n):
        i = k if before else n - 1 - k
        h = _mix(np.uint64(w0[i]) * _GOLDEN + np.uint64(w1[i]))
        h = _mix(h ^ (np.uint64(w2[i]) << np.uint64(16)) ^ np.uint64(w3[i]))
        s = np.int64(h >> np.uint64(64 - bits))
        while True:
            g = slot_group[s]
            if g < 0:
                g = ngroups
                slot_group[s] = g
                rep[g] = i
                nearest[g, :] = -1
                ngroups += 1
                break
            r = rep[g]
            if w0[r] == w0[i] and w1[r] == w1[i] and w2[r] == w2[i] and w3[r] == w3[i]:
                break
            s = (s + 1) & mask
        here = layer[i]
        best = -1
        if before:  # the latest earlier event at a smaller layer
            for lay in range(here):
                if nearest[g, lay] > best:
                    best = nearest[g, lay]
        else:  # the earliest later event at a larger layer
            for lay in range(here + 1, 4):
                c = nearest[g, lay]
                if c >= 0 and (best < 0 or c < best):
                    best = c
        link[i] = best
        nearest[g, here] = i
    return link


def nearest_links(key: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                  layer: np.ndarray, before: bool) -> np.ndarray:
    """Per event (array order = time order), among the events with the same 4-word key: the
    nearest earlier one at a smaller layer (before=True) or the nearest later one at a larger
    layer (before=False); -1 where there is none. Layers are 0..3."""
    words = [np.ascontiguousarray(w, np.int64) for w in key]
    return _nearest_links(*words, np.ascontiguousarray(layer, np.int64), before,
                          _table_bits(len(layer)))


@numba.njit(cache=True)
def _unwrap_to_first(stream, value, nstreams):
    n = len(value)
    ref = np.full(nstreams, -1, np.int64)
    out = np.empty(n, np.int64)
    far = np.zeros(nstreams, np.bool_)
    for i in range(n):
        s = stream[i]
        v = np.int64(value[i])
        if ref[s] < 0:
            ref[s] = v
        d = ((v - ref[s] + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
        out[i] = ref[s] + d
        if d >= (1 << 30) or d <= -(1 << 30):
            far[s] = True
    return out, far


def unwrap_to_first(stream: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """32-bit values placed within 2^31 of their stream's first value (in array order), as
    int64; and per stream id, whether any value lies 2^30 or more from that reference (the
    streams this placement may get wrong). Stream ids are small non-negative integers."""
    stream = np.ascontiguousarray(stream, np.int64)
    nstreams = int(stream.max()) + 1 if len(stream) else 0
    return _unwrap_to_first(stream, np.ascontiguousarray(value, np.uint32), nstreams)


@numba.njit(cache=True)
def _ipv4_endpoints(saddr, daddr, sport, dport, family, recv, af_inet):
    n = len(sport)
    lo = np.empty(n, np.uint64)
    hi = np.empty(n, np.uint64)
    local = np.empty(n, np.int8)
    for i in range(n):
        if family[i] != af_inet:
            return lo, hi, local, False
        for b in range(4, 16):
            if saddr[i, b] != 0 or daddr[i, b] != 0:
                return lo, hi, local, False
        src = np.uint64(0)
        dst = np.uint64(0)
        for b in range(3, -1, -1):  # the address as a little-endian 32-bit word
            src = (src << np.uint64(8)) | np.uint64(saddr[i, b])
            dst = (dst << np.uint64(8)) | np.uint64(daddr[i, b])
        src = (src << np.uint64(16)) | np.uint64(sport[i])
        dst = (dst << np.uint64(16)) | np.uint64(dport[i])
        lo[i] = min(src, dst)
        hi[i] = max(src, dst)
        mine = dst if recv[i] else src
        local[i] = 1 if (mine == hi[i] and lo[i] != hi[i]) else 0
    return lo, hi, local, True


def ipv4_endpoints(saddr, daddr, sport, dport, family, recv, af_inet: int):
    """Per record, its two endpoints as 48-bit integers (IPv4 address << 16 | port), the
    smaller first, and which of them is this host's (1: the larger; 0 also when both are the
    same); None if any record is not IPv4 (the caller takes the general path)."""
    lo, hi, local, ok = _ipv4_endpoints(  # the addresses may be views of the records (strided)
        np.asarray(saddr, np.uint8), np.asarray(daddr, np.uint8),
        np.ascontiguousarray(sport), np.ascontiguousarray(dport),
        np.ascontiguousarray(family), np.ascontiguousarray(recv, np.bool_), af_inet)
    return (lo, hi, local) if ok else None


@numba.njit(cache=True)
def _look_back(s_stream, s_lo, s_hi, s_t, row_order, qpos, q_stream, q_x, q_t, before, window):
    nq = len(q_x)
    best = np.full(nq, -1, np.int64)
    for q in range(nq):
        best_t = np.iinfo(np.int64).min if before else np.iinfo(np.int64).max
        for off in range(1, window + 1):
            i = qpos[q] - off
            if i < 0 or s_stream[i] != q_stream[q]:
                break  # the sorted rows of the query's stream end here
            if s_lo[i] <= q_x[q] < s_hi[i]:
                t = s_t[i]
                if (t <= q_t[q] and t > best_t) if before else (t >= q_t[q] and t < best_t):
                    best_t = t
                    best[q] = row_order[i]
    return best


def look_back(s_stream, s_lo, s_hi, s_t, row_order, qpos, q_stream, q_x, q_t, before: bool,
              window: int) -> np.ndarray:
    """The range join's last step (analysis.join.stab): for each query, among the `window` rows
    just before its place in the sorted rows, of its stream, covering q_x, the best in time (the
    latest at or before q_t, or the earliest at or after it). -1 where none is."""
    c = np.ascontiguousarray
    return _look_back(c(s_stream, np.int64), c(s_lo, np.int64), c(s_hi, np.int64),
                      c(s_t, np.int64), c(row_order, np.int64), c(qpos, np.int64),
                      c(q_stream, np.int64), c(q_x, np.int64), c(q_t, np.int64), before, window)


@numba.njit(cache=True)
def _frame_lookback(key, reach, s_span, s_ack, s_flags, s_id, s_v6, s_segs, s_tup,
                    r_key, r_span, r_ack, r_flags, r_id, r_segs, r_tup, pos, use_tup, lookback):
    nq = len(r_key)
    count = np.zeros(nq, np.int64)
    first = np.full(nq, -1, np.int64)
    for q in range(nq):
        j = pos[q]
        rs = r_span[q]
        for _ in range(lookback):
            if j < 0 or reach[j] < r_key[q]:
                break  # nothing at or before j covers the frame
            off = r_key[q] - key[j]
            span = s_span[j]
            if span == 0:  # an empty frame (pure ACK) comes only from an empty send
                covers = off == 0 and rs == 0
            else:
                covers = off < span and off + rs <= span and rs > 0
            ok = (covers and s_ack[j] == r_ack[q] and s_flags[j] == r_flags[q]
                  and (not use_tup or s_tup[j] == r_tup[q]))
            if ok and not s_v6[j]:
                delta = (r_id[q] - s_id[j]) & 0xFFFF
                segs = s_segs[j]
                mss = max(rs // r_segs[q], 1)
                if off == 0:
                    index = 0
                elif off + rs >= span:
                    index = segs - r_segs[q]
                else:
                    index = off // mss
                if segs >= 2 or (off + rs >= span and off == 0):
                    ok = delta == index
                else:
                    ok = delta < max(segs, -(-span // max(rs, 1)))
            if ok:
                count[q] += 1
                if first[q] < 0:
                    first[q] = j
            j -= 1
    return count, first


def frame_lookback(send: dict, frames: dict, pos: np.ndarray, use_tuple: bool,
                   lookback: int) -> tuple[np.ndarray, np.ndarray]:
    """The cross-host matcher's look-back (analysis.match._match_keyed): for each frame (in
    frames' order), the transmissions at pos, pos - 1, ... (at most `lookback`, while one may
    still cover it) that carry it: (how many, the first found). send and frames: columns in
    key order (key, span, ack, flags, ip_id, segs, tup; send also reach and v6)."""
    c = np.ascontiguousarray
    i64 = [c(send[k], np.int64) for k in ("key", "reach", "span", "ack", "flags", "id")]
    r64 = [c(frames[k], np.int64) for k in ("key", "span", "ack", "flags", "id", "segs")]
    zero = np.zeros(1, np.uint64)
    s_tup = c(send["tup"], np.uint64) if use_tuple else zero
    r_tup = c(frames["tup"], np.uint64) if use_tuple else zero
    return _frame_lookback(*i64, c(send["v6"], np.bool_), c(send["segs"], np.int64), s_tup,
                           *r64, r_tup, c(pos, np.int64), use_tuple, lookback)


@numba.njit(cache=True)
def _first_occurrences(key, bound):
    seen = np.zeros(bound, np.bool_)
    first = np.zeros(len(key), np.bool_)
    for i in range(len(key)):
        if not seen[key[i]]:
            seen[key[i]] = True
            first[i] = True
    return first


def first_occurrences(key: np.ndarray, bound: int) -> np.ndarray:
    """Boolean mask of the first occurrence (array order) of each value of key, whose values
    lie in [0, bound): one pass, where np.unique sorts."""
    return _first_occurrences(np.ascontiguousarray(key, np.int64), bound)


@numba.njit(cache=True)
def _running_max_before(order, group, value, ngroups, none):
    best = np.full(ngroups, none, np.int64)
    out = np.empty(len(order), np.int64)
    for i in order:
        g = group[i]
        out[i] = best[g]
        if value[i] > best[g]:
            best[g] = value[i]
    return out


def running_max_before(order: np.ndarray, group: np.ndarray, value: np.ndarray,
                       none: int) -> np.ndarray:
    """For each element, the largest value among the elements of its group that come before it
    in `order` (a permutation); `none` where there is none. Groups are small non-negative ids."""
    group = np.ascontiguousarray(group, np.int64)
    ngroups = int(group.max()) + 1 if len(group) else 0
    return _running_max_before(np.ascontiguousarray(order, np.int64), group,
                               np.ascontiguousarray(value, np.int64), ngroups, none)
