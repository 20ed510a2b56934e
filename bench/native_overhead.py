"""Recording overhead on this machine's real CPUs, every mode side by side in one run (root):

    python3 bench/native_overhead.py -o OUT [--requests N] [--rounds R] [--iperf-seconds T]
                                     [--hosts a,b] [--modes none,empty,mbrec,...]
    python3 bench/overhead_report.py OUT/overhead.jsonl

The native testbed (mbrec/lab/native.py: hosts a and b as network namespaces behind a router
namespace, veth pairs, this kernel): apache2 and iperf3 on b, ab -k -c 10 and iperf3 from a, no
injected delay. Modes, one recorder per host (a and b, --netns): none (no recorder), mbrec
(`mbrec record --attach tracepoint --probes packets,flows`: BTF-typed tracepoints where the
kernel loads them), empty (bench/empty_tracepoints.py: an empty program on every tracepoint
mbrec attaches, the floor of any recorder on them), raw (the same with --raw-tracepoints), packets (mbrec, packet probes only)
baseline (bench/microbpf_baseline.py --attach tracepoint: the packet tracepoints, one
perf-buffer wake-up and Python callback per event) and kernel (mbrec as in mode mbrec, its
recorder stopped with SIGSTOP from before the workloads to after them, with rings large enough
to hold everything until it drains them: what the kernel side costs alone). Each round runs every mode once, in an
order rotated every round (as bench/overhead.sh does in the lab), so drift and the other users
of the machine hit every mode alike. Then one more round with kernel.bpf_stats_enabled=1 for
the kernel's BPF run time and runs of the recorders' programs: timing every program run costs
time of its own, so the throughput rounds run without it (the report takes throughput from
those, BPF time from this one). One JSON line per workload run in OUT/overhead.jsonl, the
format of bench/overhead.sh plus "bpf_stats" and the load average: throughput, the recorders'
CPU (user + system, from attached to exit), BPF run time and runs, events and losses; a
"machine" line with the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mbrec.lab.native import Testbed

BENCH = os.path.dirname(os.path.abspath(__file__))
HZ = os.sysconf("SC_CLK_TCK")
MODES = ("none", "empty", "mbrec", "raw", "packets", "kernel", "baseline")
SCRIPTS = {"baseline": "microbpf_baseline.py", "empty": "empty_tracepoints.py"}  # not mbrec
RECORD_ARGS = {"mbrec": ["--attach", "tracepoint", "--probes", "packets,flows"],
               "raw": ["--attach", "tracepoint", "--probes", "packets,flows", "--raw-tracepoints"],
               "packets": ["--attach", "tracepoint", "--probes", "packets"],
               # 256 MiB a ring: a run's events wait there while the recorder is stopped
               "kernel": ["--attach", "tracepoint", "--probes", "packets,flows",
                          "--ring-mb", "256"]}
STOPPED = {"kernel"}  # modes whose recorder is stopped during the workloads
STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"


def cpu_s(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ  # utime, stime


def program_counters(pid: int) -> dict[int, tuple[int, int]]:
    """{program id: (run_time_ns, run_cnt)} of the BPF programs process pid holds open (summed
    where it holds one program twice), from their fdinfo."""
    out: dict[int, tuple[int, int]] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:bpf-prog":
                continue
            info = open(f"/proc/{pid}/fdinfo/{fd}").read()
        except OSError:
            continue
        prog, t, n = (int(re.search(rf"^{k}:\s+(\d+)", info, re.M).group(1))
                      for k in ("prog_id", "run_time_ns", "run_cnt"))
        t0, n0 = out.get(prog, (0, 0))
        out[prog] = (t0 + t, n0 + n)
    return out


def bpf_stats(pid: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) summed over the BPF programs process pid holds open."""
    counters = program_counters(pid).values()
    return sum(t for t, _ in counters), sum(n for _, n in counters)


