"""`mbrec info`: what a trace holds, for people (a summary) and scripts (--json)."""

from __future__ import annotations

import json

import click
import numpy as np

from mbrec.trace.reader import Trace, read_trace

INFO_SCHEMA_VERSION = 1


def summarize(trace: Trace) -> dict:
    """The documented `mbrec info --json` object (docs/trace-format.md, "mbrec info")."""
    h = trace.header
    counts = {name: int(len(recs)) for name, recs in trace.events.items()}
    starts = [int(r["ts_ns"].min()) for r in trace.events.values() if len(r)]
    ends = [int(r["ts_ns"].max()) for r in trace.events.values() if len(r)]
    total = sum(counts.values())
    per_probe = {}
    pkt = trace.events.get("pkt")
    if pkt is not None and len(pkt):
        from mbrec.render import probe_name
        ids, n = np.unique(pkt["probe"], return_counts=True)
        per_probe = {probe_name(i): int(c) for i, c in zip(ids, n)}
    lost_total = sum(trace.lost.values())
    return {
        "info_version": INFO_SCHEMA_VERSION,
        "file": trace.path,
        "file_size": trace.file_size,
        "format_version": h.get("format_version"),
        "mbrec_version": h.get("mbrec_version"),
        "host": h.get("host"),
        "kernel": h.get("kernel"),
        "boot_id": h.get("boot_id"),
        "trace_id": h.get("trace_id"),
        "options": h.get("options", {}),
        "probes": h.get("probes", []),
        "start_ns": min(starts) if starts else None,
        "end_ns": max(ends) if ends else None,
        "duration_s": (max(ends) - min(starts)) / 1e9 if starts else 0.0,
        "events": counts,
        "events_total": total,
        "packet_probe_events": per_probe,
        "lost": trace.lost,
        "lost_total": lost_total,
        # by cause, from the trailer: ring_full, program_skipped, kprobe_missed (docs/recorder.md)
        "lost_by_cause": {cause: int(sum(counts.values()))
                          for cause, counts in (trace.trailer or {}).get("lost_detail", {}).items()},
        "clean_stop": trace.clean,
        "stop_reason": (trace.trailer or {}).get("integrity") or (trace.trailer or {}).get(
            "stop_reason"),
        "frames_lost": trace.frames_lost,
        "records_lost": trace.records_lost,
        "bytes_per_event": trace.file_size / total if total else None,
        "bytes_lost": trace.bytes_lost,
        "clock_anchors": len(trace.clocks),
        "warnings": trace.warnings,
    }


def _end(info: dict) -> str:
    if info["clean_stop"]:
        return "clean stop" + (f" ({info['stop_reason']})" if info["stop_reason"] else "")
    if info["stop_reason"]:
        return f"UNCLEAN ({info['stop_reason']})"
    return "UNCLEAN (no trailer: killed or crashed)"


def render(info: dict) -> str:
    lines = [f"{info['file']}",
             f"  host        {info['host']}  (kernel {info['kernel']}, boot_id {info['boot_id']})",
             f"  recorded by mbrec {info['mbrec_version']}, format v{info['format_version']}",
             f"  time span   {info['duration_s']:.3f} s",
             f"  end         {_end(info)}",
             f"  events      {info['events_total']}"]
    for name, n in info["events"].items():
        if n:
            lines.append(f"    {name:<28}{n:>12}")
    for probe, n in info["packet_probe_events"].items():
        lines.append(f"      {probe:<26}{n:>12}")
    if info["records_lost"]:
        lines.append("  damaged     " + ", ".join(
            f"{n} {k} records" for k, n in info["records_lost"].items())
            + " written but not in the file")
    lost = info["lost_total"]
    lines.append(f"  lost        {lost}" + ("" if not lost else "  (" + ", ".join(
        f"{k} {v}" for k, v in info["lost"].items() if v) + ")"))
    if lost and info["lost_by_cause"]:
        lines.append("  lost by     " + ", ".join(
            f"{cause.replace('_', ' ')} {n}" for cause, n in info["lost_by_cause"].items()))
    if info["probes"]:
        lines.append("  probes      " + ", ".join(
            f"{p.get('name')}={p.get('function')}/{p.get('attach')}" for p in info["probes"]))
    bpe = info["bytes_per_event"]
    lines.append(f"  file        {info['file_size']} bytes"
                 + (f", {bpe:.1f} bytes/event" if bpe else ""))
    for w in info["warnings"]:
        lines.append(f"  warning     {w}")
    return "\n".join(lines)


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file, one per line.")
def command(files, as_json):
    """Show what trace FILES hold: host, time span, events, losses, clean or unclean end."""
    for path in files:
        info = summarize(read_trace(path))
        click.echo(json.dumps(info, sort_keys=True) if as_json else render(info))
