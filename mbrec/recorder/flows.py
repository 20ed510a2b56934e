"""The `flows` probe group: 16 flow metrics, TCP events and application reads/writes.

The BPF side is bpf/flows.bpf.c (what every attach kind shares) with its hooks,
bpf/flows_function_hooks.bpf.c (fentry/kprobe) and bpf/flows_tracepoint_hooks.bpf.c (--attach
tracepoint), pasted into the one program (mbrec.bpf.c with -DMBREC_FLOWS); -D constants compile
the hooks chosen, and every kernel field is read at its BTF offset (btf.FIELDS, btf.FLOW_FIELDS).
This module decides which hooks the running kernel offers (same rules as the packet probes:
recorder/probes.py's resolve(); tracepoints preferred where one serves), turns that into -D flags,
attaches what BCC does not attach at load, and takes the periodic and final snapshots.

Hooks, by probe name (the ids in bpf/mbrec_events.h):
  tcp_state           fentry tcp_set_state (gives the flow its cookie at its first transition),
                      else the raw tracepoint sock:inet_sock_set_state
  tcp_retransmit      raw tracepoint tcp:tcp_retransmit_skb
  tcp_ack             tcp_ack exit: a snapshot after each ACK is processed (--flow-sample)
  tcp_rtt             tcp_ack_update_rtt entry: raw RTT samples (tcp_rtt_estimator is inlined)
  tcp_enter_recovery  tcp_enter_recovery entry
  tcp_timeout         tcp_retransmit_timer entry
  tcp_sendmsg         tcp_sendmsg_locked exit (+ sk_stream_wait_memory entry for the queue peak)
  tcp_recvmsg         tcp_recvmsg entry (copied_seq) and exit (bytes copied)
  flow_periodic       mbrec_flow_tick, run on demand with BPF_PROG_TEST_RUN
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from dataclasses import dataclass

from mbrec.errors import MbrecError
from mbrec.events import CONSTANTS
from mbrec.recorder.bpfsyscall import BPF_PROG_TEST_RUN, SYS_BPF, SYS_BPF_BY_MACHINE
from mbrec.recorder.btf import (FIELDS, FLOW_FIELDS, BtfError, bit_cflags, field_offsets,
                                field_span, offset_cflags, read_btf)
from mbrec.recorder.program import RINGS
from mbrec.recorder.probes import KernelFunctions, ProbeSpec, Resolved, resolve
from mbrec.recorder.program import ATTACH_KINDS

# Function hooks: (probe name, kernel function candidates, -D suffix, entry fn, return fn).
# fentry compiles KFUNC/KRETFUNC programs that BCC attaches at load; kprobe mode attaches the
# named entry/return programs below by kernel function name.
FLOW_FUNCTIONS = (
    ProbeSpec("tcp_ack", "flows", (("tcp_ack",),), "TCP_ACK"),
    ProbeSpec("tcp_rtt", "flows", (("tcp_ack_update_rtt",),), "TCP_ACK_UPDATE_RTT"),
    ProbeSpec("tcp_enter_recovery", "flows", (("tcp_enter_recovery",),), "TCP_ENTER_RECOVERY"),
    ProbeSpec("tcp_timeout", "flows", (("tcp_retransmit_timer",),), "TCP_RETRANSMIT_TIMER"),
    ProbeSpec("tcp_sendmsg", "flows", (("tcp_sendmsg_locked",),), "TCP_SENDMSG_LOCKED"),
    ProbeSpec("tcp_recvmsg", "flows", (("tcp_recvmsg",),), "TCP_RECVMSG"),
)
# Optional helpers of a probe above (no probe id of their own): missing = slightly less.
WAIT_MEMORY = ProbeSpec("tcp_sendmsg", "flows", (("sk_stream_wait_memory",),),
                        "SK_STREAM_WAIT_MEMORY")
SYN_ACK_TIMEOUT = ProbeSpec("tcp_timeout", "flows", (("tcp_syn_ack_timeout",),),
                            "TCP_SYN_ACK_TIMEOUT")  # request sockets' timeouts (TCPTimeouts)
SET_STATE_FENTRY = ProbeSpec("tcp_state", "flows", (("tcp_set_state",),), "TCP_SET_STATE")

# BPF program names per -D suffix, kprobe mode: (entry program, return program or None).
KPROBE_PROGRAMS = {
    "TCP_ACK": ("mbrec_flow_kp_tcp_ack", "mbrec_flow_kr_tcp_ack"),
    "TCP_ACK_UPDATE_RTT": ("mbrec_flow_kp_tcp_ack_update_rtt", None),
    "TCP_ENTER_RECOVERY": ("mbrec_flow_kp_tcp_enter_recovery", None),
    "TCP_RETRANSMIT_TIMER": ("mbrec_flow_kp_tcp_retransmit_timer", None),
    "TCP_SENDMSG_LOCKED": ("mbrec_flow_kp_tcp_sendmsg_locked", "mbrec_flow_kr_tcp_sendmsg_locked"),
    "TCP_RECVMSG": ("mbrec_flow_kp_tcp_recvmsg", "mbrec_flow_kr_tcp_recvmsg"),
    "SK_STREAM_WAIT_MEMORY": ("mbrec_flow_kp_sk_stream_wait_memory", None),
    "TCP_SYN_ACK_TIMEOUT": ("mbrec_flow_kp_tcp_syn_ack_timeout", None),
}

# Raw tracepoints: (probe name, "category:event", BPF program, -D suffix or "" if always built).
FLOW_TRACEPOINTS = (
    ("tcp_state", "sock:inet_sock_set_state", "mbrec_flow_tp_tcp_state", ""),
    ("tcp_retransmit", "tcp:tcp_retransmit_skb", "mbrec_flow_tp_tcp_retransmit",
     "TCP_RETRANSMIT_SKB"),
)

# --attach tracepoint (bpf/flows_tracepoint_hooks.bpf.c, and the two of FLOW_TRACEPOINTS):
# (probe name, "category:event", BPF program, -D suffix or "" if always built). The
# congestion-state tracepoint serves two probes (fast recovery and timeouts), one program.
TP_FLOW_HOOKS = (
    ("tcp_ack", "tcp:tcp_probe", "mbrec_flow_tp_tcp_ack", "TCP_PROBE"),
    FLOW_TRACEPOINTS[0],
    FLOW_TRACEPOINTS[1],
    ("tcp_enter_recovery", "tcp:tcp_cong_state_set", "mbrec_flow_tp_tcp_cong_state_set",
     "TCP_CONG_STATE_SET"),
    ("tcp_timeout", "tcp:tcp_cong_state_set", "", "TCP_CONG_STATE_SET"),
    ("tcp_sendmsg", "sock:sock_send_length", "mbrec_flow_tp_tcp_sendmsg", "SOCK_SEND_LENGTH"),
    ("tcp_recvmsg", "sock:sock_recv_length", "mbrec_flow_tp_tcp_recvmsg", "SOCK_RECV_LENGTH"),
)

# The flows group's rings: every ring of program.RINGS but the packets group's.
FLOW_RINGS = {name: schema for name, schema in RINGS.items() if schema != "pkt"}

TICK_PROGRAM = "mbrec_flow_tick"
REASON_PERIODIC = CONSTANTS["MBREC_FLOW_PERIODIC"]
REASON_STOP = CONSTANTS["MBREC_FLOW_STOP"]


@dataclass(frozen=True)
class FlowHook:
    """One attached hook: what the trace header lists for it."""

    probe: str       # probe name (events.PROBE_IDS)
    function: str    # kernel function, or "category:event" for a tracepoint
    attach: str      # "fentry", "fexit", "kprobe", "kretprobe", "raw_tracepoint", "test_run"
    macro: str = ""  # -D suffix (MBREC_ATTACH_<macro>), "" when always compiled
    programs: tuple[str, ...] = ()  # BPF programs to attach by name (kprobe/raw_tp mode)

    def header(self) -> dict:
        return {"name": self.probe, "function": self.function, "attach": self.attach,
                "probe_id": CONSTANTS[f"MBREC_PROBE_{self.probe.upper()}"], "group": "flows"}


@dataclass(frozen=True)
class FlowPlan:
    hooks: tuple[FlowHook, ...]
    missing: tuple[str, ...]  # one line per hook that could not be served, with the reason
    attach: str


_RETURN_HOOKS = {"TCP_ACK", "TCP_SENDMSG_LOCKED", "TCP_RECVMSG"}


def tracepoint_exists(name: str, tracing_dir: str = "/sys/kernel/tracing") -> bool:
    cat, event = name.split(":")
    return os.path.isdir(os.path.join(tracing_dir, "events", cat, event))


def plan_flows(kf: KernelFunctions, attach: str, tracepoints: set[str]) -> FlowPlan:
    """The hooks to use on this kernel. attach: "fentry" or "kprobe" (as for the packet probes);
    tracepoints: the "category:event" names that exist."""
    hooks, missing = [], []
    state_by_fentry = False
    if attach == "fentry":
        r = resolve(SET_STATE_FENTRY, kf)
        if isinstance(r, Resolved):
            hooks.append(FlowHook("tcp_state", r.functions[0], "fentry", "TCP_SET_STATE"))
            state_by_fentry = True
    for probe, tp, prog, macro in FLOW_TRACEPOINTS:
        if probe == "tcp_state" and state_by_fentry:
            continue
        if tp in tracepoints:
            hooks.append(FlowHook(probe, tp, "raw_tracepoint", macro, (prog,)))
        else:
            missing.append(f"{probe}: tracepoint {tp} does not exist in this kernel")
    for spec in FLOW_FUNCTIONS + (WAIT_MEMORY, SYN_ACK_TIMEOUT):
        r = resolve(spec, kf)
        if not isinstance(r, Resolved):
            missing.append(f"{spec.name}: {'; '.join(r.reasons)}")
            continue
        fn = r.functions[0]
        if attach == "fentry":
            kind = "fexit" if spec.macro in _RETURN_HOOKS else "fentry"
            if spec.macro == "TCP_RECVMSG":
                kind = "fentry+fexit"  # copied_seq at entry, bytes at exit
            hooks.append(FlowHook(spec.name, fn, kind, spec.macro))
        else:
            entry, ret = KPROBE_PROGRAMS[spec.macro]
            hooks.append(FlowHook(spec.name, fn, "kretprobe" if ret else "kprobe", spec.macro,
                                  (entry, ret) if ret else (entry,)))
    hooks.append(FlowHook("flow_periodic", TICK_PROGRAM, "test_run"))
    return FlowPlan(tuple(hooks), tuple(missing), attach)


def plan_flow_tracepoints(existing: set[str]) -> FlowPlan:
    """The tracepoint flow hooks this kernel has (existing: "category:event" names)."""
    hooks, missing = [], []
    for probe, tp, prog, macro in TP_FLOW_HOOKS:
        if tp in existing:
            hooks.append(FlowHook(probe, tp, "raw_tracepoint", macro, (prog,) if prog else ()))
        else:
            missing.append(f"{probe}: tracepoint {tp} does not exist in this kernel")
    hooks.append(FlowHook("flow_periodic", TICK_PROGRAM, "test_run"))
    return FlowPlan(tuple(hooks), tuple(missing), "tracepoint")


def flow_cflags(plan: FlowPlan, *, sample: int = 1, rtt_events: bool = False,
                ring_pages: int = 256, max_flows: int = 65536) -> list[str]:
    """-D flags for the flow programs (added to program.cflags() when the group is on): each
    hook's MBREC_ATTACH_<macro> is its attach kind, numbered as the packet probes' are."""
    if sample < 0:
        raise MbrecError(f"--flow-sample {sample}: give 0 (no per-ACK snapshots) or N >= 1 "
                         "(one snapshot every N ACKs per flow)")
    if ring_pages & (ring_pages - 1):
        raise ValueError("ring_pages must be a power of two")
    btf = read_btf()
    if btf is None:
        raise MbrecError("--probes flows needs the kernel's BTF (/sys/kernel/btf/vmlinux), "
                         "which this kernel lacks: the flow programs read kernel structs at its "
                         "offsets; record with --probes packets")
    offsets = field_offsets(btf, FLOW_FIELDS)
    # the part of tcp_sock a snapshot copies: every TP_ field (rtt_min's value is 4 bytes in)
    span_off, span_len = field_span({**field_offsets(btf, FIELDS), **offsets}, "TP_")
    flags = ["-DMBREC_FLOWS", f"-DMBREC_FLOW_SAMPLE={sample}",
             f"-DMBREC_FLOW_RING_PAGES={ring_pages}", f"-DMBREC_FLOW_MAX={max_flows}",
             f"-DMBREC_TP_SPAN_OFF={span_off}", f"-DMBREC_TP_SPAN_LEN={span_len}",
             *offset_cflags(offsets), *bit_cflags(btf)]
    flags.extend(dict.fromkeys(f"-DMBREC_ATTACH_{h.macro}={ATTACH_KINDS[HOOK_KIND[h.attach]]}"
                               for h in plan.hooks if h.macro))
    for macro, function in FEXIT_PROTOTYPES.items():  # the fexit prototypes this kernel needs
        try:
            flags.append(f"-DMBREC_{macro}_PARAMS={btf.params(function)}")
        except BtfError:
            pass  # not in this kernel: its hook is not planned either
    if rtt_events:
        flags.append("-DMBREC_FLOW_RTT_EVENTS")
    return flags


# fexit programs whose prototype lists parameters some kernels dropped: MBREC_<macro>_PARAMS
FEXIT_PROTOTYPES = {"TCP_RECVMSG": "tcp_recvmsg"}

PROGRAM = "flows.bpf.c"  # the flow programs, #included by mbrec.bpf.c
HOOKS = ("flows_function_hooks.bpf.c", "flows_tracepoint_hooks.bpf.c")  # #included by PROGRAM
# hook attach (FlowHook.attach) -> the attach kind whose number MBREC_ATTACH_<macro> takes
HOOK_KIND = {"fentry": "fentry", "fexit": "fentry", "fentry+fexit": "fentry", "kprobe": "kprobe",
             "kretprobe": "kprobe", "raw_tracepoint": "tracepoint"}


def inline_flows(source: str, header_text: str, header: str = PROGRAM) -> str:
    """source with header_text pasted in place of its #include of header: BCC only turns
    functions of the main file into programs and rewrites map calls there, so the flow programs
    (and the hooks they include) must be text of the main file, not included files."""
    line = f'#include "{header}"'
    if line not in source:
        raise ValueError(f"the BPF source has no #include \"{header}\"")
    return source.replace(line, header_text, 1)


def flows_source() -> str:
    """bpf/flows.bpf.c with its hooks pasted in."""
    from importlib import resources
    bpf = resources.files("mbrec.bpf")
    text = bpf.joinpath(PROGRAM).read_text()
    for name in HOOKS:
        text = inline_flows(text, bpf.joinpath(name).read_text(), name)
    return text


def attach_flows(bpf, plan: FlowPlan, kprobes=None, typed=None) -> list[dict]:
    """Attach the kprobes (through kprobes, recorder/kprobes.py, which counts their misses) and
    tracepoints (fentry programs were attached by BCC at load). typed(tracepoint, program), when
    given, loads and attaches a program as a BTF-typed tracepoint (recorder/tp_btf.py): the
    program was compiled for it (MBREC_TP_BTF), so every tracepoint hook goes that way. Returns
    the trace header's probe entries."""
    def raw(tp, program):
        bpf.attach_raw_tracepoint(tp=tp.encode(), fn_name=program.encode())
    attach_tracepoint, tracepoint_kind = (typed, "tp_btf") if typed else (raw, "raw_tracepoint")
    entries = []
    for h in plan.hooks:
        entry = h.header()
        if h.attach == "raw_tracepoint":
            entry["attach"] = tracepoint_kind
            if h.programs:
                attach_tracepoint(h.function.split(":")[1], h.programs[0])
        elif h.attach in ("kprobe", "kretprobe"):
            kprobes.attach(bpf, h.function, h.programs[0])
            if len(h.programs) > 1:
                kprobes.attach(bpf, h.function, h.programs[1], ret=True, maxactive=64)
        entries.append(entry)
    return entries


