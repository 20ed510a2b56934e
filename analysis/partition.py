"""Traces larger than memory: split every host's events by flow into partitions on disk, then
analyse one partition at a time (every matching step of the per-host analysis stays within one
stream, so each flow's results do not depend on the partitioning).

split_traces(paths, parts, workdir) streams each trace frame by frame (TraceReader), assigns
every record to partition hash(endpoint pair) % parts — the same endpoint pair on every host and
in every schema, so a flow's events from all hosts land in the same partition — and appends the
raw records to one spill file per (host, partition, schema). Memory: one frame at a time.
load_partition() then gives Trace objects for one partition, with the original headers, clock
anchors, lost counts (reported once, by the first partition) and warnings.
"""

from __future__ import annotations

import os
import numpy as np

from mbrec.analysis.packets import _mix, _words
from mbrec.trace.reader import Trace, TraceMeta, TraceReader


def partition_of(recs: np.ndarray, parts: int) -> np.ndarray:
    """Partition per record: a symmetric hash of its two endpoints (address words and port)."""
    s0, s1 = _words(np.ascontiguousarray(recs["saddr"]))
    d0, d1 = _words(np.ascontiguousarray(recs["daddr"]))
    with np.errstate(over="ignore"):
        hs = _mix(s0 * np.uint64(0x9E3779B97F4A7C15) + s1 + recs["sport"].astype(np.uint64))
        hd = _mix(d0 * np.uint64(0x9E3779B97F4A7C15) + d1 + recs["dport"].astype(np.uint64))
        h = _mix(hs + hd)  # symmetric: both directions of a flow hash alike
    return (h % np.uint64(parts)).astype(np.int64)


def split_traces(paths: list[str], parts: int, workdir: str, progress=None) -> list[dict]:
    """Spill each trace's records into `parts` flow partitions. Returns per trace its metadata
    (path, header, clocks, lost, trailer, notes, warnings, sizes, dtypes, spill file names)."""
    say = progress or (lambda msg: None)
    metas = []
    for ti, path in enumerate(paths):
        say(f"partitioning {path} into {parts} flow partitions")
        reader = TraceReader(path)
        files: dict = {}
        dtypes: dict = {}
        counts: dict = {}
        meta = TraceMeta()
        for obj in reader.objects():
            if obj["t"] == "events":
                batch = reader.batches(obj)
                if batch is None:
                    continue
                name, recs = batch
                dtypes[name] = recs.dtype
                part = partition_of(recs, parts)
                order = np.argsort(part, kind="stable")
                bounds = np.searchsorted(part[order], np.arange(parts + 1))
                for p in range(parts):
                    sel = order[bounds[p]:bounds[p + 1]]
                    if len(sel) == 0:
                        continue
                    key = (p, name)
                    if key not in files:
                        files[key] = os.path.join(workdir, f"t{ti}-p{p}-{name}.bin")
                    with open(files[key], "ab") as f:
                        f.write(recs[sel].tobytes())
                    counts[key] = counts.get(key, 0) + len(sel)
            else:
                meta.take(obj)
        for name, dtype in reader.schemas.values():
            dtypes.setdefault(name, dtype)
        metas.append({"path": reader.path, "header": reader.header, "clocks": meta.clocks,
                      "lost": meta.lost, "trailer": meta.trailer, "notes": meta.notes,
                      "warnings": meta.warnings(reader),
                      "file_size": reader.file_size, "bytes_lost": reader.bytes_lost,
                      "files": files, "dtypes": dtypes, "counts": counts})
    return metas


def load_partition(metas: list[dict], p: int) -> list[Trace]:
    """The traces of partition p (one per host), read back from the spill files."""
    out = []
    for m in metas:
        events = {}
        for name, dtype in m["dtypes"].items():
            fn = m["files"].get((p, name))
            events[name] = (np.fromfile(fn, dtype=dtype) if fn else np.empty(0, dtype=dtype))
        out.append(Trace(path=m["path"], header=m["header"], events=events, clocks=m["clocks"],
                         lost=m["lost"] if p == 0 else {}, trailer=m["trailer"],
                         notes=m["notes"], warnings=m["warnings"] if p == 0 else [],
                         file_size=m["file_size"], bytes_lost=m["bytes_lost"]))
    return out


def whole_trace_view(meta: dict) -> Trace:
    """A Trace with the original metadata and no events (for checks and the report's inputs)."""
    counts = {}
    for (p, name), n in meta["counts"].items():
        counts[name] = counts.get(name, 0) + n
    events = {name: _CountOnly(n, meta["dtypes"][name]) for name, n in counts.items()}
    for name, dtype in meta["dtypes"].items():
        events.setdefault(name, _CountOnly(0, dtype))
    return Trace(path=meta["path"], header=meta["header"], events=events, clocks=meta["clocks"],
                 lost=meta["lost"], trailer=meta["trailer"], notes=meta["notes"],
                 warnings=meta["warnings"], file_size=meta["file_size"],
                 bytes_lost=meta["bytes_lost"])


class _CountOnly:
    """Stands in for an event array where only its length is needed."""

    def __init__(self, n: int, dtype):
        self.n, self.dtype = n, dtype

    def __len__(self):
        return self.n
