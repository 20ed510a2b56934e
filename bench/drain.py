#!/usr/bin/python3
"""Recorder drain benchmark: BCC's per-event ring-buffer callback vs mbrec's bulk drain.

One BPF program on the raw_syscalls:sys_enter tracepoint (it loads on the development
machines, whose kernel has no kprobes) turns the syscalls of a generator process
(`dd bs=1`, pinned to one CPU) into 96-byte records, the size of mbrec's packet event, and
writes them with BPF_RB_NO_WAKEUP into one of two identical 16 MiB rings:
  callback  drained by BCC: open_ring_buffer(empty callback) + ring_buffer_consume()
  bulk      drained by mbrec.recorder.ringbuf.RingReader (mmap, numpy header check, one copy)
  bulk+file the same, and every batch written through mbrec's TraceWriter (zstd) to a file
The consumer runs pinned to the other CPU; both see the same event stream in the same run.

Per method it reports consumer CPU ns per event (process CPU time / events, the number to
compare), events/s, and losses (failed ring writes, counted in the kernel). Then, per method,
the highest rate it drains with zero loss: the generator's rate is thinned 1/K in the kernel,
or multiplied by emitting B records per syscall, stepping until a loss shows.

Run as root with Debian's python (BCC): /usr/bin/python3 bench/drain.py [--seconds S]
Needs /lib/modules/$(uname -r)/build -> any Debian linux-headers package (see docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time



def importable_checkout() -> str:
    """Debian's python (the one with BCC) does not see the pip-installed mbrec: lay out the
    checkout as the installed package is (bpf/ inside mbrec/), with symlinks, and use that."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    root = tempfile.mkdtemp(prefix="mbrec-pylib-")
    pkg = os.path.join(root, "mbrec")
    os.mkdir(pkg)
    for name in os.listdir(os.path.join(repo, "mbrec")):
        os.symlink(os.path.join(repo, "mbrec", name), os.path.join(pkg, name))
    for name in ("bpf", "analysis"):
        if os.path.isdir(os.path.join(repo, name)):
            os.symlink(os.path.join(repo, name), os.path.join(pkg, name))
    return root


sys.path.insert(0, importable_checkout())

RECORD_SIZE = 96
RING_PAGES = 4096  # 16 MiB, mbrec record's default

PROGRAM = r"""
BPF_RINGBUF_OUTPUT(ring_cb, RING_PAGES);
BPF_RINGBUF_OUTPUT(ring_bulk, RING_PAGES);
BPF_ARRAY(cfg, u64, 4);   /* 0 tgid, 1 ring (0 off, 1 callback, 2 bulk), 2 keep 1/K, 3 burst B */
BPF_ARRAY(stat, u64, 4);  /* 0 hits, 1 written, 2 lost */
struct rec { u64 ts; u64 seq; u64 pad[10]; };

TRACEPOINT_PROBE(raw_syscalls, sys_enter)
{
    u32 k0 = 0, k1 = 1, k2 = 2, k3 = 3;
    u64 *tgid = cfg.lookup(&k0);
    if (!tgid || (bpf_get_current_pid_tgid() >> 32) != *tgid)
        return 0;
    u64 *ring = cfg.lookup(&k1), *every = cfg.lookup(&k2), *burst = cfg.lookup(&k3);
    u64 *hits = stat.lookup(&k0);
    if (!ring || !every || !burst || !hits || !*ring)
        return 0;
    u64 h = __sync_fetch_and_add(hits, 1);
    if (*every > 1 && (h % *every))
        return 0;
    struct rec r = {};
    r.ts = bpf_ktime_get_ns();
    r.seq = h;
    for (int i = 0; i < 16; i++) {
        if (i >= *burst)
            break;
        int err = *ring == 1 ? ring_cb.ringbuf_output(&r, sizeof(r), BPF_RB_NO_WAKEUP)
                             : ring_bulk.ringbuf_output(&r, sizeof(r), BPF_RB_NO_WAKEUP);
        u32 idx = err ? 2 : 1;
        u64 *c = stat.lookup(&idx);
        if (c)
            __sync_fetch_and_add(c, 1);
    }
    return 0;
}
"""


