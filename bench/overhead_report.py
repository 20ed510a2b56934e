"""Summarise bench/overhead.sh's results as the tables in docs/performance.md.

    python3 bench/overhead_report.py OUT/overhead.jsonl

Each mode is compared with the no-recording run of the same round (a ratio measured in the same
VM boot, minutes apart), then the ratios' median and range over the rounds are reported.
"""

import json
import statistics
import sys
from collections import defaultdict

MODES = ("none", "empty", "mbrec", "raw", "flows", "packets", "kernel", "baseline")  # the lab's and the native modes
CLAMPED = 2**31 - 1  # overhead.sh before its fix summed BPF run time with mawk's %d, which clamps


def load(path):
    """The workload runs; the lines describing the machine (native runs) are printed."""
    with open(path) as f:
        objs = [json.loads(line) for line in f if line.strip()]
    for o in objs:
        if "machine" in o:
            print("machine: " + ", ".join(f"{k} {v}" for k, v in o.items()))
    return [o for o in objs if "workload" in o]


def spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    return f"{statistics.median(values):.3g} [{min(values):.3g}, {max(values):.3g}]"


def relative(runs, workload, key):
    """Per mode: value / the same round's no-recording value."""
    base = {r["round"]: r[key] for r in runs if r["workload"] == workload and r["mode"] == "none"}
    out = defaultdict(list)
    for r in runs:
        if r["workload"] == workload and r.get(key) and base.get(r["round"]):
            out[r["mode"]].append(r[key] / base[r["round"]])
    return out


def main(path):
    everything = load(path)
    # native runs time the BPF programs in a round of their own (timing costs time): throughput
    # from the other rounds, BPF time from that one; the lab's runs time them in every round
    runs = [r for r in everything if not r.get("bpf_stats")] or everything
    timed = [r for r in everything if r.get("bpf_stats", True)]
    rounds = len({r["round"] for r in runs})
    print(f"{rounds} rounds; median [min, max] over rounds; ratios against no recording in the "
          "same round\n")
    print("| mode | ab req/s | req/s vs none | ab p50 ms | ab p99 ms | iperf3 Gbit/s | "
          "Gbit/s vs none |")
    print("|---|---|---|---|---|---|---|")
    rps_rel = relative(runs, "ab", "rps")
    bps_rel = relative(runs, "iperf3", "bits_per_second")
    for mode in MODES:
        ab = [r for r in runs if r["workload"] == "ab" and r["mode"] == mode]
        ip = [r for r in runs if r["workload"] == "iperf3" and r["mode"] == mode]
        if not ab:
            continue
        print(f"| {mode} | {spread([r['rps'] for r in ab])} | {spread(rps_rel[mode])} | "
              f"{spread([r['p50_ms'] for r in ab])} | {spread([r['p99_ms'] for r in ab])} | "
              f"{spread([r['bits_per_second'] / 1e9 for r in ip if r['bits_per_second']])} | "
              f"{spread(bps_rel[mode])} |")
    print("\n| mode | events recorded (a+b) | lost | loss fraction | recorder CPU us/event | "
          "events per recorder CPU-s | BPF ns per probe run | BPF s per run (a+b) | "
          "probe runs per event | recorder peak RSS MB | bytes/event on disk |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for mode in MODES[1:]:
        recs = [r for r in runs if r["workload"] == "ab" and r["mode"] == mode]
        if not recs:
            continue
        both = [(r["recorder_a"], r["recorder_b"]) for r in recs]
        ev = [a["events"] + b["events"] for a, b in both]
        lost = [a["lost"] + b["lost"] for a, b in both]
        frac = [lo / (e + lo) if e + lo else 0.0 for e, lo in zip(ev, lost)]
        cpu = [a["cpu_s"] + b["cpu_s"] for a, b in both]
        us_per_event = [c / e * 1e6 for c, e in zip(cpu, ev) if e]
        per_cpu_s = [e / c for c, e in zip(cpu, ev) if c > 0]
        timed_both = [(r["recorder_a"], r["recorder_b"]) for r in timed
                      if r["workload"] == "ab" and r["mode"] == mode]
        bpf = [(a["bpf_run_ns"] + b["bpf_run_ns"]) / (a["bpf_runs"] + b["bpf_runs"])
               for a, b in timed_both if a.get("bpf_runs", 0) + b.get("bpf_runs", 0)
               and CLAMPED not in (a["bpf_run_ns"], b["bpf_run_ns"])]
        bpf_s = [(a["bpf_run_ns"] + b["bpf_run_ns"]) / 1e9 for a, b in timed_both
                 if a.get("bpf_runs", 0) + b.get("bpf_runs", 0)]
        runs_per_event = [(a["bpf_runs"] + b["bpf_runs"]) / (a["events"] + b["events"])
                          for a, b in timed_both if a["events"] + b["events"]]
        rss = [max(a["rss_kb"], b["rss_kb"]) / 1024 for a, b in both]
        bpe = [(a["file_bytes"] + b["file_bytes"]) / e for (a, b), e in zip(both, ev)
               if e and "file_bytes" in a]
        print(f"| {mode} | {spread(ev)} | {spread(lost)} | {spread(frac)} | {spread(us_per_event)} | "
              f"{spread(per_cpu_s)} | {spread(bpf)} | {spread(bpf_s)} | {spread(runs_per_event)} | "
              f"{spread(rss)} | {spread(bpe)} |")
    loads = [r["loadavg"][0] for r in everything if "loadavg" in r]
    if loads:
        print(f"\nload average (1 min) at the end of each run: {spread(loads)}")
    print("\nrecorder CPU: user + system time of the recorder processes from 'recording on' to "
          "exit (ab and iperf3 both ran under one recording); BPF: the kernel's run_time_ns / "
          "run_cnt over the recorder's programs (kernel.bpf_stats_enabled=1), in the traced "
          "context; baseline bytes are its text lines.")


if __name__ == "__main__":
    main(sys.argv[1])
