"""Lab scenarios: one JSON file each under mbrec/lab/scenarios/, loaded and checked here.

Used on the host (to validate and to plan the VMs) and in the guest (to run), so stdlib only.
"""

from __future__ import annotations

import json
from pathlib import Path

from mbrec.errors import MbrecError

SCENARIO_DIR = Path(__file__).parent / "scenarios"
HOSTS = ("a", "b", "c")
# host -> its subnet number: host h is 10.0.N.1, the router's side of its link 10.0.N.254; every
# link is dual-stack: host h is also fd00:0:0:N::1, the router fd00:0:0:N::fe (both /64)
SUBNET = {"a": 1, "b": 2, "c": 3}
NETEM_KEYS = {"delay_ms", "jitter_ms", "loss_pct", "rate_mbit"}
OFFLOADS = ("tso", "gso", "gro")
TOP_KEYS = {"description", "vms", "hosts", "record", "offloads", "network", "host_egress", "setup", "servers",
            "workload", "events", "kind", "timeout_s", "snapshot_every_s", "virtio_pair"}

# `mbrec lab run -- COMMAND` without a scenario: two hosts through the router, nothing injected.
DEFAULT_TOPOLOGY = {"description": "a and b through the router r, no delay", "hosts": ["a", "b"],
                    "record": [], "workload": []}


def host_ip(host: str) -> str:
    return f"10.0.{SUBNET[host]}.1"


def router_ip(host: str) -> str:
    return f"10.0.{SUBNET[host]}.254"


def host_ip6(host: str) -> str:
    return f"fd00:0:0:{SUBNET[host]}::1"


def router_ip6(host: str) -> str:
    return f"fd00:0:0:{SUBNET[host]}::fe"


def names() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.json"))


def load(name: str) -> dict:
    path = SCENARIO_DIR / f"{name}.json"
    if not path.exists():
        raise MbrecError(f"unknown lab scenario {name!r}; known: {', '.join(names())}")
    try:
        s = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise MbrecError(f"lab scenario {path} is not valid JSON: {e}") from None
    return validate(s, str(path))


def validate(s: dict, where: str) -> dict:
    """Fill defaults and reject what the guest could not run, with one line naming the field."""
    def bad(msg):
        raise MbrecError(f"lab scenario {where}: {msg}")

    unknown = set(s) - TOP_KEYS
    if unknown:
        bad(f"unknown field(s) {sorted(unknown)}; known: {sorted(TOP_KEYS)}")
    s = {"vms": 1, "record": [], "offloads": {}, "network": {}, "host_egress": {}, "setup": [], "servers": [],
         "workload": [], "events": [], "kind": "workload", "timeout_s": 600, "snapshot_every_s": 2.0, **s}
    if s["vms"] not in (1, 2):
        bad("vms must be 1 or 2")
    hosts = s.get("hosts") or bad("hosts is missing")
    if not set(hosts) <= set(HOSTS) or not {"a", "b"} <= set(hosts):
        bad(f"hosts must include a and b, from {HOSTS}")
    if s["vms"] == 2 and (sorted(hosts) != ["a", "b"] or s["events"] or s["host_egress"]):
        bad("two-VM scenarios have hosts a and b only, and no events or host_egress")
    if not set(s["record"]) <= set(hosts):
        bad("record lists a host that is not in hosts")
    for key in s["offloads"]:
        if key not in OFFLOADS:
            bad(f"offloads: unknown {key!r}; known: {OFFLOADS}")
    seen_dst: dict[str, str] = {}
    for direction, netem in s["network"].items():
        src, _, dst = direction.partition("->")
        if src not in hosts or dst not in hosts or src == dst:
            bad(f"network: {direction!r} is not 'x->y' between two hosts")
        _check_netem(netem, f"network {direction}", bad)
        # netem sits on the router's interface toward dst, so it applies to all traffic to dst.
        if dst in seen_dst and seen_dst[dst] != netem:
            bad(f"network: traffic toward {dst} has one router interface; {direction} and "
                f"another direction into {dst} must agree")
        seen_dst[dst] = netem
    for host, netem in s["host_egress"].items():
        if host not in hosts:
            bad(f"host_egress: unknown host {host!r}")
        _check_netem(netem, f"host_egress {host}", bad)
    for i, step in enumerate(s["servers"] + s["workload"]):
        if step.get("host") not in hosts or not step.get("cmd") or not step.get("name"):
            bad(f"servers/workload entry {i} needs name, host (one of {hosts}) and cmd")
    for ev in s["events"]:
        if "at_s" not in ev or not isinstance(ev.get("network"), dict):
            bad("each event needs at_s and network")
        for direction, netem in ev["network"].items():
            if direction not in s["network"]:
                bad(f"event changes {direction!r}, which network does not configure")
            _check_netem(netem, f"event {direction}", bad)
    if s["kind"] not in ("workload", "smoke", "fleet"):
        bad("kind must be workload, smoke or fleet")
    if s["kind"] == "fleet" and (s["vms"] != 2 or s["record"]):
        bad("kind fleet: two VMs, and no record list (mbrec fleet record records a and b)")
    return s


def _check_netem(netem, where, bad):
    if not isinstance(netem, dict) or set(netem) - NETEM_KEYS:
        bad(f"{where}: netem settings are a dict of {sorted(NETEM_KEYS)}")
    for k, v in netem.items():
        if not isinstance(v, (int, float)) or v < 0:
            bad(f"{where}: {k} must be a non-negative number")


def expand(cmd: str) -> str:
    """Workload commands name hosts as {a}, {b}, {c} (their IPv4 addresses) or {a6}, {b6}, {c6}
    (their IPv6 addresses; in a URL: http://[{b6}]/)."""
    return cmd.format(**{h: host_ip(h) for h in HOSTS}, **{f"{h}6": host_ip6(h) for h in HOSTS})
