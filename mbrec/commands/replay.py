"""`mbrec replay`: every event of one or more traces, merged in time order, one line each."""

from __future__ import annotations

import json

import click
import numpy as np

from mbrec.errors import MbrecError
from mbrec.events import PROBE_IDS
from mbrec.render import record_dicts, text_line
from mbrec.trace.reader import TraceReader


def _batches(reader: TraceReader):
    for obj in reader.objects():
        if obj["t"] == "events":
            batch = reader.batches(obj)
            if batch is not None and len(batch[1]):
                name, recs = batch
                yield name, recs[np.argsort(recs["ts_ns"], kind="stable")]


def merged(readers):
    """Yield (file index, schema, records) chunks in global timestamp order.

    A k-way merge by watermark: records are released once every live file has shown a
    timestamp at least as late, so memory holds about one batch per file.
    """
    streams = [_batches(r) for r in readers]
    buffers = [[] for _ in readers]  # per file: list of (schema, sorted records)
    latest = [-1] * len(readers)
    live = set(range(len(readers)))
    while live or any(buffers):
        for i in list(live):
            while not buffers[i] and i in live:
                try:
                    name, recs = next(streams[i])
                except StopIteration:
                    live.discard(i)
                    break
                buffers[i].append((name, recs))
                latest[i] = max(latest[i], int(recs["ts_ns"][-1]))
        watermark = min((latest[i] for i in live), default=None)
        chunks, keep = [], [[] for _ in readers]
        for i, buf in enumerate(buffers):
            for name, recs in buf:
                cut = len(recs) if watermark is None else int(
                    np.searchsorted(recs["ts_ns"], watermark, side="right"))
                if cut:
                    chunks.append((i, name, recs[:cut]))
                if cut < len(recs):
                    keep[i].append((name, recs[cut:]))
        buffers = keep
        if chunks:
            ts = np.concatenate([c[2]["ts_ns"] for c in chunks])
            owner = np.concatenate([np.full(len(c[2]), k) for k, c in enumerate(chunks)])
            pos = np.concatenate([np.arange(len(c[2])) for c in chunks])
            yield chunks, np.argsort(ts, kind="stable"), owner, pos


def _parse_flow(flow: str) -> tuple[np.ndarray | None, int | None]:
    """--flow ADDR, :PORT or ADDR:PORT as (16-byte address field or None, port or None)."""
    import ipaddress
    usage = "expected ADDR, :PORT or ADDR:PORT, e.g. 10.0.0.2:80, :80 or [::1]:80"
    if flow.startswith("[") and "]" in flow:  # [IPv6] or [IPv6]:PORT
        addr, _, rest = flow[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise MbrecError(f"--flow {flow!r}: {usage}")
        port = rest[1:] if rest else None
    elif flow.count(":") > 1:  # a bare IPv6 address: no port
        addr, port = flow, None
    elif ":" in flow:
        addr, _, port = flow.rpartition(":")
    else:
        addr, port = flow, None
    if not addr and not port:
        raise MbrecError(f"--flow {flow!r} is empty: {usage}")
    if port is not None and not (port.isdigit() and int(port) <= 65535):
        raise MbrecError(f"--flow {flow!r}: the port must be a number from 0 to 65535")
    field = None
    if addr:
        try:
            packed = ipaddress.ip_address(addr).packed
        except ValueError:
            raise MbrecError(f"--flow {flow!r}: {addr!r} is not an IPv4 or IPv6 address; "
                             f"{usage}") from None
        field = np.zeros(16, dtype=np.uint8)
        field[:len(packed)] = np.frombuffer(packed, dtype=np.uint8)
    return field, (int(port) if port else None)


def _flow_mask(recs, flow: tuple[np.ndarray | None, int | None]) -> np.ndarray:
    """Records whose either endpoint matches the parsed --flow, compared as raw fields."""
    addr, port = flow
    hit = np.zeros(len(recs), dtype=bool)
    for a, p in ((recs["saddr"], recs["sport"]), (recs["daddr"], recs["dport"])):
        m = np.ones(len(recs), dtype=bool)
        if port is not None:
            m &= p == port
        if addr is not None:
            m &= (a == addr).all(axis=1)
        hit |= m
    return hit


def _parse_time(spec: str) -> tuple[float, float]:
    """--time START:END (either may be left out) in seconds from the first event."""
    import math
    usage = "expected START:END in seconds from the first event, e.g. 1.5:3 or 2:"
    start, _, end = spec.partition(":")
    if not start.strip() and not end.strip():
        raise MbrecError(f"--time {spec!r} is empty: {usage}")
    try:
        lo = float(start) if start.strip() else 0.0
        hi = float(end) if end.strip() else math.inf
    except ValueError:
        raise MbrecError(f"--time {spec!r}: {usage}") from None
    if not math.isfinite(lo) or (end.strip() and not math.isfinite(hi)):
        raise MbrecError(f"--time {spec!r}: give finite numbers of seconds; {usage}")
    if not lo < hi:
        raise MbrecError(f"--time {spec!r}: the start must come before the end; {usage}")
    return lo, hi


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--format", "fmt", type=click.Choice(["text", "microbpf"]),
              default="text", show_default=True,
              help="text: one line per event; microbpf: MicroBPF's labelled lines (1 tcpout, "
                   "2 tcpin, 3 tcpack, 5 app) from matched packets.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per event, one per line (JSON Lines), not text.")
