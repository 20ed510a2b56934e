"""The compiled kernels against direct, obviously correct formulations on random inputs small
enough for quadratic loops (many collisions of keys, layers and streams)."""

import numpy as np
import pytest

from mbrec.analysis.kernels import (first_occurrences, ipv4_endpoints, look_back, nearest_links,
                                    pair_groups, unwrap_to_first)


@pytest.mark.parametrize("seed", range(5))
def test_pair_groups_numbers_pairs_in_first_seen_order(seed):
    rng = np.random.default_rng(seed)
    lo = rng.integers(0, 5, 400).astype(np.uint64) << np.uint64(40)
    hi = rng.integers(0, 7, 400).astype(np.uint64)
    group, reps = pair_groups(lo, hi)
    seen: dict = {}
    for i, key in enumerate(zip(lo.tolist(), hi.tolist())):
        seen.setdefault(key, (len(seen), i))
        assert group[i] == seen[key][0]
    assert reps.tolist() == [first for _, first in seen.values()]


@pytest.mark.parametrize("before", [True, False])
@pytest.mark.parametrize("seed", range(5))
def test_nearest_links_is_the_nearest_event_of_the_key_at_another_layer(seed, before):
    rng = np.random.default_rng(seed)
    n = 300
    key = (rng.integers(0, 3, n), rng.integers(0, 4, n), rng.integers(0, 2, n),
           np.where(rng.random(n) < 0.3, 0, rng.integers(1, 3, n)))
    layer = rng.integers(0, 4, n)
    got = nearest_links(key, layer, before)
    for i in range(n):
        expect = -1
        for j in (range(i - 1, -1, -1) if before else range(i + 1, n)):
            same = all(w[j] == w[i] for w in key)
            if same and (layer[j] < layer[i] if before else layer[j] > layer[i]):
                expect = j
                break
        assert got[i] == expect, i


def test_unwrap_to_first_places_values_near_the_streams_first():
    rng = np.random.default_rng(3)
    stream = rng.integers(0, 4, 500)
    first = {}
    truth = np.empty(500, np.int64)
    for i, s in enumerate(stream.tolist()):
        first.setdefault(s, int(rng.integers(0, 1 << 32)))
        truth[i] = first[s] + int(rng.integers(-(1 << 29), 1 << 29))
    out, far = unwrap_to_first(stream, (truth & 0xFFFFFFFF).astype(np.uint32))
    assert (out == truth).all()
    assert not far.any()
    wide = unwrap_to_first(np.zeros(2, np.int64), np.array([0, 3 << 30], np.uint32))[1]
    assert wide.tolist() == [True]


def test_ipv4_endpoints_orders_endpoints_and_names_the_local_one():
    saddr = np.zeros((3, 16), np.uint8)
    daddr = np.zeros((3, 16), np.uint8)
    saddr[:, :4] = [10, 0, 0, 1]
    daddr[:, :4] = [10, 0, 0, 2]
    sport = np.array([40000, 40000, 80], np.uint16)
    dport = np.array([80, 80, 40000], np.uint16)
    recv = np.array([False, True, False])
    lo, hi, local = ipv4_endpoints(saddr, daddr, sport, dport, np.full(3, 2, np.uint8), recv, 2)
    a = (int.from_bytes(bytes([10, 0, 0, 1]), "little") << 16) | 40000
    b = (int.from_bytes(bytes([10, 0, 0, 2]), "little") << 16) | 80
    assert lo[0] == min(a, b) and hi[0] == max(a, b)
    # sent from a (the local source), received by b (the local destination)
    assert local.tolist() == [int(a > b), int(b > a), int(((int.from_bytes(bytes([10, 0, 0, 1]),
                                                           "little") << 16) | 80) > b)]
    saddr[0, 5] = 1  # not an IPv4 address: the general path
    assert ipv4_endpoints(saddr, daddr, sport, dport, np.full(3, 2, np.uint8), recv, 2) is None


@pytest.mark.parametrize("before", [True, False])
def test_look_back_finds_the_best_covering_row_within_the_window(before):
    rng = np.random.default_rng(7)
    nr, nq, window = 200, 150, 4
    r_stream = np.sort(rng.integers(0, 3, nr))
    r_lo = rng.integers(0, 50, nr)
    r_hi = r_lo + rng.integers(1, 10, nr)
    r_t = rng.integers(0, 100, nr)
    q_stream, q_x, q_t = rng.integers(0, 3, nq), rng.integers(0, 60, nq), rng.integers(0, 100, nq)
    qpos = rng.integers(0, nr + 1, nq)
    row_order = rng.permutation(nr)
    got = look_back(r_stream, r_lo, r_hi, r_t, row_order, qpos, q_stream, q_x, q_t, before,
                    window)
    for q in range(nq):
        best, best_t = -1, None
        for i in range(qpos[q] - 1, max(qpos[q] - window, 0) - 1, -1):
            if r_stream[i] != q_stream[q]:
                break
            if r_lo[i] <= q_x[q] < r_hi[i] and (r_t[i] <= q_t[q] if before else r_t[i] >= q_t[q]):
                if best_t is None or (r_t[i] > best_t if before else r_t[i] < best_t):
                    best, best_t = row_order[i], r_t[i]
        assert got[q] == best, q


def test_first_occurrences_marks_each_values_first_index():
    rng = np.random.default_rng(7)
    key = rng.integers(0, 50, 2000)
    got = first_occurrences(key, 50)
    seen: set = set()
    for i, k in enumerate(key.tolist()):
        assert got[i] == (k not in seen)
        seen.add(k)
