"""The lab smoke check, run inside the guest by the `smoke` scenario (kind "smoke").

Proves on this kernel that BCC attaches a kprobe and an fentry (kfunc) program to every seed function and that
they fire under TCP traffic, on the single (`ip_rcv`) and the list (`ip_list_rcv`) receive path, and that netem
is applied (the ping RTT between a and b matches the configured delays). Writes smoke.json; exit 0 only if all
of it holds.
"""

from __future__ import annotations

import ctypes
import json
import re
import time

from mbrec.lab import topology
from mbrec.lab.guestenv import OUT, say, sh
from mbrec.lab.scenario import expand, host_ip
from mbrec.lab.workload import start_servers, stop_servers

SEED_FUNCTIONS = ("__tcp_transmit_skb", "__ip_queue_xmit", "__dev_queue_xmit", "dev_hard_start_xmit",
                  "eth_type_trans", "ip_rcv", "ip_list_rcv", "ip_rcv_core", "tcp_v4_rcv",
                  "skb_copy_datagram_iter")
# Receive entry points: veth delivers through ip_rcv; GRO's batched delivery (virtio-net, or veth with GRO on)
# goes through ip_list_rcv. ip_rcv_core is on both paths.
RECEIVE_ENTRIES = ("ip_rcv", "ip_list_rcv")
PING_SLACK_MS = 30.0  # emulated forwarding and the ping itself add time under TCG; a delay never shrinks


def bpf_text(functions) -> str:
    """One program, no kernel includes (compiles in seconds under TCG): a hit counter per function and type."""
    n = len(functions)
    lines = [f"BPF_ARRAY(hits, u64, {2 * n});",
             "static inline void bump(int i) { u64 *v = hits.lookup(&i); if (v) __sync_fetch_and_add(v, 1); }"]
    for i, fn in enumerate(functions):
        lines.append(f"int kp_{i}(struct pt_regs *ctx) {{ bump({i}); return 0; }}")
    for i, fn in enumerate(functions):
        lines.append(f"KFUNC_PROBE({fn}) {{ bump({n + i}); return 0; }}")
    return "\n".join(lines) + "\n"


def attach_all(functions):
    """(bpf, report). fentry programs attach when BPF() loads them: if that fails, find the culprits one by one."""
    from bcc import BPF

    report = {fn: {"kprobe": {}, "fentry": {}} for fn in functions}
    t = time.monotonic()
    try:
        bpf = BPF(text=bpf_text(functions))
        for fn in functions:
            report[fn]["fentry"]["attached"] = True
    except Exception as e:  # BCC raises plain Exception
        say(f"smoke: fentry programs did not all load ({e}); trying one function at a time")
        for fn in functions:
            try:
                BPF(text=bpf_text([fn])).cleanup()
                report[fn]["fentry"]["attached"] = True
            except Exception as e1:
                report[fn]["fentry"] = {"attached": False, "error": str(e1)[:300]}
        bpf = BPF(text=bpf_text(functions).split("KFUNC_PROBE(")[0])
    compile_s = time.monotonic() - t
    for i, fn in enumerate(functions):
        try:
            bpf.attach_kprobe(event=fn, fn_name=f"kp_{i}")
            report[fn]["kprobe"]["attached"] = True
        except Exception as e:
            report[fn]["kprobe"] = {"attached": False, "error": str(e)[:300]}
    return bpf, report, compile_s


def read_hits(bpf, functions) -> dict:
    hits = bpf["hits"]
    n = len(functions)
    return {fn: {"kprobe": hits[ctypes.c_int(i)].value, "fentry": hits[ctypes.c_int(n + i)].value}
            for i, fn in enumerate(functions)}


def virtio_ping() -> dict:
    """Two virtio NICs on one QEMU hub, each in a namespace of its own: a real NIC's receive path, where GRO
    hands packets over in lists (ip_list_rcv)."""
    nics = topology.virtio_nics()
    if len(nics) < 2:
        return {"error": f"expected two virtio NICs, found {nics}"}
    for i, (nic, ns) in enumerate(zip(nics, ("v1", "v2")), start=1):
        sh(f"ip netns add {ns}")
        sh(f"ip link set {nic} netns {ns}")
        sh(f"ip -n {ns} addr add 10.0.9.{i}/24 dev {nic}")
        sh(f"ip -n {ns} link set {nic} up")
    r = sh("ip netns exec v1 ping -c 10 -i 0.2 -W 5 10.0.9.2", check=False)
    return {"nics": nics, "exit_status": r.returncode, "output": r.stdout[-300:]}


