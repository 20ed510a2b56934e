"""The scenario's workload in the guest: servers, the timed network events, ss/nstat snapshots, parsed output."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import threading
import time

from mbrec.lab.guestenv import OUT, clocks, say, sh
from mbrec.lab.scenario import expand
from mbrec.lab.topology import Layout, netem_args

FIRST_DURING_S = 0.3


class Snapshots:
    """`ss -tinH` and `nstat` inside each local host's namespace, before, during (periodically) and after."""

    def __init__(self, layout: Layout, every_s: float):
        self.layout, self.every_s = layout, every_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def take(self, phase: str) -> None:
        stamp = time.monotonic_ns()
        for h in self.layout.local:
            ss = sh(self.layout.run(h, "ss -tinH"), check=False).stdout
            nstat = sh(self.layout.run(h, "nstat -asz --json"), check=False).stdout
            with open(OUT / f"ss-{h}-{phase}.txt", "a") as f:
                f.write(f"# monotonic_ns {stamp}\n{ss}")
            try:
                counters = json.loads(nstat).get("kernel", {})
            except json.JSONDecodeError:
                counters = {"error": nstat[:200]}
            with open(OUT / f"nstat-{h}-{phase}.jsonl", "a") as f:
                f.write(json.dumps({"monotonic_ns": stamp, "counters": counters}) + "\n")

    def _loop(self):
        # the first soon after the workload starts: a run shorter than every_s (ab's 1000
        # requests can take 1.7 s) still has its connections read while they are open
        wait = min(FIRST_DURING_S, self.every_s)
        while not self.stop.wait(wait):
            self.take("during")
            wait = self.every_s

    def __enter__(self):
        self.take("before")
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.take("after")


