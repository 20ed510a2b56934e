"""Benchmark: the partitioned analysis at scale, cross-host part included, by executor.

    python bench/scale.py --events 200e6            # make bench-scale: two hosts, 200 M events
    python bench/scale.py --events 2e6 --modes whole,serial,jobs2,dask2

The traces: mbrec.testing.clientserver's client/server scenario replicated as independent connections,
written a slice of copies at a time (the generator never holds more than one slice). Each mode
runs `analyze_files` in a fresh process with the same partition count; reported per mode: wall
time, CPU seconds of every process, the client's and the largest worker's peak RSS, events/s.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


from mbrec.events import SCHEMA_BY_NAME
from mbrec.testing.synthetic import make_header
from mbrec.testing.clientserver import exchanges, replicate
from mbrec.trace.writer import TraceWriter

SLICE_COPIES = 250

DRIVER = r"""
import os
import json, resource, sys, time
from mbrec.analysis.engine import Executor
from mbrec.analysis.pipeline import Options
from mbrec.analysis.run import Plan, analyze_files
mode, parts, *paths = sys.argv[1:]
parts = int(parts)
cluster = None
if mode == "whole":  # the traces read whole, one partition in memory
    ex, parts = Executor(), 1
elif mode == "serial":
    ex = Executor()
elif mode.startswith("jobs"):
    ex = Executor(jobs=int(mode[4:]))
else:
    from distributed import LocalCluster
    cluster = LocalCluster(n_workers=int(mode[4:]), threads_per_worker=1, processes=True,
                           dashboard_address=":0", host="127.0.0.1")
    ex = Executor(scheduler=cluster.scheduler_address)
t0 = time.perf_counter()
a = analyze_files(paths, Plan(Options(), ex, parts))
wall = time.perf_counter() - t0
pair = a.report["cross_host"]["network"]["pairs"][0]
if cluster is not None:
    cluster.close()
me = resource.getrusage(resource.RUSAGE_SELF)
kids = resource.getrusage(resource.RUSAGE_CHILDREN)
# workers' own figures: forkserver and Dask workers are not this process's children
by_pid = {}
for u in a.usage:
    w = by_pid.setdefault(u["pid"], {"cpu_s": 0.0, "peak": 0.0})
    w["cpu_s"] += u["cpu_s"]
    w["peak"] = max(w["peak"], u["peak_rss_mb"])
in_process = mode == "serial"
worker_cpu = 0.0 if in_process else sum(w["cpu_s"] for w in by_pid.values())
print(json.dumps({"wall_s": wall, "cpu_s": me.ru_utime + me.ru_stime + worker_cpu,
                  "client_peak_mb": me.ru_maxrss / 1024,
                  "worker_peak_mb": max([0.0] + [w["peak"] for w in by_pid.values()
                                                  if not in_process]),
                  "workers": len(by_pid),
                  "l_net_frames": sum(d["frames"] for d in pair["directions"]),
                  "clock": a.report["cross_host"]["alignment"]["pairs"][0]["quality"]}))
"""


def make_traces(events: float, outdir: str) -> tuple[list[str], int]:
    gt = exchanges(n_flows=4, n_exchanges=50, seed=11)
    per_copy = sum(len(v) for h in ("client", "server") for v in gt.events[h].values())
    copies = max(1, int(round(events / per_copy)))
    paths, total = [], 0
    for host in ("client", "server"):
        path = os.path.join(outdir, f"{host}.mbrec")
        # two boots: the clocks are aligned from the frames (hull summaries merged)
        header = make_header(host=host, boot_id=f"{host}-boot", kernel="synthetic",
                             options={"synthetic": True})
        with TraceWriter(path, header, force=True) as w:
            for first in range(0, copies, SLICE_COPIES):
                n = min(SLICE_COPIES, copies - first)
                ev = replicate(gt.events[host], n, first=first)
                for name, recs in ev.items():
                    for i in range(0, len(recs), 65536):
                        w.write_events(SCHEMA_BY_NAME[name].id, recs[i:i + 65536])
                    total += len(recs)
            w.close()
        paths.append(path)
    return paths, total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=float, default=200e6)
    ap.add_argument("--partitions", type=int, default=0, help="default: 1 per 2 M events")
    ap.add_argument("--modes", default="serial,jobs2,dask2",
                    help="whole (in memory), serial, jobsN (N processes), daskN (LocalCluster)")
    ap.add_argument("--keep", help="write (or reuse) the traces here")
    args = ap.parse_args()
    work = args.keep or tempfile.mkdtemp(prefix="mbrec-scale-")
    os.makedirs(work, exist_ok=True)
    t0 = time.perf_counter()
    paths = [os.path.join(work, f"{h}.mbrec") for h in ("client", "server")]
    if not all(os.path.exists(p) for p in paths):
        paths, total = make_traces(args.events, work)
    else:
        total = None
    if total is None:  # reused traces: count their events
        out = subprocess.run([sys.executable, "-m", "mbrec", "info", "--json", *paths],
                             capture_output=True, text=True, check=True).stdout
        total = sum(json.loads(line)["events_total"] for line in out.splitlines() if line)
    size = sum(os.path.getsize(p) for p in paths)
    print(f"traces: {total:,} events, {size / 1e6:.0f} MB on disk, made in "
          f"{time.perf_counter() - t0:.0f} s ({work})", flush=True)
    parts = args.partitions or max(2, int(total // 2_000_000))
    results = {}
    for mode in args.modes.split(","):
        out = subprocess.run([sys.executable, "-c", DRIVER, mode, str(parts), *paths],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{mode}: failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["events_per_s"] = total / r["wall_s"] if total else None
        results[mode] = r
        print(f"{mode:>7}: {1 if mode == 'whole' else parts} partitions, wall {r['wall_s']:.1f} s, CPU {r['cpu_s']:.1f} s, "
              f"client peak {r['client_peak_mb']:.0f} MB, largest worker {r['worker_peak_mb']:.0f} "
              f"MB, {r['events_per_s'] / 1e6:.2f} M events/s, L_NET frames "
              f"{r['l_net_frames']:,}, clock {r['clock']}", flush=True)
    if "serial" in results:
        for mode, r in results.items():
            if mode != "serial":
                print(f"{mode} / serial events/s: "
                      f"{results['serial']['wall_s'] / r['wall_s']:.2f}x")
    print(f"(load average {os.getloadavg()[0]:.1f} at the end; other work on the machine "
          "skews the parallel ratios)")


if __name__ == "__main__":
    main()
