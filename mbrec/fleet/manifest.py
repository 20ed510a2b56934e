"""run.json: what a fleet recording did, host by host, and where its traces are.

A run directory holds one trace per host (NAME.mbrec), logs/NAME.log (what each recorder
printed) and run.json, rewritten whole (write, then rename) at every step, so it always says
how far the run got.
"""

from __future__ import annotations

import datetime as dt
import json
import os

from mbrec.errors import MbrecError

MANIFEST = "run.json"
FORMAT = "mbrec-run"
VERSION = 1


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def write(run_dir: str, manifest: dict) -> None:
    path = os.path.join(run_dir, MANIFEST)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def read(run_dir: str) -> dict:
    path = os.path.join(run_dir, MANIFEST)
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise MbrecError(f"{run_dir}: a directory without {MANIFEST}: give trace files, or a "
                         "run directory written by `mbrec fleet record`") from None
    except (OSError, ValueError) as e:
        raise MbrecError(f"{path}: not a readable run manifest ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise MbrecError(f"{path}: not an mbrec run manifest (no \"format\": \"{FORMAT}\")")
    return data


def traces_of_run(run_dir: str, warn=None) -> list[str]:
    """The traces a run directory holds, in the manifest's host order; warn(line) for each
    host without one."""
    data = read(run_dir)
    paths = []
    for h in data.get("hosts", ()):
        if h.get("trace"):
            paths.append(os.path.join(run_dir, h["trace"]))
        elif warn is not None:
            warn(f"{run_dir}: host {h.get('name')} has no trace ({h.get('status')}; "
                 f"see {MANIFEST})")
    if not paths:
        raise MbrecError(f"{run_dir}: the run collected no trace (see {MANIFEST}: "
                         f"status {data.get('status')!r})")
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise MbrecError(f"{missing[0]}: listed in {MANIFEST} but missing")
    return paths


def expand(paths, warn=None) -> list[str]:
    """Trace arguments with every run directory replaced by its traces."""
    out: list[str] = []
    for p in paths:
        out += traces_of_run(p, warn) if os.path.isdir(p) else [p]
    return out
