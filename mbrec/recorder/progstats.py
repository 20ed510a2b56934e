"""Per-program counters the kernel keeps: missed runs, and run time when BPF stats are on.

A BPF program never runs nested in itself on one CPU: when a softirq sends a packet while the
same probe runs in process context (fentry), or any BPF program is already running on that CPU
(kprobe), the kernel skips the program and counts a "recursion miss" in the program's stats.
Those events never reach the ring buffer, so the ring's drop counter does not see them; reading
these counters is what keeps such losses from being silent. Seen in the lab: a pure ACK whose
__ip_queue_xmit probe did not run, in a recording whose rings lost nothing.

The counters come from BPF_OBJ_GET_INFO_BY_FD (struct bpf_prog_info, Linux >= 5.12 for
recursion_misses). run_time_ns and run_cnt count only while kernel.bpf_stats_enabled is 1.
"""

from __future__ import annotations

import ctypes
import struct

from mbrec.recorder.bpfsyscall import BPF_OBJ_GET_INFO_BY_FD, SYS_BPF

# offsets in struct bpf_prog_info (include/uapi/linux/bpf.h; tests/test_recorder_progstats.py
# checks them against the header): run_time_ns, run_cnt, recursion_misses
PROG_INFO_SIZE = 232
RUN_TIME_OFF, RUN_CNT_OFF, MISSES_OFF = 192, 200, 208


def prog_counters(fd: int) -> dict[str, int] | None:
    """{"run_time_ns", "run_cnt", "recursion_misses"} of the program behind fd, or None where
    the kernel cannot say (no bpf syscall here, or an older kernel's shorter info)."""
    if SYS_BPF is None:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    info = ctypes.create_string_buffer(PROG_INFO_SIZE)
    attr = ctypes.create_string_buffer(struct.pack("<IIQ", fd, PROG_INFO_SIZE,
                                                   ctypes.addressof(info)))
    if libc.syscall(SYS_BPF, BPF_OBJ_GET_INFO_BY_FD, attr, len(attr)) != 0:
        return None
    _, info_len = struct.unpack_from("<II", attr.raw, 0)
    if info_len < MISSES_OFF + 8:
        return None
    run_time, run_cnt, misses = struct.unpack_from("<QQQ", info.raw, RUN_TIME_OFF)
    return {"run_time_ns": run_time, "run_cnt": run_cnt, "recursion_misses": misses}


def program_probes(program_names, probes: list[dict]) -> dict[str, str]:
    """Each loaded BPF program's probe, from the trace header's probe list: a program belongs to
    the probe whose kernel function (or tracepoint event, or probe name) ends its name, e.g.
    kfunc____ip_queue_xmit and mbrec_kp_ip_queue_xmit both to ip_queue_xmit."""
    from mbrec.recorder.probes import PACKET_PROBES, kprobe_program
    known = {}  # the packet probes' kprobe programs, by the name bpf/mbrec.bpf.c gives them
    for spec in PACKET_PROBES:
        known[kprobe_program(spec)] = known[kprobe_program(spec, True)] = spec.name
    keys = []
    for p in probes:
        for fn in str(p.get("function", "")).split("+"):
            keys.append((fn.rsplit(":", 1)[-1], p["name"]))
        keys.append((p["name"], p["name"]))
    keys.sort(key=lambda k: -len(k[0]))  # the most specific name first
    out = {}
    for prog in program_names:
        name = prog.decode() if isinstance(prog, bytes) else str(prog)
        if name in known:
            out[name] = known[name]
            continue
        for key, probe in keys:
            if key and name.endswith(key):
                out[name] = probe
                break
    return out


def missed_by_probe(prog_fds: dict[str, int], prog_probe: dict[str, str]) -> dict[str, int]:
    """Recursion misses per probe name, summed over that probe's programs (by program name)."""
    out: dict[str, int] = {}
    for prog, fd in prog_fds.items():
        c = prog_counters(fd)
        if c is not None and c["recursion_misses"]:
            probe = prog_probe.get(prog, prog)
            out[probe] = out.get(probe, 0) + c["recursion_misses"]
    return out
