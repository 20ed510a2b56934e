"""`mbrec lab`: a reproducible multi-host testbed on Debian 12's stock kernel in QEMU."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group()
def command():
    """A multi-host testbed in QEMU: Debian 12's stock kernel with BCC, hosts as network namespaces.

    \b
    mbrec lab run ab                 the MicroBPF evaluation: apache2 on b, ab -k -c 10 from a
    mbrec lab run ab --no-record     the same without mbrec record
    mbrec lab run --vms 2 two-vm     two VMs, two kernels, two clocks
    mbrec lab run -- uname -a        a command in the guest (hosts a and b are up)
    mbrec lab list                   the scenarios
    """


@command.command()
@click.option("--rebuild", is_flag=True, help="Rebuild even if a cached image matches the recipe.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
def build(rebuild, quiet):
    """Build the VM image (debootstrap bookworm; about 2 min; cached in ~/.cache/mbrec/lab/)."""
    from mbrec.lab import image
    image.set_quiet(quiet)
    img = image.build(rebuild=rebuild)
    click.echo(str(img.dir))


@command.command(name="list")
def list_scenarios():
    """List the scenarios with their descriptions."""
    from mbrec.lab import scenario
    for name in scenario.names():
        s = scenario.load(name)
        click.echo(f"{name:10} {s.get('description', '')}")


class _RunCommand(click.Command):
    """Everything after `--` is the guest command, taken before click parses (a command may look like options)."""

    def parse_args(self, ctx, args):
        if "--" in args:
            i = args.index("--")
            ctx.meta["lab_command"] = args[i + 1:]
            args = args[:i]
        return super().parse_args(ctx, args)


@command.command(cls=_RunCommand)
@click.argument("scenario", required=False)
@click.option("--vms", type=click.IntRange(1, 2), help="Run on one VM (namespaces) or two (a socket link).")
@click.option("--keep", is_flag=True, help="After the job, keep the VM with a shell on this terminal.")
@click.option("-o", "--output", "out", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (default ./lab-out/<scenario>-<time>).")
@click.option("--force", is_flag=True, help="Replace the earlier run in the -o folder (what it wrote is "
              "removed first).")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr (the lab's and the guests').")
@click.option("--no-record", is_flag=True, help="Run the scenario without mbrec record.")
@click.option("--timeout", type=float, help="Hard timeout in seconds (default: the scenario's).")
@click.option("--record-args", default="", help="Extra options for every mbrec record, e.g. "
              "'--probes packets,flows'.")
def run(scenario, vms, keep, out, force, quiet, no_record, timeout, record_args):
    """Run SCENARIO or `-- COMMAND` (run by sh in the guest) in the lab; exits with the guest's status.

    With a COMMAND, SCENARIO (default: a and b through the router, nothing injected) only sets up the network.
    """
    import shlex

    from mbrec.lab import image
    from mbrec.lab import run as lab_run
    image.set_quiet(quiet)
    args = click.get_current_context().meta.get("lab_command")
    command_text = shlex.join(args) if args else None
    if args and len(args) == 1:
        command_text = args[0]  # `-- 'ip a; ss -t'` keeps its shell syntax
    if not scenario and not command_text:
        raise click.UsageError("name a scenario (mbrec lab list) or give a command after --")
    if keep and timeout is None:
        timeout = 24 * 3600.0
    status = lab_run.run(scenario, command_text, vms=vms, keep=keep, out=out, record=not no_record,
                         timeout_s=timeout, quiet=quiet, record_args=shlex.split(record_args),
                         force=force)
    sys.exit(status)
