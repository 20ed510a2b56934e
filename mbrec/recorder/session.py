"""One recording: load the BPF program, attach, drain the rings into a trace file until told
to stop, then close the file with a trailer. I/O lives here; decisions live in probes.py,
program.py and ringbuf.py."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from mbrec.errors import MbrecError
from mbrec.events import PROBE_NAMES, SCHEMA_BY_NAME
from mbrec.recorder import environment as env
from mbrec.recorder import tp_btf
from mbrec.recorder.btf import read_btf, read_offsets
from mbrec.recorder.probes import (GROUPS, PACKET_PROBES, TRACEPOINT_PROBES, choose_attach, header_probes,
                                   resolve_all, resolve_tracepoints)
from mbrec.recorder.program import (RINGS, Filters, ProgramConfig, cflags, kprobe_attachments,
                                    ring_pages, source_path, source_text,
                                    tracepoint_attachments, tracepoint_program, typed_probes)
from mbrec.recorder.tp_btf import TpBtfError
from mbrec.recorder.kprobes import TracefsKprobes, kprobe_losses
from mbrec.recorder.progstats import missed_by_probe, program_probes, prog_counters
from mbrec.recorder.ringbuf import open_bcc_ring

FALLBACK_NOTE = ("--attach tracepoint (the kernel's stable tracepoints: fewer layers, "
                 "docs/recorder.md)")
ANCHOR_INTERVAL = 1.0  # clock anchors, loss counts and the status line
MAX_SLEEP = 0.2        # between drains: each wake-up costs the traced host a little CPU
MIN_SLEEP = 0.002


def poll_interval(ring_records: int, rate: float) -> float:
    """Sleep long enough to be cheap, short enough that the ring is at most an eighth full by
    the next drain at the current event rate."""
    return min(MAX_SLEEP, max(MIN_SLEEP, 0.125 * ring_records / max(rate, 1.0)))


class DrainPacer:
    """How long to sleep after each drain. The rate is the larger of the last second's and the
    last drain's (events drained / time since the drain before), so a burst shortens the very
    next sleep; until a first rate is known (the first ANCHOR_INTERVAL) it sleeps START_SLEEP,
    so traffic already running when recording starts cannot overflow the first interval (it
    did at 1.5 M events/s with a 16 MiB ring: one 0.2 s sleep, 139 k events lost)."""

    START_SLEEP = 0.01

    def __init__(self, ring_records: int, now: float):
        self.ring_records, self.start, self.last = ring_records, now, now

    def sleep_for(self, drained: int, now: float, second_rate: float) -> float:
        recent = drained / max(now - self.last, 1e-3)
        self.last = now
        if now - self.start < ANCHOR_INTERVAL:
            return min(self.START_SLEEP, poll_interval(self.ring_records, recent))
        return poll_interval(self.ring_records, max(second_rate, recent))


@dataclass
class RecordOptions:
    output: str
    duration: float | None = None
    host_name: str | None = None
    netns: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    addrs: tuple[str, ...] = ()
    cgroup: str | None = None
    sample: int = 0
    attach: str = "auto"
    groups: tuple[str, ...] = ("packets",)
    ring_mb: int = 16
    quiet: bool = False
    force: bool = False
    command: tuple[str, ...] = ()
    flow_interval: float = 1.0  # flows group: periodic snapshot of every live flow
    flow_sample: int = 1        # flows group: per-ACK snapshot every N ACKs (0 = none)
    raw_tracepoints: bool = False  # never BTF-typed tracepoints (recorder/tp_btf.py)
    options_extra: dict = field(default_factory=dict)


def say(msg: str) -> None:
    print(f"mbrec: {msg}", file=sys.stderr, flush=True)


def probe_specs(groups) -> list:
    """The function probes of the packets group (the flows group plans its own)."""
    for g in groups:
        if g not in GROUPS:
            raise MbrecError(f"--probes {g}: the probe groups are {', '.join(GROUPS)}")
    return list(PACKET_PROBES) if "packets" in groups else []


def build_filters(opts: RecordOptions) -> Filters:
    if not 0 <= opts.sample <= 16:
        raise MbrecError(f"--sample {opts.sample}: give N from 0 to 16 (keeps 1/2^N of packets)")
    return Filters(netns=tuple(env.netns_inode(n) for n in opts.netns),
                   ports=tuple(opts.ports), addrs=tuple(opts.addrs),
                   cgroup_id=env.cgroup_id(opts.cgroup) if opts.cgroup else 0,
                   sample_bits=opts.sample)


def plan(opts: RecordOptions, fentry_supported: bool, kf=None):
    """Resolve every probe on this kernel; fail naming each missing one."""
    kf = kf or env.read_kernel_functions()
    specs = probe_specs(opts.groups)
    resolved, missing = resolve_all(specs, kf)
    required = [m for m in missing if not m.spec.optional]
    if required:
        found = ", ".join(f"{r.spec.label}={'+'.join(r.functions)}" for r in resolved) or "none"
        why = "; ".join(f"{m.spec.name}: {' / '.join(m.reasons)}" for m in required)
        raise MbrecError(f"cannot probe {why}. Nothing was attached (these would have been: "
                         f"{found}); this kernel lacks the functions above")
    for m in missing:  # an IPv6 function: that family's packets lack this layer
        say(f"not on this kernel: {m.spec.label} ({' / '.join(m.reasons)}); IPv6 packets will "
            "lack this layer")
    attach = choose_attach(opts.attach, fentry_supported)
    return resolved, attach


def plan_tracepoints(opts: RecordOptions) -> list:
    """The tracepoint probes of --attach tracepoint that this kernel has (a missing one is a
    layer the recording lacks, said once here and visible in the header's probe list)."""
    if "packets" not in opts.groups:
        return []
    names = {tp for spec in TRACEPOINT_PROBES for tp in spec.candidates[0]}
    resolved, missing = resolve_tracepoints(TRACEPOINT_PROBES, env.existing_tracepoints(names))
    if not resolved:
        raise MbrecError("this kernel has none of the packet tracepoints ("
                         + "; ".join(missing) + "); record with --attach fentry or kprobe")
    for m in missing:
        say(f"not on this kernel: {m}")
    return resolved


def attach_chain(opts: RecordOptions, bcc) -> list[tuple[str, list]]:
    """The attach kinds to try in order, each with its resolved packet probes: the one asked
    for, or for auto fentry (where the kernel has trampolines), then kprobe, then tracepoint,
    skipping those this kernel cannot serve (and saying why)."""
    if opts.attach == "tracepoint":
        return [("tracepoint", plan_tracepoints(opts))]
    try:
        resolved, attach = plan(opts, bool(bcc.BPF.support_kfunc()))
    except MbrecError as e:
        if opts.attach != "auto":
            raise
        why = str(e).split(": this kernel")[0].split(". Nothing was attached")[0]
        say(f"kernel functions cannot be probed here ({why[:200]}); falling back to "
            f"{FALLBACK_NOTE}")
        return [("tracepoint", plan_tracepoints(opts))]
    if opts.attach == "fentry" and attach == "fentry" and not bcc.BPF.support_kfunc():
        raise MbrecError("--attach fentry: this kernel has no BPF trampolines (fentry); use "
                         "--attach kprobe, tracepoint or auto")
    if opts.attach != "auto":
        return [(attach, resolved)]
    chain = [("fentry", resolved)] if attach == "fentry" else []
    return chain + [("kprobe", resolved), ("tracepoint", plan_tracepoints(opts))]


def flow_group(opts: RecordOptions, attach: str):
    """The flows group (recorder/flows.py) for this kernel and attach kind, or None. Its
    programs read kernel structs at BTF offsets, so any kernel's headers serve BCC."""
    if "flows" not in opts.groups:
        return None
    from mbrec.recorder.flows import FlowGroup
    # each schema's ring is --ring-mb (per-ACK snapshots filled a 1 MiB flow ring natively in
    # under 0.1 s while the recorder waited for a CPU)
    pages = ring_pages(opts.ring_mb << 20)
    if attach == "tracepoint":
        return FlowGroup.for_tracepoints(opts.flow_interval, opts.flow_sample, pages)
    return FlowGroup.for_kernel(env.read_kernel_functions(), attach, opts.flow_interval,
                                opts.flow_sample, pages)


def wants_typed_tracepoints(opts: RecordOptions, offsets: dict | None) -> bool:
    """Tracepoints BTF-typed (cheaper reads) unless the kernel has no BTF or the user asks for
    raw ones; a kernel that refuses them still gets raw ones (record)."""
    return offsets is not None and not opts.raw_tracepoints


class TpBtfRefused(MbrecError):
    """The kernel refused a BTF-typed tracepoint program: record with raw tracepoints."""


def load(bcc, cfg: ProgramConfig, flows=None):
    """Compile and load; fentry probes attach here (BCC attaches KFUNC_PROBEs at load). Returns
    the BCC module and, in kprobe mode, the kprobes registered in tracefs (recorder/kprobes.py),
    which the caller closes before the module."""
    if flows is not None:  # the flow programs are pasted into the main file (flows.inline_flows)
        b = bcc.BPF(text=flows.source(source_text()).encode(), cflags=cflags(cfg))
    else:
        b = bcc.BPF(src_file=source_path().encode(), cflags=cflags(cfg))
    typed = {tracepoint_program(p) for p in typed_probes(cfg)}
    btf = read_btf() if typed else None
    for tp, bpf_fn in tracepoint_attachments(cfg):
        try:
            if btf is not None and bpf_fn in typed:
                tp_btf.attach_program(bcc, b, tp, bpf_fn, btf)
            else:
                b.attach_raw_tracepoint(tp=tp.encode(), fn_name=bpf_fn.encode())
        except TpBtfError as e:
            b.cleanup()
            raise TpBtfRefused(str(e)) from None
        except Exception as e:
            b.cleanup()
            raise MbrecError(f"cannot attach the raw tracepoint {tp} ({str(e).strip()}); "
                             "nothing stays attached") from None
    kprobes = None
    if cfg.attach == "kprobe":
        try:
            kprobes = TracefsKprobes(bcc.libbcc.lib)
        except MbrecError:
            b.cleanup()
            raise
    done: list = []
    for fn, bpf_fn in kprobe_attachments(cfg):
        try:
            kprobes.attach(b, fn, bpf_fn)
        except Exception as e:
            kprobes.close()
            b.cleanup()
            raise MbrecError(f"cannot attach a kprobe to {fn} ({str(e).strip()}); attached "
                             f"before it: {', '.join(done) or 'none'} (all detached again)") from None
        done.append(fn)
    if flows is not None:
        try:
            flows.header_probes = flows.attach(
                b, kprobes, typed=(lambda tp, fn: tp_btf.attach_program(bcc, b, tp, fn, btf))
                if btf is not None else None)
        except TpBtfError as e:
            b.cleanup()
            raise TpBtfRefused(str(e)) from None
        except Exception as e:
            if kprobes is not None:
                kprobes.close()
            b.cleanup()
            raise MbrecError(f"cannot attach the flows group ({str(e).strip()[:200]}); "
                             "nothing stays attached") from None
    return b, kprobes


class Recorder:
    """Drains every ring of a loaded program into a TraceWriter."""

    def __init__(self, b, writer, probe_ids, rings, kprobes=None):
        self.b = b
        self.kprobes = kprobes  # recorder/kprobes.py, in kprobe mode
        self.writer = writer
        self.probe_ids = probe_ids
        self.rings = []
        for name, schema in rings.items():
            try:
                table = b[name]
            except KeyError:  # this program was built without that ring's probe group
                continue
            s = SCHEMA_BY_NAME[schema]
            self.rings.append((open_bcc_ring(table, s.dtype.itemsize), s.id))
        self.lost_table = b["mbrec_lost"]
        self.events = 0
        self.prog_fds: dict[str, int] = {}    # set by watch_programs
        self.prog_probe: dict[str, str] = {}

    def drain(self) -> int:
        n = 0
        for ring, schema_id in self.rings:
            for batch in ring.drain():
                self.writer.write_events(schema_id, batch, len(batch), owned=True)
                n += len(batch)
        self.events += n
        return n

    def drain_all(self) -> None:
        for _ in range(8):
            if not self.drain():
                return

    def watch_programs(self, probes: list[dict]) -> None:
        """Also count, as lost, the runs the kernel skipped of every loaded program: a BPF
        program does not run nested in itself on one CPU (recorder/progstats.py)."""
        self.prog_fds = {(n.decode() if isinstance(n, bytes) else n): f.fd
                         for n, f in self.b.funcs.items()}
        self.prog_probe = program_probes(self.prog_fds, probes)
        if self.kprobes is not None:  # counted from the kprobes' own counters (lost_detail)
            for name in self.kprobes.prog_fds():
                self.prog_fds.pop(name, None)

    def lost_detail(self) -> dict[str, dict[str, int]]:
        """Events lost per probe, by cause: the ring was full (counted by the program), the
        kernel skipped the program's run (its recursion-miss counter; for a kprobe program its
        kprobe's hits minus its runs), or the kprobe itself was missed (kprobe_profile)."""
        ring = {}
        for pid in self.probe_ids:
            n = int(self.lost_table.sum(self.lost_table.Key(pid)).value)
            if n:
                ring[PROBE_NAMES[pid]] = n
        skipped = missed_by_probe(self.prog_fds, self.prog_probe)
        detail = {"ring_full": ring, "program_skipped": skipped}
        if self.kprobes is not None:
            kp_skipped, kp_missed = kprobe_losses(self.kprobes, self.prog_probe, prog_counters)
            for probe, n in kp_skipped.items():
                skipped[probe] = skipped.get(probe, 0) + n
            detail["kprobe_missed"] = kp_missed
        return detail

    def lost(self) -> dict[str, int]:
        """Events lost per probe, whatever the cause."""
        out: dict[str, int] = {}
        for counts in self.lost_detail().values():
            for probe, n in counts.items():
                out[probe] = out.get(probe, 0) + n
        return out

    @property
    def capacity(self) -> int:
        """Records the smallest ring holds."""
        return min((r.size // (r.record_size + 8) for r, _ in self.rings), default=1)

    def fill(self) -> float:
        return max((r.pending_bytes() / r.size for r, _ in self.rings), default=0.0)

    def close(self) -> None:
        for ring, _ in self.rings:
            ring.close()


def status_line(elapsed, rate, events, lost, nbytes) -> str:
    return (f"\rmbrec: {elapsed:7.1f} s  {rate:>10,.0f} events/s  {events:>12,} events  "
            f"lost {lost:,}  {nbytes / 1e6:8.1f} MB ")


def kprobe_warning(probes: list[dict], kprobes=None) -> str | None:
    """What a user recording through kprobes must know, or None: the runs the kernel skips are
    counted from the kprobes' hits and the programs' runs (recorder/kprobes.py), which needs BPF
    run statistics; without them a skipped run goes uncounted on kernels before 6.7."""
    if kprobes is None or kprobes.stats_fd is not None:
        return None
    if any(p["attach"].startswith(("kprobe", "kretprobe")) for p in probes):
        return ("warning: BPF run statistics are unavailable (BPF_ENABLE_STATS refused), so a "
                "kprobe run the kernel skips (the probe fired while another BPF program ran on "
                "that CPU) goes uncounted before Linux 6.7; fentry counts them")
    return None


def record(opts: RecordOptions) -> int:
    from mbrec.trace.format import make_header
    from mbrec.trace.writer import TraceWriter

    env.check_root()
    if os.path.exists(opts.output) and not opts.force:
        raise MbrecError(f"{opts.output} already exists: choose another name or pass --force "
                         "to overwrite it")
    if opts.command and not shutil.which(opts.command[0]):
        raise MbrecError(f"command not found: {opts.command[0]}")
    filters = build_filters(opts)
    env.check_kernel()
    bcc = env.import_bcc()
    foreign_headers = env.check_headers()
    offsets = read_offsets()
    if foreign_headers and offsets is None:
        raise MbrecError("this kernel has no BTF (/sys/kernel/btf/vmlinux) and no headers of "
                         f"its own: apt-get install linux-headers-{os.uname().release}")
    chain = attach_chain(opts, bcc)

    typed_tracepoints = wants_typed_tracepoints(opts, offsets)

    def configure(attach, resolved):
        flows = flow_group(opts, attach)
        cfg = ProgramConfig(tuple(resolved), attach, filters, ring_bytes=opts.ring_mb << 20,
                            offsets=offsets, flow_cflags=tuple(flows.cflags) if flows else (),
                            tp_btf=typed_tracepoints and attach == "tracepoint")
        return cfg, flows

    t0 = time.monotonic()
    b = None
    while b is None:
        attach, resolved = chain.pop(0)
        try:
            cfg, flows = configure(attach, resolved)
            if not opts.quiet:
                say(f"compiling the BPF program ({attach}, {len(resolved)} packet probes"
                    + (", flows" if flows else "") + ")...")
            b, kprobes = load(bcc, cfg, flows)
        except TpBtfRefused as e:  # the same probes as raw tracepoints, compiled for them
            say(f"BTF-typed tracepoints refused ({str(e).strip()[:200]}); using raw tracepoints")
            typed_tracepoints = False
            chain.insert(0, (attach, resolved))
        except Exception as e:
            if not chain:
                if isinstance(e, MbrecError):
                    raise
                raise MbrecError(f"loading the BPF program failed: {str(e).strip()[:300]} "
                                 "(rerun with --debug for details)") from None
            say(f"{attach} failed ({str(e).strip()[:160]}); falling back to "
                + (FALLBACK_NOTE if chain[0][0] == "tracepoint" else chain[0][0]))
    compile_s = time.monotonic() - t0
    probes = header_probes(resolved, attach, typed_probes(cfg))
    rings = dict(RINGS)
    probe_ids = {r.spec.probe_id for r in resolved}
    if flows is not None:
        probes += flows.header_probes
        probe_ids.update(flows.probe_ids)
    options = {"netns": list(filters.netns), "netns_spec": list(opts.netns),
               "ports": list(filters.ports), "addrs": list(filters.addrs),
               "cgroup": opts.cgroup, "cgroup_id": filters.cgroup_id,
               "sample_bits": filters.sample_bits, "attach": attach,
               "sock_id": "cookie" if attach == "fentry" else "pointer",
               "probe_groups": list(opts.groups), "ring_bytes": cfg.ring_bytes,
               "command": list(opts.command), "duration": opts.duration,
               "compile_s": round(compile_s, 2), "cflags": cflags(cfg)}
    if flows is not None:
        options.update({"flow_interval_s": opts.flow_interval, "flow_sample": opts.flow_sample})
    options.update(opts.options_extra)
    header = make_header(options=options, probes=probes, host=opts.host_name)
    writer = TraceWriter(opts.output, header, force=opts.force)
    rec = Recorder(b, writer, sorted(probe_ids), rings, kprobes)
    rec.watch_programs(probes)
    return run_loop(opts, b, writer, rec, probes, header["host"], flows)


def stop_outcome(why: str | None, error: BaseException | None) -> tuple[bool, str]:
    """(clean, stop_reason) for the trailer: only a requested stop (a signal, --duration, the
    command's end) is clean; an exception is not, and its reason names it."""
    if error is None and why is not None:
        return True, why
    if isinstance(error, KeyboardInterrupt):
        return True, "SIGINT"
    if error is None:
        return False, "error: the recording loop ended without a reason"
    text = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
    return False, f"error: {type(error).__name__}" + (f": {text}" if text else "")


def run_loop(opts, b, writer, rec, probes, host, flows=None) -> int:
    from mbrec.trace.format import clock_anchor

    stop: dict[str, str | None] = {"why": None}

    def on_signal(signum, frame):
        stop["why"] = signal.Signals(signum).name

    handlers = {sig: signal.signal(sig, on_signal)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    if not opts.quiet:
        for p in probes:
            say(f"  {p['name']:<24} {p['attach']:<7} {p['function']}")
    kprobes = getattr(rec, "kprobes", None)  # recorder/kprobes.py, in kprobe mode
    warning = kprobe_warning(probes, kprobes)
    if warning:
        say(warning)
    say(f"recording on {host}: {len(probes)} probes attached, writing {opts.output} "
        "(Ctrl-C to stop)")
    live = sys.stderr.isatty() and not opts.quiet
    start = time.monotonic()
    next_tick = start + ANCHOR_INTERVAL
    last_events, last_t = 0, start
    last_lost: dict[str, int] = {}
    lost = {}
    child = None
    child_rc = None
    rate_now = 0.0
    error = None
    try:
        child = subprocess.Popen(list(opts.command)) if opts.command else None
        pacer = DrainPacer(rec.capacity, start)
        while stop["why"] is None:
            drained = rec.drain()
            wait = pacer.sleep_for(drained, time.monotonic(), rate_now)
            if flows is not None:
                flows.tick()
            writer.tick()
            now = time.monotonic()
            if now >= next_tick:
                writer.write_object(clock_anchor())
                lost = rec.lost()
                if lost != last_lost:
                    writer.write_object({"t": "lost", "counts": lost})
                    last_lost = dict(lost)
                rate_now = (rec.events - last_events) / (now - last_t)
                if live:
                    rate = rate_now
                    sys.stderr.write(status_line(now - start, rate, rec.events,
                                                 sum(lost.values()), writer.bytes_written))
                    sys.stderr.flush()
                last_events, last_t = rec.events, now
                next_tick = now + ANCHOR_INTERVAL
            if opts.duration is not None and now - start >= opts.duration:
                stop["why"] = "duration"
            elif child is not None and child.poll() is not None:
                child_rc = child.returncode
                stop["why"] = "command exited"
            elif rec.fill() < 0.25:
                time.sleep(wait)
    except BaseException as e:  # recorded in the trailer, then raised again
        error = e
        raise
    finally:
        # Each step of the shutdown is attempted even if one before it fails, so the trailer
        # (with the loss counters) is always written and says how the recording ended.
        failures = []

        def attempt(step, default=None):
            try:
                return step()
            except Exception as e:
                failures.append(e)
                return default

        if flows is not None:
            attempt(flows.stop)  # a final record of every flow still open
        attempt(rec.drain_all)
        lost = attempt(rec.lost, lost)
        detail = attempt(rec.lost_detail, {})
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGINT)
            try:
                child_rc = child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()
                child_rc = child.wait()
        clean, reason = stop_outcome(stop["why"], error or (failures[0] if failures else None))
        writer.close(clean=clean, lost=lost,
                     extra={"stop_reason": reason, "lost_detail": detail,
                            "records_skipped": sum(r.skipped for r, _ in rec.rings)})
        attempt(rec.close)
        if kprobes is not None:
            attempt(kprobes.close)
        attempt(b.cleanup)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if live:
        sys.stderr.write("\n")
    elapsed = time.monotonic() - start
    total_lost = sum(lost.values())
    say(f"recorded {rec.events:,} events in {elapsed:.1f} s, lost {total_lost:,}"
        + (f" ({', '.join(f'{k} {v}' for k, v in lost.items())})" if total_lost else "")
        + f"; {opts.output}: {writer.bytes_written / 1e6:.1f} MB, "
        + (f"clean stop ({reason})" if clean else f"NOT a clean stop ({reason})"))
    if failures:
        raise MbrecError(f"stopping the recording failed ({reason}); {opts.output} was closed "
                         "with clean: false")
    say(f"next: mbrec info {opts.output}; mbrec analyze {opts.output} [the other hosts' traces]")
    return child_rc or 0


def print_bpf(opts: RecordOptions) -> None:
    """The program source, preceded by the -D constants this recording would use."""
    flows = None
    try:
        filters = build_filters(opts)
        if opts.attach == "tracepoint":
            resolved, attach = plan_tracepoints(opts), "tracepoint"
        else:
            resolved, attach = plan(opts, fentry_supported=opts.attach != "kprobe")
        flows = flow_group(opts, attach)
        offsets = read_offsets()
        cfg = ProgramConfig(tuple(resolved), attach, filters, ring_bytes=opts.ring_mb << 20,
                            offsets=offsets, flow_cflags=tuple(flows.cflags) if flows else (),
                            tp_btf=attach == "tracepoint" and wants_typed_tracepoints(opts, offsets))
        print("// cflags: " + " ".join(cflags(cfg)))
    except MbrecError as e:
        print(f"// cflags unknown here: {e}")
    print(flows.source(source_text()) if flows is not None else source_text())
