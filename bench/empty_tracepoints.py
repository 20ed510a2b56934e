"""The floor of recording on tracepoints: an empty BPF program (`return 0`) attached as a raw
tracepoint to every tracepoint `mbrec record --attach tracepoint --probes packets,flows` uses,
for bench/native_overhead.py's mode `empty`. Not part of mbrec. Run as root:

    python3 bench/empty_tracepoints.py -o OUT.txt

What a workload loses with it is what the kernel's tracepoint dispatch costs (the tracepoint's
static branch, the BPF run with its RCU and migration guards), before any program reads a
field or writes an event: no recorder built on these tracepoints can cost less. It prints
"recording on" once attached, stops on SIGINT/SIGTERM, then prints one JSON line (events and
losses: none) and leaves OUT.txt empty, as bench/microbpf_baseline.py's output for the bench.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mbrec.recorder import environment as env
from mbrec.recorder.flows import FlowGroup
from mbrec.recorder.session import RecordOptions, plan_tracepoints

SOURCE = b"int empty(struct bpf_raw_tracepoint_args *ctx) { return 0; }\n"


def tracepoints() -> list[str]:
    """The events ("category:event") mbrec's tracepoint mode attaches, packets and flows."""
    packets = [tp for r in plan_tracepoints(RecordOptions(output="-", attach="tracepoint"))
               for tp in r.functions]
    flows = [h.function for h in FlowGroup.for_tracepoints(1.0, 1, 1).plan.hooks
             if h.attach == "raw_tracepoint"]
    return sorted(set(packets + flows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--netns", action="append", default=[], help="ignored: nothing is filtered")
    args = ap.parse_args()
    env.check_headers()
    bcc = env.import_bcc()
    b = bcc.BPF(text=SOURCE)
    names = tracepoints()
    for tp in names:
        b.attach_raw_tracepoint(tp=tp.split(":")[1].encode(), fn_name=b"empty")
    open(args.output, "w").close()
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(1))
    print(f"recording on: an empty program on {len(names)} tracepoints: {', '.join(names)}",
          flush=True)
    while not stop:
        signal.pause()
    b.cleanup()
    print(json.dumps({"events": 0, "lost": 0, "tracepoints": names}), flush=True)


if __name__ == "__main__":
    main()
