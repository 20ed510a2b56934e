"""The analysis as an explicit pipeline of pure stages over connection partitions.

    traces ─split─▶ partitions (every host's events of a set of connections; analysis.partition)
                      │
      map, per partition (analyze_partition): per-host packet tables, layer latencies, L_APP,
      waits, flow metrics; frames matched across hosts (analysis.match); the alignment-free
      L_NET inputs (analysis.network) and the clock constraints' hulls (analysis.clock)
                      │
      reduce (finish): per-host results merged in whole-trace flow order; hulls merged and the
      clocks fitted (exact: the hull of a union is the hull of the hulls); L_NET with its
      guaranteed interval per frame; statistics and the report

The map stage is a pure function of one partition's traces; where it runs (in process, local
worker processes, a Dask cluster) is analysis.engine's business. Analysing whole traces is the
same pipeline with one partition held in memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from mbrec.analysis import flows as flows_mod
from mbrec.analysis import report as rep
from mbrec.analysis.clock import PairConstraints, clock_source, fit_alignment
from mbrec.analysis.coverage import coverage
from mbrec.analysis.host import HostResult, HostSummary, analyze_host
from mbrec.analysis.match import match_traces
from mbrec.analysis.network import merge_inputs, network_inputs, network_result
from mbrec.analysis.packets import FlowTable, identify_flows
from mbrec.analysis.stats import Run, cdf_values, run_stats, write_run
from mbrec.errors import MbrecError

SCHEMA_ORDER = ("pkt", "sock", "flow", "tcp")  # the order flows are first seen in (packets.py)
SINGLE_HOST = {"status": "single host",
               "reason": "one trace: network latency (L_NET) needs the traces of both ends"}


@dataclass
class Options:
    per_flow: bool = False
    cross_host: bool = True
    clock: str = "auto"
    reference: str | None = None
    clock_window: float | None = None


@dataclass
class HostPiece:
    """One host's results within one partition (or, merged, the whole trace)."""

    summary: HostSummary      # flows, counts, per-flow statistics (analysis.host)
    series: dict              # flow snapshots, sorted by (flow, time)
    summaries: list           # per flow: the 16 metrics (analysis.flows)
    first_seen: np.ndarray    # per flow: its first event's (schema rank << 48 | index) in the trace
    run: Run | None = None    # the partition's latency samples, value-sorted on disk
    result: HostResult | None = None  # the whole analysis (whole traces only: CSVs, plots)
    cdf: dict | None = None   # merged from runs: name -> values spread over its distribution


@dataclass
class PartitionResult:
    index: int
    hosts: list               # HostPiece or None (no events of this host here), per trace
    constraints: dict = field(default_factory=dict)  # (i, j) -> clock.PairConstraints (hulls)
    network: dict = field(default_factory=dict)      # (i, j) -> network.PairInputs
    matches: dict = field(default_factory=dict)      # (i, j) -> match.PairMatches (whole only)
    usage: dict = field(default_factory=dict)        # where and at what cost it ran


def _first_seen(hr: HostResult, positions: dict) -> np.ndarray:
    """Per flow, where its first event stands in the whole trace (schemas in SCHEMA_ORDER)."""
    n = len(hr.table.flows)
    key = np.full(n, np.iinfo(np.int64).max, np.int64)
    for rank, name in enumerate(SCHEMA_ORDER):
        if name not in hr.flow_ids:
            continue
        flow = hr.flow_ids[name][0]
        pos = positions[name] if positions is not None else np.arange(len(flow))
        k = (np.int64(rank) << 48) | pos.astype(np.int64)
        np.minimum.at(key, flow, k)
    return key


MATCHING = ("whole", "keyed", "nat")