@click.option("--type", "types", multiple=True,
              help="Event types (pkt, sock, flow, tcp) or packet probe names to keep; repeatable.")
@click.option("--flow", help="Keep events with an endpoint ADDR, :PORT or ADDR:PORT.")
@click.option("--time", "time_spec", help="START:END seconds after the first event.")
def command(files, fmt, as_json, types, flow, time_spec):
    """Print every event of trace FILES in timestamp order, like `perf script`."""
    if as_json and fmt == "microbpf":
        raise MbrecError("--json and --format microbpf are two layouts: give one of them")
    if fmt == "microbpf":
        if types or flow is not None or time_spec is not None:
            raise MbrecError("--format microbpf prints whole traces: drop --type, --flow and "
                             "--time")
        _microbpf(files)
        return
    window = _parse_time(time_spec) if time_spec is not None else None
    flow = _parse_flow(flow) if flow is not None else None
    readers = [TraceReader(f) for f in files]
    schemas = {t for t in types if t in ("pkt", "sock", "flow", "tcp")}
    probes = {PROBE_IDS[t] for t in types if t in PROBE_IDS}
    unknown = set(types) - schemas - set(PROBE_IDS)
    if unknown:
        raise MbrecError(f"--type {sorted(unknown)[0]!r} is not an event type or probe; use "
                         f"one of pkt, sock, flow, tcp, {', '.join(sorted(PROBE_IDS))}")
    t0 = None
    for chunks, order, owner, pos in merged(readers):
        if t0 is None:
            t0 = min(int(c[2]["ts_ns"][0]) for c in chunks)
        rendered = []
        for i, name, recs in chunks:
            keep = np.ones(len(recs), dtype=bool)
            if schemas or probes:
                keep &= (name in schemas) | (np.isin(recs["probe"], list(probes))
                                             if name == "pkt" and probes else False)
            if flow:
                keep &= _flow_mask(recs, flow)
            if window:
                rel = (recs["ts_ns"].astype(np.int64) - t0) / 1e9
                keep &= (rel >= window[0]) & (rel < window[1])
            dicts = record_dicts(name, recs[keep]) if keep.any() else []
            slots = np.full(len(recs), -1)
            slots[keep] = np.arange(int(keep.sum()))
            rendered.append((readers[i].header.get("host", "?"), name, dicts, slots))
        lines = []
        for k in order:
            host, name, dicts, slots = rendered[owner[k]]
            j = slots[pos[k]]
            if j < 0:
                continue
            d = dicts[j]
            if as_json:
                lines.append(json.dumps({"host": host, "type": name, **d}))
            else:
                lines.append(text_line(host, name, d))
        if lines:
            click.echo("\n".join(lines))
    for r in readers:
        for w in r.warnings:
            click.echo(f"mbrec: warning: {w}", err=True)


def _microbpf(files) -> None:
    """MicroBPF's lines per file (each file is one host's view; see mbrec/microbpf.py)."""
    from mbrec.microbpf import trace_lines
    from mbrec.trace.reader import read_trace
    for path in files:
        trace = read_trace(path)
        lines = trace_lines(trace)
        if lines:
            click.echo("\n".join(lines))
        for w in trace.warnings:
            click.echo(f"mbrec: warning: {w}", err=True)
