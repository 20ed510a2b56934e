"""Summarise a bench/flows_overhead.sh run: throughput ratios and bytes per flow-second.

    python3 bench/flows_overhead_report.py OUT    (OUT = the lab output folder)
"""

import json
import os
import sys

import numpy as np

from mbrec.trace.reader import read_trace


def flow_seconds(recs) -> float:
    """Sum over flows of (last record - established), the time each flow was recorded."""
    total = 0.0
    for c in np.unique(recs["sock_cookie"]):
        r = recs[recs["sock_cookie"] == c]
        est = r["established_ns"][r["established_ns"] > 0]  # 0 in records before the handshake
        start = int(est.min()) if len(est) else int(r["ts_ns"].min())
        total += (int(r["ts_ns"].max()) - start) / 1e9
    return total


def main(out: str) -> None:
    res = json.load(open(os.path.join(out, "flows-overhead.json")))
    base = {k: (res["base1"][k] + res["base2"][k]) / 2 for k in ("bulk_bps", "ab_rps")}
    rows = {}
    for label in ("flows", "flows-sample0"):
        t = read_trace(os.path.join(out, f"{label}.mbrec"))
        flow = t.events.get("flow")
        size = os.path.getsize(os.path.join(out, f"{label}.mbrec"))
        fs = flow_seconds(flow) if flow is not None and len(flow) else 0.0
        rows[label] = {"bulk_vs_baseline": res[label]["bulk_bps"] / base["bulk_bps"],
                       "ab_rps_vs_baseline": res[label]["ab_rps"] / base["ab_rps"],
                       "file_bytes": size, "flow_seconds": round(fs, 2),
                       "bytes_per_flow_second": round(size / fs) if fs else None,
                       "records": {k: len(v) for k, v in t.events.items()}}
    print(json.dumps({"baseline_mean": base, "baseline_runs": {k: res[k] for k in ("base1", "base2")},
                      "recorded": rows}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
