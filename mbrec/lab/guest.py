"""Runs inside a lab guest (started by guest_init.sh): builds the topology, records, runs the scenario.

`python3 -m mbrec.lab.guest --role a /mnt/out/job.json`. Uses only the stdlib and Debian's python3 packages.

Topology. One VM: hosts a, b (and c) are network namespaces, each joined by a veth pair to the namespace r,
which routes between them and stands for the network. netem on r's interface toward host y is the delay
"x->y": it lands between x's NIC and y's NIC. Two VMs: VM a's root namespace is host a (its virtio NIC);
VM b's root namespace is the router (its virtio NIC faces a) with host b in namespace b behind a veth pair.
The addresses are the same in both layouts (host h is 10.0.N.1 and fd00:0:0:N::1, see mbrec.lab.scenario.SUBNET).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from mbrec.lab.scenario import expand, host_ip, host_ip6, router_ip, router_ip6

OUT = Path("/mnt/out")
REC_DIR = Path("/tmp/rec")
CONTROL_PORT = 7777
# One recorder's BCC compile took 82 s under TCG on a loaded 2-core machine (20-35 s idle); two run in parallel.
RECORDER_READY_TIMEOUT_S = 600


def say(msg: str) -> None:
    """A progress line on the console, which the host shows; prefixed with the guest's uptime."""
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    print(f"mbrec-lab: [{uptime:6.1f}] {msg}", flush=True)


def sh(argv, check=True, **kw) -> subprocess.CompletedProcess:
    """Run a short setup command; its failure is a scenario failure naming the command."""
    argv = shlex.split(argv) if isinstance(argv, str) else argv
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()[:300]}")
    return r


def clocks() -> dict:
    return {"monotonic_ns": time.monotonic_ns(), "realtime_ns": time.time_ns(),
            "boottime_ns": time.clock_gettime_ns(time.CLOCK_BOOTTIME)}


class Layout:
    """Where each host lives in this guest: its namespace (None = root), its NIC and its router interface."""

    def __init__(self, hosts: list[str], vms: int, role: str):
        self.vms = vms
        if vms == 1:
            self.local = list(hosts)
            self.router_ns = "r"
        else:
            self.local = [role]
            self.router_ns = None if role == "b" else "-"  # "-": the router is not in this VM
        self.ns = {h: h for h in self.local}
        if vms == 2 and role == "a":
            self.ns["a"] = None

    def run(self, host_or_ns, argv) -> list[str]:
        """argv run inside a namespace (None: the root one)."""
        ns = self.ns.get(host_or_ns, host_or_ns)
        argv = shlex.split(argv) if isinstance(argv, str) else list(argv)
        return ["ip", "netns", "exec", ns, *argv] if ns else argv

    def router_if(self, host: str) -> str:
        return "eth0" if (self.vms == 2 and host == "a") else f"r-{host}"

    def host_if(self, host: str) -> str:
        return "eth0"


def virtio_nics() -> list[str]:
    """The guest's virtio NICs, in PCI order (no udev in the guest: names are eth0, eth1, ...)."""
    return sorted((n for n in os.listdir("/sys/class/net") if Path(f"/sys/class/net/{n}/device").exists()),
                  key=lambda n: os.path.realpath(f"/sys/class/net/{n}/device"))


def nic_name() -> str:
    nics = virtio_nics()
    if not nics:
        raise RuntimeError("two-VM mode: the guest has no virtio NIC")
    return nics[0]


