"""The one BPF program: its source, and the -D constants that configure it for one recording.

Everything decided at start (which probes, fentry or kprobe, which kernel function, filters,
sampling, ring size) becomes a compile-time constant, so the kernel side never looks anything
up at run time and BCC attaches exactly what was compiled.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from importlib import resources

from mbrec.errors import MbrecError
from mbrec.recorder.btf import field_span, offset_cflags
from mbrec.recorder.probes import Resolved, kprobe_program

# Every ring buffer map of the BPF program -> its schema name (the one list: a program built
# without a probe group has no map for that group's rings, and the recorder skips them). One
# schema per ring keeps every record the same size, which is what makes the bulk drain cheap.
RINGS: dict[str, str] = {"mbrec_pkt_ring": "pkt",
                         "mbrec_flow_ring": "flow", "mbrec_tcp_ring": "tcp", "mbrec_sock_ring": "sock"}

# --attach kind -> the MBREC_ATTACH_<PROBE> value of bpf/mbrec.bpf.c
ATTACH_KINDS = {"fentry": 1, "kprobe": 2, "tracepoint": 3}

# The packet tracepoint programs that read the skb through a view (mbrec_tp_packet's, and the
# copy's): with ProgramConfig.tp_btf they are loaded as BTF-typed tracepoints
# (mbrec/recorder/tp_btf.py, plain loads), as are the flow hooks (recorder/flows.py); only
# net_dev_xmit, which reads no struct, stays a raw tracepoint.
TP_BTF_PROBES = frozenset({"dev_queue_xmit", "qdisc_dequeue", "dev_hard_start_xmit",
                           "eth_type_trans", "ip_rcv", "skb_copy_datagram_iter"})

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class Filters:
    """Kernel-side filters; empty tuples mean "everything"."""

    netns: tuple[int, ...] = ()
    ports: tuple[int, ...] = ()
    addrs: tuple[str, ...] = ()
    cgroup_id: int = 0
    sample_bits: int = 0


@dataclass(frozen=True)
class ProgramConfig:
    resolved: tuple[Resolved, ...]
    attach: str  # "fentry", "kprobe" or "tracepoint"
    filters: Filters = field(default_factory=Filters)
    ring_bytes: int = 16 << 20
    # kernel struct offsets from BTF (recorder/btf.py); None: compile the kernel headers (the
    # packet probes only)
    offsets: dict | None = None
    flow_cflags: tuple[str, ...] = ()  # from recorder/flows.py FlowGroup.cflags
    extra_cflags: tuple[str, ...] = ()  # e.g. -DMBREC_PERF_BASELINE (bench/ only)
    tp_btf: bool = False  # tracepoint mode: TP_BTF_PROBES as BTF-typed tracepoints


def source_dir() -> str:
    return str(resources.files("mbrec.bpf"))


def source_path() -> str:
    return os.path.join(source_dir(), "mbrec.bpf.c")


def source_text() -> str:
    with open(source_path()) as f:
        return f.read()


def addr_words(text: str) -> tuple[int, int, int, int]:
    """An address as the four little-endian u32 words the event's 16 address bytes hold."""
    addr = ipaddress.ip_address(text)
    raw = addr.packed.ljust(16, b"\0")
    w0, w1, w2, w3 = (int.from_bytes(raw[i:i + 4], "little") for i in range(0, 16, 4))
    return w0, w1, w2, w3


def _any_of(terms: list[str]) -> str:
    return "(" + "||".join(terms) + ")"


def filter_macros(f: Filters) -> list[str]:
    """The filter expressions as function-like -D macros (see the top of bpf/mbrec.bpf.c)."""
    out = []
    if f.netns:
        out.append("-DMBREC_NETNS_OK(ns)=" + _any_of([f"(ns)=={n}U" for n in f.netns]))
    if f.ports:
        out.append("-DMBREC_PORT_OK(sp,dp)=" + _any_of(
            [f"(sp)=={p}||(dp)=={p}" for p in f.ports]))
    if f.addrs:
        terms = []
        for a in f.addrs:
            w = addr_words(a)
            for side in ("saddr", "daddr"):
                terms.append("(" + "&&".join(
                    f"((u32*)(e)->{side})[{i}]=={w[i]}U" for i in range(4)) + ")")
        out.append("-DMBREC_ADDR_OK(e)=" + _any_of(terms))
    if f.cgroup_id:
        out.append(f"-DMBREC_CGROUP_ID={f.cgroup_id}ULL")
    if f.sample_bits:
        out.append(f"-DMBREC_SAMPLE_BITS={f.sample_bits}")
    return out


