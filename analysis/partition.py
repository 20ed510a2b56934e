"""Traces larger than memory: every host's events split by connection into partitions on disk.

split_traces(paths, parts, workdir) streams each trace frame by frame (TraceReader) and assigns
every record to partition flowid.partition_of (its connection's hash modulo the count: the same
on every host and in every schema, so a connection's events from all hosts land in the same
partition). Records go to one spill file per (trace, partition, schema), as the raw records
(numpy's own layout: written and read back with no conversion, measured faster than Arrow IPC
here, docs/analysis-pipeline.md), and each record's index in its trace to a file beside it, so
the merged results number flows as the whole-trace analysis does. Memory: one frame at a time.
load_partition() gives one partition's Trace objects, with the original headers, clock anchors,
lost counts (reported once, by the whole-run view) and warnings.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from mbrec.analysis.flowid import partition_of, record_flow_hash
from mbrec.analysis.match import RECV, XMIT
from mbrec.analysis.packets import take_records
from mbrec.errors import MbrecError
from mbrec.trace.reader import Trace, TraceMeta, TraceReader, undo_deltas

# the fields split_trace reads from a batch before its one copy (a v2 delta there is undone first)
READ_BEFORE_THE_COPY = ("saddr", "sport", "daddr", "dport", "probe")


def split_traces(paths: list[str], parts: int, workdir: str, progress=None) -> list[dict]:
    """Spill each trace's records into `parts` connection partitions (split_trace per trace)."""
    return [split_trace(path, ti, parts, workdir, progress) for ti, path in enumerate(paths)]


def split_trace(path: str, ti: int, parts: int, workdir: str, progress=None,
                shown_as: str | None = None) -> dict:
    """Spill trace number ti's records into `parts` connection partitions. Returns its metadata
    (path, header, clocks, lost, trailer, notes, warnings, sizes, dtypes, spill file names and
    counts). progress(n) is called with the records of each frame read; shown_as: the name
    the user gave the file, where path is what a worker opens (absolute)."""
    tick = progress or (lambda n: None)
    reader = TraceReader(path)
    shown = shown_as or path
    files: dict = {}
    dtypes: dict = {}
    counts: dict = {}
    seen: dict = {}   # schema -> records so far (the next record's index in the trace)
    wire_flows: set = set()   # connections with wire frames (for the NAT partition)
    meta = TraceMeta()
    for obj in reader.objects():
        if obj["t"] != "events":
            meta.take(obj)
            continue
        raw = reader.raw_batch(obj)
        if raw is None:
            continue
        name, recs, deltas = raw  # read-only, over the frame's bytes: the gather below is the copy
        if any(f in READ_BEFORE_THE_COPY for f, _ in deltas):
            recs = _copy(recs)
            undo_deltas(recs, deltas)
            deltas = []
        elif recs.ctypes.data % 8:  # records at any offset of their frame: the compiled hash
            recs = _copy(recs)      # reads aligned 64-bit words (one copy, not one per field)
        dtypes[name] = recs.dtype
        h = record_flow_hash(recs)
        part = partition_of(h, parts)
        if name == "pkt":
            hw = h[(recs["probe"] == XMIT) | (recs["probe"] == RECV)]
            if len(hw):  # runs of one connection's frames first: np.unique then sorts a few
                hw = hw[np.r_[True, hw[1:] != hw[:-1]]]
            wire_flows.update(np.unique(hw).tolist())
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(parts + 1))
        base = seen.get(name, 0)
        grouped = take_records(recs, order)  # one gather; each partition's records are then one slice
        undo_deltas(grouped, deltas)
        positions = order + base
        for p in np.flatnonzero(np.diff(bounds)).tolist():
            lo, hi = int(bounds[p]), int(bounds[p + 1])
            key = (p, name)
            if key not in files:
                files[key] = os.path.join(workdir, f"t{ti}-p{p}-{name}")
            _append(files[key] + ".bin", grouped[lo:hi].view(np.uint8).data)  # any field layout
            _append(files[key] + ".pos", memoryview(positions[lo:hi]).cast("B"))
            counts[key] = counts.get(key, 0) + hi - lo
        seen[name] = base + len(recs)
        tick(len(recs))
    for name, dtype in reader.schemas.values():
        dtypes.setdefault(name, dtype)
    return {"path": shown, "header": reader.header, "clocks": meta.clocks,
            "lost": meta.lost, "trailer": meta.trailer, "notes": meta.notes,
            "warnings": [w.replace(path, shown) for w in meta.warnings(reader)],
            "file_size": reader.file_size, "bytes_lost": reader.bytes_lost,
            "frames_lost": reader.frames_lost, "records_lost": dict(reader.records_lost),
            "files": files, "dtypes": dtypes, "counts": counts,
            "wire_flows": np.array(sorted(wire_flows), dtype=np.uint64)}


