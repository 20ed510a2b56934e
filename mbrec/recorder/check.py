"""`mbrec record --check`: whether this host can record, and how, without recording.

Every fact the recorder depends on is looked at the way the recorder itself will use it: the
kernel functions and tracepoints are resolved by the same code (recorder/probes.py), and each
attach kind is tried for real by loading and attaching one empty program (where the process may
load BPF at all). Each problem comes with the package or setting that fixes it. The verdict is
the attach kind `mbrec record --attach MODE` would use; exit 0 when there is one.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from mbrec.errors import MbrecError
from mbrec.recorder import environment as env
from mbrec.recorder.probes import (PACKET_PROBES, TRACEPOINT_PROBES, resolve_all,
                                   resolve_tracepoints)

ATTACH_ORDER = ("fentry", "kprobe", "tracepoint")  # what --attach auto tries, best first
PRIVILEGES = ("root (or CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN): loading BPF programs, "
              "attaching probes, reading /proc/kallsyms and tracefs")
# one function per program type: BCC loads a function once, with the type of its first use
EMPTY_PROGRAM = ("int mbrec_check_kprobe(void *ctx) { return 0; }\n"
                 "int mbrec_check_raw_tp(void *ctx) { return 0; }\n"
                 "int mbrec_check_tp_btf(unsigned long long *ctx) { return 0; }\n")


@dataclass
class Fact:
    name: str
    ok: bool | None          # None: could not be looked at (said in detail)
    detail: str
    fix: str = ""


@dataclass
class AttachMode:
    kind: str
    usable: bool
    detail: str
    probes: dict = field(default_factory=dict)   # probe name -> function(s) or tracepoint(s)
    missing: list = field(default_factory=list)  # probes this mode cannot serve, with why


@dataclass
class Check:
    facts: list[Fact]
    modes: list[AttachMode]
    requested: str
    verdict: str | None      # the attach kind recording would use, None: it cannot
    privileges: str = PRIVILEGES

    def as_dict(self) -> dict:
        return asdict(self)


def _fact(name, fn) -> Fact:
    try:
        return fn()
    except MbrecError as e:
        return Fact(name, False, str(e))


def run_check(requested: str = "auto", root: bool | None = None) -> Check:
    """root: whether to try attaching (default: whether this process is root)."""
    release = os.uname().release
    root = os.geteuid() == 0 if root is None else root
    facts = [
        Fact("kernel", env.kernel_version(release) >= env.MIN_RINGBUF_KERNEL,
             f"{release} ({os.uname().machine}); BPF ring buffers need 5.8 or newer",
             "" if env.kernel_version(release) >= env.MIN_RINGBUF_KERNEL
             else "upgrade to Linux 5.8 or newer"),
        Fact("btf", os.path.exists("/sys/kernel/btf/vmlinux"), "/sys/kernel/btf/vmlinux "
             + ("present: kernel structs read at BTF offsets" if
                os.path.exists("/sys/kernel/btf/vmlinux") else "missing"),
             "" if os.path.exists("/sys/kernel/btf/vmlinux") else
             "a kernel built with CONFIG_DEBUG_INFO_BTF (Debian's are), or this kernel's "
             f"headers: apt-get install linux-headers-{release}"),
        Fact("privileges", root, "running as root" if root else "not root: the attach kinds "
             "are resolved but not tried", "" if root else "run as root (sudo mbrec record "
             "--check)"),
    ]
    facts.append(_headers_fact(release))
    try:  # as the recorder does: BCC is pointed at the header tree found above
        env.check_headers(release)
    except MbrecError:
        pass
    bcc, bcc_fact = _bcc()
    facts.append(bcc_fact)
    facts.append(_fact("tracefs", lambda: Fact(
        "tracefs", True, os.path.dirname(env.tracing_file("available_events")))))
    kf, kf_fact = _kernel_functions()
    facts.append(kf_fact)
    modes = _attach_modes(kf, bcc if root else None)
    usable = {m.kind for m in modes if m.usable}
    basics = all(f.ok is not False for f in facts if f.name in ("kernel", "bcc", "privileges"))
    if not basics:
        verdict = None
    elif requested == "auto":
        verdict = next((k for k in ATTACH_ORDER if k in usable), None)
    else:
        verdict = requested if requested in usable else None
    return Check(facts, modes, requested, verdict)


def _headers_fact(release: str) -> Fact:
    build = f"/lib/modules/{release}/build"
    if os.environ.get("BCC_KERNEL_SOURCE"):
        return Fact("headers", True, f"BCC_KERNEL_SOURCE={os.environ['BCC_KERNEL_SOURCE']}")
    if os.path.isdir(build):
        return Fact("headers", True, f"{build}: this kernel's own")
    if os.path.exists("/sys/kernel/kheaders.tar.xz"):
        return Fact("headers", True, "/sys/kernel/kheaders.tar.xz: this kernel's own")
    if os.path.isdir("/usr/src") and any(n.startswith("linux-headers-") and
                                         n.endswith("-common") for n in os.listdir("/usr/src")):
        return Fact("headers", True, f"none of {release}'s own; another Debian kernel's, "
                    "which serve BCC's helpers (mbrec reads kernel structs at BTF offsets)")
    return Fact("headers", False, f"none: {build} does not exist and no Debian header "
                "package is installed", f"apt-get install linux-headers-{release}, or where "
                "that does not exist, any Debian kernel's: apt-get install linux-headers-amd64")


def _bcc():
    try:
        bcc = env.import_bcc()
    except MbrecError as e:
        return None, Fact("bcc", False, str(e), "apt-get install python3-bpfcc")
    version = getattr(bcc, "__version__", "unknown")
    return bcc, Fact("bcc", True, f"BCC {version} ({os.path.dirname(bcc.__file__)})")


def _kernel_functions():
    try:
        kf = env.read_kernel_functions()
    except MbrecError as e:
        return None, Fact("kernel functions", False, str(e).split("; record with")[0],
                          "a kernel with kprobes and ftrace (a stock distribution kernel), or "
                          "--attach tracepoint")
    return kf, Fact("kernel functions", True, f"available_filter_functions lists "
                    f"{len(kf.traceable)} functions")


def _attach_modes(kf, bcc) -> list[AttachMode]:
    """fentry, kprobe and tracepoint, each resolved, then tried with one module of empty
    programs (one BCC compile where everything works: compiling is most of the check's time,
    minutes under emulation): a fentry program on the first packet function (BCC attaches it
    at load), a kprobe on the same function and a raw tracepoint program."""
    fentry = kprobe = None
    if kf is None:
        fentry, kprobe = (AttachMode(k, False, "the kernel's functions cannot be traced here")
                          for k in ("fentry", "kprobe"))
        functions = {}
    else:
        resolved, missing = resolve_all(PACKET_PROBES, kf)
        functions = {r.spec.label: "+".join(r.functions) for r in resolved}
        functions.update({m.spec.label: "absent: IPv6 packets lack this layer"
                          for m in missing if m.spec.optional})
        missing = [m for m in missing if not m.spec.optional]
        if missing:
            why = [f"{m.spec.name}: {' / '.join(m.reasons)}" for m in missing]
            fentry, kprobe = (AttachMode(k, False, "probes missing on this kernel", functions,
                                         why) for k in ("fentry", "kprobe"))
        fn = resolved[0].functions[0] if resolved else None
    tracepoint = _tracepoints()
    if bcc is None:
        for m in (fentry, kprobe, tracepoint):
            if m is not None and m.usable:
                m.usable, m.detail = False, "not tried (needs root and BCC)"
        return [fentry or AttachMode("fentry", False, "not tried (needs root and BCC)",
                                     functions),
                kprobe or AttachMode("kprobe", False, "not tried (needs root and BCC)",
                                     functions), tracepoint]
    if fentry is None and not bcc.BPF.support_kfunc():
        fentry = AttachMode("fentry", False, "this kernel (or BCC) has no BPF trampolines",
                            functions)
    tp = tracepoint.probes.get("dev_hard_start_xmit", "").split("+")[0].split(":")[-1] \
        if tracepoint.usable else None
    text = EMPTY_PROGRAM
    if fentry is None:
        text += f"KFUNC_PROBE({fn}) {{ return 0; }}\n"
    b, error = _load(bcc, text)
    if b is None and fentry is None:  # the fentry program is what failed: without it
        fentry = AttachMode("fentry", False, f"attaching an empty fentry program to {fn} "
                            f"failed: {error}", functions)
        b, error = _load(bcc, EMPTY_PROGRAM)
    if b is None:
        return [m or AttachMode(k, False, f"BPF programs do not load: {error}", functions)
                for k, m in (("fentry", fentry), ("kprobe", kprobe))] + [
            AttachMode("tracepoint", False, f"BPF programs do not load: {error}",
                       tracepoint.probes, tracepoint.missing)]
    try:
        if fentry is None:
            fentry = AttachMode("fentry", True, f"an empty program attached to {fn}",
                                functions)
        if kprobe is None:  # as mbrec record attaches kprobes: through tracefs (recorder/kprobes.py)
            from mbrec.recorder.kprobes import TracefsKprobes
            kprobes: list = []

            def attach_kprobe():
                kprobes.append(TracefsKprobes(bcc.libbcc.lib))
                kprobes[0].attach(b, fn, "mbrec_check_kprobe")

            error = _attach(attach_kprobe)
            stats = bool(kprobes) and kprobes[0].stats_fd is not None
            for k in kprobes:
                k.close()
            kprobe = AttachMode("kprobe", not error, f"attaching an empty program to {fn} "
                                f"failed: {error}" if error else
                                f"an empty program attached to {fn} through kprobe_events; "
                                + ("skipped runs counted (BPF run statistics on)" if stats else
                                   "BPF_ENABLE_STATS refused: a skipped run goes uncounted "
                                   "before Linux 6.7"), functions)
        if tp is not None:
            error = _attach(lambda: b.attach_raw_tracepoint(tp=tp.encode(),
                                                             fn_name=b"mbrec_check_raw_tp"))
            if error:
                tracepoint.usable = False
                tracepoint.detail = (f"attaching an empty program to the raw tracepoint {tp} "
                                     f"failed: {error}")
            else:
                tracepoint.detail = (f"an empty program attached to the raw tracepoint {tp}; "
                                     f"{_typed_tracepoints(b, tp)}; layers without a "
                                     "tracepoint are absent")
    finally:
        b.cleanup()
    return [fentry, kprobe, tracepoint]


def _typed_tracepoints(b, tp: str) -> str:
    """Whether the tracepoint programs can be BTF-typed tracepoints here (recorder/tp_btf.py), as
    mbrec record loads them: an empty one loaded against tp's BTF type and attached."""
    from mbrec.recorder import tp_btf
    from mbrec.recorder.btf import read_btf
    btf = read_btf()
    if btf is None:
        return "raw tracepoints only (no BTF)"
    try:
        fd = tp_btf.load(b, "mbrec_check_tp_btf", tp, btf)
        os.close(tp_btf.attach(fd))
        os.close(fd)
    except Exception as e:
        return f"raw tracepoints only (a BTF-typed one was refused: {str(e)[:160]})"
    return "BTF-typed ones load too (the recorder uses them)"


