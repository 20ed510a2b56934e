"""`mbrec analyze` without the command line: traces in, report and per-host results out."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from mbrec.analysis import flows as flows_mod
from mbrec.analysis import report as rep
from mbrec.analysis.host import analyze_host
from mbrec.errors import MbrecError


@dataclass
class Analysis:
    report: dict
    names: list[str]
    results: list            # HostResult per trace
    series: list             # flow time series per trace
    flow_names: list         # per trace: analysis.report.flow_names
    network: object = None   # analysis.network.NetworkResult, when cross-host ran
    alignment: object = None
    timings: dict = field(default_factory=dict)


def unique_names(traces) -> list[str]:
    names, seen = [], {}
    for t in traces:
        h = str((t.header or {}).get("host") or "?")
        seen[h] = seen.get(h, 0) + 1
        names.append(h if seen[h] == 1 else f"{h}#{seen[h]}")
    return names


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


def analyze(traces, *, per_flow: bool = False, cross_host: bool = True, clock: str = "auto",
            reference: str | None = None, clock_window: float | None = None,
            progress=None) -> Analysis:
    say = progress or (lambda msg: None)
    warnings = check_inputs(traces)
    names = unique_names(traces)
    timings = {}
    acc = _HostResults()
    for name, t in zip(names, traces):
        t0 = time.perf_counter()
        n_ev = sum(len(v) for v in t.events.values())
        say(f"analysing {name}: {n_ev:,} events")
        hr = analyze_host(t)
        series_h = _series(t, hr)
        summ = flows_mod.flow_summaries(series_h, len(hr.table.flows), t.events.get("tcp"),
                                        _ids(hr, "tcp"), t.events.get("sock"), _ids(hr, "sock"))
        _add_host(acc, name, hr, series_h, summ, per_flow)
        timings[name] = time.perf_counter() - t0
    cross, net, al = None, None, None
    if len(traces) >= 2 and cross_host:
        cross, net, al = _cross_host(traces, clock, reference, clock_window, say,
                                     [r.table for r in acc.results])
    elif len(traces) == 1:
        cross = dict(SINGLE_HOST)
    report = rep.build_report(_inputs(traces, names), acc.hosts, acc.flows, cross, warnings)
    return Analysis(report, names, acc.results, acc.series, acc.fnames, net, al, timings)


SINGLE_HOST = {"status": "single host",
               "reason": "one trace: network latency (L_NET) needs the traces of both ends"}


@dataclass
class _HostResults:
    """What the report and the Analysis collect per host, in trace order."""
    hosts: list = field(default_factory=list)    # report sections
    flows: list = field(default_factory=list)    # report flow entries, all hosts
    results: list = field(default_factory=list)  # HostResult
    series: list = field(default_factory=list)   # flow time series
    fnames: list = field(default_factory=list)   # flow names


def _add_host(acc: _HostResults, name, hr, series_h, summ, per_flow: bool) -> None:
    section, fl = rep.host_section(name, hr, summ, per_flow)
    acc.hosts.append(section)
    acc.flows += fl
    acc.results.append(hr)
    acc.series.append(series_h)
    acc.fnames.append(rep.flow_names(hr.table.flows))


def _ids(hr, schema):
    ids = hr.flow_ids.get(schema)
    return None if ids is None else ids[0]


def _series(trace, hr):
    recs = trace.events.get("flow")
    if recs is None or len(recs) == 0 or "flow" not in hr.flow_ids:
        return {"flow": np.zeros(0, np.int64), "t": np.zeros(0, np.int64)}
    return flows_mod.flow_series(recs, hr.flow_ids["flow"][0])


def _inputs(traces, names):
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


def _cross_host(traces, clock, reference, window, say, tables=None):
    """Clock alignment and L_NET from analysis.clock / analysis.network (the cross-host part)."""
    try:
        from mbrec.analysis import clock as clock_mod
        from mbrec.analysis import network as net_mod
    except ImportError as e:
        return ({"status": "not available", "reason": f"cross-host analysis is not part of this "
                 f"build ({e})"}, None, None)
    if not hasattr(clock_mod, "align") or not hasattr(net_mod, "analyze_network"):
        return ({"status": "not available",
                 "reason": "cross-host analysis is not part of this build"}, None, None)
    say("aligning clocks and matching frames across hosts")
    al = clock_mod.align(traces, method=clock, reference=reference, window_s=window)
    import inspect
    # the per-host packet tables are reused for the RTT decomposition where supported
    if "tables" in inspect.signature(net_mod.analyze_network).parameters:
        net = net_mod.analyze_network(traces, al, tables=tables)
    else:
        net = net_mod.analyze_network(traces, al)
    return ({"status": "ok", "alignment": al.report_section(),
             "network": net.report_section()}, net, al)


def analyze_partitioned(paths: list[str], parts: int, workdir: str, *, per_flow: bool = False,
                        progress=None) -> Analysis:
    """The per-host analysis of traces larger than memory: events split by flow into `parts`
    partitions on disk (analysis.partition), analysed one partition at a time, results merged.
    Peak memory: one partition's events (about 3x their raw size while analysed) plus the
    results (packet rows and latency samples). The cross-host part needs whole traces and is
    left out, with the reason in the report."""
    from mbrec.analysis.partition import load_partition, split_traces, whole_trace_view

    say = progress or (lambda msg: None)
    metas = split_traces(paths, parts, workdir, say)
    views = [whole_trace_view(m) for m in metas]
    warnings = check_inputs(views)
    names = unique_names(views)
    pieces = [[] for _ in metas]
    for p in range(parts):
        say(f"analysing partition {p + 1}/{parts}")
        for i, t in enumerate(load_partition(metas, p)):
            if sum(len(v) for v in t.events.values()) == 0:
                continue
            hr = analyze_host(t)
            series_h = _series(t, hr)
            summ = flows_mod.flow_summaries(series_h, len(hr.table.flows), t.events.get("tcp"),
                                            _ids(hr, "tcp"), t.events.get("sock"),
                                            _ids(hr, "sock"))
            # keep only what the report needs of the packet rows: memory stays bounded by one
            # partition's events plus small per-row columns and the latency samples
            hr.table.pkt = {k: hr.table.pkt[k] for k in ("flow", "direction", "retrans",
                                                         "duplicate")}
            hr.table.wire = {k: v[:0] for k, v in hr.table.wire.items()}
            hr.samples = {k: v.astype(np.int32) if k in ("name", "flow") else v
                          for k, v in hr.samples.items()}
            pieces[i].append((hr, series_h, summ))
    acc = _HostResults()
    for name, view, parts_i in zip(names, views, pieces):
        _add_host(acc, name, *_merge_host(view, parts_i), per_flow)
    cross = {"status": "not available",
             "reason": f"analysed in {parts} flow partitions (--partitions): clock alignment "
                       "and L_NET need whole traces; run without --partitions for them"}
    if len(views) == 1:
        cross = dict(SINGLE_HOST)
    report = rep.build_report(_inputs(views, names), acc.hosts, acc.flows, cross, warnings)
    report["partitions"] = parts
    return Analysis(report, names, acc.results, acc.series, acc.fnames)


def _merge_host(view, parts_i):
    """One HostResult from a host's per-partition results: flows, rows and samples renumbered."""
    from mbrec.analysis.host import HostResult
    from mbrec.analysis.packets import FlowTable, PacketTable

    header = view.header or {}
    flow_off, row_off = 0, 0
    pkts, wires, samples, series_l, summ = [], [], [], [], []
    ft_parts = []
    for hr, s, sm in parts_i:
        t = hr.table
        pk = dict(t.pkt)
        pk["flow"] = pk["flow"] + flow_off
        w = dict(t.wire)
        w["flow"] = w["flow"] + flow_off
        w["row"] = np.where(w["row"] >= 0, w["row"] + row_off, -1)
        sa = dict(hr.samples)
        sa["flow"] = sa["flow"] + flow_off
        sa["row"] = np.where(sa["row"] >= 0, sa["row"] + row_off, -1)
        s2 = dict(s)
        s2["flow"] = s2["flow"] + flow_off
        pkts.append(pk)
        wires.append(w)
        samples.append(sa)
        series_l.append(s2)
        summ += sm
        ft_parts.append(t.flows)
        flow_off += len(t.flows)
        row_off += len(t.pkt["flow"])

    def cat(dicts, empty_like=None):
        keys = dicts[0].keys() if dicts else (empty_like or {}).keys()
        return {k: np.concatenate([d[k] for d in dicts if k in d]) for k in keys} if dicts \
            else dict(empty_like or {})

    if ft_parts:
        flows = FlowTable(ep_addr=np.concatenate([f.ep_addr for f in ft_parts]),
                          ep_port=np.concatenate([f.ep_port for f in ft_parts]),
                          family=np.concatenate([f.family for f in ft_parts]),
                          local=np.concatenate([f.local for f in ft_parts]),
                          client=np.concatenate([f.client for f in ft_parts]),
                          client_source=sum((list(f.client_source) for f in ft_parts), []),
                          cookies=sum((list(f.cookies) for f in ft_parts), []))
    else:
        from mbrec.analysis.packets import identify_flows
        flows, _ = identify_flows({})
    from mbrec.analysis.packets import _empty_rows, _empty_wire
    table = PacketTable(str(header.get("host", "?")), str(header.get("boot_id", "")), flows,
                        cat(pkts, {k: v for k, v in _empty_rows().items() if k in
                                   ("flow", "direction", "retrans", "duplicate")}),
                        cat(wires, _empty_wire()))
    merged_samples = cat(samples, {k: np.zeros(0, np.int64)
                                   for k in ("name", "flow", "t", "value", "row")})
    merged_series = cat([s for s in series_l if len(s.get("flow", ()))],
                        {"flow": np.zeros(0, np.int64), "t": np.zeros(0, np.int64)})
    exact = min([hr.copies_exact for hr, _, _ in parts_i], default=1.0)
    hr = HostResult(host=str(header.get("host", "?")), path=view.path,
                    boot_id=str(header.get("boot_id", "")), table=table, samples=merged_samples,
                    negative=sum(hr.negative for hr, _, _ in parts_i), copies_exact=exact,
                    events={k: int(len(v)) for k, v in view.events.items()},
                    lost=dict(view.lost or {}), warnings=list(view.warnings), clean=view.clean)
    return hr, merged_series, summ
