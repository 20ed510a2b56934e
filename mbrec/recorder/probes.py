"""Which kernel function each probe attaches to, on the running kernel, and how.

Pure functions over the text of /sys/kernel/tracing/available_filter_functions (what ftrace,
kprobes and fentry can attach to) and /proc/kallsyms (to see clones and duplicates), so the
rules are tested on sample text without a kernel.

Rules: take the first candidate that is traceable by its exact name and unique in kallsyms;
never a compiler clone (``name.isra.0``, ``.constprop.0``, ``.part.0``, ``.cold``): its
arguments may have been rewritten, so the probe would read the wrong registers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mbrec.events import PROBE_IDS

_CLONE_RE = re.compile(r"^([A-Za-z0-9_]+)\.(isra|constprop|part|cold|llvm|lto_priv)\b")


@dataclass(frozen=True)
class ProbeSpec:
    """One probe: its name in events, and the kernel functions that can serve it, best first.

    Each candidate is a tuple of functions that are all attached together (the IP receive
    layer without ip_rcv_core needs both ip_rcv and ip_list_rcv). ``macro`` is the suffix of
    the -D names the BPF program uses (MBREC_ATTACH_<macro>, MBREC_FN_<macro>); two specs of one
    layer (its IPv4 and its IPv6 function) share the name and differ in macro. An ``ipv6`` probe
    is optional: a kernel without it leaves that layer out for IPv6 packets instead of failing.
    """

    name: str
    group: str
    candidates: tuple[tuple[str, ...], ...]
    macro: str = ""
    ipv6: bool = False

    @property
    def optional(self) -> bool:
        return self.ipv6

    @property
    def label(self) -> str:
        """The probe's name, and the family where a layer has one function per family."""
        return f"{self.name} (IPv6)" if self.ipv6 else self.name

    @property
    def probe_id(self) -> int:
        return PROBE_IDS[self.name]

    @property
    def c_name(self) -> str:
        return self.macro or self.name.upper()


PACKET_PROBES = (
    ProbeSpec("tcp_transmit_skb", "packets", (("__tcp_transmit_skb",), ("tcp_transmit_skb",))),
    ProbeSpec("ip_queue_xmit", "packets", (("__ip_queue_xmit",), ("ip_queue_xmit",))),
    ProbeSpec("dev_queue_xmit", "packets", (("__dev_queue_xmit",), ("dev_queue_xmit",))),
    ProbeSpec("dev_hard_start_xmit", "packets", (("dev_hard_start_xmit",),)),
    ProbeSpec("eth_type_trans", "packets", (("eth_type_trans",),)),
    # ip_rcv_core is on both the single (ip_rcv) and the list (ip_list_rcv) receive path.
    ProbeSpec("ip_rcv", "packets", (("ip_rcv_core",), ("ip_rcv", "ip_list_rcv"))),
    ProbeSpec("tcp_v4_rcv", "packets", (("tcp_v4_rcv",),)),
    ProbeSpec("skb_copy_datagram_iter", "packets", (("skb_copy_datagram_iter",),)),
    # The IPv6 functions of the three layers that have one per family (the device layers and
    # the copy serve both). An IPv4-mapped socket (a v6 socket talking to an IPv4 peer) sends and
    # receives through the IPv4 functions, so these see IPv6 packets only. inet6_csk_xmit is
    # TCP's queue_xmit for IPv6, as __ip_queue_xmit is for IPv4; ip6_xmit (which it calls) also
    # sends SYN-ACKs and control replies on another socket, which the probe skips.
    ProbeSpec("ip_queue_xmit", "packets", (("inet6_csk_xmit",), ("ip6_xmit",)), "IP6_QUEUE_XMIT",
              ipv6=True),
    ProbeSpec("ip_rcv", "packets", (("ip6_rcv_core",), ("ipv6_rcv", "ipv6_list_rcv")), "IP6_RCV",
              ipv6=True),
    ProbeSpec("tcp_v4_rcv", "packets", (("tcp_v6_rcv",),), "TCP_V6_RCV", ipv6=True),
)

# --attach tracepoint: the kernel's stable tracepoints, each recorded as the layer it stands
# for (same probe ids, so the analysis reads them as those layers; docs/recorder.md has the
# table). Candidates are "category:event" names; a probe attaches to every one of them the
# kernel has (the driver hand-over has one tracepoint per receive API, each frame passes one).
# There is no tracepoint at tcp_transmit_skb, ip_queue_xmit or tcp_v4_rcv: those layers are
# absent in this mode.
RX_HANDOVER_TRACEPOINTS = ("net:netif_rx", "net:napi_gro_receive_entry",
                           "net:netif_receive_skb_entry", "net:netif_receive_skb_list_entry")
TRACEPOINT_PROBES = (
    ProbeSpec("dev_queue_xmit", "packets", (("net:net_dev_queue",),)),
    ProbeSpec("qdisc_dequeue", "packets", (("qdisc:qdisc_dequeue",),)),
    ProbeSpec("dev_hard_start_xmit", "packets", (("net:net_dev_start_xmit",),)),
    ProbeSpec("net_dev_xmit", "packets", (("net:net_dev_xmit",),)),
    ProbeSpec("eth_type_trans", "packets", (RX_HANDOVER_TRACEPOINTS,)),
    ProbeSpec("ip_rcv", "packets", (("net:netif_receive_skb",),)),
    ProbeSpec("skb_copy_datagram_iter", "packets", (("skb:skb_copy_datagram_iovec",),)),
)

