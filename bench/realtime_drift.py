"""Measurement: --clock realtime on a lab pair whose second host's monotonic clock drifts.

    python bench/realtime_drift.py [--ppm 300] [--a fixtures/latency/a.mbrec --b ...b.mbrec]

Host b's monotonic timestamps (events and clock anchors) are stretched by PPM around its first
event while its realtime readings are kept, as when NTP keeps realtime right on a host whose
oscillator is off. The packet alignment of the unmodified pair, carried through the same
stretch, is the reference. Prints, for both file orders, the realtime method's per-frame error
against it and what the method reports (its width, the frames it checked).
"""

import argparse
import copy
import json

import numpy as np

from mbrec.analysis import clock
from mbrec.trace.reader import read_trace


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", default="fixtures/latency/a.mbrec")
    ap.add_argument("--b", default="fixtures/latency/b.mbrec")
    ap.add_argument("--ppm", type=float, default=300.0)
    args = ap.parse_args()
    a, b = read_trace(args.a), read_trace(args.b)
    ref = clock.align([a, b], method="packets").pair(a.host, b.host)
    rate = 1 + args.ppm * 1e-6
    t0 = min(int(r["ts_ns"].min()) for r in b.events.values() if len(r))

    def stretch(t):
        return (t0 + np.round((np.asarray(t, np.int64) - t0) * rate)).astype(np.int64)

    b2 = copy.copy(b)
    b2.events = {k: v.copy() for k, v in b.events.items()}
    for v in b2.events.values():
        if len(v):
            v["ts_ns"] = stretch(v["ts_ns"])
    b2.clocks = [dict(c, monotonic_ns=int(stretch([c["monotonic_ns"]])[0])) for c in b.clocks]
    s_ab, r_ab, s_ba, r_ba = clock.align([a, b2], method="packets").matches[(0, 1)].constraints()
    t = np.sort(np.concatenate([s_ab, r_ba]))
    truth = stretch(np.round(ref.map(t)[0]).astype(np.int64)).astype(np.float64)
    for order in ("ab", "ba"):
        pair = clock.align([a, b2] if order == "ab" else [b2, a],
                           method="realtime").pair(a.host, b2.host)
        err = np.abs(pair.map(t)[0] - truth)
        s = pair.summary()
        print(json.dumps({"order": order, "ppm": args.ppm, "span_s": round((t.max() - t.min()) / 1e9, 1),
                          "max_error_us": round(err.max() / 1e3, 1),
                          "median_error_us": round(float(np.median(err)) / 1e3, 1),
                          "reported_width_us": round(pair.width_ns() / 1e3, 1),
                          "frames_checked": s["constraints"]}))


if __name__ == "__main__":
    main()