def start_servers(layout: Layout, s: dict) -> list:
    procs = []
    for srv in s["servers"]:
        if srv["host"] not in layout.local:
            continue
        log = open(OUT / f"{srv['name']}.log", "w")
        p = subprocess.Popen(layout.run(srv["host"], ["sh", "-c", expand(srv["cmd"])]), stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
        procs.append((srv, p))
        if srv.get("port"):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and p.poll() is None:
                listening = sh(layout.run(srv["host"], f"ss -ltnH sport = :{srv['port']}"), check=False).stdout
                if listening.strip():
                    break
                time.sleep(0.3)
            else:
                raise RuntimeError(f"server {srv['name']} on {srv['host']} did not listen on port {srv['port']}"
                                   f" (see {srv['name']}.log)")
    return procs


def stop_servers(procs) -> None:
    for _, p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for _, p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def run_workload(layout: Layout, s: dict, netem_where: dict, truth: dict) -> int:
    """Start every local workload step at once, apply the timed events, wait. Returns the worst exit status."""
    steps = [w for w in s["workload"] if w["host"] in layout.local]
    # Timed netem changes go to a `tc -batch` started now, which applies each line as it arrives: spawning tc
    # when the event is due took 1-4 s in a guest busy with the workload.
    tc_shells = {}
    for ev in s["events"]:
        for direction in ev["network"]:
            ns = netem_where[direction][0]
            if ns not in tc_shells:
                tc_shells[ns] = subprocess.Popen(layout.run(ns, ["tc", "-batch", "-"]), stdin=subprocess.PIPE,
                                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0_ns = time.monotonic_ns()
    t0 = t0_ns / 1e9
    truth["workload_start"] = clocks()
    running = []
    for w in steps:
        cmd = expand(w["cmd"])
        out = open(OUT / f"{w['name']}.out", "w")
        say(f"{w['name']} on {w['host']}: {cmd}")
        running.append((w, cmd, time.monotonic_ns(),
                        subprocess.Popen(layout.run(w["host"], ["sh", "-c", cmd]), stdout=out,
                                         stderr=subprocess.STDOUT)))
    applied = []
    for ev in sorted(s["events"], key=lambda e: e["at_s"]):
        time.sleep(max(0.0, t0 + ev["at_s"] - time.monotonic()))
        lines = []
        for direction, netem in ev["network"].items():
            merged = {**s["network"][direction], **netem}
            ns, ifname = netem_where[direction]
            line = " ".join(["qdisc", "change", "dev", ifname, "root", *netem_args(merged)])
            before = time.monotonic_ns()
            tc_shells[ns].stdin.write(line + "\n")
            tc_shells[ns].stdin.flush()
            applied.append({"at_s": ev["at_s"], "direction": direction, "netem": merged, "tc": line,
                            "scheduled_monotonic_ns": t0_ns + int(ev["at_s"] * 1e9),
                            "written_monotonic_ns": before})
            lines.append(f"{direction} {' '.join(netem_args(merged)[1:]) or 'no impairment'}")
        say(f"event at {ev['at_s']} s (written at {(time.monotonic_ns() - t0_ns) / 1e9:.2f} s): {'; '.join(lines)}")
    for ns, proc in tc_shells.items():
        proc.stdin.close()
        if proc.wait() != 0:
            raise RuntimeError(f"tc -batch in namespace {ns or 'root'} failed: {proc.stderr.read().strip()[:300]}")
    truth["events_applied"] = applied
    worst = 0
    truth["commands"] = []
    for w, cmd, start_ns, p in running:
        rc = p.wait()
        end_ns = time.monotonic_ns()
        text = (OUT / f"{w['name']}.out").read_text(errors="replace")
        truth["commands"].append({"name": w["name"], "host": w["host"], "cmd": cmd, "exit_status": rc,
                                  "start_monotonic_ns": start_ns, "end_monotonic_ns": end_ns,
                                  "output_file": f"{w['name']}.out", "parsed": parse_output(cmd, text)})
        say(f"{w['name']} exited {rc} after {(end_ns - start_ns) / 1e9:.1f} s")
        worst = worst or rc
    truth["workload_end"] = clocks()
    return worst


def parse_output(cmd: str, text: str) -> dict:
    """The workload's own numbers: ab's report, iperf3's JSON summary."""
    tool = os.path.basename(shlex.split(cmd)[0]) if cmd.strip() else ""
    if tool == "ab":
        fields = {"complete_requests": r"Complete requests:\s+(\d+)", "failed_requests": r"Failed requests:\s+(\d+)",
                  "time_taken_s": r"Time taken for tests:\s+([\d.]+)",
                  "requests_per_second": r"Requests per second:\s+([\d.]+)",
                  "time_per_request_ms": r"Time per request:\s+([\d.]+) \[ms\] \(mean\)",
                  "keep_alive_requests": r"Keep-Alive requests:\s+(\d+)",
                  "concurrency": r"Concurrency Level:\s+(\d+)", "document_length": r"Document Length:\s+(\d+)"}
        out = {k: _number(m.group(1)) for k, rx in fields.items() if (m := re.search(rx, text))}
        out["percentiles_ms"] = {int(p): float(v) for p, v in re.findall(r"^\s+(\d+)%\s+(\d+)", text, re.M)}
        return out
    if tool == "iperf3" and " -J" in f" {cmd}":
        try:
            j = json.loads(text)
        except json.JSONDecodeError:
            return {"error": "iperf3 output is not JSON"}
        end = j.get("end", {})
        sent, recv = end.get("sum_sent", {}), end.get("sum_received", {})
        return {"bytes_sent": sent.get("bytes"), "retransmits": sent.get("retransmits"),
                "sent_bits_per_second": sent.get("bits_per_second"),
                "received_bits_per_second": recv.get("bits_per_second"), "error": j.get("error")}
    if tool == "ping":
        m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", text)
        loss = re.search(r"([\d.]+)% packet loss", text)
        return {"rtt_min_ms": float(m.group(1)), "rtt_avg_ms": float(m.group(2)), "rtt_max_ms": float(m.group(3)),
                "loss_pct": float(loss.group(1)) if loss else None} if m else {}
    return {}


def _number(text: str):
    return float(text) if "." in text else int(text)
