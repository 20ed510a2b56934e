"""`mbrec analyze -o DIR`: nothing overwritten unless asked, never an input, never half-written
(mbrec/commands/common.py)."""

import os
import subprocess
import sys

import pytest

from mbrec.commands.common import MANIFEST, OutputDir
from mbrec.errors import MbrecError
from mbrec.testing.synthetic import packet_flow, write_trace


def analyze(*args):
    return subprocess.run([sys.executable, "-m", "mbrec", "analyze", "-q", "--no-plots", *args],
                          capture_output=True, text=True)


def one_line_error(r, *needles):
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture
def trace(tmp_path):
    return write_trace(str(tmp_path / "a.mbrec"), {"pkt": packet_flow(50)}, host="a")


def test_a_report_is_not_overwritten_without_force(tmp_path, trace):
    out = tmp_path / "out"
    assert analyze(trace, "-o", str(out)).returncode == 0
    first = (out / "report.json").read_bytes()
    (out / "report.json").write_text("the user's edited report")
    one_line_error(analyze(trace, "-o", str(out)), "already holds a report", "--force")
    assert (out / "report.json").read_text() == "the user's edited report"
    assert analyze(trace, "-o", str(out), "--force").returncode == 0
    assert (out / "report.json").read_bytes() == first


def test_force_removes_the_previous_runs_outputs_and_nothing_else(tmp_path, trace):
    out = tmp_path / "out"
    assert analyze(trace, "-o", str(out)).returncode == 0
    # the previous run also wrote a plot that this run will not write
    (out / "old-plot.png").write_text("stale")
    with open(out / MANIFEST, "a") as f:
        f.write("old-plot.png\n")
    (out / "notes.txt").write_text("the user's own file")
    assert analyze(trace, "-o", str(out), "--force").returncode == 0
    names = set(os.listdir(out))
    assert "old-plot.png" not in names and "notes.txt" in names and "report.json" in names
    assert not [n for n in names if n.startswith(".mbrec-tmp")]
    written = (out / MANIFEST).read_text().split()
    assert "report.json" in written and "notes.txt" not in written


def test_an_input_trace_where_an_output_would_go_is_never_written_over(tmp_path, trace):
    out = tmp_path / "out"
    out.mkdir()
    inside = out / "report.json"
    inside.write_bytes(open(trace, "rb").read())
    before = inside.read_bytes()
    for extra in ([], ["--force"]):
        one_line_error(analyze(str(inside), "-o", str(out), *extra), "an input of this run")
        assert inside.read_bytes() == before


def test_an_output_path_that_is_a_file_is_one_line(tmp_path, trace):
    one_line_error(analyze(trace, "-o", trace), "is a file")


def test_an_unwritable_directory_is_one_line(trace):
    # /proc/version is a file: no directory can be made there, whoever runs the test
    one_line_error(analyze(trace, "-o", "/proc/version/out"), "/proc/version/out")


def test_a_failed_run_leaves_nothing_behind(tmp_path):
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError):
        with OutputDir(str(fresh), marker="report.json").writing() as tmp:
            open(os.path.join(tmp, "report.json"), "w").write("{}")
            raise RuntimeError("the plotting failed")
    assert os.listdir(tmp_path) == []  # no target, no temporary directory
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "report.json").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with OutputDir(str(existing), marker="report.json", force=True).writing() as tmp:
            open(os.path.join(tmp, "report.json"), "w").write("half")
            raise KeyboardInterrupt
    assert os.listdir(existing) == ["report.json"]
    assert (existing / "report.json").read_text() == "old"


def test_a_new_directory_appears_complete_or_not_at_all(tmp_path):
    target = tmp_path / "new" / "deeper"
    with OutputDir(str(target), marker="report.json").writing() as tmp:
        open(os.path.join(tmp, "report.json"), "w").write("{}")
        assert not target.exists()  # only the temporary directory beside it so far
    assert sorted(os.listdir(target)) == sorted(["report.json", MANIFEST])


def test_disk_errors_while_writing_are_one_clear_error(tmp_path):
    with pytest.raises(MbrecError, match="cannot write the outputs.*nothing was changed"):
        with OutputDir(str(tmp_path / "o"), marker="report.json").writing() as tmp:
            open(os.path.join(tmp, "missing-dir", "x.csv"), "w")
    assert os.listdir(tmp_path) == []
