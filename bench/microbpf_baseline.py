"""A recorder in the style of MicroBPF, for the overhead comparison. Not part of mbrec.

The same packet probes as `mbrec record` (the same BPF program, compiled with
-DMBREC_PERF_BASELINE), but the transport MicroBPF used: a perf buffer with BCC's default size
(8 pages per CPU), one wake-up and one Python callback per event that decodes the event
(`table.event`) and writes one text line to a line-buffered file. Run as root in the lab guest:

    python3 bench/microbpf_baseline.py -o OUT.txt --netns a [--duration S] [--attach tracepoint]

It stops on SIGINT/SIGTERM or after --duration and prints, on stderr, one JSON line with the
events written, the events the perf buffer reported lost, and the CPU seconds it used.
"""

import argparse
import ctypes as ct
import json
import os
import resource
import signal
import socket
import sys
import time

from mbrec.recorder import environment as env
from mbrec.recorder.program import ProgramConfig
from mbrec.recorder.btf import read_offsets
from mbrec.recorder.session import RecordOptions, build_filters, load, plan, plan_tracepoints
from mbrec.events import PKT
from mbrec.render import probe_name

_CT = {1: ct.c_uint8, 2: ct.c_uint16, 4: ct.c_uint32, 8: ct.c_uint64}


def ctypes_struct(dtype):
    """The ctypes mirror of a record dtype (what BCC's table.event() builds from C types; BCC
    cannot map __u64 itself, so the baseline hands it this, derived from the same layout)."""
    fields = []
    for name in dtype.names:
        ftype = dtype.fields[name][0]
        if ftype.subdtype is not None:
            base, shape = ftype.subdtype
            fields.append((name, _CT[base.itemsize] * shape[0]))
        else:
            fields.append((name, _CT[ftype.itemsize]))
    return type("PktEvent", (ct.Structure,), {"_fields_": fields})


PktEvent = ctypes_struct(PKT)
assert ct.sizeof(PktEvent) == PKT.itemsize


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--netns", action="append", default=[])
    ap.add_argument("--duration", type=float)
    ap.add_argument("--attach", choices=["auto", "tracepoint"], default="auto",
                    help="tracepoint: the tracepoints mbrec record --attach tracepoint uses")
    args = ap.parse_args()
    opts = RecordOptions(output=args.output, netns=tuple(args.netns), attach=args.attach)
    bcc = env.import_bcc()
    env.check_headers()
    if args.attach == "tracepoint":
        resolved, attach = plan_tracepoints(opts), "tracepoint"
    else:
        resolved, attach = plan(opts, bool(bcc.BPF.support_kfunc()))
    cfg = ProgramConfig(tuple(resolved), attach, build_filters(opts), offsets=read_offsets(),
                        extra_cflags=("-DMBREC_PERF_BASELINE",))
    b, kprobes = load(bcc, cfg)  # kprobes: None (auto attaches fentry in the lab)
    table = b["mbrec_pkt_perf"]
    out = open(args.output, "w", buffering=1)  # MicroBPF: line-buffered, one write per event
    stats = {"events": 0, "lost": 0}

    def on_event(cpu, data, size):
        e = ct.cast(data, ct.POINTER(PktEvent)).contents  # as table.event() does
        out.write(f"{probe_name(e.probe)} {socket.inet_ntoa(bytes(e.saddr[:4]))}:{e.sport} -> "
                  f"{socket.inet_ntoa(bytes(e.daddr[:4]))}:{e.dport} {e.seq} {e.ack} "
                  f"{e.ts_ns / 1e9:.6f} {e.len}\n")
        stats["events"] += 1

    def on_lost(count):
        stats["lost"] += count

    table.open_perf_buffer(on_event, lost_cb=on_lost)
    stop = []
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    print("recording on (baseline)", file=sys.stderr, flush=True)
    t_end = time.monotonic() + args.duration if args.duration else None
    while not stop and (t_end is None or time.monotonic() < t_end):
        b.perf_buffer_poll(timeout=100)
    b.perf_buffer_poll(timeout=0)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    stats.update(user_s=ru.ru_utime, sys_s=ru.ru_stime, max_rss_kb=ru.ru_maxrss,
                 pid=os.getpid())
    out.close()
    print(json.dumps(stats), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
