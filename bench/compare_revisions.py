"""Read + analyse the same traces with two revisions of mbrec, alternating, in one run.

    python bench/compare_revisions.py BEFORE_REV [AFTER_REV] --traces A.mbrec B.mbrec [--rounds 2]

Each revision is checked out into a temporary git worktree and laid out as the installed
package (analysis/ and bpf/ inside mbrec/, as setup.py maps them) so it imports without an
install; every measurement runs in a fresh process (compiled kernels loaded first, untimed), best
of 3 by CPU time. Rounds alternate the revisions, so machine load falls on both alike: compare
the rows of one run. AFTER_REV defaults to the working tree.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

MEASURE = r'''
import json, sys, time
from mbrec.analysis.run import analyze
from mbrec.trace.reader import read_trace
paths = sys.argv[1:]
analyze([read_trace(p) for p in paths[:1]], cross_host=False)
def best(fn):
    runs = []
    for _ in range(3):
        c0 = time.process_time()
        result = fn()
        runs.append((time.process_time() - c0, result))
    return min(runs, key=lambda r: r[0])
cpu_read, traces = best(lambda: [read_trace(p) for p in paths])
cpu_analyze, _ = best(lambda: analyze(traces, cross_host=False))
events = sum(len(v) for t in traces for v in t.events.values())
print(json.dumps({"read_s": cpu_read, "analyze_s": cpu_analyze, "events": events}))
'''


def package_tree(source: str, into: str) -> str:
    """A directory whose mbrec/ is the source tree's package as it installs (symlinks)."""
    pkg = os.path.join(into, "mbrec")
    os.makedirs(pkg)
    for entry in os.listdir(os.path.join(source, "mbrec")):
        if entry != "__pycache__":
            os.symlink(os.path.join(source, "mbrec", entry), os.path.join(pkg, entry))
    os.symlink(os.path.join(source, "analysis"), os.path.join(pkg, "analysis"))
    os.symlink(os.path.join(source, "bpf"), os.path.join(pkg, "bpf"))
    return into


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after", nargs="?", default=None)
    ap.add_argument("--traces", nargs="+", required=True)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    traces = [os.path.abspath(p) for p in args.traces]
    with tempfile.TemporaryDirectory(prefix="mbrec-revs-") as tmp:
        trees = {}
        for label, rev in (("before", args.before), ("after", args.after)):
            if rev is None:
                source = repo
            else:
                source = os.path.join(tmp, f"src-{label}")
                subprocess.run(["git", "-C", repo, "worktree", "add", "-q", "--detach", source,
                                rev], check=True)
            trees[label] = (rev or "working tree", package_tree(source, os.path.join(tmp, label)))
        try:
            for rnd in range(args.rounds):
                for label, (rev, tree) in trees.items():
                    r = subprocess.run([sys.executable, "-c", MEASURE, *traces], cwd=tmp,
                                       env=dict(os.environ, PYTHONPATH=tree),
                                       capture_output=True, text=True, check=True)
                    m = json.loads(r.stdout.splitlines()[-1])
                    rate = m["events"] / (m["read_s"] + m["analyze_s"]) / 1e6
                    print(f"round {rnd}  {label:6}  {rev:14.14}  read {m['read_s']:6.2f} s  "
                          f"analyse {m['analyze_s']:6.2f} s  end to end {rate:5.2f} M events/s",
                          flush=True)
        finally:
            for label in trees:
                source = os.path.join(tmp, f"src-{label}")
                if os.path.isdir(source):
                    subprocess.run(["git", "-C", repo, "worktree", "remove", "--force", source],
                                   check=False)


if __name__ == "__main__":
    main()