class Bench:
    def __init__(self):
        from bcc import BPF
        self.b = BPF(text=PROGRAM.replace("RING_PAGES", str(RING_PAGES)))
        self.cfg = self.b["cfg"]
        self.stat = self.b["stat"]
        self.b["ring_cb"].open_ring_buffer(lambda ctx, data, size: None)
        from mbrec.recorder.ringbuf import open_bcc_ring
        self.bulk = open_bcc_ring(self.b["ring_bulk"], RECORD_SIZE)

    def set(self, i, v):
        self.cfg[self.cfg.Key(i)] = self.cfg.Leaf(v)

    def stats(self):
        return [int(self.stat[self.stat.Key(i)].value) for i in range(3)]

    def reset(self):
        for i in range(3):
            self.stat[self.stat.Key(i)] = self.stat.Leaf(0)

    def run(self, method: str, seconds: float, every: int = 1, burst: int = 1) -> dict:
        writer = None
        if method == "bulk+file":
            from mbrec.trace.format import make_header
            from mbrec.trace.writer import TraceWriter
            tmp = tempfile.NamedTemporaryFile(suffix=".mbrec", delete=False)
            tmp.close()
            writer = TraceWriter(tmp.name, make_header(), force=True)
        self.reset()
        self.set(2, every)
        self.set(3, burst)
        self.set(1, 1 if method == "callback" else 2)
        gen = subprocess.Popen(["taskset", "-c", "1", "dd", "if=/dev/zero", "of=/dev/null",
                                "bs=1", "count=100000000000"], stderr=subprocess.DEVNULL)
        try:
            return self._measure(method, seconds, every, burst, gen, writer)
        finally:
            self.set(0, 0)
            gen.kill()
            gen.wait()
            if writer is not None:
                writer.close()
                os.unlink(writer.path)

    def _measure(self, method, seconds, every, burst, gen, writer) -> dict:
        self.set(0, gen.pid)
        cpu0, t0 = time.process_time(), time.monotonic()
        end = t0 + seconds
        # BCC's ring_buffer_consume() returns only once the ring is empty, never while the
        # producer outruns it: a timer thread stops production at the end of the window.
        stopper = threading.Timer(seconds, lambda: self.set(0, 0))
        stopper.start()
        from mbrec.recorder.session import DrainPacer
        pacer = DrainPacer(self.bulk.size // (RECORD_SIZE + 8), time.monotonic())
        got = 0
        while time.monotonic() < end:
            if method == "callback":
                self.b.ring_buffer_consume()  # flat out: its best case
                continue
            # bulk: the recorder's own polling rule (sleep while the ring stays under 1/4 full)
            batches = self.bulk.drain()
            if writer is not None:
                for batch in batches:
                    writer.write_events(1, batch, len(batch), owned=True)
                writer.tick()
            drained = sum(len(b) for b in batches)
            got += drained
            now = time.monotonic()
            wait = pacer.sleep_for(drained, now, got / max(now - t0, 1e-3))
            if self.bulk.pending_bytes() < self.bulk.size // 4:
                time.sleep(wait)
        stopper.join()  # production has stopped; drain what is left
        t1 = time.monotonic()
        for _ in range(3):
            if method == "callback":
                self.b.ring_buffer_consume()
            else:
                for batch in self.bulk.drain():
                    if writer is not None:
                        writer.write_events(1, batch, len(batch), owned=True)
        if writer is not None:
            writer.flush()
        cpu = time.process_time() - cpu0
        hits, written, lost = self.stats()
        elapsed = t1 - t0
        return {"method": method, "every": every, "burst": burst, "seconds": round(elapsed, 2),
                "events": written, "lost": lost, "offered_per_s": round((written + lost) / elapsed),
                "events_per_s": round(written / elapsed),
                # CPU time of this process (drain loop, callbacks, copies, compression) per event
                "consumer_ns_per_event": round(cpu * 1e9 / written, 1) if written else None,
                "consumer_cpu_share": round(cpu / elapsed, 2)}


def zero_loss_rate(bench: Bench, method: str, seconds: float, steps) -> dict | None:
    """The highest offered rate (over the given (every, burst) steps, fastest first) drained
    with zero loss."""
    for every, burst in steps:
        r = bench.run(method, seconds, every, burst)
        print(json.dumps(r), flush=True)
        if r["lost"] == 0:
            return r
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/drain.py needs root (BPF)")
    os.sched_setaffinity(0, {0})
    bench = Bench()
    print(f"# {platform.node()} kernel {platform.release()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}", flush=True)
    # Side by side on the same stream: 8 records per generator syscall, more than the callback
    # path can take, so each method runs flat out and its CPU per event is its real cost.
    side = [bench.run(m, args.seconds, 1, 8) for m in ("callback", "bulk", "bulk+file")]
    for r in side:
        print(json.dumps(r), flush=True)
    cb_steps = [(1, 2), (1, 1), (2, 1), (3, 1), (4, 1), (6, 1), (8, 1), (16, 1)]
    bulk_steps = [(1, 16), (1, 12), (1, 8), (1, 6), (1, 4), (1, 2), (1, 1)]
    best = {"callback": zero_loss_rate(bench, "callback", args.seconds, cb_steps),
            "bulk": zero_loss_rate(bench, "bulk", args.seconds, bulk_steps),
            "bulk+file": zero_loss_rate(bench, "bulk+file", args.seconds, bulk_steps)}
    cb, bulk = side[0]["consumer_ns_per_event"], side[1]["consumer_ns_per_event"]
    import resource
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mb": round(peak_rss_mb, 1)}))
    summary = {"side_by_side": side, "zero_loss": best, "peak_rss_mb": round(peak_rss_mb, 1),
               "speedup_ns_per_event": round(cb / bulk, 1) if cb and bulk else None}
    print(json.dumps({"speedup_ns_per_event": summary["speedup_ns_per_event"]}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
