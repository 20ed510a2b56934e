"""Kprobes registered through tracefs, so that every run the kernel did not make is counted.

A kprobe program can lose runs two ways, neither of which reaches the ring buffer's drop
counter: the kprobe itself is skipped (it fired while another kprobe ran on that CPU: the
kprobe's ``nmissed``), or the kprobe ran but ``trace_call_bpf`` skipped the program because a
BPF program was already running on that CPU. Linux 6.7 counts the second in the program's
``recursion_misses``; 6.1 counts it nowhere. BCC attaches kprobes through the perf kprobe PMU,
whose probes no file lists, so neither count can be read for them.

mbrec therefore registers each kprobe in ``kprobe_events`` itself (``p:mbrec/mbrec_<pid>_<n>
FUNCTION``, ``r``/``rN`` for return probes) and attaches the program to that event as to a
tracepoint. ``kprobe_profile`` then lists the event's hits and misses, and with BPF run
statistics on (``BPF_ENABLE_STATS``, held by an fd for the recording's life) the program's run
count: skipped runs = hits - runs (or the program's recursion misses, where the kernel counts
them and they are larger), lost = skipped + nmissed. Every kernel since 5.8 has all of this.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import struct
from dataclasses import dataclass

from mbrec.errors import MbrecError
from mbrec.recorder.bpfsyscall import BPF_ENABLE_STATS, BPF_STATS_RUN_TIME, SYS_BPF

TRACING_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
GROUP = "mbrec"
_EVENT_RE = re.compile(rf"^[pr]\d*:{GROUP}/(mbrec_(\d+)_\w+)\s", re.M)



def tracing_dir() -> str | None:
    """Where tracefs is mounted with kprobe_events, or None."""
    for d in TRACING_DIRS:
        if os.path.exists(os.path.join(d, "kprobe_events")):
            return d
    return None


def parse_profile(text: str) -> dict[str, tuple[int, int]]:
    """kprobe_profile: "  EVENT  NHIT  NMISSED" per line -> {event: (nhit, nmissed)}."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            out[parts[0]] = (int(parts[1]), int(parts[2]))
    return out


def enable_run_stats() -> int | None:
    """An fd that keeps BPF run statistics (run_cnt, run_time_ns) on while it is open, or None
    where the kernel refuses (before 5.8, or without CAP_SYS_ADMIN)."""
    if SYS_BPF is None:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(struct.pack("<I", BPF_STATS_RUN_TIME), 16)
    fd = libc.syscall(SYS_BPF, BPF_ENABLE_STATS, attr, len(attr))
    return fd if fd >= 0 else None


@dataclass
class _Probe:
    event: str
    function: str
    program: str
    prog_fd: int
    perf_fd: int = -1


class TracefsKprobes:
    """The kprobes of one recording: registered, attached, counted, removed."""

    def __init__(self, lib, tracing: str | None = None):
        self.lib = lib  # BCC's libbcc (bcc.libbcc.lib): bpf_attach_tracepoint, bpf_close_perf_event_fd
        self.dir = tracing or tracing_dir()
        if self.dir is None:
            raise MbrecError("kprobes need tracefs with kprobe_events (mount -t tracefs tracefs "
                             "/sys/kernel/tracing); or use --attach fentry or tracepoint")
        self.tag = f"mbrec_{os.getpid()}"
        self.probes: list[_Probe] = []
        self.stats_fd = enable_run_stats()
        remove_stale(self.dir)

    def _write(self, line: str) -> None:
        _append(os.path.join(self.dir, "kprobe_events"), line)

    def attach(self, bpf, function: str, program: str, ret: bool = False, maxactive: int = 0):
        """Register a kprobe (a return probe with ret) on function and attach the BPF program."""
        fn = bpf.load_func(program.encode(), bpf.KPROBE)
        event = f"{self.tag}_{len(self.probes)}"
        kind = (f"r{maxactive or ''}" if ret else "p")
        try:
            self._write(f"{kind}:{GROUP}/{event} {function}")
        except OSError as e:
            raise MbrecError(f"cannot register a kprobe on {function} in {self.dir}/kprobe_events "
                             f"({os.strerror(e.errno or errno.EINVAL)}): it is not traceable on "
                             "this kernel") from None
        probe = _Probe(event, function, program, fn.fd)
        self.probes.append(probe)
        probe.perf_fd = self.lib.bpf_attach_tracepoint(fn.fd, GROUP.encode(), event.encode())
        if probe.perf_fd < 0:
            raise MbrecError(f"cannot attach {program} to the kprobe on {function} "
                             f"({os.strerror(-probe.perf_fd) if probe.perf_fd < -1 else 'failed'})")

    def profile(self) -> dict[str, tuple[int, int]]:
        try:
            with open(os.path.join(self.dir, "kprobe_profile")) as f:
                return parse_profile(f.read())
        except OSError:
            return {}

    def counts(self) -> dict[str, tuple[int, int]]:
        """{program: (hits, kprobe misses)} summed over the program's kprobes."""
        profile = self.profile()
        out: dict[str, tuple[int, int]] = {}
        for p in self.probes:
            hit, missed = profile.get(p.event, (0, 0))
            h, m = out.get(p.program, (0, 0))
            out[p.program] = (h + hit, m + missed)
        return out

    def prog_fds(self) -> dict[str, int]:
        return {p.program: p.prog_fd for p in self.probes}

    def close(self) -> None:
        """Detach every program and remove every kprobe this recording registered."""
        for p in self.probes:
            if p.perf_fd >= 0:
                self.lib.bpf_close_perf_event_fd(p.perf_fd)
                p.perf_fd = -1
        for p in self.probes:
            try:
                self._write(f"-:{GROUP}/{p.event}")
            except OSError:
                pass
        self.probes = []
        if self.stats_fd is not None:
            os.close(self.stats_fd)
            self.stats_fd = None


def _append(path: str, line: str) -> None:
    """One write with O_APPEND (open(path, "a") seeks to the end first, which tracefs refuses
    with EINVAL; an append without O_APPEND would clear every other kprobe)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def remove_stale(tracing: str) -> None:
    """Remove kprobes a recorder that no longer runs left registered (it was killed)."""
    try:
        with open(os.path.join(tracing, "kprobe_events")) as f:
            text = f.read()
    except OSError:
        return
    for event, pid in _EVENT_RE.findall(text):
        if not os.path.exists(f"/proc/{pid}"):
            try:
                _append(os.path.join(tracing, "kprobe_events"), f"-:{GROUP}/{event}")
            except OSError:
                pass


def kprobe_losses(kprobes: TracefsKprobes, prog_probe: dict[str, str], counters) -> tuple[dict, dict]:
    """({probe: runs skipped}, {probe: kprobe misses}) of the kprobe programs. counters(fd) gives
    a program's {"run_cnt", "recursion_misses"} (recorder/progstats.py)."""
    skipped: dict[str, int] = {}
    missed: dict[str, int] = {}
    fds = kprobes.prog_fds()
    for program, (hits, nmissed) in kprobes.counts().items():
        probe = prog_probe.get(program, program)
        c = counters(fds[program]) or {}
        runs_skipped = c.get("recursion_misses", 0)
        if kprobes.stats_fd is not None and "run_cnt" in c:
            runs_skipped = max(runs_skipped, hits - c["run_cnt"])
        if runs_skipped > 0:
            skipped[probe] = skipped.get(probe, 0) + runs_skipped
        if nmissed:
            missed[probe] = missed.get(probe, 0) + nmissed
    return skipped, missed
