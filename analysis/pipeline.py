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

from dataclasses import dataclass, field

import numpy as np

from mbrec.analysis import flows as flows_mod
from mbrec.analysis import report as rep
from mbrec.analysis.clock import PairConstraints, clock_source, fit_alignment
from mbrec.analysis.host import HostResult, analyze_host
from mbrec.analysis.match import match_traces
from mbrec.analysis.network import merge_inputs, network_inputs, network_result
from mbrec.analysis.packets import FlowTable, PacketTable, identify_flows
from mbrec.errors import MbrecError

SCHEMA_ORDER = ("pkt", "sock", "flow", "tcp")  # the order flows are first seen in (packets.py)
# what the report needs of a partition's packet rows (the rest is dropped before merging)
KEPT_PACKET_COLUMNS = ("flow", "direction", "retrans", "duplicate")
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
    """One host's results within one partition."""

    result: HostResult
    series: dict              # flow snapshots, sorted by (flow, time)
    summaries: list           # per flow: the 16 metrics (analysis.flows)
    first_seen: np.ndarray    # per flow: its first event's (schema rank << 48 | index) in the trace


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
                      positions: list | None = None, kind: str = "keyed") -> PartitionResult:
    """Everything that can be computed from one partition alone (the map stage).

    positions: per trace, per schema, each event's index in the whole trace (None: the traces
    are whole). kind: "whole" (one partition holding whole traces: full packet tables and the
    matches are kept), "keyed" (a connection partition: frames matched within each 4-tuple;
    the NAT pass belongs to the NAT partition), "nat" (the wire frames of the connections that
    only one host has: matched across connections, for the cross-host part only)."""
    assert kind in MATCHING
    whole = kind == "whole"
    out = PartitionResult(index, [])
    results = []
    for k, t in enumerate(traces):
        if sum(len(v) for v in t.events.values()) == 0:
            out.hosts.append(None)
            results.append(None)
            continue
        hr = analyze_host(t)
        series = _series(t, hr)
        summ = flows_mod.flow_summaries(series, len(hr.table.flows), t.events.get("tcp"),
                                        _ids(hr, "tcp"), t.events.get("sock"), _ids(hr, "sock"))
        first = _first_seen(hr, None if positions is None else positions[k])
        out.hosts.append(HostPiece(hr, series, summ, first))
        results.append(hr)
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
    if kind == "nat":  # their per-host results are the connection partitions' business
        out.hosts = [None] * len(traces)
    elif not whole:
        for piece in out.hosts:
            if piece is not None:
                _trim(piece.result)
    return out


