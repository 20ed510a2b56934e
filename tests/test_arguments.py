"""Arguments are checked where they are parsed: one line, exit 2, before any work; click's own
usage errors are one line too; a closed stdout ends quietly with exit 0."""

import subprocess
import sys

import pytest

from mbrec.testing.synthetic import packet_flow, write_trace
from cliutil import run_cli as main


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("args") / "a.mbrec")
    return write_trace(path, {"pkt": packet_flow(2000)}, host="a")


def assert_one_line(code, out, err, needle):
    assert code == 2 and out == "", (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err


@pytest.mark.parametrize("flow,needle", [
    (":99999", "from 0 to 65535"), ("10.0.0.1:-5", "from 0 to 65535"), (":", "is empty"),
    ("", "is empty"), ("10.0.0.1:http", "from 0 to 65535"),
    ("nohost:80", "not an IPv4 or IPv6 address"), ("[::1]x", "expected ADDR")])
def test_replay_flow_errors_say_what_is_wrong(trace, capsys, flow, needle):
    assert_one_line(*main("replay", "--flow", flow, trace, capsys=capsys), needle)


def test_replay_flow_accepts_ports_0_to_65535_and_ipv6(trace, capsys):
    for flow in (":0", ":65535", "::1", "[::1]", "[::1]:80", "10.0.0.1:40000"):
        code, out, err = main("replay", "--flow", flow, trace, capsys=capsys)
        assert code == 0 and err == "", (flow, err)
    code, out, _ = main("replay", "--flow", "10.0.0.2:80", trace, capsys=capsys)
    assert code == 0 and len(out.splitlines()) == 2000 * 4


@pytest.mark.parametrize("spec,needle", [
    ("5:1", "start must come before the end"),
    ("1:1", "start must come before the end"),
    ("nan", "finite"),
    ("0:nan", "finite"),
    ("inf:", "finite"),
    (":inf", "finite"),
    ("", "is empty"),
    (":", "is empty"),
    ("a:b", "expected START:END"),
])
def test_replay_time_ranges_are_checked(trace, capsys, spec, needle):
    assert_one_line(*main("replay", "--time", spec, trace, capsys=capsys), needle)


@pytest.mark.parametrize("args,needle", [
    (["--duration", "nan"], "--duration nan: give a positive number"),
    (["--duration", "inf"], "--duration inf: give a positive number"),
    (["--duration", "-1"], "--duration -1.0: give a positive number"),
    (["--flow-interval", "nan"], "--flow-interval nan"),
    (["--flow-interval", "-1"], "--flow-interval -1.0"),
    (["--flow-sample", "-1"], "--flow-sample -1"),
    (["--probes", "bogus"], "--probes bogus: no such probe group; the groups are packets"),
    (["--probes", "packets,bogus"], "--probes bogus: no such probe group"),
    (["--probes", ","], "give one or more of"),
])
def test_record_arguments_are_checked_before_root_or_bcc(tmp_path, capsys, args, needle):
    code, out, err = main("record", "-o", str(tmp_path / "x.mbrec"), *args, capsys=capsys)
    assert_one_line(code, out, err, needle)
    assert "BCC" not in err and "root" not in err


@pytest.mark.parametrize("args,needle", [
    (["info"], "Missing argument"),
    (["info", "--bogus", "x"], "No such option"),
    (["replay", "--format", "xml", "x"], "'--format'"),
    (["analyze", "--partitions", "0", "x"], "'--partitions'"),
    (["nosuchcommand"], "No such command"),
])
def test_usage_errors_are_one_line_with_a_help_hint(capsys, args, needle):
    code, out, err = main(*args, capsys=capsys)
    assert_one_line(code, out, err, needle)
    assert err.strip().endswith("--help')")


def test_a_closed_stdout_exits_0_quietly(trace):
    for cmd in (["replay", trace], ["info", trace, trace, trace]):
        p = subprocess.Popen([sys.executable, "-m", "mbrec", *cmd], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        p.stdout.readline()
        p.stdout.close()  # what `| head -1` does
        err = p.stderr.read().decode()
        assert p.wait() == 0 and err == "", err
