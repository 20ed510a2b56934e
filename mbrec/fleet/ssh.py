"""The OpenSSH client as the user has it (their ssh config, agent and keys), one multiplexed
connection per host, and remote processes that stop when told or when the connection goes.

Every ssh runs with BatchMode=yes (a host that would ask for a password fails at once instead
of waiting for input nobody types) and in its own session, so a Ctrl-C on the terminal reaches
mbrec, which then stops the remote processes in order, and not the ssh clients themselves.
"""

from __future__ import annotations

import ctypes
import os
import re
import shlex
import signal
import subprocess
import threading
import time

from mbrec.fleet.inventory import Host

# Runs a remote process with its stdin cut off and watches the ssh channel instead: a line or
# end of input (mbrec closes it to stop the process, and so does a lost connection) sends it
# SIGINT, the signal `mbrec record` stops on cleanly. The process runs in a process group of
# its own (setsid) so the signal reaches its children too (a COMMAND's, a recorder's). A shell
# starts background processes with SIGINT ignored, so the process gets it back at its default
# where env can do that (coreutils 8.31 or newer): a recorder still compiling then stops too.
# env comes first, so that by the time the group exists its SIGINT is no longer ignored; a
# stop that comes before setsid has made the group is retried until the group exists. The
# markers tell mbrec what to signal (-PGID, or a PID without setsid) and how the process ended.
# POSIX sh, run as `sh -c WRAPPER sh ARGV...`.
WRAPPER = """exec 3<&0 </dev/null
g=
if command -v setsid >/dev/null 2>&1; then set -- setsid "$@"; g=-; fi
if env --default-signal=INT true 2>/dev/null; then set -- env --default-signal=INT "$@"; fi
"$@" 3<&- &
p=$!
echo "mbrec-fleet: pid $g$p" >&2
{ read -r _ <&3
  until kill -INT "$g$p" 2>/dev/null; do kill -0 "$p" 2>/dev/null || break; sleep 1; done; } &
w=$!
exec 3<&-
wait "$p"; rc=$?
kill "$w" 2>/dev/null
echo "mbrec-fleet: exit $rc" >&2
exit "$rc"
"""
PID_LINE = re.compile(r"^mbrec-fleet: pid (-?\d+)$")
EXIT_LINE = re.compile(r"^mbrec-fleet: exit (\d+)$")
SSH_FAILED = 255  # what ssh exits with when it, not the remote command, failed
CONTROL_PERSIST = "60s"
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In a child before exec: SIGTERM when mbrec dies, even by SIGKILL, so the ssh channel
    closes and the host stops the remote process (Linux prctl)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def remote_command(words: list[str]) -> str:
    """One string for the remote shell: ssh joins its arguments with spaces."""
    return " ".join(shlex.quote(w) for w in words)


