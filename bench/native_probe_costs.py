"""Kernel time per BPF program of one recorder on the native testbed (root):

    python3 bench/native_probe_costs.py [--requests N] [--probes packets,flows] [--netns NAME]
                                        [--ring-mb MB] [--raw-tracepoints]

apache2 on b; one `mbrec record --attach tracepoint` recording b (or the namespace --netns
names: an empty one makes every program run one that the netns filter drops); during one
`ab -k -c 10 -n N` from a, kernel.bpf_stats_enabled=1. Prints, per program of the recorder, its
runs per request and ns per run (run_time_ns / run_cnt of the recorder's program fds), then the
recorder's events per request, runs per event and CPU per event (user + system, ab only). Timing
every run costs time of its own (two clock reads), so the ns are those of bench/native_overhead.py's
timed round, not of its throughput rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mbrec.lab.native import Testbed
from native_overhead import STATS_SYSCTL, cpu_s, program_counters, run_ab


def program_stats(pid: int) -> dict[str, tuple[int, int]]:
    """{program name: (run_time_ns, run_cnt)} over the BPF programs process pid holds open."""
    names = {p["id"]: p.get("name", str(p["id"])) for p in json.loads(subprocess.run(
        ["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True).stdout)}
    out: dict[str, tuple[int, int]] = {}
    for prog, (t, n) in program_counters(pid).items():
        name = names.get(prog, str(prog))
        t0, n0 = out.get(name, (0, 0))
        out[name] = (t0 + t, n0 + n)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--probes", default="packets,flows")
    ap.add_argument("--netns", help="the namespace recorded (default: b's)")
    ap.add_argument("--ring-mb", type=int, help="the recorder's --ring-mb (default: its own)")
    ap.add_argument("--raw-tracepoints", action="store_true",
                    help="the recorder's --raw-tracepoints (default: BTF-typed where they load)")
    ap.add_argument("-o", "--output", default="/tmp/native-probe-costs.mbrec")
    args = ap.parse_args()
    stats_before = open(STATS_SYSCTL).read().strip()
    with Testbed() as tb:
        tb.start_apache("b")
        run_ab(tb, "warmup", -1, 5000)
        log_path = args.output + ".log"
        argv = [sys.executable, "-m", "mbrec", "record", "-o", args.output, "--force", "--quiet",
                "--host-name", "b", "--netns", args.netns or tb.ns("b"), "--attach",
                "tracepoint", "--probes", args.probes]
        if args.ring_mb:
            argv += ["--ring-mb", str(args.ring_mb)]
        if args.raw_tracepoints:
            argv.append("--raw-tracepoints")
        rec = subprocess.Popen(argv, stdout=open(log_path, "w"), stderr=subprocess.STDOUT,
                               start_new_session=True)
        tb.procs.append(rec)  # stopped by the testbed if this fails
        while "recording on" not in open(log_path).read():
            if rec.poll() is not None:
                raise SystemExit(f"recorder exited: {open(log_path).read()[-500:]}")
            time.sleep(0.05)
        try:
            with open(STATS_SYSCTL, "w") as f:
                f.write("1")
            cpu0 = cpu_s(rec.pid)
            ab = run_ab(tb, "mbrec", 0, args.requests)
            cpu = cpu_s(rec.pid) - cpu0
            progs = program_stats(rec.pid)
        finally:
            with open(STATS_SYSCTL, "w") as f:
                f.write(stats_before)
        rec.send_signal(2)
        rec.wait()
    info = json.loads(subprocess.run([sys.executable, "-m", "mbrec", "info", "--json",
                                      args.output], capture_output=True, text=True,
                                     check=True).stdout)
    n = args.requests
    print(f"ab {ab['rps']:.0f} req/s, load average {open('/proc/loadavg').read().split()[0]}\n")
    print("| program | runs per request | ns per run | us per request |")
    print("|---|---|---|---|")
    total_t = total_n = 0
    for name, (t, runs) in sorted(progs.items(), key=lambda kv: -kv[1][0]):
        total_t, total_n = total_t + t, total_n + runs
        if runs:
            print(f"| {name} | {runs / n:.2f} | {t / runs:.0f} | {t / n / 1e3:.2f} |")
    print(f"| all | {total_n / n:.2f} | {total_t / max(total_n, 1):.0f} | {total_t / n / 1e3:.2f} |")
    events = info["events_total"]
    print(f"\nevents {events} ({events / n:.2f} per request: {info['events']}), lost "
          f"{info['lost_total']}, {total_n / max(events, 1):.2f} program runs per event, "
          f"recorder CPU {cpu / max(events, 1) * 1e6:.2f} us per event, "
          f"{info['file_size'] / max(events, 1):.1f} bytes per event")
    os.unlink(args.output)


if __name__ == "__main__":
    main()
