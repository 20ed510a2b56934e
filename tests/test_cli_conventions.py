"""docs/cli.md's conventions, command by command: -o/--output, --force, -q/--quiet, --json,
--debug anywhere on the line before `--`."""

import json

import pytest

from mbrec.errors import MbrecError
from mbrec.testing.synthetic import packet_flow, write_trace
from cliutil import run_cli as main

# (command, its conventional options), as docs/cli.md lists them
CONVENTIONS = [
    (["record"], ["-o, --output", "--force", "-q, --quiet", "--json"]),
    (["export"], ["-o, --output", "--force", "-q, --quiet"]),
    (["analyze"], ["-o, --output", "--force", "-q, --quiet", "--json"]),
    (["fleet", "record"], ["-o, --output", "--force", "-q, --quiet"]),
    (["lab", "run"], ["-o, --output", "--force", "-q, --quiet"]),
    (["lab", "build"], ["--rebuild", "-q, --quiet"]),
    (["info"], ["--json"]),
    (["replay"], ["--json"]),
]


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("conv") / "a.mbrec")
    return write_trace(path, {"pkt": packet_flow(50)}, host="a")


@pytest.mark.parametrize("command,options", CONVENTIONS, ids=[" ".join(c) for c, _ in CONVENTIONS])
def test_every_command_spells_its_options_the_same_way(capsys, command, options):
    code, out, _ = main(*command, "--help", capsys=capsys)
    assert code == 0
    for option in options:
        assert option in out, f"mbrec {' '.join(command)} has no {option}"
    if command == ["lab", "build"]:
        assert "--force" not in out  # the image cache is not an -o output: rebuilding is --rebuild


def test_debug_is_taken_anywhere_before_the_command_words(capsys, tmp_path):
    missing = str(tmp_path / "missing.mbrec")
    code, _, err = main("info", missing, capsys=capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    code, _, err = main("info", missing, "--debug", capsys=capsys)
    assert code == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("mbrec: error:")


def test_debug_after_the_double_dash_belongs_to_the_command():
    from mbrec.cli import take_debug
    assert take_debug(["record", "-o", "x", "--", "prog", "--debug"]) == \
        (False, ["record", "-o", "x", "--", "prog", "--debug"])
    assert take_debug(["record", "--debug", "--", "prog"]) == (True, ["record", "--", "prog"])


def test_replay_json_is_one_object_per_event(capsys, trace):
    code, out, _ = main("replay", "--json", trace, capsys=capsys)
    events = [json.loads(line) for line in out.splitlines()]
    code_text, text, _ = main("replay", trace, capsys=capsys)
    assert code == code_text == 0
    assert len(events) == len(text.splitlines()) > 0
    assert {e["host"] for e in events} == {"a"} and {e["type"] for e in events} == {"pkt"}


def test_replay_json_and_the_microbpf_layout_are_one_or_the_other(capsys, trace):
    code, out, err = main("replay", "--json", "--format", "microbpf", trace, capsys=capsys)
    assert code == 2 and out == "" and "give one of them" in err


def test_lab_run_force_removes_the_earlier_runs_outputs_and_nothing_else(tmp_path):
    from mbrec.commands.common import MANIFEST
    from mbrec.lab.run import clear_earlier_run, note_outputs
    (tmp_path / "mine.txt").write_text("not the lab's")
    before = set(p.name for p in tmp_path.iterdir())
    (tmp_path / "status-a").write_text("0\n")
    (tmp_path / "a.mbrec").write_text("trace")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("")
    note_outputs(tmp_path, before)
    assert (tmp_path / MANIFEST).read_text().split() == ["a.mbrec", "run", "status-a"]
    with pytest.raises(MbrecError, match="pass --force"):
        clear_earlier_run(tmp_path, force=False)
    clear_earlier_run(tmp_path, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
    clear_earlier_run(tmp_path, force=False)  # nothing of a run left: nothing to refuse


def test_fleet_force_removes_the_earlier_run_and_refuses_other_files(tmp_path):
    from mbrec.fleet import manifest
    from mbrec.fleet.run import prepare_dir
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    (run / "a.mbrec").write_text("trace")
    (run / "logs" / "a.log").write_text("")
    manifest.write(str(run), {"format": manifest.FORMAT, "hosts": [{"name": "a", "trace": "a.mbrec"}]})
    with pytest.raises(MbrecError, match="--force"):
        prepare_dir(str(run))
    prepare_dir(str(run), force=True)
    assert sorted(p.name for p in run.iterdir()) == ["logs"] and not list((run / "logs").iterdir())
    (run / "notes.txt").write_text("mine")
    manifest.write(str(run), {"format": manifest.FORMAT, "hosts": []})
    with pytest.raises(MbrecError, match="not an empty directory"):
        prepare_dir(str(run), force=True)
    assert (run / "notes.txt").exists()
