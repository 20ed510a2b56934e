"""What the lab VM tests share: when they can run, and one way to run the lab."""

import os
import shutil
import subprocess
import sys

import numpy as np

from mbrec.events import PROBE_IDS


def vm_skip_reason() -> str | None:
    """Why the lab VM cannot run here, or None."""
    if os.geteuid() != 0:
        return "the lab needs root"
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
    from mbrec.lab import image
    if image.cached_image() is None and shutil.which("debootstrap") is None:
        return "no cached lab image and no debootstrap to build one (apt-get install debootstrap)"
    return None


def lab(*args, timeout=1800):
    """`mbrec lab ARGS` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "mbrec", "lab", *args], capture_output=True,
                          text=True, timeout=timeout)


def check_modes(check: dict, verdict: str = "fentry") -> tuple[dict, set]:
    """`mbrec record --check --json` from a stock kernel: the verdict, every attach kind usable;
    returns the modes by kind and the probe names every kind must resolve (IPv6 ones too)."""
    from mbrec.events import PACKET_PROBES
    assert check["verdict"] == verdict
    modes = {m["kind"]: m for m in check["modes"]}
    assert all(modes[k]["usable"] for k in ("fentry", "kprobe", "tracepoint")), modes
    v6 = {f"{p} (IPv6)" for p in ("ip_queue_xmit", "ip_rcv", "tcp_v4_rcv")}
    return modes, set(PACKET_PROBES) | v6


# ---- pure helpers: byte-range coverage per flow ----

def flow_keys(pkt):
    """One hashable key per event: (saddr, daddr, sport, dport) in packet orientation."""
    raw = np.zeros(len(pkt), dtype=[("s", "V16"), ("d", "V16"), ("sp", "<u2"), ("dp", "<u2")])
    raw["s"] = pkt["saddr"].view("V16").ravel()
    raw["d"] = pkt["daddr"].view("V16").ravel()
    raw["sp"] = pkt["sport"]
    raw["dp"] = pkt["dport"]
    return raw


def data(pkt, probe):
    sel = pkt[(pkt["probe"] == PROBE_IDS[probe]) & (pkt["len"] > 0)]
    return sel


def uncovered(need, have) -> list:
    """Ranges [seq, end_seq) of `need` not covered by the union of the ranges in `have` of the
    same flow. Sequence numbers are taken relative to 1 GiB before the flow's first needed seq
    (mod 2^32), so segments that arrived out of order, below the first one, stay in range."""
    misses = []
    nk, hk = flow_keys(need), flow_keys(have)
    for key in np.unique(nk):
        n = need[nk == key]
        h = have[hk == key]
        base = (int(n["seq"][0]) - (1 << 30)) % (1 << 32)
        rel = lambda a: (a.astype(np.int64) - base) % (1 << 32)  # noqa: E731
        ns, ne = rel(n["seq"]), rel(n["seq"]) + n["len"].astype(np.int64)
        hs, he = rel(h["seq"]), rel(h["seq"]) + h["len"].astype(np.int64)
        order = np.argsort(hs)
        merged = []
        for s, e in zip(hs[order], he[order]):
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        starts = np.array([m[0] for m in merged] or [0])
        ends = np.array([m[1] for m in merged] or [0])
        for s, e in zip(ns, ne):
            i = np.searchsorted(starts, s, side="right") - 1
            if not merged or i < 0 or ends[i] < e:
                misses.append((key, int(s), int(e)))
    return misses