def rss_kb(pid: int) -> int:
    m = re.search(r"^VmHWM:\s+(\d+)", open(f"/proc/{pid}/status").read(), re.M)
    return int(m.group(1)) if m else 0


class Recorders:
    """One recorder per host for a mode; the costs of recording, measured from attached."""

    def __init__(self, tb: Testbed, mode: str, out: str, hosts=("a", "b")):
        self.tb, self.mode, self.out, self.hosts = tb, mode, out, hosts
        self.procs, self.cpu0, self.logs = {}, {}, {}

    def start(self):
        for h in self.hosts:
            self.logs[h] = os.path.join(self.out, f"rec-{self.mode}-{h}.log")
            if self.mode in SCRIPTS:
                argv = [sys.executable, os.path.join(BENCH, SCRIPTS[self.mode]), "-o",
                        os.path.join(self.out, f"base-{h}.txt"), "--netns", self.tb.ns(h)]
                argv += ["--attach", "tracepoint"] if self.mode == "baseline" else []
            else:
                argv = [sys.executable, "-m", "mbrec", "record", "-o",
                        os.path.join(self.out, f"rec-{h}.mbrec"), "--force", "--quiet",
                        "--host-name", h, "--netns", self.tb.ns(h), *RECORD_ARGS[self.mode]]
            self.procs[h] = subprocess.Popen(argv, stdout=open(self.logs[h], "w"),
                                             stderr=subprocess.STDOUT, start_new_session=True)
            self.tb.procs.append(self.procs[h])  # stopped by the testbed if the bench fails
        deadline = time.monotonic() + 300
        while set(self.cpu0) != set(self.procs):
            for h, p in self.procs.items():
                if h in self.cpu0:
                    continue
                if p.poll() is not None:
                    raise SystemExit(f"{self.mode} recorder on {h} exited: "
                                     f"{open(self.logs[h]).read()[-500:]}")
                if "recording on" in open(self.logs[h]).read():
                    self.cpu0[h] = cpu_s(p.pid)  # compiling and attaching are not recording
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.mode} recorders did not start")
            time.sleep(0.05)
        if self.mode in STOPPED:
            for p in self.procs.values():
                os.kill(p.pid, signal.SIGSTOP)

    def stop(self) -> dict:
        out = {}
        for h, p in self.procs.items():
            if self.mode in STOPPED:
                os.kill(p.pid, signal.SIGCONT)
            run_ns, runs = bpf_stats(p.pid)
            rss = rss_kb(p.pid)
            p.send_signal(2)
            _, status, ru = os.wait4(p.pid, 0)  # the rusage of the whole process, at its end
            p.returncode = os.waitstatus_to_exitcode(status)
            cpu = ru.ru_utime + ru.ru_stime - self.cpu0[h]
            rec = {"cpu_s": round(cpu, 3), "bpf_run_ns": run_ns, "bpf_runs": runs,
                   "rss_kb": rss, "exit": p.returncode}
            if self.mode in SCRIPTS:
                d = json.loads(open(self.logs[h]).read().strip().splitlines()[-1])
                path = os.path.join(self.out, f"base-{h}.txt")
                rec.update(events=d["events"], lost=d["lost"], file_bytes=os.path.getsize(path))
                os.unlink(path)
            else:
                path = os.path.join(self.out, f"rec-{h}.mbrec")
                info = json.loads(subprocess.run(
                    [sys.executable, "-m", "mbrec", "info", "--json", path],
                    capture_output=True, text=True, check=True).stdout)
                rec.update(events=info["events_total"], lost=info["lost_total"],
                           file_bytes=info["file_size"])
                os.unlink(path)
            out[f"recorder_{h}"] = rec
        for h in ("a", "b"):  # an unrecorded host: zero costs, so the report's sums hold
            out.setdefault(f"recorder_{h}", {"cpu_s": 0.0, "bpf_run_ns": 0, "bpf_runs": 0,
                                            "rss_kb": 0, "events": 0, "lost": 0,
                                            "file_bytes": 0})
        return out