def analyze_partition(index, traces: list, hosts: list[str], options: Options,
                      positions: list | None = None, kind: str = "keyed",
                      run_dir: str | None = None) -> PartitionResult:
    """Everything that can be computed from one partition alone (the map stage).

    positions: per trace, per schema, each event's index in the whole trace (None: the traces
    are whole). kind: "whole" (one partition holding whole traces: full packet tables and the
    matches are kept), "keyed" (a connection partition: frames matched within each 4-tuple;
    the NAT pass belongs to the NAT partition), "nat" (the wire frames of the connections that
    only one host has: matched across connections, for the cross-host part only). run_dir:
    where a connection partition writes its latency samples (analysis.stats)."""
    assert kind in MATCHING
    whole = kind == "whole"
    out = PartitionResult(index, [])
    results: list = []
    for k, t in enumerate(traces):
        if sum(len(v) for v in t.events.values()) == 0:
            out.hosts.append(None)
            results.append(None)
            continue
        hr = analyze_host(t)
        results.append(hr)
        if kind == "nat":  # their per-host results are the connection partitions' business
            out.hosts.append(None)
            continue
        series = _series(t, hr)
        summ = flows_mod.flow_summaries(series, len(hr.table.flows), t.events.get("tcp"),
                                        _ids(hr, "tcp"), t.events.get("sock"), _ids(hr, "sock"))
        first = _first_seen(hr, None if positions is None else positions[k])
        # a connection partition's samples go to disk; their statistics merge exactly
        piece = HostPiece(rep.summarize(hr, options.per_flow, host_stats=whole), series, summ,
                          first)
        if whole:
            piece.result = hr
        else:
            piece.run = write_run(hr.samples, os.path.join(run_dir, f"s{k}-p{index}.npy"))
        out.hosts.append(piece)
    present = [k for k, r in enumerate(results) if r is not None]
    if options.cross_host and len(present) >= 2:
        sub = [traces[k] for k in present]
        names = [hosts[k] for k in present]
        found = match_traces(sub, names, nat=kind != "keyed")
        inputs = network_inputs(sub, names, found, [results[k] for k in present])
        # keys in the whole run's trace numbering
        matches = {(present[i], present[j]): m for (i, j), m in found.items()}
        out.network = {(present[i], present[j]): v for (i, j), v in inputs.items()}
        out.constraints = {k: PairConstraints.of(m.ab.s_ns, m.ab.r_ns, m.ba.s_ns, m.ba.r_ns,
                                                 keep_points=False)
                           for k, m in matches.items()}
        if whole:
            out.matches = matches
    return out


def _ids(hr, schema):
    ids = hr.flow_ids.get(schema)
    return None if ids is None else ids[0]


def _series(trace, hr):
    recs = trace.events.get("flow")
    if recs is None or len(recs) == 0 or "flow" not in hr.flow_ids:
        return {"flow": np.zeros(0, np.int64), "t": np.zeros(0, np.int64)}
    return flows_mod.flow_series(recs, hr.flow_ids["flow"][0])


# --------------------------------------------------------------------------------------------
# Reduce

def merge_host(view, pieces: list[HostPiece]) -> HostPiece:
    """One host's results from its partitions, flows numbered as the whole-trace analysis
    numbers them (by first event), so reports agree whatever the partitioning."""
    if len(pieces) == 1 and pieces[0].run is None:  # a whole trace
        return pieces[0]
    first = np.concatenate([p.first_seen for p in pieces])
    order = np.argsort(first, kind="stable")
    new_id = np.empty(len(first), np.int64)
    new_id[order] = np.arange(len(first))
    series, off = [], 0
    for p in pieces:
        n = len(p.summary.flows)
        if len(p.series.get("flow", ())):
            series.append({**p.series, "flow": new_id[off:off + n][p.series["flow"]]})
        off += n
    sums = [p.summary for p in pieces]
    tables = [h.flows for h in sums]

    def cat(attr):
        return np.concatenate([getattr(x, attr) for x in tables])[order]

    flows = FlowTable(ep_addr=cat("ep_addr"), ep_port=cat("ep_port"), family=cat("family"),
                      local=cat("local"), client=cat("client"),
                      client_source=_pick([f.client_source for f in tables], order),
                      cookies=_pick([f.cookies for f in tables], order))
    per_flow = None
    if all(h.flow_latencies is not None for h in sums):
        per_flow = _pick([h.flow_latencies for h in sums], order)
    merged_series = {"flow": np.zeros(0, np.int64), "t": np.zeros(0, np.int64)}
    if series:
        merged_series = {k: np.concatenate([d[k] for d in series]) for k in series[0]}
        so = np.lexsort((merged_series["t"], merged_series["flow"]))
        merged_series = {k: v[so] for k, v in merged_series.items()}
    h0 = sums[0]
    summary = HostSummary(
        h0.host, view.path, h0.boot_id, view.clean, flows,
        np.concatenate([h.sent for h in sums])[order],
        np.concatenate([h.received for h in sums])[order],
        np.concatenate([h.retransmitted for h in sums])[order],
        sum(h.duplicates for h in sums), run_stats([p.run for p in pieces]), per_flow,
        sum(h.negative for h in sums), min(h.copies_exact for h in sums),
        {k: int(len(v)) for k, v in view.events.items()}, dict(view.lost or {}),
        list(view.warnings), h0.coverage)
    piece = HostPiece(summary, merged_series, _pick([p.summaries for p in pieces], order),
                      first[order])
    piece.cdf = {name: cdf_values([p.run for p in pieces], name)
                 for name in summary.latencies}
    return piece


