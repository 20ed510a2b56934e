"""`mbrec lab`: a reproducible multi-host testbed on Debian's stock kernels in QEMU."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group()
def command():
    """A multi-host testbed in QEMU: a Debian suite's stock kernel with BCC, hosts as network namespaces.

    \b
    mbrec lab run ab                 the MicroBPF evaluation: apache2 on b, ab -k -c 10 from a
    mbrec lab run ab --suite trixie  the same on Debian 13's kernel (bookworm, trixie, sid)
    mbrec lab run ab --no-record     the same without mbrec record
    mbrec lab run --vms 2 two-vm     two VMs, two kernels, two clocks
    mbrec lab run -- uname -a        a command in the guest (hosts a and b are up)
    mbrec lab list                   the suites (and which images are built) and the scenarios
    """


def _suite_option(f):
    return click.option("--suite", default="bookworm", show_default=True, metavar="SUITE",
                        help="Debian suite of the image: bookworm (6.1), trixie (6.12) or sid.")(f)


@command.command()
@click.option("--rebuild", is_flag=True, help="Rebuild even if a cached image matches the recipe.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
@_suite_option
def build(rebuild, quiet, suite):
    """Build the VM image of a Debian suite (debootstrap; a few minutes; cached in ~/.cache/mbrec/lab/)."""
    from mbrec.lab import image
    image.set_quiet(quiet)
    img = image.build(rebuild=rebuild, suite_name=image.suite(suite).name)
    click.echo(str(img.dir))


@command.command(name="list")
def list_scenarios():
    """List the suites, which of their images are built, and the scenarios."""
    from mbrec.lab import image, scenario
    click.echo("suites (mbrec lab build --suite S; run --suite S):")
    for s in image.SUITES.values():
        img = image.cached_image(suite_name=s.name)
        state = f"built: {img.dir}" if img else "not built"
        default = " (default)" if s.name == image.DEFAULT_SUITE else ""
        click.echo(f"  {s.name:10} {s.release}{default}, {s.brings}; {state}")
    click.echo("scenarios (mbrec lab run SCENARIO):")
    for name in scenario.names():
        s = scenario.load(name)
        click.echo(f"  {name:10} {s.get('description', '')}")


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
@_suite_option
def run(scenario, vms, keep, out, force, quiet, no_record, timeout, record_args, suite):
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
                         force=force, suite=suite)
    sys.exit(status)
