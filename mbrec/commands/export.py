"""`mbrec export --format perfetto TRACE... -o FILE`: the analysis as a timeline for ui.perfetto.dev."""

from __future__ import annotations

import os
import time

import click

from mbrec.errors import MbrecError


@click.command()
@click.argument("traces", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--format", "fmt", type=click.Choice(["perfetto"]), default="perfetto",
              show_default=True, help="perfetto: a TrackEvent protobuf trace.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The file to write, e.g. run.perfetto-trace.")
@click.option("--flow", help="Keep flows with an endpoint ADDR, :PORT or ADDR:PORT.")
@click.option("--time", "time_spec",
              help="START:END seconds after the first event (in the reference host's clock).")
@click.option("--max-events", type=click.IntRange(1000, None), default=None,
              help="Size guard: cut to the first window that fits this many trace events "
                   "(default 4,000,000, about 150 MB: the Perfetto UI holds the whole trace "
                   "in the browser's memory).")
@click.option("--clock", default="auto", show_default=True,
              type=click.Choice(["auto", "shared", "realtime", "packets"]),
              help="How to align the hosts' clocks (as in `mbrec analyze`).")
@click.option("--reference", default=None, help="Host whose clock the timeline uses.")
@click.option("--force", is_flag=True, help="Overwrite the output file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
def command(traces, fmt, output, flow, time_spec, max_events, clock, reference, force, quiet):
    """Write every host's packets, layers, L_NET and flow counters on one aligned timeline.

    \b
    mbrec export a.mbrec b.mbrec -o run.perfetto-trace
    then open it at https://ui.perfetto.dev ("Open trace file").
    """
    from mbrec.analysis import perfetto
    from mbrec.analysis.run import analyze
    from mbrec.commands.replay import _parse_flow, _parse_time
    from mbrec.trace.reader import read_trace

    start = time.perf_counter()

    def say(msg):
        if not quiet:
            click.echo(f"[{time.perf_counter() - start:6.1f}s] {msg}", err=True)

    flow_sel = _parse_flow(flow) if flow else None
    window = _parse_time(time_spec) if time_spec else None
    if os.path.exists(output) and not force:
        raise MbrecError(f"{output} already exists: choose another name or pass --force")
    loaded = []
    for path in traces:
        say(f"reading {path}")
        loaded.append(read_trace(path))
    result = analyze(loaded, clock=clock, reference=reference, progress=say)
    say(f"writing {output}")
    stats = perfetto.write_trace(result, output, flow=flow_sel, window=window, force=force,
                                 max_events=max_events or perfetto.MAX_EVENTS)
    if stats["note"]:
        click.echo(f"mbrec: {stats['note']}", err=True)
    say(f"wrote {output}: {stats['slices']:,} slices, {stats['counters']:,} counter values, "
        f"{stats['arrows']:,} arrows, {stats['bytes'] / 1e6:.1f} MB; open it at "
        "https://ui.perfetto.dev (Open trace file)")