def _pick(lists: list[list], order: np.ndarray) -> list:
    """The elements of the concatenated lists, in the given order."""
    flat = [x for lst in lists for x in lst]
    return [flat[i] for i in order.tolist()]


def empty_host(view) -> HostPiece:
    """A host none of whose events fell anywhere (an empty trace is refused before this)."""
    header = view.header or {}
    flows, _ = identify_flows({})
    none = np.zeros(0, np.int64)
    summary = HostSummary(str(header.get("host", "?")), view.path,
                          str(header.get("boot_id", "")), view.clean, flows, none, none, none,
                          0, {}, None, 0, 1.0, {}, dict(view.lost or {}), list(view.warnings),
                          coverage(header))
    return HostPiece(summary, {"flow": none, "t": none}, [], none)


@dataclass
class Finished:
    hosts: list               # HostPiece per trace, merged
    report: dict
    network: object = None    # network.NetworkResult
    alignment: object = None  # clock.Alignment


def finish(views: list, hosts: list[str], parts: list[PartitionResult], options: Options,
           warnings: list[str]) -> Finished:
    """The reduce stage: merge the partitions, align the clocks, L_NET, the report."""
    merged = []
    for k, view in enumerate(views):
        pieces = [p.hosts[k] for p in parts if p.hosts[k] is not None]
        merged.append(merge_host(view, pieces) if pieces else empty_host(view))
    cross: dict | None = None
    net, al = None, None
    if len(views) == 1:
        cross = dict(SINGLE_HOST)
    elif options.cross_host:
        inputs = merge_inputs([p.network for p in parts])
        constraints = {}
        for key, pi in inputs.items():
            c = PairConstraints.merge([p.constraints[key] for p in parts
                                       if key in p.constraints])
            c.points = (pi.ab.s_ns, pi.ab.r_ns, pi.ba.s_ns, pi.ba.r_ns)
            constraints[key] = c
        al = fit_alignment([clock_source(v) for v in views], hosts, constraints,
                           method=options.clock, reference=options.reference,
                           window_s=options.clock_window)
        if len(parts) == 1:
            al.matches = parts[0].matches
        net = network_result(inputs, al)
        cross = {"status": "ok", "alignment": al.report_section(),
                 "network": net.report_section()}
        if not inputs:
            cross["reason"] = ("no frame of one trace was matched in another: traces of "
                               "different runs, or of hosts that did not talk to each other")
    sections, flow_entries = [], []
    for name, piece in zip(hosts, merged):
        section, fl = rep.host_section(name, piece.summary, piece.summaries)
        sections.append(section)
        flow_entries += fl
    report = rep.build_report(report_inputs(views, hosts), sections, flow_entries, cross,
                              warnings)
    return Finished(merged, report, net, al)


def report_inputs(traces, names):
    out = []
    for name, t in zip(names, traces):
        h = t.header or {}
        out.append({"path": t.path, "host": name, "boot_id": h.get("boot_id"),
                    "kernel": h.get("kernel"), "trace_id": h.get("trace_id"),
                    "format_version": h.get("format_version"),
                    "mbrec_version": h.get("mbrec_version"), "clean": t.clean,
                    "file_bytes": t.file_size, "bytes_lost": t.bytes_lost,
                    "events": {k: int(len(v)) for k, v in t.events.items()},
                    "lost": dict(t.lost or {}), "lost_total": int(sum((t.lost or {}).values())),
                    "warnings": list(t.warnings)})
    return out


def check_inputs(traces) -> list[str]:
    """Refuse what cannot be analysed together; return warnings for what can, with caveats."""
    # traces of different format versions analyse together: the reader decodes every
    # version into the same layouts
    ids: dict = {}
    for t in traces:
        tid = (t.header or {}).get("trace_id")
        if tid and tid in ids:
            raise MbrecError(f"{t.path} and {ids[tid]} are the same recording: give each "
                             "host's trace once")
        ids[tid] = t.path
    for t in traces:
        if sum(len(v) for v in t.events.values()) == 0 and (t.bytes_lost or t.warnings):
            raise MbrecError(f"{t.path} has no readable events: "
                             f"{(t.warnings or ['the file is damaged'])[0].split(': ', 1)[-1]}")
        if sum(len(v) for v in t.events.values()) == 0:
            raise MbrecError(f"{t.path} holds no events: the recording caught nothing (check "
                             "the recorder's filters and that traffic ran while recording)")
    warnings = []
    for t in traces:
        warnings += list(t.warnings)
        if t.lost:
            total = sum(t.lost.values())
            warnings.append(f"{t.path}: {total} events were lost in the kernel "
                            f"({', '.join(f'{k} {v}' for k, v in sorted(t.lost.items()))}); "
                            "numbers that depend on those probes are marked")
    return warnings