class Ssh:
    """ssh to one host through a control connection of our own (ControlMaster), so the check,
    the recorder, the stop and the copy share one authenticated connection."""

    def __init__(self, host: Host, control_dir: str, config: str | None = None,
                 connect_timeout: int = 10):
        self.host = host
        self.control = os.path.join(control_dir, f"{host.name}.sock")
        self.config = config
        self.connect_timeout = connect_timeout
        self.lock = threading.Lock()

    def options(self) -> list[str]:
        o = ["-F", self.config] if self.config else []
        o += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}",
              "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
              "-o", f"ControlPath={self.control}"]
        if self.host.user:
            o += ["-o", f"User={self.host.user}"]
        if self.host.port:
            o += ["-o", f"Port={self.host.port}"]
        for opt in self.host.ssh_options:
            o += ["-o", str(opt)]
        return o

    def connect(self) -> str | None:
        """Open the control connection (or find it open); None, or ssh's own error line."""
        with self.lock:
            if self._master_alive():
                return None
            try:
                os.unlink(self.control)  # a dead master's socket
            except FileNotFoundError:
                pass
            # -f: ssh forks to the background once authenticated, so its exit status says
            # whether the host is reachable; ControlPersist keeps the connection until `-O exit`
            # or, should mbrec be killed, until it has been idle for CONTROL_PERSIST.
            timeout = self.connect_timeout + 30
            try:
                p = subprocess.run(["ssh", *self.options(), "-o", "ControlMaster=yes",
                                    "-o", f"ControlPersist={CONTROL_PERSIST}", "-N", "-f",
                                    self.host.destination],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True,
                                   timeout=timeout)
            except subprocess.TimeoutExpired:
                return f"no login within {timeout} s"
            if p.returncode != 0:
                return last_line(p.stderr) or f"ssh exited with status {p.returncode}"
            return None

    def _master_alive(self) -> bool:
        if not os.path.exists(self.control):
            return False
        return self._ctl("check").returncode == 0

    def _ctl(self, op: str) -> subprocess.CompletedProcess:
        argv = ["ssh", *self.options(), "-O", op, self.host.destination]
        try:
            return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, start_new_session=True, timeout=30)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, SSH_FAILED, "", "no answer")

    def close(self) -> None:
        if os.path.exists(self.control):
            self._ctl("exit")

    def argv(self, words: list[str]) -> list[str]:
        return ["ssh", *self.options(), "-o", "ControlMaster=no", self.host.destination,
                remote_command(words)]

    def run(self, words: list[str], *, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a command to completion; ssh's status is 255 where ssh itself failed."""
        try:
            return subprocess.run(self.argv(words), capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL, start_new_session=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(words, SSH_FAILED, "",
                                               f"no answer in {timeout:.0f} s")

    def spawn(self, words: list[str], log, *, stdout="log", echo=None) -> "Remote":
        """Start a long-running remote process under WRAPPER (as the ssh user: a `sudo -n`
        in words relays the wrapper's signals to its command); its stdout goes to the log
        unless given (None: this process's stdout)."""
        argv = self.argv(["sh", "-c", WRAPPER, "sh", *words])
        return Remote(argv, log, log if stdout == "log" else stdout, echo)

    def copy_from(self, remote_path: str, local_path: str, timeout: float = 3600) -> str | None:
        """scp through the control connection (the SFTP protocol where OpenSSH is 9.0 or
        newer); None, or the error line."""
        src = f"{scp_host(self.host.destination)}:{remote_path}"
        try:
            p = subprocess.run(["scp", "-q", *self.options(), "-o", "ControlMaster=no",
                                src, local_path], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, start_new_session=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"copy took longer than {timeout:.0f} s"
        return None if p.returncode == 0 else (last_line(p.stderr) or f"scp status {p.returncode}")


def scp_host(destination: str) -> str:
    """scp's spelling of an ssh destination (ssh://user@host:port is ssh's, scp wants host)."""
    if destination.startswith("ssh://"):
        return "scp://" + destination.removeprefix("ssh://") + "/"
    if ":" in destination.rsplit("@", 1)[-1]:  # an IPv6 address
        user, _, addr = destination.rpartition("@")
        return (user + "@" if user else "") + f"[{addr}]"
    return destination


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


class Remote:
    """A remote process started by Ssh.spawn: its stderr lines go to a log file (and to echo,
    if given) and are watched for the wrapper's markers and the recorder's "recording" line."""

    def __init__(self, argv: list[str], log, stdout, echo=None):
        self.log = log
        self.echo = echo
        self.pid: int | None = None      # the remote process's
        self.target: str | None = None   # what kill signals there: -PGID, or the PID
        self.exit_status: int | None = None   # the remote process's, from the wrapper
        self.recording = threading.Event()
        self.lines: list[str] = []
        # started from the main thread: the death signal follows the thread that forks
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=stdout,
                                     stderr=subprocess.PIPE, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        self.started = time.time()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            if m := PID_LINE.match(line):
                self.target, self.pid = m.group(1), abs(int(m.group(1)))
                continue
            if m := EXIT_LINE.match(line):
                self.exit_status = int(m.group(1))
                continue
            self.lines.append(line)
            self.log.write(raw)
            self.log.flush()
            if self.echo is not None:
                self.echo(line)
            if line.startswith("mbrec: recording on "):
                self.recording.set()

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Close the remote process's input: the wrapper sends it SIGINT."""
        try:
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    def wait(self, timeout: float | None = None) -> bool:
        """True once ssh has ended and every line is read."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        self._reader.join(5)
        return True

    def kill_local(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def connection_lost(self) -> bool:
        """ssh ended without the wrapper's exit line: the connection (or ssh) went away."""
        return self.proc.poll() is not None and self.exit_status is None

    def last_error(self) -> str:
        for line in reversed(self.lines):
            if line.strip() and not line.startswith("mbrec:   "):
                return line.strip()
        return ""
