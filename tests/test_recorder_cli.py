"""`mbrec record` refuses bad input with one line and exit 2, before touching BPF."""

import os

import pytest

from mbrec.errors import MbrecError
from mbrec.recorder import environment as env


class Result:
    def __init__(self, returncode, stderr):
        self.returncode, self.stderr = returncode, stderr


def record(*args, capsys=None):
    """mbrec's own main(), in process (a subprocess per case costs seconds)."""
    from mbrec.cli import main
    try:
        main(["record", *args])
        code = 0
    except SystemExit as e:
        code = e.code
    return Result(code, capsys.readouterr().err)


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the root check comes first")


@root_only
@pytest.mark.parametrize("args,expect", [
    (["--sample", "20"], "--sample 20: give N from 0 to 16"),
    (["--port", "0"], "--port 0: give a port number"),
    (["--addr", "10.0.0.300"], "--addr 10.0.0.300: give an IPv4 or IPv6 address"),
    (["--netns", "no-such-ns"], "no network namespace 'no-such-ns'"),
    (["--netns", "pid:999999999"], "no process 999999999"),
    (["--cgroup", "no/such/cgroup"], "--cgroup no/such/cgroup"),
    (["--duration", "0"], "--duration 0.0: give a positive number"),
    (["--", "no-such-command-xyz"], "command not found: no-such-command-xyz"),
])
def test_bad_options_are_one_line_and_exit_2(tmp_path, capsys, args, expect):
    r = record("-o", str(tmp_path / "t.mbrec"), *args, capsys=capsys)
    assert r.returncode == 2, r.stderr
    assert expect in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "t.mbrec").exists()


@root_only
def test_existing_output_needs_force(tmp_path, capsys):
    out = tmp_path / "t.mbrec"
    out.write_bytes(b"x")
    r = record("-o", str(out), capsys=capsys)
    assert r.returncode == 2 and "--force" in r.stderr
    assert out.read_bytes() == b"x"


def test_kernel_version_gate():
    env.check_kernel("6.1.0-56-amd64")
    with pytest.raises(MbrecError, match="5.8"):
        env.check_kernel("5.4.0-150-generic")
    assert env.kernel_version("4.14.67-66.56.amzn1.x86_64") == (4, 14)


def test_missing_headers_name_the_package(tmp_path, monkeypatch):
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    with pytest.raises(MbrecError, match="apt-get install linux-headers-0.0.0-none"):
        env.check_headers("0.0.0-none", src=str(tmp_path))


def test_netns_by_pid_is_the_process_namespace():
    assert env.netns_inode(f"pid:{os.getpid()}") == os.stat("/proc/self/ns/net").st_ino
    assert env.netns_inode("4026531992") == 4026531992