def ring_pages(ring_bytes: int) -> int:
    """Ring size in pages, rounded up to a power of two (the kernel requires it)."""
    pages = max(1, -(-ring_bytes // PAGE_SIZE))
    return 1 << (pages - 1).bit_length()


def cflags(cfg: ProgramConfig) -> list[str]:
    kind = ATTACH_KINDS[cfg.attach]
    flags = [f"-I{source_dir()}", f"-DMBREC_RINGBUF_PAGES={ring_pages(cfg.ring_bytes)}",
             f"-DMBREC_SOCK_COOKIE={1 if cfg.attach == 'fentry' else 0}"]
    for r in cfg.resolved:
        c = r.spec.c_name
        flags.append(f"-DMBREC_ATTACH_{c}={kind}")
        if cfg.attach == "tracepoint":  # attached by name from Python (tracepoint_attachments)
            continue
        if r.spec.name == "ip_rcv":  # IP_RCV or IP6_RCV: the core function, or the pair
            flags.append(f"-DMBREC_{c}_CORE={1 if len(r.functions) == 1 else 0}")
            if len(r.functions) == 2:
                flags.append(f"-DMBREC_FN_{c.replace('_RCV', '_LIST_RCV')}={r.functions[1]}")
        flags.append(f"-DMBREC_FN_{c}={r.functions[0]}")
    flags.extend(offset_cflags(cfg.offsets))
    if cfg.offsets is None:
        if cfg.attach == "tracepoint":
            raise MbrecError("--attach tracepoint needs the kernel's BTF "
                             "(/sys/kernel/btf/vmlinux), which this kernel lacks")
    else:
        # the spans one read copies: sk_buff for the tracepoint programs, the socket for them
        # and for the flow programs
        spans = ("SKB", "SK") if cfg.attach == "tracepoint" else ("SK",) if cfg.flow_cflags else ()
        for name in spans:
            off, length = field_span(cfg.offsets, name + "_")
            flags += [f"-DMBREC_{name}_SPAN_OFF={off}", f"-DMBREC_{name}_SPAN_LEN={length}"]
        if typed_probes(cfg):
            flags.append("-DMBREC_TP_BTF=1")
    flags.extend(cfg.flow_cflags)  # includes -DMBREC_FLOWS when the flows group is on
    flags.extend(filter_macros(cfg.filters))
    flags.extend(cfg.extra_cflags)
    return flags


def tracepoint_program(probe: str) -> str:
    """The BPF function bpf/mbrec.bpf.c defines for a probe's tracepoint."""
    return f"mbrec_tp_{probe}"


def typed_probes(cfg: ProgramConfig) -> frozenset[str]:
    """The probes whose programs load as BTF-typed tracepoints in this configuration."""
    return TP_BTF_PROBES if cfg.attach == "tracepoint" and cfg.tp_btf else frozenset()


def tracepoint_attachments(cfg: ProgramConfig) -> list[tuple[str, str]]:
    """(tracepoint event, BPF function name) pairs to attach as tracepoints (raw, or BTF-typed
    for typed_probes(cfg))."""
    if cfg.attach != "tracepoint":
        return []
    return [(tp.split(":")[1], tracepoint_program(r.spec.name))
            for r in cfg.resolved for tp in r.functions]


def kprobe_attachments(cfg: ProgramConfig) -> list[tuple[str, str]]:
    """(kernel function, BPF function name) pairs to attach by kprobe; fentry attaches at load."""
    if cfg.attach != "kprobe":
        return []
    out = []
    for r in cfg.resolved:
        out.append((r.functions[0], kprobe_program(r.spec)))
        if r.spec.name == "ip_rcv" and len(r.functions) == 2:
            out.append((r.functions[1], kprobe_program(r.spec, list_variant=True)))
    return out