def _tracepoints() -> AttachMode:
    """The tracepoint probes this kernel has (usable: to be tried)."""
    names = {tp for spec in TRACEPOINT_PROBES for tp in spec.candidates[0]}
    try:
        existing = env.existing_tracepoints(names)
    except MbrecError as e:
        return AttachMode("tracepoint", False, str(e))
    resolved, missing = resolve_tracepoints(TRACEPOINT_PROBES, existing)
    probes = {r.spec.name: "+".join(r.functions) for r in resolved}
    if "dev_hard_start_xmit" not in probes:
        return AttachMode("tracepoint", False, "the wire tracepoint net:net_dev_start_xmit "
                          "does not exist", probes, missing)
    return AttachMode("tracepoint", True, "to be tried", probes, missing)


def _load(bcc, text: str):
    """(module, '') when the program compiles and loads, else (None, the error's first line)."""
    try:
        return bcc.BPF(text=text.encode()), ""
    except Exception as e:  # BCC raises plain Exceptions with the kernel's errno text
        return None, (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _attach(step) -> str:
    try:
        step()
        return ""
    except Exception as e:
        return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def render(check: Check) -> list[str]:
    """The report as terminal lines: facts, attach kinds, verdict, fixes."""
    mark = {True: "ok  ", False: "FAIL", None: "?   "}
    out = [f"{mark[f.ok]} {f.name}: {f.detail}" for f in check.facts]
    for m in check.modes:
        out.append(f"{'ok  ' if m.usable else 'no  '} --attach {m.kind}: {m.detail}")
        for name, fn in m.probes.items():
            out.append(f"       {name:<24} {fn}")
        for why in m.missing:
            out.append(f"       missing: {why}")
    out.append(f"needs: {check.privileges}")
    fixes = [f"  {f.name}: {f.fix}" for f in check.facts if f.fix]
    if fixes:
        out.append("to fix:")
        out += fixes
    if check.verdict:
        out.append(f"verdict: mbrec record can record here (--attach {check.requested} uses "
                   f"{check.verdict})")
    else:
        out.append(f"verdict: mbrec record cannot record here with --attach {check.requested}")
    return out
