"""Benchmark: clock alignment of one host pair with N matched frames (default 10 M), one core.

    python bench/align.py [--frames 10000000] [--match-frames 2000000]

Times, in the same run: generating the data (not counted), fit_pair (the hull and the LP:
what "alignment" means here), the per-frame signed delays with their intervals (L_NET for
every frame), and, separately, cross-host matching of wire events (dev_hard_start_xmit ->
eth_type_trans) from pkt records. Prints one line per step and a JSON summary.
"""

import argparse
import json
import os
import platform
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from mbrec.analysis import clock, match, network
from mbrec.events import PKT


def constraints(n, rng, alpha=1 + 150e-6, beta=2 * 86_400 * 10**9, span_s=3600.0):
    """n matched frames, half each way, over span_s seconds, 20 us + exp(5 us) one-way."""
    h = n // 2
    t0 = 10**13
    s_ab = t0 + np.sort(rng.integers(0, int(span_s * 1e9), h))
    r_ab = np.round(alpha * (s_ab + 20_000 + rng.exponential(5_000, h)) + beta).astype(np.int64)
    r_ba = t0 + np.sort(rng.integers(0, int(span_s * 1e9), n - h))
    s_ba = np.round(alpha * (r_ba - 20_000 - rng.exponential(5_000, n - h)) + beta).astype(np.int64)
    return s_ab, r_ab, s_ba, r_ba


def wire_events(n, rng):
    """n sends and the n frames they became (one frame per skb), in one flow's sequence space."""
    send = np.zeros(n, dtype=PKT)
    seq = (np.cumsum(rng.integers(1, 1449, n)) + 12345) & 0xFFFFFFFF
    send["seq"] = seq
    send["end_seq"] = (seq + 100) & 0xFFFFFFFF
    send["ack"] = 777 + np.arange(n) // 4
    send["ip_id"] = np.arange(n) & 0xFFFF
    send["gso_segs"] = 1
    send["tcp_flags"] = 0x18
    send["family"] = 2
    send["ts_ns"] = np.arange(n) * 1000
    recv = send.copy()
    recv["ts_ns"] += 20_000
    return send, recv[rng.permutation(n)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=10_000_000)
    ap.add_argument("--match-frames", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--drift-ppm", type=float, default=150.0,
                    help="beyond 2000 ppm the slope-limited first pass fails and whole hulls "
                         "are built: the slow path")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    data = constraints(args.frames, rng, alpha=1 + args.drift_ppm * 1e-6)
    res = {"frames": args.frames, "drift_ppm": args.drift_ppm, "machine": platform.processor() or platform.machine(),
           "cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__}
    fit_t, delay_t, fit_cpu, delay_cpu = [], [], [], []
    for _ in range(args.repeat):
        t, c = time.perf_counter(), time.process_time()
        pair = clock.fit_pair(*data)
        fit_t.append(time.perf_counter() - t)
        fit_cpu.append(time.process_time() - c)
        t, c = time.perf_counter(), time.process_time()
        network.one_way_delays(pair.inverse(), *data)
        delay_t.append(time.perf_counter() - t)
        delay_cpu.append(time.process_time() - c)
    res["fit_pair_s"] = min(fit_t)
    res["delays_s"] = min(delay_t)
    res["fit_pair_cpu_s"] = min(fit_cpu)
    res["delays_cpu_s"] = min(delay_cpu)
    res["load_avg_1min"] = os.getloadavg()[0]
    res["quality"] = pair.quality
    res["bound_width_ns"] = pair.width_ns()
    res["hull_vertices"] = [len(pair.fits[0].hulls.px), len(pair.fits[0].hulls.qx)]
    send, recv = wire_events(args.match_frames, rng)
    mt, mc = [], []
    for _ in range(args.repeat):
        t, c = time.perf_counter(), time.process_time()
        a, b, amb = match.match_direction(send, recv)
        mt.append(time.perf_counter() - t)
        mc.append(time.process_time() - c)
    res["match_cpu_s"] = min(mc)
    assert len(a) == args.match_frames and amb == 0
    res["match_frames"] = args.match_frames
    res["match_s"] = min(mt)
    res["match_frames_per_s"] = args.match_frames / min(mt)
    print(f"fit_pair ({args.frames} frames, drift {args.drift_ppm} ppm): {res['fit_pair_s']:.3f} s  "
          f"(hull vertices {res['hull_vertices']}, {res['quality']}, "
          f"bound {res['bound_width_ns']:.0f} ns)")
    print(f"per-frame L_NET with intervals: {res['delays_s']:.3f} s")
    print(f"alignment total: {res['fit_pair_s'] + res['delays_s']:.3f} s wall, "
          f"{res['fit_pair_cpu_s'] + res['delays_cpu_s']:.3f} s CPU "
          f"(load average {res['load_avg_1min']:.1f})")
    print(f"match_direction ({args.match_frames} frames): {res['match_s']:.3f} s "
          f"= {res['match_frames_per_s'] / 1e6:.2f} M frames/s")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
