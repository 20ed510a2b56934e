"""`mbrec analyze TRACE... [-o DIR]`: per-host layer, application and flow results, and, with
two or more hosts, clock alignment and network latency."""

from __future__ import annotations

import os
import time

import click

from mbrec.commands.common import OutputDir

OUTPUT_NAMES = ("report.json", "report.html", "*.csv", "*.png", "*.svg")  # _write_outputs


def _bar(desc: str, total, unit: str):
    """A progress bar on stderr (tqdm: counts, rate and ETA); returns its update function."""
    from tqdm import tqdm
    bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=total is None, leave=False,
               dynamic_ncols=True, mininterval=0.5)

    def update(n: int) -> None:
        bar.update(n)
        if total is not None and bar.n >= total:
            bar.close()
    return update


def _progress(quiet: bool):
    start = time.perf_counter()

    def say(msg: str) -> None:
        if not quiet:
            click.echo(f"[{time.perf_counter() - start:6.1f}s] {msg}", err=True)
    return say


@click.command()
@click.argument("traces", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("-o", "--output", "outdir", type=click.Path(file_okay=False),
              help="Write report.json, report.html, CSVs and plots into this directory.")
@click.option("--per-flow", is_flag=True, help="Also print the latency table of every flow.")
@click.option("--no-plots", is_flag=True, help="Skip the PNG/SVG plots (faster).")
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout, not tables.")
@click.option("--clock", default="auto", show_default=True,
              type=click.Choice(["auto", "shared", "realtime", "packets"]),
              help="How to align the hosts' clocks (two or more traces).")
@click.option("--reference", default=None, help="Host whose clock the others are mapped to.")
@click.option("--clock-window", type=float, default=None,
              help="Fit clocks piecewise over windows of this many seconds.")
@click.option("-j", "--jobs", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="Analyse partitions in this many local worker processes.")
@click.option("--scheduler", metavar="ADDRESS", default=None,
              help="Analyse partitions on the Dask cluster whose scheduler is at ADDRESS "
                   "(tcp://host:8786; workers need mbrec and must see --spill-dir).")
@click.option("--partitions", type=click.IntRange(1, 4096), default=None,
              help="Split the events by connection into this many partitions on disk "
                   "[default: as many as --memory needs].")
@click.option("--memory", metavar="SIZE", default=None,
              help="Memory the analysis may use, e.g. 4G; picks the partition count "
                   "[default: half of the available memory].")
@click.option("--spill-dir", type=click.Path(file_okay=False), default=None,
              help="Where partitions are spilled [default: the system's temporary directory].")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
@click.option("--force", is_flag=True, help="Replace the report already in the -o directory "
              "(the previous run's outputs are removed first).")
def command(traces, outdir, per_flow, no_plots, as_json, clock, reference, clock_window,
            jobs, scheduler, partitions, memory, spill_dir, quiet, force):
    """Analyse traces: one file per host, as written by `mbrec record`, or the run
    directory of `mbrec fleet record`.

    \b
    Per host and direction: L_TCP/L_IP/L_NIC 1..4, L_APP_1/2, send-buffer and receive-queue
    waits, the 16 flow metrics; with several hosts also clock alignment and L_NET_1/2.
    mbrec analyze a.mbrec b.mbrec -o results/
    """
    from mbrec.analysis.engine import Executor, parse_size
    from mbrec.analysis.pipeline import Options
    from mbrec.analysis.run import Plan, analyze_files
    from mbrec.fleet.manifest import expand

    say = _progress(quiet or as_json)
    traces = expand(traces, say)  # a run directory of `mbrec fleet record`: its traces
    out = OutputDir(outdir, force=force, inputs=traces, marker="report.json",
                    products=OUTPUT_NAMES) if outdir else None  # checked before any work
    plan = Plan(Options(per_flow, True, clock, reference, clock_window),
                Executor(jobs, scheduler), partitions,
                parse_size(memory) if memory else None, spill_dir, per_event_files=out is not None)
    result = analyze_files(list(traces), plan, progress=say,
                           bars=None if (quiet or as_json) else _bar)
    from mbrec.analysis import report as rep
    if out is not None:
        with out.writing() as tmp:
            say(f"writing report.json, report.html and CSVs to {outdir}")
            _write_outputs(tmp, result, no_plots, say)
    if as_json:
        import json
        click.echo(json.dumps(result.report, indent=1, default=str, allow_nan=False))
    else:
        clock = result.alignment.text_lines() if result.alignment is not None else []
        click.echo(rep.table_text(result.report, per_flow, clock))
    say("done")


def _write_outputs(outdir, result, no_plots, say):
    from mbrec.analysis import report as rep
    rep.write_json(result.report, os.path.join(outdir, "report.json"))
    rep.write_csvs(outdir, result.names, result.results, result.series)
    rep.write_flows_csv(outdir, result.report["flows"])
    from mbrec.analysis.html_report import write_report
    write_report(result, os.path.join(outdir, "report.html"))
    if no_plots:
        return
    say("plotting")
    from mbrec.analysis import plots
    for name, values, hs in zip(result.names, result.cdf, result.summaries):
        plots.plot_cdfs(outdir, name, values, {k: v["count"] for k, v in hs.latencies.items()})
    plots.plot_breakdown(outdir, result.report["hosts"])
    for name, s, fn in zip(result.names, result.series, result.flow_names):
        plots.plot_flows(outdir, name, s, fn)
    if result.network is not None:
        from mbrec.analysis import plots_network
        plots_network.plot_network(result.network, result.alignment, outdir)
