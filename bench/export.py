"""Benchmark: `mbrec export --format perfetto` time and peak memory, and report.html's size.

    python bench/export.py [--copies 20]

1. The ab fixture as recorded: wall time of the whole command (read, analyse, export), its
   export step alone, the file's size; and report.html's size and build time.
2. A large trace: fixtures/ab's two hosts replicated `copies` times as concurrent connections
   (mbrec.testing.clientserver.replicate: 20 copies, about 1 M events), exported in a fresh child
   process. Peak memory (ru_maxrss) after the analysis and after the export: the export's
   increment is its columns plus one chunk of messages, not the trace as messages.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AB = [os.path.join(ROOT, "fixtures", "ab", f) for f in ("a.mbrec", "b.mbrec")]

CHILD = r"""
import json, resource, sys, time
from mbrec.trace.reader import read_trace
from mbrec.analysis.run import analyze
from mbrec.analysis import perfetto
paths, out = sys.argv[1:-1], sys.argv[-1]
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
base = rss()
traces = [read_trace(p) for p in paths]
events = sum(len(v) for t in traces for v in t.events.values())
a = analyze(traces)
after_analysis = rss()
t0, c0 = time.perf_counter(), time.process_time()
stats = perfetto.write_trace(a, out, force=True)
dt, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"events": events, "rss_imports_mb": base, "rss_after_analysis_mb": after_analysis,
                  "rss_after_export_mb": rss(), "export_s": dt, "export_cpu_s": cpu, **stats}))
"""


def child(paths, out):
    res = subprocess.run([sys.executable, "-c", CHILD, *paths, out], capture_output=True,
                         text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "ab.perfetto-trace")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mbrec", "export", *AB, "-o", out, "-q"],
                       check=True)
        whole = time.perf_counter() - t0
        ab = child(AB, out)
        print(f"ab fixture: {ab['events']:,} events; `mbrec export` {whole:.2f} s wall "
              f"(export step {ab['export_s']:.2f} s wall, {ab['export_cpu_s']:.2f} s CPU); "
              f"{ab['slices']:,} slices, "
              f"{ab['counters']:,} counter values, {ab['arrows']:,} arrows; "
              f"{ab['bytes'] / 1e6:.1f} MB")

        from mbrec.analysis.run import analyze
        from mbrec.analysis import html_report
        from mbrec.trace.reader import read_trace
        a = analyze([read_trace(p) for p in AB])
        t0 = time.perf_counter()
        path = html_report.write_report(a, os.path.join(tmp, "report.html"))
        print(f"ab fixture: report.html {os.path.getsize(path) / 1e6:.2f} MB, built in "
              f"{time.perf_counter() - t0:.2f} s")

        from mbrec.testing.synthetic import write_trace
        from mbrec.testing.clientserver import replicate
        big = []
        for p in AB:
            t = read_trace(p)
            ev = replicate(t.events, args.copies, client_addr="10.0.1.1")
            big.append(write_trace(os.path.join(tmp, "big-" + os.path.basename(p)), ev,
                                   host=t.header["host"], boot_id=t.header["boot_id"],
                                   force=True))
        r = child(big, os.path.join(tmp, "big.perfetto-trace"))
        print(f"large: {r['events']:,} events ({args.copies} copies of ab); export "
              f"{r['export_s']:.1f} s wall, {r['export_cpu_s']:.1f} s CPU; {r['slices']:,} slices, {r['counters']:,} counter values, "
              f"{r['trace_events']:,} trace events; "
              f"{r['bytes'] / 1e6:.0f} MB; peak RSS after analysis {r['rss_after_analysis_mb']:.0f} "
              f"MB, after export {r['rss_after_export_mb']:.0f} MB "
              f"(+{r['rss_after_export_mb'] - r['rss_after_analysis_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