def topology_commands(layout: Layout, hosts: list[str]) -> tuple[list[str], dict]:
    """The `ip` commands that build this guest's part of the topology, as (root batch, {namespace: batch}).

    Batched because every process costs a few hundred ms under TCG: one `ip -batch` per namespace instead of
    one `ip` per step. The root batch creates namespaces and links, so it runs first.
    """
    vm2 = layout.vms == 2
    root, per_ns = [], {}
    if layout.router_ns == "r":
        root.append("netns add r")
        per_ns["r"] = ["link set lo up"]
    router = per_ns.setdefault(layout.router_ns, []) if layout.router_ns not in ("-", None) else root
    for h in hosts:
        local = h in layout.local
        if vm2 and h == "a" and local:  # VM a: host a is the root namespace, eth0 faces the router in VM b
            root += [f"addr add {host_ip(h)}/24 dev eth0", f"addr add {host_ip6(h)}/64 dev eth0 nodad",
                     "link set eth0 up", f"route add default via {router_ip(h)}",
                     f"route add ::/0 via {router_ip6(h)}"]
            continue
        if vm2 and h == "a":  # VM b: the router (root namespace) has eth0 facing VM a
            router += [f"addr add {router_ip(h)}/24 dev eth0", f"addr add {router_ip6(h)}/64 dev eth0 nodad",
                       "link set eth0 up"]
            continue
        if not local:
            continue
        rif = layout.router_if(h)
        root += [f"netns add {h}", f"link add {h}-eth0 type veth peer name {rif}", f"link set {h}-eth0 netns {h}"]
        if layout.router_ns:
            root.append(f"link set {rif} netns {layout.router_ns}")
        router += [f"addr add {router_ip(h)}/24 dev {rif}", f"addr add {router_ip6(h)}/64 dev {rif} nodad",
                   f"link set {rif} up"]
        # nodad: the addresses are usable at once (duplicate detection would hold them for about 2 s)
        per_ns[h] = ["link set lo up", f"link set {h}-eth0 name eth0", f"addr add {host_ip(h)}/24 dev eth0",
                     f"addr add {host_ip6(h)}/64 dev eth0 nodad", "link set eth0 up",
                     f"route add default via {router_ip(h)}", f"route add ::/0 via {router_ip6(h)}"]
    return root, per_ns


def ip_batch(ns, lines: list[str]) -> None:
    if lines:
        sh(["ip", *(["-n", ns] if ns else []), "-batch", "-"], input="\n".join(lines) + "\n")


def build_topology(layout: Layout, hosts: list[str]) -> None:
    if layout.vms == 2:
        nic = nic_name()
        if nic != "eth0":
            sh(["ip", "link", "set", nic, "name", "eth0"])
    root, per_ns = topology_commands(layout, hosts)
    ip_batch(None, root)  # first: it creates the namespaces and links the others configure
    for ns, lines in per_ns.items():
        ip_batch(ns, lines)
    if layout.router_ns != "-":
        sh(layout.run(layout.router_ns, "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1"))


def all_ifaces(layout: Layout, hosts: list[str]) -> list[tuple]:
    """(namespace-or-host, ifname) of every interface in this guest: hosts' NICs and the router's."""
    out = [(h, "eth0") for h in layout.local]
    if layout.router_ns != "-":
        out += [(layout.router_ns, layout.router_if(h)) for h in hosts]
    return out


def apply_offloads(layout: Layout, hosts: list[str], offloads: dict) -> dict:
    """ethtool -K per interface; returns what each interface reports afterwards."""
    report = {}
    for where, ifname in all_ifaces(layout, hosts):
        if offloads:
            args = [x for k, v in offloads.items() for x in (k, "on" if v else "off")]
            sh(layout.run(where, ["ethtool", "-K", ifname, *args]), check=False)
        shown = sh(layout.run(where, ["ethtool", "-k", ifname]), check=False).stdout
        report[f"{where or 'root'}/{ifname}"] = {
            k: _feature(shown, name) for k, name in
            (("tso", "tcp-segmentation-offload"), ("gso", "generic-segmentation-offload"),
             ("gro", "generic-receive-offload"))}
    return report


def _feature(text: str, name: str):
    m = re.search(rf"^{name}: (on|off)", text, re.M)
    return None if m is None else m.group(1) == "on"


def netem_args(n: dict) -> list[str]:
    args = ["netem"]
    if n.get("delay_ms") or n.get("jitter_ms"):
        args += ["delay", f"{n.get('delay_ms', 0)}ms"]
        if n.get("jitter_ms"):
            args += [f"{n['jitter_ms']}ms"]
    if "loss_pct" in n:  # even 0: an event that ends a blackhole says so explicitly
        args += ["loss", f"{n['loss_pct']}%"]
    if n.get("rate_mbit"):
        args += ["rate", f"{n['rate_mbit']}mbit"]
    return args


def set_netem(layout: Layout, where, ifname: str, netem: dict, verb="replace") -> list[str]:
    argv = ["tc", "qdisc", verb, "dev", ifname, "root", *netem_args(netem)]
    sh(layout.run(where, argv))
    return argv


