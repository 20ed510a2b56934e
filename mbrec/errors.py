"""The errors mbrec reports to its user as one line, never as a traceback."""


class MbrecError(Exception):
    """A user-facing failure: the message says what went wrong, which file, and what to do."""

    exit_code = 2


class TraceFormatError(MbrecError):
    """A file is not an mbrec trace, or not one this version can read."""