def run_ab(tb: Testbed, mode: str, rnd: int, n: int) -> dict:
    out = tb.run("a", ["ab", "-k", "-c", "10", "-n", str(n), tb.url("b", "4k.bin")]).stdout

    def num(pattern):
        m = re.search(pattern, out, re.M)
        return float(m.group(1)) if m else None

    failed = num(r"^Failed requests:\s+(\d+)")
    return {"workload": "ab", "mode": mode, "round": rnd, "requests": n,
            "rps": num(r"^Requests per second:\s+([\d.]+)"),
            "mean_ms": num(r"^Time per request:\s+([\d.]+) \[ms\] \(mean\)$"),
            "p50_ms": num(r"^\s+50%\s+(\d+)"), "p99_ms": num(r"^\s+99%\s+(\d+)"),
            "failed": failed}


def run_iperf(tb: Testbed, mode: str, rnd: int, seconds: float) -> dict:
    r = tb.run("a", ["iperf3", "-J", "-c", tb.addr("b"), "-t", str(seconds)])
    bps = json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"]
    return {"workload": "iperf3", "mode": mode, "round": rnd, "seconds": seconds,
            "bits_per_second": bps}


def loadavg() -> list[float]:
    return [float(x) for x in open("/proc/loadavg").read().split()[:3]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", dest="out", required=True)
    ap.add_argument("--requests", type=int, default=50000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--iperf-seconds", type=float, default=3)
    ap.add_argument("--hosts", default="a,b",
                    help="the hosts recorded (b alone: one recorder, as on one real host)")
    ap.add_argument("--modes", default=",".join(MODES),
                    help=f"the modes run, comma-separated (none is always run): {', '.join(MODES)}")
    args = ap.parse_args()
    hosts = tuple(h for h in args.hosts.split(",") if h)
    modes = tuple(m for m in MODES if m == "none" or m in args.modes.split(","))
    unknown = set(args.modes.split(",")) - set(MODES)
    if unknown:
        raise SystemExit(f"native_overhead: unknown modes {', '.join(sorted(unknown))}")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "overhead.jsonl")
    stats_before = open(STATS_SYSCTL).read().strip()
    lines = []

    def emit(obj):
        lines.append(obj)
        with open(path, "a") as f:
            f.write(json.dumps(obj) + "\n")
        print(json.dumps(obj), flush=True)

    open(path, "w").close()
    emit({"machine": os.uname().release, "cpus": os.cpu_count(), "loadavg_start": loadavg(),
          "requests": args.requests, "rounds": args.rounds, "iperf_seconds": args.iperf_seconds,
          "recorded_hosts": list(hosts), "modes": list(modes)})
    try:
        with Testbed() as tb:
            tb.start_apache("b")
            tb.start_iperf3("b")
            run_ab(tb, "warmup", -1, args.requests)  # page cache, apache's threads
            run_iperf(tb, "warmup", -1, 1)
            for rnd in range(args.rounds + 1):
                stats = rnd == args.rounds  # the last round: BPF run time
                with open(STATS_SYSCTL, "w") as f:
                    f.write("1" if stats else "0")
                order = modes[rnd % len(modes):] + modes[:rnd % len(modes)]
                for mode in order:
                    recs = None
                    if mode != "none":
                        recs = Recorders(tb, mode, args.out, hosts)
                        recs.start()
                    ab = run_ab(tb, mode, rnd, args.requests)
                    ip = run_iperf(tb, mode, rnd, args.iperf_seconds)
                    if recs is not None:  # both workloads ran under one recording
                        ab.update(recs.stop())
                    for run in (ab, ip):
                        run.update(bpf_stats=stats, loadavg=loadavg())
                        emit(run)
    finally:
        with open(STATS_SYSCTL, "w") as f:
            f.write(stats_before)
    emit({"machine": os.uname().release, "loadavg_end": loadavg()})


if __name__ == "__main__":
    main()
