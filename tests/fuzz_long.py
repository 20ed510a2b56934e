"""`make fuzz`: the long run of the trace fuzzer (tests/tracefuzz.py).

    python tests/fuzz_long.py --cases 100000 [--seed 1] [--analyze-every 20] [--timeout 20]

Half the cases are structure-aware, half byte-level; every case runs `mbrec info`, `info
--json` and `replay` in its three formats, and every Nth also `mbrec analyze` (streamed in
partitions, or with a second host's trace, every other time). A case that ends in an internal error is an escape and
is kept in --keep DIR to be replayed; a case that takes longer than --timeout seconds is a
hang. Prints one summary line of JSON (docs/robustness.md records the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import sys
import tempfile
import time

import tracefuzz  # tests/, the script's own directory, is first on sys.path


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--analyze-every", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--keep", default="out/fuzz", help="where escaping cases are kept")
    ap.add_argument("--progress", type=int, default=5000, help="a line every N cases")
    args = ap.parse_args()
    signal.signal(signal.SIGALRM, _alarm)
    tmp = tempfile.mkdtemp(prefix="mbrec-fuzz-")
    path = os.path.join(tmp, "case.mbrec")
    stats = {"cases": 0, "structure_aware": 0, "byte_level": 0, "analyze_runs": 0,
             "escapes": 0, "hangs": 0, "max_case_s": 0.0}
    start = time.perf_counter()
    try:
        for i in range(args.cases):
            rng = random.Random(args.seed * 10**9 + i)
            structured = i % 2 == 0
            data = (tracefuzz.structured_case(rng) if structured
                    else tracefuzz.byte_case(rng, tmp))
            with open(path, "wb") as f:
                f.write(data)
            analyze = args.analyze_every > 0 and i % args.analyze_every == 0
            other = (tracefuzz.second_host(tmp)
                     if analyze and (i // args.analyze_every) % 2 else None)
            t0 = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, args.timeout)
            try:
                escapes = tracefuzz.run_case(path, analyze=analyze, with_host=other)
            except Hang:
                escapes = None
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            took = time.perf_counter() - t0
            stats["max_case_s"] = max(stats["max_case_s"], round(took, 3))
            stats["cases"] += 1
            stats["structure_aware" if structured else "byte_level"] += 1
            stats["analyze_runs"] += analyze
            if escapes is None or escapes:
                stats["hangs" if escapes is None else "escapes"] += 1
                os.makedirs(args.keep, exist_ok=True)
                kept = os.path.join(args.keep, f"case-{args.seed}-{i}.mbrec")
                shutil.copyfile(path, kept)
                print(f"case {i} ({kept}): " + ("HANG" if escapes is None else
                                                "\n".join(escapes)), file=sys.stderr)
            if args.progress and (i + 1) % args.progress == 0:
                print(f"{i + 1} cases, {stats['escapes']} escapes, {stats['hangs']} hangs, "
                      f"{time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stats["seconds"] = round(time.perf_counter() - start, 1)
    stats["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    stats["seed"] = args.seed
    print(json.dumps(stats))
    return 1 if stats["escapes"] or stats["hangs"] else 0


if __name__ == "__main__":
    sys.exit(main())