# The probe groups of --probes: packets (the function probes above) and flows, which
# recorder/flows.py plans for itself.
GROUPS = ("packets", "flows")


@dataclass(frozen=True)
class KernelFunctions:
    """What the running kernel lets us attach to."""

    traceable: frozenset[str]
    kallsyms_count: dict[str, int] = field(default_factory=dict)  # text symbols by name
    clones: dict[str, list[str]] = field(default_factory=dict)  # base name -> clone names


def parse_available_filter_functions(text: str) -> frozenset[str]:
    """Names from available_filter_functions: "name" or "name [module]" per line."""
    names = set()
    for line in text.splitlines():
        parts = line.split()
        if parts:
            names.add(parts[0])
    return frozenset(names)


def parse_kallsyms(text: str) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Text-symbol counts by name, and compiler clones by the name they were cloned from."""
    counts: dict[str, int] = {}
    clones: dict[str, list[str]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or parts[1] not in ("T", "t"):
            continue
        name = parts[2]
        counts[name] = counts.get(name, 0) + 1
        m = _CLONE_RE.match(name)
        if m:
            clones.setdefault(m.group(1), []).append(name)
    return counts, clones


def kernel_functions(filter_text: str, kallsyms_text: str) -> KernelFunctions:
    counts, clones = parse_kallsyms(kallsyms_text)
    return KernelFunctions(parse_available_filter_functions(filter_text), counts, clones)


def why_not(fn: str, kf: KernelFunctions) -> str | None:
    """None if fn can be probed by name, else the reason it cannot."""
    if "." in fn:
        return f"{fn} is a compiler clone (arguments may differ)"
    count = kf.kallsyms_count.get(fn, 0)
    if fn not in kf.traceable:
        clones = sorted(kf.clones.get(fn, ()))
        clone_note = (f" ({', '.join(clones)} is a compiler clone whose arguments may differ)"
                      if clones else "")
        if count:
            return f"{fn} is in kallsyms but not traceable (inlined wrapper or notrace){clone_note}"
        if clones:
            return (f"{fn} exists only as {', '.join(clones)} (a compiler clone whose "
                    "arguments may differ)")
        return f"{fn} does not exist in this kernel"
    if count > 1:
        return f"{fn} is defined {count} times in kallsyms (ambiguous by name)"
    return None


@dataclass(frozen=True)
class Resolved:
    spec: ProbeSpec
    functions: tuple[str, ...]


@dataclass(frozen=True)
class Unresolved:
    spec: ProbeSpec
    reasons: tuple[str, ...]


def resolve(spec: ProbeSpec, kf: KernelFunctions) -> Resolved | Unresolved:
    reasons = []
    for candidate in spec.candidates:
        problems = [r for r in (why_not(fn, kf) for fn in candidate) if r]
        if not problems:
            return Resolved(spec, candidate)
        reasons.extend(problems)
    return Unresolved(spec, tuple(dict.fromkeys(reasons)))


def resolve_all(specs, kf: KernelFunctions) -> tuple[list[Resolved], list[Unresolved]]:
    done: list = []
    missing: list = []
    for spec in specs:
        r = resolve(spec, kf)
        (done if isinstance(r, Resolved) else missing).append(r)
    return done, missing


def resolve_tracepoints(specs, existing: set[str]) -> tuple[list[Resolved], list[str]]:
    """The tracepoint probes this kernel has (``existing``: "category:event" names), each with
    every candidate tracepoint that exists; and one line per probe it lacks."""
    done, missing = [], []
    for spec in specs:
        present = tuple(tp for tp in spec.candidates[0] if tp in existing)
        if present:
            done.append(Resolved(spec, present))
        else:
            missing.append(f"{spec.name}: no tracepoint {' / '.join(spec.candidates[0])}")
    return done, missing


def choose_attach(mode: str, fentry_supported: bool) -> str:
    """The attach kind for --attach MODE: auto means fentry where the kernel supports it."""
    if mode == "auto":
        return "fentry" if fentry_supported else "kprobe"
    return mode


def kprobe_program(spec: ProbeSpec, list_variant: bool = False) -> str:
    """The BPF function bpf/mbrec.bpf.c defines for a probe's kprobe (the IP receive layer's
    list function has its own)."""
    c = spec.c_name.lower()
    return f"mbrec_kp_{c.replace('_rcv', '_list_rcv')}" if list_variant else f"mbrec_kp_{c}"


def header_probes(resolved: list[Resolved], attach: str,
                  typed: frozenset[str] = frozenset()) -> list[dict]:
    """The trace header's "probes" list: one entry per attached kernel function. typed: the
    probes attached as BTF-typed tracepoints ("tp_btf"), the others of tracepoint mode being
    raw tracepoints."""
    def kind(name):
        if attach != "tracepoint":
            return attach
        return "tp_btf" if name in typed else "raw_tracepoint"
    return [{"name": r.spec.name, "function": fn, "attach": kind(r.spec.name),
             "probe_id": r.spec.probe_id} for r in resolved for fn in r.functions]