# ---- on-demand snapshots: BPF_PROG_TEST_RUN of a raw_tp program with (cookie, reason) ----

class _TestRunAttr(ctypes.Structure):
    """union bpf_attr, the BPF_PROG_TEST_RUN member (include/uapi/linux/bpf.h)."""

    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
                ("batch_size", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]




class FlowTicker:
    """Snapshots of every live flow: every `interval_s` (tick()) and once at stop (stop()).

    The live flows are the keys of the kernel's per-flow map; for each, the tick program reads
    the socket and emits a record with the given reason, or drops the key if the socket is gone.
    """

    def __init__(self, bpf, interval_s: float, bpf_module=None):
        if SYS_BPF is None:
            raise MbrecError(f"the flows group's snapshots call bpf(2), whose number mbrec does not "
                             f"know on {os.uname().machine} (it knows "
                             f"{', '.join(SYS_BPF_BY_MACHINE)}); record with --probes packets")
        self.bpf = bpf
        self.interval_ns = int(interval_s * 1e9) if interval_s > 0 else 0
        bpf_cls = bpf_module.BPF if bpf_module is not None else type(bpf)
        self.prog_fd = bpf.load_func(TICK_PROGRAM.encode(), bpf_cls.RAW_TRACEPOINT).fd
        self.flows = bpf[b"mbrec_flows"]
        self._libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._args = (ctypes.c_uint64 * 2)()
        self._attr = _TestRunAttr(prog_fd=self.prog_fd, ctx_size_in=16,
                                  ctx_in=ctypes.addressof(self._args))
        self.next_ns = time.monotonic_ns() + self.interval_ns
        self.snapshots = 0
        self.gone = 0

    def _run(self, cookie: int, reason: int) -> int:
        self._args[0] = cookie
        self._args[1] = reason
        self._attr.retval = 0
        if self._libc.syscall(SYS_BPF, BPF_PROG_TEST_RUN, ctypes.byref(self._attr),
                              ctypes.sizeof(self._attr)) != 0:
            err = ctypes.get_errno()
            raise MbrecError(f"flow snapshot program failed to run ({os.strerror(err)}): "
                             "the kernel must support BPF_PROG_TEST_RUN for raw tracepoints "
                             "(Linux 5.10+); use --flow-interval 0 to go without")
        return self._attr.retval

    def snapshot_all(self, reason: int) -> int:
        """One record per live flow; returns how many were taken."""
        taken = 0
        for key in list(self.flows.keys()):
            if self._run(key.value, reason) == 0:
                taken += 1
            else:
                self.gone += 1
        self.snapshots += taken
        return taken

    def tick(self, now_ns: int | None = None) -> int:
        """Call from the drain loop: snapshots every live flow once per interval."""
        if not self.interval_ns:
            return 0
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        if now_ns < self.next_ns:
            return 0
        self.next_ns = now_ns + self.interval_ns
        return self.snapshot_all(REASON_PERIODIC)

    def stop(self) -> int:
        """Final record (reason STOP) of every flow still open when recording stops."""
        return self.snapshot_all(REASON_STOP)


