"""`mbrec lab`: not yet implemented."""

import click

from mbrec.errors import MbrecError


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(args):
    """Not yet implemented."""
    raise MbrecError("'mbrec lab' is not yet implemented in this version")