def ping_check(layout, s: dict) -> dict:
    expected = sum(s["network"].get(d, {}).get("delay_ms", 0) for d in ("a->b", "b->a"))
    r = sh(layout.run("a", f"ping -c 6 -i 0.3 -W 5 {host_ip('b')}"), check=False)
    m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/", r.stdout)
    # the minimum: the first ping also waits for ARP, and TCG adds random slowness, never speed
    rtt_min, avg = (float(m.group(1)), float(m.group(2))) if m else (None, None)
    ok = rtt_min is not None and expected <= rtt_min <= expected + PING_SLACK_MS
    return {"expected_rtt_ms": expected, "min_rtt_ms": rtt_min, "avg_rtt_ms": avg,
            "tolerance_ms": [0, PING_SLACK_MS], "ok": ok, "output": r.stdout[-400:]}


def run(layout, s: dict, facts: dict) -> int:
    result = {"kernel": facts["kernel"]}
    result["btf"] = __import__("os").path.exists("/sys/kernel/btf/vmlinux")
    result["ping"] = ping_check(layout, s)
    say(f"smoke: ping RTT min {result['ping']['min_rtt_ms']} ms, configured {result['ping']['expected_rtt_ms']} ms")

    say("smoke: compiling and attaching kprobe + fentry programs on the seed functions")
    bpf, report, compile_s = attach_all(SEED_FUNCTIONS)
    result["compile_s"] = round(compile_s, 1)
    servers = start_servers(layout, s)
    phases = {}
    try:
        before = read_hits(bpf, SEED_FUNCTIONS)
        for phase, gro in (("gro_off", False), ("gro_on", True)):
            topology.apply_offloads(layout, s["hosts"], {"gro": gro})
            for w in s["workload"]:
                sh(layout.run(w["host"], ["sh", "-c", expand(w["cmd"])]), check=False)
            after = read_hits(bpf, SEED_FUNCTIONS)
            phases[phase] = {fn: {k: after[fn][k] - before[fn][k] for k in ("kprobe", "fentry")}
                             for fn in SEED_FUNCTIONS}
            before = after
        if s.get("virtio_pair"):
            result["virtio_ping"] = virtio_ping()
            after = read_hits(bpf, SEED_FUNCTIONS)
            phases["virtio"] = {fn: {k: after[fn][k] - before[fn][k] for k in ("kprobe", "fentry")}
                                for fn in SEED_FUNCTIONS}
    finally:
        stop_servers(servers)
        bpf.cleanup()
    for fn in SEED_FUNCTIONS:
        for kind in ("kprobe", "fentry"):
            report[fn][kind]["hits"] = {p: phases[p][fn][kind] for p in phases}
    result["functions"] = report

    failures = []
    for fn, r in report.items():
        for kind in ("kprobe", "fentry"):
            if not r[kind].get("attached"):
                failures.append(f"{kind} on {fn} did not attach: {r[kind].get('error')}")
            elif fn not in RECEIVE_ENTRIES and sum(r[kind]["hits"].values()) == 0:
                failures.append(f"{kind} on {fn} attached but never fired")
    for kind in ("kprobe", "fentry"):
        for fn in RECEIVE_ENTRIES:
            if report[fn][kind].get("attached") and sum(report[fn][kind]["hits"].values()) == 0:
                failures.append(f"{kind} on {fn} attached but never fired"
                                + ("" if s.get("virtio_pair") else " (the list path needs virtio_pair)"))
    if not result["ping"]["ok"]:
        failures.append(f"ping RTT min {result['ping']['min_rtt_ms']} ms is not within "
                        f"[{result['ping']['expected_rtt_ms']}, +{PING_SLACK_MS}] ms: netem not applied?")
    result["failures"] = failures
    result["pass"] = not failures
    (OUT / "smoke.json").write_text(json.dumps(result, indent=1) + "\n")
    for f in failures:
        say(f"smoke: FAIL {f}")
    fired = ", ".join(f"{p} {report['ip_rcv']['kprobe']['hits'][p]}/{report['ip_list_rcv']['kprobe']['hits'][p]}"
                      for p in phases)
    say(f"smoke: {'pass' if not failures else 'FAIL'}: {len(SEED_FUNCTIONS)} functions, kprobe and fentry; "
              f"ip_rcv/ip_list_rcv hits: {fired}")
    return 0 if not failures else 5
