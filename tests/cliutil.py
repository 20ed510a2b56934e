"""mbrec's own command line run in process, for tests that check what a user sees."""


def run_cli(*args, capsys):
    """(exit status, stdout, stderr) of `mbrec ARGS...` through mbrec.cli.main."""
    from mbrec.cli import main
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err
