"""The guest's network: hosts as namespaces, the router, netem, offloads, and the two-VM control connection.

One VM: hosts a, b (and c) are network namespaces, each joined by a veth pair to the namespace r,
which routes between them and stands for the network. netem on r's interface toward host y is the delay
"x->y": it lands between x's NIC and y's NIC. Two VMs: VM a's root namespace is host a (its virtio NIC);
VM b's root namespace is the router (its virtio NIC faces a) with host b in namespace b behind a veth pair.
The addresses are the same in both layouts (host h is 10.0.N.1 and fd00:0:0:N::1, see mbrec.lab.scenario.SUBNET).
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import time
from pathlib import Path

from mbrec.lab.guestenv import sh
from mbrec.lab.scenario import host_ip, host_ip6, router_ip, router_ip6

CONTROL_PORT = 7777


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
