"""`mbrec record`: record raw TCP/IP packet events on this host into one trace file."""

from __future__ import annotations

import ipaddress
import math

import click

from mbrec.errors import MbrecError


def _ports(values):
    out = []
    for v in values:
        for part in str(v).split(","):
            if not part.strip().isdigit() or not 0 < int(part) < 65536:
                raise MbrecError(f"--port {part}: give a port number from 1 to 65535")
            out.append(int(part))
    return tuple(out)


def _addrs(values):
    out = []
    for v in values:
        for part in v.split(","):
            try:
                out.append(str(ipaddress.ip_address(part.strip())))
            except ValueError:
                raise MbrecError(f"--addr {part}: give an IPv4 or IPv6 address") from None
    return tuple(out)


def _groups(spec: str) -> tuple[str, ...]:
    """--probes, checked before anything else (root, BCC) so a typo is named as one."""
    from mbrec.recorder.probes import GROUPS
    known = list(GROUPS)
    groups = tuple(g.strip() for g in spec.split(",") if g.strip())
    if not groups:
        raise MbrecError(f"--probes {spec!r}: give one or more of {', '.join(known)}")
    for g in groups:
        if g not in known:
            raise MbrecError(f"--probes {g}: no such probe group; the groups are "
                             f"{', '.join(known)}")
    return groups


@click.command(context_settings={"ignore_unknown_options": False})
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Trace file to write (one per host).")
@click.option("--duration", type=float, help="Stop after S seconds.")
@click.option("--host-name", help="Host name for the trace header (default: this host's).")
@click.option("--netns", multiple=True,
              help="Only this network namespace: inode, /run/netns name, or pid:PID. Repeatable.")
@click.option("--port", "ports", multiple=True, help="Only packets with this port at either "
              "end. Repeatable or comma-separated.")
@click.option("--addr", "addrs", multiple=True, help="Only packets with this address at either "
              "end. Repeatable or comma-separated.")
@click.option("--cgroup", help="Only flows of sockets in this cgroup v2 (path, absolute or "
              "under /sys/fs/cgroup).")
@click.option("--sample", type=int, default=0, show_default=True,
              help="Keep 1/2^N packets, the same ones on every host and layer.")
@click.option("--attach", type=click.Choice(["auto", "fentry", "kprobe", "tracepoint"]),
              default="auto", show_default=True,
              help="auto = fentry where the kernel supports it, else kprobe, else tracepoint "
              "(the stable tracepoints only: fewer layers, docs/recorder.md).")
@click.option("--raw-tracepoints", is_flag=True, help="With tracepoints: raw ones only, even "
              "where the kernel loads BTF-typed ones (which read kernel fields more cheaply).")
@click.option("--probes", default="packets", show_default=True,
              help="Probe groups, comma-separated: packets, flows.")
@click.option("--ring-mb", type=int, default=16, show_default=True,
              help="Ring buffer size per event type, MiB (rounded up to a power of two).")
@click.option("--flow-interval", type=float, default=1.0, show_default=True,
              help="flows group: snapshot every live flow every S seconds (0 = never).")
@click.option("--flow-sample", type=int, default=1, show_default=True,
              help="flows group: snapshot a flow on every Nth ACK (0 = no per-ACK snapshots).")
@click.option("-q", "--quiet", is_flag=True, help="No live status line or probe list.")
@click.option("--force", is_flag=True, help="Overwrite the output file.")
@click.option("--check", is_flag=True, help="Say whether this host can record, and how "
              "(each probe's function and attach kind, what is missing and its fix); no "
              "recording. Exit 0 when it can.")
@click.option("--json", "as_json", is_flag=True, help="With --check: the findings as JSON.")
@click.option("--print-bpf", is_flag=True, help="Print the BPF program and its -D constants, "
              "then exit.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def command(output, duration, host_name, netns, ports, addrs, cgroup, sample, attach,
            raw_tracepoints, probes, ring_mb, flow_interval, flow_sample, quiet, force, check,
            as_json, print_bpf, command):
    """Record packet events at every TCP/IP layer on this host (as root).

    Runs until Ctrl-C (or SIGTERM), --duration S, or COMMAND exits:

    \b
    mbrec record -o a.mbrec -- ab -k -c 10 -n 1000 http://10.0.0.2/
    mbrec record -o b.mbrec --netns b --port 80 --duration 30
    """
    from mbrec.recorder.session import RecordOptions, print_bpf as show_bpf, record

    if check:
        return _check(attach, as_json)
    if output is None:
        raise click.UsageError("Missing option '-o' / '--output'.")
    groups = _groups(probes)
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise MbrecError(f"--duration {duration}: give a positive number of seconds")
    if not (math.isfinite(flow_interval) and flow_interval >= 0):
        raise MbrecError(f"--flow-interval {flow_interval}: give a number of seconds, 0 or more")
    if flow_sample < 0:
        raise MbrecError(f"--flow-sample {flow_sample}: give 0 or more")
    if ring_mb < 1:
        raise MbrecError(f"--ring-mb {ring_mb}: give at least 1")
    opts = RecordOptions(output=output, duration=duration, host_name=host_name,
                         netns=tuple(netns), ports=_ports(ports), addrs=_addrs(addrs),
                         cgroup=cgroup, sample=sample, attach=attach, groups=groups,
                         ring_mb=ring_mb, quiet=quiet, force=force, command=tuple(command),
                         flow_interval=flow_interval, flow_sample=flow_sample,
                         raw_tracepoints=raw_tracepoints)
    if print_bpf:
        show_bpf(opts)
        return
    rc = record(opts)
    if rc:
        raise SystemExit(rc)


def _check(attach: str, as_json: bool) -> None:
    from mbrec.recorder.check import render, run_check
    result = run_check(attach)
    if as_json:
        import json
        click.echo(json.dumps(result.as_dict(), indent=1))
    else:
        click.echo("\n".join(render(result)))
    if result.verdict is None:
        raise SystemExit(1)
