"""`mbrec fleet record`: record on many hosts over ssh with one command, collect the traces."""

from __future__ import annotations

import click

from mbrec.errors import MbrecError

# `mbrec record` options every host's recorder gets as given here: (option, metavar, help).
FORWARDED = (
    ("--netns", "NS", "Only this network namespace (inode, /run/netns name, pid:PID). Repeatable."),
    ("--port", "PORT", "Only packets with this port at either end. Repeatable."),
    ("--addr", "ADDR", "Only packets with this address at either end. Repeatable."),
    ("--cgroup", "PATH", "Only flows of sockets in this cgroup v2."),
    ("--sample", "N", "Keep 1/2^N packets, the same ones on every host."),
    ("--attach", "MODE", "auto, fentry, kprobe or tracepoint."),
    ("--probes", "GROUPS", "Probe groups, comma-separated: packets, flows."),
    ("--ring-mb", "MIB", "Ring buffer size per event type, MiB."),
    ("--flow-interval", "S", "flows group: snapshot every live flow every S seconds."),
    ("--flow-sample", "N", "flows group: snapshot a flow on every Nth ACK."),
)
REPEATABLE = {"--netns", "--port", "--addr"}


def _param(option: str) -> str:
    return option.removeprefix("--").replace("-", "_")


def forwarded_options(f):
    for option, metavar, text in reversed(FORWARDED):
        f = click.option(option, _param(option), metavar=metavar, help=text,
                         multiple=option in REPEATABLE, default=None)(f)
    return f


def record_args(values: dict) -> list[str]:
    """The `mbrec record` arguments for the forwarded options that were given."""
    from mbrec.commands.record import _addrs, _ports
    _ports(values["port"])  # one clear line here rather than one per host there
    _addrs(values["addr"])
    out = []
    for option, _, _ in FORWARDED:
        value = values[_param(option)]
        for v in (value if option in REPEATABLE else [value] if value is not None else []):
            out += [option, str(v)]
    return out


@click.group()
def command():
    """Record on many hosts over ssh with one command (`mbrec fleet record -h`)."""


@command.command("record", context_settings={"ignore_unknown_options": False})
@click.option("--hosts", metavar="DEST,...", help="ssh destinations, comma-separated "
              "(host, user@host, ssh://user@host:port, or a Host of your ssh config).")
@click.option("--inventory", type=click.Path(dir_okay=False),
              help="TOML file: [defaults] and [hosts.NAME] with destination, user, port, "
                   "mbrec, sudo, netns, ports, addrs, cgroup (docs/fleet.md).")
@click.option("-o", "--output", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory to create: one trace per host, logs/, run.json.")
@click.option("--on", "on", metavar="HOST", help="Run COMMAND on this host (default: here).")
@click.option("--duration", type=float, help="Stop after S seconds (without COMMAND).")
@click.option("-F", "--ssh-config", type=click.Path(dir_okay=False),
              help="ssh config file (default: ssh's own, ~/.ssh/config).")
@click.option("--remote-mbrec", default=None, metavar="COMMAND",
              help="The mbrec command on the hosts, shell words [default: mbrec].")
@click.option("--sudo", is_flag=True, help="Record through `sudo -n` (the ssh user is not root).")
@click.option("--remote-dir", metavar="DIR", help="Where the hosts write their traces "
              "[default: mbrec-fleet/RUN-ID under the ssh user's home].")
@click.option("--keep-remote", is_flag=True, help="Keep each host's trace after it is "
              "collected and verified.")
@click.option("--start-timeout", type=float, default=180.0, show_default=True,
              help="Seconds each recorder has to start recording (BPF compile included).")
@click.option("--stop-timeout", type=float, default=60.0, show_default=True,
              help="Seconds each recorder has to stop on SIGINT before SIGTERM, SIGKILL.")
@click.option("--connect-timeout", type=int, default=10, show_default=True,
              help="ssh ConnectTimeout, seconds.")
@click.option("--min-free", default="1G", show_default=True, metavar="SIZE",
              help="Free disk each host needs for its trace.")
@click.option("--force", is_flag=True, help="Replace the earlier run in the -o directory (its "
              "traces, logs/ and run.json are removed first).")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
@forwarded_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def record(hosts, inventory, run_dir, on, duration, ssh_config, remote_mbrec, sudo, remote_dir,
           keep_remote, start_timeout, stop_timeout, connect_timeout, min_free, force, quiet,
           command, **forwarded):
    """Record on every host at once: check each host, start `mbrec record` there over ssh,
    run COMMAND, stop every recorder, copy the traces back and verify their sha256.

    \b
    mbrec fleet record --hosts a,b -o run1/ -- ab -k -c 10 -n 10000 http://b/
    mbrec fleet record --inventory hosts.toml -o run2/ --on a -- ab -n 1000 http://b/
    mbrec analyze run1/
    """
    from mbrec.analysis.engine import parse_size
    from mbrec.fleet import inventory as inv
    from mbrec.fleet.run import Fleet, FleetOptions

    if bool(hosts) == bool(inventory):
        raise MbrecError("give the hosts with --hosts a,b or --inventory FILE (one of them)")
    if duration is not None and duration <= 0:
        raise MbrecError(f"--duration {duration}: give a positive number of seconds")
    if duration is not None and command:
        raise MbrecError("--duration with a COMMAND: the recording ends with the COMMAND; "
                         "give one of them")
    try:
        min_free_bytes = parse_size(min_free)
    except MbrecError:
        raise MbrecError(f"--min-free {min_free}: give a size such as 1G or 500M") from None
    host_list = (inv.from_list(hosts, remote_mbrec or "mbrec", sudo) if hosts
                 else inv.from_file(inventory, remote_mbrec, sudo))
    for h in host_list:
        h.mbrec_words()
    opts = FleetOptions(run_dir=run_dir, record_args=record_args(forwarded),
                        command=list(command), on=on, duration=duration,
                        ssh_config=ssh_config, remote_dir=remote_dir,
                        start_timeout=start_timeout, stop_timeout=stop_timeout,
                        connect_timeout=connect_timeout, min_free=min_free_bytes,
                        keep_remote=keep_remote, force=force, quiet=quiet)
    rc = Fleet(host_list, opts).record()
    if rc:
        raise SystemExit(rc)