def _trim(hr: HostResult) -> None:
    """Keep only what the report needs of a partition's results, in the narrowest types, so
    the partitions' results stay small next to their events: per packet row its flow, direction
    and marks; per latency sample its name, flow, time and value (the packet row a sample came
    from means nothing without the packet table, which a partitioned run does not keep)."""
    pkt = hr.table.pkt
    hr.table.pkt = {k: pkt[k].astype(np.int32) if k == "flow" else pkt[k]
                    for k in KEPT_PACKET_COLUMNS}
    hr.table.wire = {k: v[:0] for k, v in hr.table.wire.items()}
    hr.flow_ids = {}
    s = hr.samples
    hr.samples = {"name": s["name"].astype(np.uint8), "flow": s["flow"].astype(np.int32),
                  "t": s["t"], "value": s["value"]}


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
    if len(pieces) == 1:  # already in whole-trace order; the whole run's counts, warnings
        hr = pieces[0].result
        hr.events = {k: int(len(v)) for k, v in view.events.items()}
        hr.lost, hr.warnings, hr.clean = dict(view.lost or {}), list(view.warnings), view.clean
        return pieces[0]
    header = view.header or {}
    first = np.concatenate([p.first_seen for p in pieces]) if pieces else np.zeros(0, np.int64)
    order = np.argsort(first, kind="stable")
    new_id = np.empty(len(first), np.int64)
    new_id[order] = np.arange(len(first))
    flow_off, row_off = 0, 0
    pkts, wires, samples, series, summ_all, tables = [], [], [], [], [], []
    for p in pieces:
        t = p.result.table
        ids = new_id[flow_off:flow_off + len(t.flows)]
        pkts.append({**t.pkt, "flow": ids[t.pkt["flow"]].astype(np.int32)})
        w = dict(t.wire)
        w["flow"] = ids[w["flow"]] if len(w["flow"]) else w["flow"]
        w["row"] = np.where(w["row"] >= 0, w["row"] + row_off, -1)
        wires.append(w)
        sa = dict(p.result.samples)
        sa["flow"] = ids[sa["flow"]].astype(np.int32) if len(sa["flow"]) else sa["flow"]
        samples.append(sa)
        if len(p.series.get("flow", ())):
            series.append({**p.series, "flow": ids[p.series["flow"]]})
        summ_all += p.summaries
        tables.append(t.flows)
        flow_off += len(t.flows)
        row_off += len(t.pkt["flow"])
    flows = FlowTable(
        ep_addr=np.concatenate([f.ep_addr for f in tables])[order],
        ep_port=np.concatenate([f.ep_port for f in tables])[order],
        family=np.concatenate([f.family for f in tables])[order],
        local=np.concatenate([f.local for f in tables])[order],
        client=np.concatenate([f.client for f in tables])[order],
        client_source=[s for f in tables for s in f.client_source],
        cookies=[c for f in tables for c in f.cookies])
    flows.client_source = [flows.client_source[i] for i in order]
    flows.cookies = [flows.cookies[i] for i in order]
    table = PacketTable(str(header.get("host", "?")), str(header.get("boot_id", "")), flows,
                        _cat(pkts), _cat(wires))
    merged_series = _cat(series) if series else {"flow": np.zeros(0, np.int64),
                                                  "t": np.zeros(0, np.int64)}
    if len(merged_series["flow"]):
        so = np.lexsort((merged_series["t"], merged_series["flow"]))
        merged_series = {k: v[so] for k, v in merged_series.items()}
    r0 = pieces[0].result
    hr = HostResult(host=r0.host, path=view.path, boot_id=r0.boot_id, table=table,
                    samples=_cat(samples),
                    negative=sum(p.result.negative for p in pieces),
                    copies_exact=min(p.result.copies_exact for p in pieces),
                    events={k: int(len(v)) for k, v in view.events.items()},
                    lost=dict(view.lost or {}), warnings=list(view.warnings), clean=view.clean)
    return HostPiece(hr, merged_series, [summ_all[i] for i in order], first[order])


def _cat(dicts: list[dict]) -> dict:
    return {k: np.concatenate([d[k] for d in dicts]) for k in dicts[0]}


def empty_host(view) -> HostPiece:
    """A host none of whose events fell anywhere (an empty trace is refused before this)."""
    from mbrec.analysis.packets import _empty_rows, _empty_wire
    header = view.header or {}
    flows, _ = identify_flows({})
    table = PacketTable(str(header.get("host", "?")), str(header.get("boot_id", "")), flows,
                        {k: v for k, v in _empty_rows().items() if k in KEPT_PACKET_COLUMNS},
                        _empty_wire())
    hr = HostResult(host=str(header.get("host", "?")), path=view.path,
                    boot_id=str(header.get("boot_id", "")), table=table,
                    samples={k: np.zeros(0, np.int64) for k in ("name", "flow", "t", "value")},
                    negative=0, copies_exact=1.0, lost=dict(view.lost or {}),
                    warnings=list(view.warnings), clean=view.clean)
    return HostPiece(hr, {"flow": np.zeros(0, np.int64), "t": np.zeros(0, np.int64)}, [],
                     np.zeros(0, np.int64))


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
    cross, net, al = None, None, None
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
        section, fl = rep.host_section(name, piece.result, piece.summaries, options.per_flow)
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
    versions = {int((t.header or {}).get("format_version", -1)) for t in traces}
    if len(versions) > 1:
        listing = ", ".join(f"{t.path} v{(t.header or {}).get('format_version')}" for t in traces)
        raise MbrecError(f"the traces have different format versions ({listing}): analyse "
                         "traces recorded by the same mbrec version together")
    ids = {}
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