def network_targets(layout: Layout, s: dict):
    """(direction, namespace, ifname, netem) for every netem this guest applies."""
    out = []
    if layout.router_ns != "-":
        for direction, netem in s["network"].items():
            dst = direction.split("->")[1]
            out.append((direction, layout.router_ns, layout.router_if(dst), netem))
    for host, netem in s["host_egress"].items():
        if host in layout.local:
            out.append((f"{host} egress", host, "eth0", netem))
    return out


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


class Recorders:
    """One `mbrec record` per recorded local host, in the root namespace with --netns; SIGINT stops them."""

    def __init__(self, layout: Layout, hosts: list[str], enabled: bool, extra_args=()):
        self.layout, self.hosts, self.enabled = layout, hosts, enabled
        self.extra_args = list(extra_args)  # job["record_args"], from mbrec lab run --record-args
        self.procs = {}
        self.status = {h: "not recorded" for h in hosts}

    def start(self) -> None:
        if not self.enabled:
            self.status = {h: "disabled (--no-record)" for h in self.hosts}
            return
        if not self.hosts:
            return
        REC_DIR.mkdir(parents=True, exist_ok=True)
        for h in self.hosts:
            argv = [sys.executable, "-m", "mbrec", "record", "-o", str(REC_DIR / f"{h}.mbrec"),
                    "--host-name", h, "--quiet", *self.extra_args]
            if self.layout.ns.get(h):
                argv += ["--netns", self.layout.ns[h]]
            err = open(OUT / f"record-{h}.log", "w")
            self.procs[h] = subprocess.Popen(argv, stdout=err, stderr=subprocess.STDOUT)
            self.status[h] = "starting"
        say(f"recording on {', '.join(self.hosts)}: waiting for the recorders (BCC compiles under TCG: "
            "20-35 s each when the machine is idle, minutes when it is loaded)")
        deadline = time.monotonic() + RECORDER_READY_TIMEOUT_S
        waiting = set(self.procs)
        started = time.monotonic()
        next_note = started + 60
        while waiting and time.monotonic() < deadline:
            if time.monotonic() > next_note:
                say(f"still waiting for the recorders on {', '.join(sorted(waiting))} "
                    f"({time.monotonic() - started:.0f} s)")
                next_note += 60
            for h in sorted(waiting):
                path, proc = REC_DIR / f"{h}.mbrec", self.procs[h]
                if proc.poll() is not None:
                    log = (OUT / f"record-{h}.log").read_text(errors="replace")
                    self.status[h] = ("not implemented" if "not yet implemented" in log
                                      else f"exited {proc.returncode} before ready: {log.strip()[-300:]}")
                    waiting.discard(h)
                elif path.exists() and path.stat().st_size > 0:
                    self.status[h] = "recording"
                    waiting.discard(h)
            time.sleep(0.5)
        for h in waiting:
            self.status[h] = f"not ready after {RECORDER_READY_TIMEOUT_S} s"
        took = time.monotonic() - started
        if any(v == "not implemented" for v in self.status.values()):
            say("mbrec record is not yet implemented in this version: continuing without traces")
        else:
            say(f"recorders: {self.status} after {took:.0f} s")

    def stop(self) -> None:
        for h, proc in self.procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for h, proc in self.procs.items():
            try:
                rc = proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
                self.status[h] = "killed: did not stop within 120 s of SIGINT"
            if self.status[h] == "recording":
                self.status[h] = "ok" if rc == 0 else f"exited {rc}"
            src = REC_DIR / f"{h}.mbrec"
            if src.exists():
                dst = OUT / f"{h}.mbrec"
                sh(["cp", str(src), str(dst)])

    def ok(self) -> bool:
        return all(v in ("ok", "not implemented", "not recorded", "disabled (--no-record)") for v in self.status.values())


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


def guest_facts(role: str) -> dict:
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return {"role": role, "kernel": platform.release(), "boot_id": boot_id, "clock_at_start": clocks(),
            "cpus": os.cpu_count()}


def control_server(ready_then_wait_done) -> None:
    """Two-VM mode, VM b: listen once ready; VM a connects (= b is ready) and later sends 'done'."""
    with socket.create_server((router_ip("a"), CONTROL_PORT)) as srv:
        srv.settimeout(None)
        conn, _ = srv.accept()
        with conn:
            conn.sendall(b"ready\n")
            ready_then_wait_done(conn)


