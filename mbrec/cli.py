"""The mbrec command line: one click group, one module per command under mbrec.commands."""

from __future__ import annotations

import os
import sys

# numpy asks for transparent huge pages on large arrays; where the kernel then compacts memory
# on every fault (THP defrag "madvise", Debian's default), a fresh 192 MB array costs 0.8 s
# instead of 0.18 s (measured on our machines). mbrec allocates large arrays once and fills
# them, so it does without. Set before numpy is first imported; an explicit setting wins.
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
import traceback

import click

from mbrec import __version__
from mbrec.errors import MbrecError

NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2
COMMANDS = ("record", "fleet", "info", "replay", "analyze", "export", "lab")


class LazyGroup(click.Group):
    """Imports a command's module only when it runs, so `mbrec info` never loads BCC or plots."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module = __import__(f"mbrec.commands.{name}", fromlist=["command"])
        return module.command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mbrec")
@click.option("--debug", is_flag=True, help="Show a traceback on errors.")
@click.pass_context
def cli(ctx, debug):
    """Record kernel TCP/IP events on every host; analyse them offline.

    \b
    mbrec record -o a.mbrec -- ab -k -c 10 -n 1000 http://b/   (as root, on each host)
    mbrec analyze a.mbrec b.mbrec -o results/
    mbrec fleet record --hosts a,b -o run/ -- ab -k -n 1000 http://b/   (over ssh, then:)
    mbrec analyze run/
    mbrec info a.mbrec          mbrec replay a.mbrec | less
    mbrec export a.mbrec b.mbrec -o run.perfetto-trace   (for ui.perfetto.dev)
    mbrec lab run ab            (a reproducible testbed in QEMU)
    """
    ctx.obj = {"debug": debug}


def take_debug(args: list[str]) -> tuple[bool, list[str]]:
    """--debug is accepted anywhere on the line before `--` (after it, a command's own words)."""
    end = args.index("--") if "--" in args else len(args)
    head = [a for a in args[:end] if a != "--debug"]
    return len(head) < end, head + args[end:]


def main(argv=None) -> None:
    debug, args = take_debug(list(sys.argv[1:] if argv is None else argv))
    if debug:
        args = ["--debug", *args]
    try:
        # not cli.main(): click turns a closed stdout into exit status 1; here it is 0
        with cli.make_context("mbrec", args) as ctx:
            cli.invoke(ctx)
    except click.exceptions.Exit as e:  # --help, --version
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("mbrec: interrupted", err=True)
        sys.exit(130)
    except NO_ARGS_IS_HELP as e:  # `mbrec` alone: the help is the answer
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.UsageError as e:  # one line: what is wrong, and where to look
        where = e.ctx.command_path if e.ctx is not None else "mbrec"
        click.echo(f"mbrec: error: {e.format_message()} (see '{where} --help')", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except MbrecError as e:
        if debug:
            traceback.print_exc()
        click.echo(f"mbrec: error: {e}", err=True)
        sys.exit(e.exit_code)
    except BrokenPipeError:  # `mbrec replay | head` is fine: stop quietly
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        sys.exit(0)
    except KeyboardInterrupt:
        click.echo("mbrec: interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # a bug: still one line unless asked
        if debug:
            traceback.print_exc()
        click.echo(f"mbrec: internal error: {type(e).__name__}: {e} (rerun with --debug "
                   "and report it)", err=True)
        sys.exit(1)
