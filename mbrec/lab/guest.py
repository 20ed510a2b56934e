"""Runs inside a lab guest (started by guest_init.sh): builds the topology, records, runs the job.

`python3 -m mbrec.lab.guest --role a /mnt/out/job.json`. Uses only the stdlib and Debian's python3 packages.
The parts live beside it: mbrec.lab.topology (network), mbrec.lab.workload, mbrec.lab.recorders; the smoke
and fleet scenarios have modules of their own (mbrec.lab.smoke, mbrec.lab.fleetlab).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from mbrec.lab import fleetlab, smoke
from mbrec.lab.guestenv import OUT, clocks, say, sh
from mbrec.lab.recorders import RECORDER_READY_TIMEOUT_S, Recorders
from mbrec.lab.topology import (
    Layout,
    apply_offloads,
    build_topology,
    control_server,
    netem_args,
    network_targets,
    set_netem,
    wait_for_peer,
)
from mbrec.lab.workload import Snapshots, run_workload, start_servers, stop_servers


def guest_facts(role: str) -> dict:
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return {"role": role, "kernel": platform.release(), "boot_id": boot_id, "clock_at_start": clocks(),
            "cpus": os.cpu_count()}


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
            status = smoke.run(layout, s, facts)
            return status
        if s["kind"] == "fleet":
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