def wait_for_peer(timeout_s: float) -> socket.socket:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn = socket.create_connection((router_ip("a"), CONTROL_PORT), timeout=5)
            conn.settimeout(None)
            if conn.recv(16).startswith(b"ready"):
                return conn
            conn.close()
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"two-VM mode: VM b did not get ready within {timeout_s:.0f} s")
        time.sleep(1)


def run_job(job: dict, role: str) -> int:
    s = job["scenario"]
    hosts = s["hosts"]
    layout = Layout(hosts, s["vms"], role)
    facts = guest_facts(role)
    facts["local_hosts"] = layout.local
    facts["namespaces"] = {h: layout.ns[h] for h in layout.local}
    status = 0
    try:
        say(f"topology: hosts {', '.join(layout.local)} " + ("through router r" if layout.router_ns == "r" else ""))
        build_topology(layout, hosts)
        facts["offloads"] = apply_offloads(layout, hosts, s["offloads"])
        netem_where, facts["netem"] = {}, []
        for direction, ns, ifname, netem in network_targets(layout, s):
            argv = set_netem(layout, ns, ifname, netem)
            netem_where[direction] = (ns, ifname)
            facts["netem"].append({"direction": direction, "namespace": ns or "root", "ifname": ifname,
                                   "netem": netem, "tc": " ".join(argv)})
        for cmd in s["setup"]:
            sh(["sh", "-c", cmd])
        say("network ready: " + ("; ".join(f"{n['direction']} {' '.join(netem_args(n['netem'])[1:]) or 'none'}"
                                           for n in facts["netem"]) or "nothing injected"))
        if job.get("command"):
            say(f"running: {job['command']}")
            with open(OUT / "command.out", "w") as out:  # the host prints it after the run
                status = subprocess.run(["sh", "-c", job["command"]], stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL).returncode
            return status
        if s["kind"] == "smoke":
            from mbrec.lab import smoke
            status = smoke.run(layout, s, facts)
            return status
        if s["kind"] == "fleet":
            from mbrec.lab import fleetlab
            status = fleetlab.run(layout, s, job, role, facts)
            return status
        status = run_scenario(layout, s, job, role, facts)
        return status
    except Exception as e:  # the job failed: say why in one line, keep what was written so far
        say(f"error: {e}")
        facts["error"] = str(e)
        return status or 3
    finally:
        facts["clock_at_end"] = clocks()
        for where in {ns for _, ns, _, _ in network_targets(layout, s)}:
            facts.setdefault("tc_stats", {})[where or "root"] = sh(layout.run(where, "tc -s qdisc"),
                                                                   check=False).stdout
        (OUT / f"guest-{role}.json").write_text(json.dumps(facts, indent=1) + "\n")


def run_scenario(layout: Layout, s: dict, job: dict, role: str, facts: dict) -> int:
    recorders = Recorders(layout, [h for h in s["record"] if h in layout.local], job.get("record", True),
                          job.get("record_args", []))
    servers = start_servers(layout, s)
    if servers:
        say(f"servers up: {', '.join(srv['name'] + ' on ' + srv['host'] for srv, _ in servers)}")
    status = 0
    try:
        recorders.start()
        with Snapshots(layout, s["snapshot_every_s"]):
            if layout.vms == 2 and role == "b":
                say("waiting for VM a's workload")
                control_server(lambda conn: conn.recv(16))
            elif layout.vms == 2:
                conn = wait_for_peer(RECORDER_READY_TIMEOUT_S + 120)
                facts["control_connection"] = {
                    "note": "lab coordination between the VMs, not workload: ignore it in analyses",
                    "local": "%s:%d" % conn.getsockname(), "remote": "%s:%d" % conn.getpeername()}
                status = run_workload(layout, s, {}, facts)
                conn.sendall(b"done\n")
                conn.close()
            else:
                netem_where = {d: (ns, i) for d, ns, i, _ in network_targets(layout, s) if "->" in d}
                status = run_workload(layout, s, netem_where, facts)
    finally:
        recorders.stop()
        stop_servers(servers)
        facts["recording"] = recorders.status
    if status == 0 and not recorders.ok():
        say(f"recording failed: {recorders.status}")
        status = 4
    return status


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m mbrec.lab.guest")
    p.add_argument("--role", default="a")
    p.add_argument("job")
    args = p.parse_args(argv)
    job = json.loads(Path(args.job).read_text())
    return run_job(job, args.role)


if __name__ == "__main__":
    sys.exit(main())
