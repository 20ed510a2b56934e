"""`mbrec analyze` without the command line: traces in, report and per-host results out.

analyze(traces) analyses whole traces held in memory; analyze_files(paths, plan) reads the files,
splits them into connection partitions on disk where the plan says so, and runs the map stage
wherever the plan's executor runs it. Both are the one pipeline of analysis.pipeline.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from functools import cached_property, partial

import numpy as np

from mbrec.analysis.engine import Executor, default_memory, run_map
from mbrec.analysis.latency import NAMES, sort_within_groups
from mbrec.analysis.match import host_names
from mbrec.analysis.pipeline import (Options, analyze_partition, check_inputs, finish)
from mbrec.events import SCHEMA_BY_NAME

# Sizing partitions: a trace file expands about 8x into raw records (zstd of msgpack, format
# v2), and analysing records peaks at about 3x their raw size (docs/performance.md).
RAW_PER_FILE_BYTE = 8
PEAK_PER_RAW_BYTE = 3
# ... and for speed: a partition of about half a million events keeps the analysis's tables in
# the caches. Measured on 12.7 M events (CPU s, cross-host part included): whole traces in
# memory 24.2, 4 partitions 15.5, 8 14.8, 16 13.0, 32 12.2, 64 13.5; on 2.0 M events: whole
# 1.75-1.92, 4 partitions 1.90, 8 1.87. So traces of more than 4 such partitions are split.
RAW_BYTES_PER_EVENT = SCHEMA_BY_NAME["pkt"].dtype.itemsize  # most events are packet records
EVENTS_PER_PARTITION = 500_000
MIN_SPLIT_FOR_SPEED = 4
MAX_PARTITIONS = 4096
NAT_PARTITION = "nat"


@dataclass
class Analysis:
    report: dict
    names: list[str]
    summaries: list          # analysis.host.HostSummary per trace
    results: list | None     # analysis.host.HostResult per trace (whole traces only)
    pieces: list             # pipeline.HostPiece per trace (merged over partitions)
    series: list             # flow time series per trace
    flow_names: list         # per trace: analysis.report.flow_names
    network: object = None   # analysis.network.NetworkResult, when cross-host ran
    alignment: object = None
    partitions: int = 1
    usage: list = field(default_factory=list)  # per partition: pid, cpu_s, peak_rss_mb

    @cached_property
    def cdf(self) -> list:
        """Per trace: latency name -> sorted values (for the CDF plots and the HTML page; sorted
        on first use, since the tables and report.json do not need them)."""
        out = []
        for h in self.pieces:
            if h.result is None:
                out.append(h.cdf or {})
                continue
            s = h.result.samples
            values, count = sort_within_groups(s["name"], s["value"], len(NAMES))
            ends = np.cumsum(count)
            out.append({NAMES[i]: values[ends[i] - count[i]:ends[i]]
                        for i in np.nonzero(count)[0].tolist()})
        return out


@dataclass
class Plan:
    """How analyze_files runs: the analysis options, where the map stage runs, and how many
    partitions (None: as many as keep one partition's analysis within memory / workers)."""

    options: Options = field(default_factory=Options)
    executor: Executor = field(default_factory=Executor)
    partitions: int | None = None
    memory: int | None = None
    spill_dir: str | None = None
    # the caller writes the per-event files (packets.csv, latencies.csv), which need whole
    # traces: partitions then only where memory needs them, never for speed
    per_event_files: bool = False


def analyze(traces, *, per_flow: bool = False, cross_host: bool = True, clock: str = "auto",
            reference: str | None = None, clock_window: float | None = None,
            progress=None) -> Analysis:
    """Whole traces, in memory: the pipeline with one partition."""
    say = progress or (lambda msg: None)
    options = Options(per_flow, cross_host, clock, reference, clock_window)
    warnings = check_inputs(traces)
    names = host_names(traces)
    say(f"analysing {sum(sum(len(v) for v in t.events.values()) for t in traces):,} events")
    part = analyze_partition(0, traces, names, options, kind="whole")
    say("merging, aligning clocks, L_NET")
    return _analysis(finish(traces, names, [part], options, warnings), names, 1)


def partitions_for(paths: list[str], plan: Plan) -> int:
    """The partition count: the plan's, or enough that each worker's partition fits its share
    of the memory budget and, for traces large enough to gain (unless the caller writes the
    per-event files), holds about EVENTS_PER_PARTITION events."""
    if plan.partitions:
        return plan.partitions
    budget = (plan.memory or default_memory()) / max(plan.executor.workers, 1)
    raw = sum(os.path.getsize(p) for p in paths if os.path.isfile(p)) * RAW_PER_FILE_BYTE
    parts = math.ceil(raw * PEAK_PER_RAW_BYTE / budget)
    for_speed = raw // (RAW_BYTES_PER_EVENT * EVENTS_PER_PARTITION)
    if for_speed >= MIN_SPLIT_FOR_SPEED and not plan.per_event_files:
        parts = max(parts, for_speed)
    if plan.executor.kind != "serial":
        parts = max(parts, 4 * plan.executor.workers)  # keep every worker busy to the end
    return max(1, min(parts, MAX_PARTITIONS))


def analyze_files(paths: list[str], plan: Plan, progress=None, bars=None) -> Analysis:
    """Trace files in, analysis out, in as many partitions as the plan needs.

    progress(msg): one-line progress messages; bars(description, total, unit): a progress bar
    (a callable taking a count), or None for none."""
    say = progress or (lambda msg: None)
    bar = bars or (lambda desc, total, unit: (lambda n: None))
    parts = partitions_for(paths, plan)
    if parts == 1 and plan.executor.kind == "serial":
        from mbrec.trace.reader import read_trace
        traces = []
        for p in paths:
            say(f"reading {p} ({os.path.getsize(p) / 1e6:.1f} MB)" if os.path.isfile(p)
                else f"reading {p}")
            traces.append(read_trace(p))
        o = plan.options
        return analyze(traces, per_flow=o.per_flow, cross_host=o.cross_host, clock=o.clock,
                       reference=o.reference, clock_window=o.clock_window, progress=say)
    from mbrec.analysis.partition import single_host_flows, split_traces, whole_trace_view
    spill = os.path.abspath(plan.spill_dir) if plan.spill_dir else None
    with tempfile.TemporaryDirectory(prefix="mbrec-spill-", dir=spill) as work:
        say(f"splitting {len(paths)} traces into {parts} connection partitions in {work}")
        if plan.executor.kind == "serial":
            metas = split_traces(paths, parts, work, bar("reading", None, "ev"))
        else:  # one trace per worker
            named = [(p, os.path.abspath(p)) for p in paths]
            metas = run_map(partial(_split_one, named, parts, work), list(range(len(paths))),
                            plan.executor, bar("reading", len(paths), "trace"),
                            describe=lambda t: f"the trace {paths[t]}")
        views = [whole_trace_view(m) for m in metas]
        warnings = check_inputs(views)
        names = host_names(views)
        items: list[int | str] = list(range(parts))
        if plan.options.cross_host and sum(len(f) > 0 for f in single_host_flows(metas)) >= 2:
            items.append(NAT_PARTITION)  # connections no two hosts name alike
        say(f"analysing {parts} partitions ({plan.executor.describe()})")
        results = run_map(partial(_map_one, metas, names, plan.options, parts, work), items,
                          plan.executor, bar("partitions", len(items), "part"),
                          describe=lambda p: f"partition {p} (spill files {work}/t*-p{p}-*)")
        say("merging, aligning clocks, L_NET")
        out = _analysis(finish(views, names, results, plan.options, warnings), names, parts)
        out.usage = [r.usage for r in results]
        return out


def _split_one(paths, parts, work, t):
    """Split trace t into the spill directory (runs in a worker, whose working directory is
    not the client's: the file is opened by its absolute path)."""
    from mbrec.analysis.partition import split_trace
    shown, absolute = paths[t]
    return split_trace(absolute, t, parts, work, shown_as=shown)


def _map_one(metas, names, options, parts, work, p):
    """The map stage of partition p, read from its spill files (runs in a worker)."""
    import resource
    import time

    from mbrec.analysis.partition import load_nat_partition, load_partition, single_host_flows
    cpu0 = time.process_time()
    if p == NAT_PARTITION:
        traces = load_nat_partition(metas, single_host_flows(metas), parts)
        out = analyze_partition(p, traces, names, options, kind="nat")
    else:
        traces, positions = load_partition(metas, p)
        out = analyze_partition(p, traces, names, options, positions, run_dir=work)
    out.usage = {"pid": os.getpid(), "cpu_s": time.process_time() - cpu0,
                 "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    return out


def _analysis(done, names, parts) -> Analysis:
    from mbrec.analysis import report as rep
    if parts > 1:
        done.report["partitions"] = parts
    whole = all(h.result is not None for h in done.hosts)
    return Analysis(done.report, names, [h.summary for h in done.hosts],
                    [h.result for h in done.hosts] if whole else None, done.hosts,
                    [h.series for h in done.hosts],
                    [rep.flow_names(h.summary.flows) for h in done.hosts],
                    done.network, done.alignment, parts)