def _copy(recs: np.ndarray) -> np.ndarray:
    """A copy of the records as one memcpy (numpy copies a structured array field by field)."""
    out = np.empty(len(recs), recs.dtype)
    out.view(np.uint8)[...] = recs.view(np.uint8)
    return out


def single_host_flows(metas: list[dict]) -> list[np.ndarray]:
    """Per trace, its connections with wire frames that no other trace has: rewritten between
    the hosts (NAT), or talking to hosts that were not recorded. Their frames can only be
    matched across connections, so they get a partition of their own."""
    out = []
    for i, m in enumerate(metas):
        others = [o["wire_flows"] for k, o in enumerate(metas) if k != i]
        out.append(np.setdiff1d(m["wire_flows"], np.concatenate(others) if others else
                                np.zeros(0, np.uint64)))
    return out


def load_nat_partition(metas: list[dict], flows: list[np.ndarray], parts: int,
                       chunk: int = 1 << 20) -> list[Trace]:
    """Per trace, the wire frames of its single-host connections (single_host_flows), read from
    every partition's spill file a chunk at a time."""
    traces = []
    for m, keep in zip(metas, flows):
        dtype = m["dtypes"].get("pkt")
        pieces = []
        for p in range(parts):
            fn = m["files"].get((p, "pkt"))
            if fn is None or dtype is None or len(keep) == 0:
                continue
            recs = np.memmap(fn + ".bin", dtype=dtype, mode="r")
            for i in range(0, len(recs), chunk):
                c = recs[i:i + chunk]
                wire = (c["probe"] == XMIT) | (c["probe"] == RECV)
                sel = wire & np.isin(record_flow_hash(c), keep)
                if sel.any():
                    pieces.append(take_records(c, np.flatnonzero(sel)))
        pkt = np.concatenate(pieces) if pieces else np.empty(0, dtype or np.uint8)
        if len(pkt):
            pkt = take_records(pkt, np.argsort(pkt["ts_ns"], kind="stable"))
        traces.append(Trace(path=m["path"], header=m["header"], events={"pkt": pkt},
                            clocks=m["clocks"], lost={}, trailer=m["trailer"], notes=m["notes"],
                            warnings=[], file_size=m["file_size"], bytes_lost=m["bytes_lost"]))
    return traces


def _append(path: str, data) -> None:
    try:
        with open(path, "ab") as f:
            f.write(data)
    except OSError as e:
        raise MbrecError(f"cannot write the spill file {path}: {e.strerror} (free space in "
                         "the spill directory, or choose another with --spill-dir)") from None


def load_partition(metas: list[dict], p: int) -> tuple[list[Trace], list[dict]]:
    """The traces of partition p (one per host), read back from the spill files, and per trace
    each schema's record indices in the whole trace."""
    traces, positions = [], []
    for m in metas:
        events, pos = {}, {}
        for name, dtype in m["dtypes"].items():
            fn = m["files"].get((p, name))
            try:
                events[name] = (np.fromfile(fn + ".bin", dtype=dtype) if fn
                                else np.empty(0, dtype=dtype))
                pos[name] = (np.fromfile(fn + ".pos", dtype=np.int64) if fn
                             else np.empty(0, np.int64))
            except OSError as e:
                raise MbrecError(f"partition {p}: cannot read the spill file {fn}: "
                                 f"{e.strerror} (every worker must see the spill directory)"
                                 ) from None
            if len(pos[name]) != len(events[name]):
                raise MbrecError(f"partition {p}: the spill file {fn} is incomplete")
        traces.append(Trace(path=m["path"], header=m["header"], events=events,
                            clocks=m["clocks"], lost={}, trailer=m["trailer"], notes=m["notes"],
                            warnings=[], file_size=m["file_size"], bytes_lost=m["bytes_lost"]))
        positions.append(pos)
    return traces, positions


def whole_trace_view(meta: dict) -> Trace:
    """A Trace with the original metadata and no events (for checks and the report's inputs)."""
    counts: dict[str, int] = {}
    for (p, name), n in meta["counts"].items():
        counts[name] = counts.get(name, 0) + n
    events: dict[str, Any] = {name: _CountOnly(n, meta["dtypes"][name]) for name, n in counts.items()}
    for name, dtype in meta["dtypes"].items():
        events.setdefault(name, _CountOnly(0, dtype))
    return Trace(path=meta["path"], header=meta["header"], events=events, clocks=meta["clocks"],
                 lost=meta["lost"], trailer=meta["trailer"], notes=meta["notes"],
                 warnings=meta["warnings"], file_size=meta["file_size"],
                 bytes_lost=meta["bytes_lost"], frames_lost=meta["frames_lost"],
                 records_lost=meta["records_lost"])


class _CountOnly:
    """Stands in for an event array where only its length is needed."""

    def __init__(self, n: int, dtype):
        self.n, self.dtype = n, dtype

    def __len__(self):
        return self.n
