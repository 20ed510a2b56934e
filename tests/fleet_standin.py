#!/usr/bin/env python3
"""A stand-in for `mbrec` on a fleet host, for tests only: this machine's kernel cannot trace.

It answers what `mbrec fleet record` asks of a host's mbrec (`--version`, `record --help`,
`record --check`) and, for `record -o FILE ...`, behaves as the recorder does at its edges:
it prints the "recording on HOST" line, writes a real trace through mbrec's TraceWriter
(synthetic packet events, clock anchors), and on SIGINT, SIGTERM or SIGHUP writes the trailer
and exits 0. Options before the subcommand make it misbehave the way a recorder can:

  --start-delay S      wait S seconds before recording (as the recorder compiles its BPF)
  --fail-start MSG     exit 2 with `mbrec: error: MSG` before recording
  --exit-after S       exit 1 after S seconds of recording, without a trailer (a crash)
  --ignore-sigint      ignore SIGINT (a recorder that hangs on stop)
"""

import argparse
import os
import signal
import sys
import time

from mbrec import __version__
from mbrec.events import SCHEMA_BY_NAME
from mbrec.testing.synthetic import packet_flow
from mbrec.trace.format import clock_anchor, make_header
from mbrec.trace.writer import TraceWriter


def main() -> int:
    p = argparse.ArgumentParser(prog="mbrec")
    p.add_argument("--version", action="store_true")
    p.add_argument("--fail-start")
    p.add_argument("--start-delay", type=float, default=0.0)
    p.add_argument("--exit-after", type=float)
    p.add_argument("--ignore-sigint", action="store_true")
    sub = p.add_subparsers(dest="cmd")
    rec = sub.add_parser("record")
    rec.add_argument("--check", action="store_true", help="check that recording can work")
    rec.add_argument("-o", "--output")
    rec.add_argument("--host-name")
    args, rest = p.parse_known_args()
    if args.version:
        print(f"mbrec, version {__version__} (test stand-in)")
        return 0
    if args.cmd != "record":
        p.print_help()
        return 2
    if args.check:
        print("mbrec: record --check: ok (test stand-in)", file=sys.stderr)
        return 0
    time.sleep(args.start_delay)  # signals at their defaults, as in the recorder's compile
    if args.fail_start:
        print(f"mbrec: error: {args.fail_start}", file=sys.stderr)
        return 2
    stop = {"why": None}

    def on_signal(signum, frame):
        stop["why"] = signal.Signals(signum).name

    for sig in (signal.SIGTERM, signal.SIGHUP) + (() if args.ignore_sigint else
                                                  (signal.SIGINT,)):
        signal.signal(sig, on_signal)
    if args.ignore_sigint:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    host = args.host_name or os.path.basename(args.output).removesuffix(".mbrec")
    header = make_header(host=host, options={"standin": True, "args": rest})
    writer = TraceWriter(args.output, header)
    print(f"mbrec: recording on {host}: 4 probes attached, writing {args.output} "
          "(Ctrl-C to stop)", file=sys.stderr, flush=True)
    start = time.monotonic()
    seed = 0
    while stop["why"] is None:
        recs = packet_flow(20, t0=time.monotonic_ns(), seed=seed)
        writer.write_events(SCHEMA_BY_NAME["pkt"].id, recs)
        writer.write_object(clock_anchor())
        writer.tick()
        seed += 1
        if args.exit_after is not None and time.monotonic() - start >= args.exit_after:
            writer.abandon()
            print("mbrec: error: the stand-in recorder crashed", file=sys.stderr, flush=True)
            return 1
        time.sleep(0.1)
    writer.close(clean=True, extra={"stop_reason": stop["why"]})
    print(f"mbrec: recorded; {args.output}: clean stop ({stop['why']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