# ---- wiring into a recording (mbrec/recorder/session.py calls these) ----

def read_tracepoints() -> set[str]:
    """The flow group's tracepoints that exist on the running kernel."""
    from mbrec.recorder import environment as env
    tracing_dir = os.path.dirname(env.tracing_file("available_filter_functions"))
    return {tp for _, tp, _, _ in FLOW_TRACEPOINTS if tracepoint_exists(tp, tracing_dir)}


class FlowGroup:
    """The flows group of one recording: plan, -D flags, source, attach, snapshots."""

    def __init__(self, plan: FlowPlan, interval_s: float = 1.0, sample: int = 1,
                 ring_pages: int = 256):
        if interval_s < 0:
            raise MbrecError(f"--flow-interval {interval_s}: give seconds >= 0 (0 = no periodic "
                             "snapshots, only per-ACK, close and stop records)")
        self.plan = plan
        self.interval_s = interval_s
        self.sample = sample
        self.cflags = flow_cflags(plan, sample=sample, ring_pages=ring_pages)
        self.ticker: FlowTicker | None = None
        self.header_probes: list[dict] = []

    @classmethod
    def for_kernel(cls, kf: KernelFunctions, attach: str, interval_s: float, sample: int,
                   ring_pages: int = 256):
        plan = plan_flows(kf, attach, read_tracepoints())
        needed = {"tcp_state", "tcp_ack"}
        broken = [m for m in plan.missing if m.split(":")[0] in needed]
        if broken:
            raise MbrecError("the flows group cannot run here: " + "; ".join(broken))
        return cls(plan, interval_s, sample, ring_pages)

    @classmethod
    def for_tracepoints(cls, interval_s: float, sample: int, ring_pages: int = 256):
        from mbrec.recorder import environment as env
        plan = plan_flow_tracepoints(env.existing_tracepoints({tp for _, tp, _, _ in TP_FLOW_HOOKS}))
        broken = [m for m in plan.missing if m.split(":")[0] == "tcp_state"]
        if broken:
            raise MbrecError("the flows group cannot run on tracepoints here: " + "; ".join(broken))
        return cls(plan, interval_s, sample, ring_pages)

    @property
    def probe_ids(self) -> list[int]:
        return sorted({CONSTANTS[f"MBREC_PROBE_{h.probe.upper()}"] for h in self.plan.hooks})

    def source(self, text: str) -> str:
        return inline_flows(text, flows_source())

    def attach(self, bpf, kprobes=None, typed=None) -> list[dict]:
        entries = attach_flows(bpf, self.plan, kprobes, typed)
        self.ticker = FlowTicker(bpf, self.interval_s)
        return entries

    def tick(self) -> None:
        if self.ticker:
            self.ticker.tick()

    def stop(self) -> None:
        if self.ticker:
            self.ticker.stop()
