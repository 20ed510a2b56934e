"""`mbrec fleet record` against a real OpenSSH server on 127.0.0.1.

Each test starts its own sshd (Debian's openssh-server) on a free loopback port, with a host
key and a user key made by ssh-keygen in the test's directory, and hosts "a" and "b" as two
Host entries of an ssh config file. The hosts' mbrec is tests/fleet_standin.py, a stand-in
recorder that writes real traces (this machine's kernel cannot trace), copied into the test's
directory so that its path tells this test's remote processes from any other's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from mbrec.errors import MbrecError
from mbrec.fleet import inventory, manifest
from mbrec.fleet.ssh import Ssh
from mbrec.trace.reader import read_trace

SSHD = "/usr/sbin/sshd"
STANDIN = Path(__file__).with_name("fleet_standin.py")

NO_SSHD = None if (os.path.exists(SSHD) and shutil.which("ssh-keygen") and os.geteuid() == 0) \
    else "needs root and openssh-server (apt-get install openssh-server)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    """One sshd on 127.0.0.1 accepting the test's user key for root."""

    def __init__(self, d: Path):
        self.dir = d
        d.mkdir()
        for key in ("host", "user"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key,
                            "-f", str(d / key)], check=True)
        (d / "authorized_keys").write_text((d / "user.pub").read_text())
        self.port = free_port()
        (d / "sshd_config").write_text(f"""ListenAddress 127.0.0.1
Port {self.port}
HostKey {d / 'host'}
AuthorizedKeysFile {d / 'authorized_keys'}
PidFile {d / 'sshd.pid'}
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
LogLevel ERROR
""")
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
                                     stderr=open(d / "sshd.log", "wb"))
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("sshd did not start: " + (d / "sshd.log").read_text()) from None
                time.sleep(0.05)
        host_key = " ".join((d / "host.pub").read_text().split()[:2])
        (d / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_key}\n")

    def client_options(self) -> str:
        return f"""  IdentityFile {self.dir / 'user'}
  IdentitiesOnly yes
  UserKnownHostsFile {self.dir / 'known_hosts'}
  StrictHostKeyChecking yes
"""

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Fleet:
    """What a test needs: the sshd, an ssh config with hosts a, b and dead, the stand-in."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.sshd = Sshd(tmp / "sshd")
        dead = free_port()  # nothing listens there
        self.config = tmp / "ssh_config"
        self.config.write_text(f"""Host a b
  HostName 127.0.0.1
  Port {self.sshd.port}
  User root
{self.sshd.client_options()}
Host dead
  HostName 127.0.0.1
  Port {dead}
  User root
{self.sshd.client_options()}
Host 127.0.0.1
{self.sshd.client_options()}
""")
        self.standin = tmp / "standin" / "mbrec-standin.py"
        self.standin.parent.mkdir()
        shutil.copy(STANDIN, self.standin)
        self.remote_dir = tmp / "remote"
        self.run_dir = tmp / "run"
        # mbrec's ssh control sockets go to TMPDIR: a short one (a socket path has at most
        # 107 bytes), whose name also finds this test's ssh control connections
        self.tmpdir = tempfile.mkdtemp(prefix="fleet-")
        self.env = {**os.environ, "TMPDIR": self.tmpdir}
        self.procs = []

    def mbrec(self, *knobs: str) -> str:
        return shlex.join([sys.executable, str(self.standin), *knobs])

    def args(self, *extra: str, hosts: str | None = "a,b", remote_mbrec: str | None = None):
        out = [sys.executable, "-m", "mbrec", "fleet", "record", "-F", str(self.config),
               "-o", str(self.run_dir), "--remote-dir", str(self.remote_dir)]
        if hosts:
            out += ["--hosts", hosts]
        if remote_mbrec is not None or hosts:
            out += ["--remote-mbrec", remote_mbrec or self.mbrec()]
        return out + list(extra)

    def record(self, *extra, timeout=120, **kw):
        return subprocess.run(self.args(*extra, **kw), capture_output=True, text=True,
                              timeout=timeout, env=self.env)

    def start(self, *extra, **kw):
        """A fleet run in the background, its stderr in a file (stopped at the test's end)."""
        err = open(self.tmp / "fleet.err", "w")
        self.procs.append(subprocess.Popen(self.args(*extra, **kw), stderr=err, env=self.env))
        return self.procs[-1]

    def stderr(self) -> str:
        return (self.tmp / "fleet.err").read_text()

    def manifest(self) -> dict:
        return json.loads((self.run_dir / "run.json").read_text())

    def host(self, name: str) -> dict:
        return next(h for h in self.manifest()["hosts"] if h["name"] == name)

    def leftovers(self, remote_only: bool = False) -> list[str]:
        """Processes of this test still running: stand-ins, their wrappers, ssh clients (or
        only the processes on the "remote" side: stand-ins and wrappers)."""
        marks = (str(self.standin),) if remote_only else (str(self.standin), str(self.config),
                                                          self.tmpdir)
        out = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                cmd = (Path("/proc") / pid / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if any(m in cmd for m in marks):
                out.append(f"{pid}: {cmd}")
        return out

    def wait_gone(self, timeout=10, remote_only=False) -> list[str]:
        deadline = time.monotonic() + timeout
        while (left := self.leftovers(remote_only)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return left

    def stop(self):
        for p in self.procs:  # a test that failed half-way: stop its run as a user would
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
        for line in self.leftovers():  # what a killed run leaves here: ssh control connections
            try:
                os.kill(int(line.split(":")[0]), signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.sshd.stop()
        shutil.rmtree(self.tmpdir, ignore_errors=True)


@pytest.fixture
def fleet(tmp_path):
    if NO_SSHD:
        pytest.skip(NO_SSHD)
    f = Fleet(tmp_path)
    yield f
    f.stop()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def host_lines(stderr: str, name: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith(f"mbrec: {name}: ")]


def assert_collected(fleet, name: str, clean: bool = True) -> None:
    h = fleet.host(name)
    path = fleet.run_dir / h["trace"]
    assert h["sha256"] == sha256(path)
    assert h["bytes"] == path.stat().st_size
    trace = read_trace(str(path))
    assert trace.header["host"] == name
    assert len(trace.events["pkt"]) > 0
    assert trace.clean is clean


def test_two_hosts_recorded_collected_and_analysed(fleet):
    p = fleet.record("--port", "80", "--", "sleep", "1")
    assert p.returncode == 0, p.stderr
    m = fleet.manifest()
    assert m["status"] == "ok" and m["command"] == ["sleep", "1"] and m["command_exit"] == 0
    assert m["record_args"] == ["--port", "80"]
    assert [h["name"] for h in m["hosts"]] == ["a", "b"]
    for name in ("a", "b"):
        h = fleet.host(name)
        assert h["status"] == "ok" and h["errors"] == [] and h["recorder_exit"] == 0
        assert h["check"]["record_check"] == "ok" and h["check"]["free_bytes"] > 0
        assert_collected(fleet, name)
        # the stand-in keeps the arguments it was given: the recorder got the options
        assert read_trace(str(fleet.run_dir / h["trace"])).header["options"]["args"] == \
            ["--port", "80"]  # (--host-name, which the stand-in reads, is NAME)
    assert not fleet.remote_dir.exists()  # verified copies leave nothing behind
    assert fleet.wait_gone() == []
    a = subprocess.run([sys.executable, "-m", "mbrec", "analyze", str(fleet.run_dir), "-q",
                        "--json"], capture_output=True, text=True, timeout=300)
    assert a.returncode == 0, a.stderr
    report = json.loads(a.stdout)
    assert sorted(h["host"] for h in report["hosts"]) == ["a", "b"]


def test_inventory_remote_command_that_fails(fleet):
    inventory = fleet.tmp / "hosts.toml"
    inventory.write_text(f"""[defaults]
destination = "127.0.0.1"
user = "root"
port = {fleet.sshd.port}
mbrec = "{fleet.mbrec()}"

[hosts.a]
ports = [80]

[hosts.b]
netns = ["4026531840"]
""")
    p = fleet.record("--inventory", str(inventory), "--on", "b", "--",
                     "sh", "-c", "echo working; exit 3", hosts=None)
    assert p.returncode == 1, p.stderr
    assert "working" in p.stdout
    m = fleet.manifest()
    assert m["status"] == "failed" and m["command_on"] == "b" and m["command_exit"] == 3
    assert "the command exited with status 3" in p.stderr
    a, b = fleet.host("a"), fleet.host("b")
    assert (a["port"], a["user"], a["ports"]) == (fleet.sshd.port, "root", [80])
    assert b["netns"] == ["4026531840"] and b["destination"] == "127.0.0.1"
    for name in ("a", "b"):
        assert fleet.host(name)["status"] == "ok"
        assert_collected(fleet, name)
    args = read_trace(str(fleet.run_dir / "b.mbrec")).header["options"]["args"]
    assert args == ["--netns", "4026531840"]
    assert fleet.wait_gone() == []


def test_unreachable_host_one_line_nothing_started(fleet):
    p = fleet.record("--", "sleep", "1", hosts="a,dead")
    assert p.returncode == 1
    lines = host_lines(p.stderr, "dead")
    assert len(lines) == 1 and "unreachable" in lines[0], p.stderr
    assert "Traceback" not in p.stderr
    m = fleet.manifest()
    assert m["status"] == "failed" and m["command_start"] is None
    dead, a = fleet.host("dead"), fleet.host("a")
    assert dead["status"] == "unreachable" and dead["trace"] is None
    assert a["status"] == "not started" and a["recorder_pid"] is None
    assert fleet.wait_gone() == []


def test_host_without_mbrec_fails_its_check(fleet):
    p = fleet.record("--", "sleep", "1", remote_mbrec=str(fleet.tmp / "no" / "mbrec"))
    assert p.returncode == 1
    for name in ("a", "b"):
        lines = host_lines(p.stderr, name)
        assert len(lines) == 1 and "check failed" in lines[0] and "--version" in lines[0]
        assert fleet.host(name)["status"] == "check failed"
    assert fleet.manifest()["command_start"] is None
    assert fleet.wait_gone() == []


def test_recorder_that_fails_to_start(fleet):
    inventory = fleet.tmp / "hosts.toml"
    inventory.write_text(f"""[hosts.a]
mbrec = "{fleet.mbrec()}"
[hosts.b]
mbrec = "{fleet.mbrec('--fail-start', 'this kernel has no BTF')}"
""")
    p = fleet.record("--inventory", str(inventory), "--", "sleep", "30", hosts=None)
    assert p.returncode == 1
    lines = host_lines(p.stderr, "b")
    assert len(lines) == 1 and "this kernel has no BTF" in lines[0], p.stderr
    m = fleet.manifest()
    assert m["command_start"] is None  # the benchmark never ran
    b = fleet.host("b")
    assert b["status"] == "start failed" and b["recorder_exit"] == 2 and b["trace"] is None
    # a was recording or about to: stopped, and what it wrote collected
    a = fleet.host("a")
    assert a["status"] in ("ok", "start aborted") and a["stopped_by"] == "SIGINT"
    assert fleet.wait_gone() == []


def test_recorder_not_recording_in_time(fleet):
    p = fleet.record("--start-timeout", "2", "--", "sleep", "1",
                     remote_mbrec=fleet.mbrec("--start-delay", "60"))
    assert p.returncode == 1
    for name in ("a", "b"):
        lines = host_lines(p.stderr, name)
        assert len(lines) == 1 and "not recording after 2 s" in lines[0], p.stderr
        h = fleet.host(name)
        assert h["status"] == "start failed" and h["trace"] is None
        assert h["stopped_by"] == "SIGINT"  # it stopped while it "compiled"
    assert fleet.manifest()["command_start"] is None
    assert fleet.wait_gone() == []


def test_ctrl_c_while_the_recorders_start(fleet):
    proc = fleet.start("--", "true", remote_mbrec=fleet.mbrec("--start-delay", "60"))
    deadline = time.monotonic() + 60
    while "starting 2 recorders" not in fleet.stderr() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(120) == 130, fleet.stderr()
    m = fleet.manifest()
    assert m["status"] == "interrupted" and m["command_start"] is None
    for name in ("a", "b"):
        assert fleet.host(name)["status"] == "start aborted"
    assert fleet.wait_gone() == []


def test_recorder_that_exits_early(fleet):
    inventory = fleet.tmp / "hosts.toml"
    inventory.write_text(f"""[defaults]
mbrec = "{fleet.mbrec()}"
[hosts.a]
[hosts.b]
mbrec = "{fleet.mbrec('--exit-after', '1')}"
""")
    p = fleet.record("--inventory", str(inventory), "--", "sleep", "60", hosts=None)
    assert p.returncode == 1
    assert any("exited early" in ln for ln in host_lines(p.stderr, "b")), p.stderr
    m = fleet.manifest()
    assert m["stop_reason"] == "recorder ended"
    assert m["command_exit"] not in (None, 0)  # the benchmark was interrupted
    b = fleet.host("b")
    assert b["status"] == "exited early" and b["recorder_exit"] == 1
    assert "crashed" in b["errors"][0]
    assert_collected(fleet, "b", clean=False)  # written up to the crash, no trailer
    assert fleet.host("a")["status"] == "ok"
    assert_collected(fleet, "a")
    assert fleet.wait_gone() == []


def wait_recording(fleet, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if fleet.manifest()["recording"]:
                return
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"never recording: {proc.poll()} {fleet.stderr()}")


def test_ctrl_c_stops_every_recorder_and_collects(fleet):
    proc = fleet.start("--", "sleep", "60")
    wait_recording(fleet, proc)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(120) == 130, fleet.stderr()
    m = fleet.manifest()
    assert m["status"] == "interrupted" and m["stop_reason"] == "interrupted"
    for name in ("a", "b"):
        h = fleet.host(name)
        assert h["stopped_by"] == "SIGINT" and h["recorder_exit"] == 0
        assert_collected(fleet, name)
    assert fleet.wait_gone() == []


def test_ctrl_c_stops_a_remote_command_and_its_children(fleet):
    # the COMMAND on b is a shell whose child (a stand-in, to be seen by its path) would
    # outlive a signal sent to the shell alone
    child = fleet.tmp / "child.mbrec"
    proc = fleet.start("--on", "b", "--", "sh", "-c", '"$@"; echo after', "sh",
                       sys.executable, str(fleet.standin), "record", "-o", str(child))
    wait_recording(fleet, proc)
    deadline = time.monotonic() + 30
    while not child.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(120) == 130, fleet.stderr()
    assert read_trace(str(child)).clean  # the child got SIGINT and wrote its trailer
    assert fleet.manifest()["command_exit"] not in (None, 0)
    for name in ("a", "b"):
        assert_collected(fleet, name)
    assert fleet.wait_gone() == []


def test_ctrl_c_is_the_normal_end_without_command_or_duration(fleet):
    proc = fleet.start()
    wait_recording(fleet, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(120) == 0, fleet.stderr()
    m = fleet.manifest()
    assert m["status"] == "ok" and m["stop_reason"] == "SIGINT" and m["command"] == []
    for name in ("a", "b"):
        assert_collected(fleet, name)
    assert fleet.wait_gone() == []


def test_a_stop_right_after_the_start_reaches_the_process(fleet):
    # the channel's input ends at once: the stop may come before the process has its group
    ssh = Ssh(inventory.Host("a", "a"), fleet.tmpdir, str(fleet.config))
    assert ssh.connect() is None
    try:
        for i in range(5):
            with open(fleet.tmp / f"log{i}", "wb") as log:
                rec = ssh.spawn([sys.executable, str(fleet.standin), "--start-delay", "60",
                                 "record", "-o", str(fleet.tmp / f"{i}.mbrec")], log)
                rec.stop()
                assert rec.wait(30)
            assert rec.exit_status not in (None, 0) and rec.target.startswith("-")
    finally:
        ssh.close()
    assert fleet.wait_gone() == []


def test_fleet_killed_leaves_no_recorder_running(fleet):
    proc = fleet.start("--duration", "60")
    wait_recording(fleet, proc)
    proc.kill()  # SIGKILL: mbrec cannot stop anything itself
    proc.wait()
    # its ssh clients die with it, the channels close, and each host stops its recorder
    assert fleet.wait_gone(timeout=30, remote_only=True) == []
    for name in ("a", "b"):
        trace = read_trace(str(fleet.remote_dir / f"{name}.mbrec"))
        assert trace.clean and trace.trailer["stop_reason"] == "SIGINT"
    assert fleet.manifest()["status"] == "running"  # as far as it got


def test_lost_connection_mid_run(fleet):
    proc = fleet.start("--duration", "60")
    wait_recording(fleet, proc)
    # b's control connection: killing it drops b's ssh connection, recorder session and all
    masters = [ln for ln in fleet.leftovers() if "ControlMaster=yes" in ln and "/b.sock" in ln]
    assert len(masters) == 1, fleet.leftovers()
    os.kill(int(masters[0].split(":")[0]), signal.SIGKILL)
    assert proc.wait(120) == 1, fleet.stderr()
    err = fleet.stderr()
    assert any("connection lost" in ln for ln in host_lines(err, "b")), err
    b = fleet.host("b")
    assert b["status"] == "connection lost"
    # the host stopped its recorder when the channel went; mbrec reconnected to collect it
    assert_collected(fleet, "b")
    assert_collected(fleet, "a")
    assert fleet.wait_gone() == []


def test_recorder_deaf_to_sigint_is_stopped_by_force(fleet):
    p = fleet.record("--stop-timeout", "2", "--", "sleep", "1",
                     remote_mbrec=fleet.mbrec("--ignore-sigint"))
    assert p.returncode == 1
    for name in ("a", "b"):
        h = fleet.host(name)
        assert h["status"] == "stopped by force" and h["stopped_by"] == "SIGTERM"
        assert_collected(fleet, name)  # the stand-in writes its trailer on SIGTERM
    assert fleet.wait_gone() == []


def test_bad_arguments_are_one_line(fleet, tmp_path):
    p = fleet.record("--", "true", hosts="a,a")
    assert p.returncode == 2 and "listed twice" in p.stderr and "Traceback" not in p.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[hosts.a]\nprot = 22\n")
    p = fleet.record("--inventory", str(bad), "--", "true", hosts=None)
    assert p.returncode == 2 and "unknown key 'prot'" in p.stderr
    fleet.run_dir.mkdir()
    (fleet.run_dir / "keep.txt").write_text("mine")
    p = fleet.record("--", "true")
    assert p.returncode == 2 and "not an empty directory" in p.stderr
    assert (fleet.run_dir / "keep.txt").read_text() == "mine"


def test_host_names_from_ssh_destinations():
    assert [inventory.name_of(d) for d in ("a", "root@10.0.0.1", "ssh://alice@web:2222",
                                           "bob@[fe80::1]:22", "h:22")] == \
        ["a", "10.0.0.1", "web", "fe80__1", "h"]
    hosts = inventory.from_list("root@x, y ,", "sudo-less mbrec", False)
    assert [(h.name, h.destination) for h in hosts] == [("x", "root@x"), ("y", "y")]
    assert hosts[0].mbrec_words() == ["sudo-less", "mbrec"]
    assert inventory.Host("z", "z", sudo=True).recorder_words() == ["sudo", "-n", "mbrec"]


def test_inventory_defaults_and_host_values(tmp_path):
    f = tmp_path / "hosts.toml"
    f.write_text('''[defaults]
user = "alice"
sudo = true
ports = 80
[hosts.web]
destination = "10.0.0.1"
port = 2222
netns = ["web"]
[hosts.client]
ports = [443, 8080]
''')
    web, client = inventory.from_file(str(f), None, False)
    assert (web.name, web.destination, web.user, web.port, web.sudo) == \
        ("web", "10.0.0.1", "alice", 2222, True)
    assert web.record_filters() == ["--netns", "web", "--port", "80", "--host-name", "web"]
    assert (client.destination, client.ports, client.mbrec) == ("client", [443, 8080], "mbrec")
    f.write_text("[hosts.a]\nport = \"22\"\n")
    with pytest.raises(MbrecError, match="port must be an integer"):
        inventory.from_file(str(f), None, False)


def test_run_directory_expands_to_its_collected_traces(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(MbrecError, match="without run.json"):
        manifest.expand([str(run)])
    (run / "a.mbrec").write_bytes(b"")
    manifest.write(str(run), {"format": manifest.FORMAT, "status": "failed", "hosts": [
        {"name": "a", "trace": "a.mbrec", "status": "ok"},
        {"name": "b", "trace": None, "status": "unreachable"}]})
    warnings = []
    assert manifest.expand([str(run), "x.mbrec"], warnings.append) == \
        [str(run / "a.mbrec"), "x.mbrec"]
    assert len(warnings) == 1 and "host b has no trace (unreachable" in warnings[0]
