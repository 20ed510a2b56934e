"""One fleet recording: check every host, start one recorder per host, run the benchmark, stop
every recorder, collect the traces with a checksum check, and say in run.json what happened.

Whatever goes wrong (a host unreachable, a recorder that exits early, a failing COMMAND,
Ctrl-C, a lost connection), every recorder that was started is stopped and every file it
wrote is collected before mbrec exits.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field

from mbrec import __version__
from mbrec.errors import MbrecError
from mbrec.fleet import manifest
from mbrec.fleet.inventory import Host
from mbrec.fleet.ssh import SSH_FAILED, Remote, Ssh, last_line

# One ssh round trip per host: what can stop a recording there, as key=value lines. Arguments:
# the remote run directory, then the remote mbrec command's words.
CHECK = r"""dir=$1; shift
echo "uid=$(id -u)"
if v=$("$@" --version 2>&1); then echo "version=$(echo "$v" | tail -n 1)"
else echo "version_error=$(echo "$v" | tail -n 1)"; fi
if "$@" record --help 2>/dev/null | grep -q -- '--check'; then
  out=$("$@" record --check 2>&1); echo "check_rc=$?"
  echo "check_out=$(echo "$out" | tail -n 1)"
elif python3 -c 'import bcc' 2>/dev/null; then echo "bcc=yes"; else echo "bcc=no"; fi
if mkdir -p "$dir" 2>/dev/null; then
  df -Pk "$dir" | awk 'NR == 2 { print "free_kb=" $4 }'
else echo "dir_error=cannot create $dir"; fi
if command -v timedatectl >/dev/null 2>&1 &&
   s=$(timedatectl show -p NTPSynchronized --value 2>/dev/null); then echo "timedatectl=$s"
elif command -v chronyc >/dev/null 2>&1 && s=$(chronyc -n tracking 2>/dev/null); then
  echo "chrony=$(echo "$s" | sed -n 's/^Leap status *: *//p')"
fi
"""
STOP_GRACE = 10.0   # after SIGTERM, before SIGKILL
COMMAND_GRACE = 10.0  # an interrupted COMMAND's time to exit after SIGINT


@dataclass
class FleetOptions:
    run_dir: str
    record_args: list[str]          # passed to every host's `mbrec record`
    command: list[str] = field(default_factory=list)
    on: str | None = None           # run COMMAND on this host (default: here)
    duration: float | None = None
    ssh_config: str | None = None
    remote_dir: str | None = None   # where the recorders write (default: under the ssh home)
    start_timeout: float = 180.0
    stop_timeout: float = 60.0
    connect_timeout: int = 10
    min_free: int = 1 << 30
    keep_remote: bool = False
    force: bool = False             # replace an earlier run in run_dir
    quiet: bool = False             # no progress lines


@dataclass
class HostRun:
    host: Host
    ssh: Ssh
    remote_path: str
    log_path: str
    status: str = "pending"
    errors: list[str] = field(default_factory=list)
    check: dict = field(default_factory=dict)
    recorder: Remote | None = None
    recording_at: str | None = None
    stopped_at: str | None = None
    stopped_by: str | None = None
    trace: str | None = None
    sha256: str | None = None
    nbytes: int | None = None

    @property
    def name(self) -> str:
        return self.host.name

    def fail(self, status: str, error: str) -> None:
        """The first failure names the host's status; every error is kept."""
        if self.status in ("pending", "checked", "recording", "ok"):
            self.status = status
        self.errors.append(error)

    @property
    def failed(self) -> bool:
        return self.status not in ("pending", "checked", "recording", "ok")

    def to_json(self) -> dict:
        r = self.recorder
        return {**self.host.to_json(), "status": self.status, "errors": self.errors,
                "check": self.check, "remote_path": self.remote_path,
                "log": os.path.relpath(self.log_path, os.path.dirname(os.path.dirname(
                    self.log_path))),
                "recorder_pid": r.pid if r else None,
                "recorder_exit": r.exit_status if r else None,
                "recording_at": self.recording_at, "stopped_at": self.stopped_at,
                "stopped_by": self.stopped_by,
                "trace": self.trace, "sha256": self.sha256, "bytes": self.nbytes}


class StopFlag:
    """SIGINT, SIGTERM and SIGHUP ask the run to stop in order (once asked, it goes on)."""

    def __init__(self):
        self.why: str | None = None
        self.expected = False  # the run was to last until a signal
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._old[sig] = signal.signal(sig, self._on)
        return self

    def _on(self, signum, frame):
        if self.why is None:
            self.why = signal.Signals(signum).name
            say(f"{self.why}: stopping every recorder and collecting the traces")

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


_quiet = False


def say(msg: str) -> None:
    """A progress line; a closed stderr (a terminal gone, a pipe reader killed) must not stop
    the run from stopping its recorders and collecting their files."""
    if _quiet:
        return
    try:
        print(f"mbrec: {msg}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def echo(line: str) -> None:
    """A remote COMMAND's stderr line, passed on as it is."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def parallel(fn, runs) -> None:
    """fn(run) for every host at once; a bug in one host's step fails that host, in run.json."""
    def guarded(r):
        try:
            fn(r)
        except Exception as e:  # reported per host, the run goes on
            r.fail("internal error", f"{fn.__name__}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=guarded, args=(r,), daemon=True) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def prepare_dir(run_dir: str, force: bool = False) -> None:
    if force and os.path.isfile(os.path.join(run_dir, manifest.MANIFEST)):
        remove_run(run_dir)
    if os.path.exists(run_dir) and (not os.path.isdir(run_dir) or os.listdir(run_dir)):
        hint = (" or pass --force to replace the earlier run" if
                os.path.isfile(os.path.join(run_dir, manifest.MANIFEST)) else "")
        raise MbrecError(f"{run_dir} already exists and is not an empty directory: give a new "
                         f"run directory{hint} (nothing in it is overwritten)")
    try:
        os.makedirs(os.path.join(run_dir, "logs"), exist_ok=True)
    except OSError as e:
        raise MbrecError(f"cannot create {run_dir}: {e.strerror}") from None


def remove_run(run_dir: str) -> None:
    """--force: what an earlier run wrote into run_dir (its traces, logs/, run.json); anything
    else there stays, and then the directory is not empty and the run refuses it."""
    m = manifest.read(run_dir)
    for h in m.get("hosts", []):
        trace = h.get("trace")
        if trace and os.sep not in trace:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(run_dir, trace))
    shutil.rmtree(os.path.join(run_dir, "logs"), ignore_errors=True)
    os.remove(os.path.join(run_dir, manifest.MANIFEST))


class Fleet:
    def __init__(self, hosts: list[Host], opts: FleetOptions):
        global _quiet
        _quiet = opts.quiet
        if opts.on is not None and opts.on not in {h.name for h in hosts}:
            raise MbrecError(f"--on {opts.on}: not one of the hosts "
                             f"({', '.join(h.name for h in hosts)})")
        if opts.on is not None and not opts.command:
            raise MbrecError("--on HOST: give the COMMAND to run there after --")
        self.opts = opts
        prepare_dir(opts.run_dir, opts.force)
        self.control_dir = tempfile.mkdtemp(prefix="mbrec-fleet-")  # short: a socket path
        run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        remote_dir = opts.remote_dir or f"mbrec-fleet/{run_id}"
        self.runs = [HostRun(h, Ssh(h, self.control_dir, opts.ssh_config, opts.connect_timeout),
                             f"{remote_dir}/{h.name}.mbrec",
                             os.path.join(opts.run_dir, "logs", f"{h.name}.log"))
                     for h in hosts]
        self.remote_dir = remote_dir
        self.manifest: dict = {"format": manifest.FORMAT, "version": manifest.VERSION,
                         "mbrec_version": __version__, "run_id": run_id, "status": "running",
                         "errors": [], "record_args": opts.record_args,
                         "duration": opts.duration, "remote_dir": remote_dir,
                         "command": opts.command, "command_on": opts.on,
                         "command_exit": None, "command_start": None, "command_end": None,
                         "start": manifest.now_iso(), "recording": None, "stop": None,
                         "hosts": []}
        self.stop = StopFlag()
        self.save()

    def save(self) -> None:
        self.manifest["hosts"] = [r.to_json() for r in self.runs]
        manifest.write(self.opts.run_dir, self.manifest)

    def error(self, msg: str) -> None:
        self.manifest["errors"].append(msg)
        say(msg)

    # --- the run -------------------------------------------------------------------------

    def record(self) -> int:
        with self.stop:
            try:
                if self._check() and self._start():
                    self._run_command()
            finally:
                for r in self.runs:  # hosts the run stopped for another host's failure
                    if r.status in ("pending", "checked"):
                        r.status = "not started" if r.recorder is None else "start aborted"
                try:
                    self._stop_recorders()
                finally:
                    try:
                        self._collect()
                    finally:
                        for r in self.runs:
                            r.ssh.close()
                        shutil.rmtree(self.control_dir, ignore_errors=True)
                        self._finish()
        return {"ok": 0, "interrupted": 130}.get(self.manifest["status"], 1)

    def _check(self) -> bool:
        say(f"checking {len(self.runs)} hosts: " + ", ".join(r.name for r in self.runs))
        parallel(self._check_one, self.runs)
        self.save()
        for r in self.runs:
            if r.failed:
                say(f"{r.name}: {r.status}: {r.errors[-1]}")
        if self.stop.why:
            return False
        return not any(r.failed for r in self.runs)

    def _check_one(self, r: HostRun) -> None:
        err = r.ssh.connect()
        if err:
            r.fail("unreachable", f"ssh {r.host.destination}: {err}")
            return
        # `record --check` compiles and attaches a BPF program: as long as a recorder's start
        p = r.ssh.run(["sh", "-c", CHECK, "sh", self.remote_dir, *r.host.recorder_words()],
                      timeout=self.opts.start_timeout)
        before = time.time_ns()
        t = r.ssh.run(["date", "+%s%N"])  # one short round trip: a tight offset bound
        after = time.time_ns()
        if p.returncode == SSH_FAILED:
            r.fail("unreachable", f"ssh {r.host.destination}: {last_line(p.stderr)}")
            return
        kv = dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)
        c = r.check
        c["uid"] = int(kv["uid"]) if kv.get("uid", "").isdigit() else None
        c["mbrec_version"] = kv.get("version")
        if "check_rc" in kv:
            c["record_check"] = "ok" if kv["check_rc"] == "0" else kv.get("check_out", "")
        else:
            c["record_check"] = None  # this mbrec has no `record --check`
            c["bcc"] = kv.get("bcc") == "yes"
        if "free_kb" in kv and kv["free_kb"].isdigit():
            c["free_bytes"] = int(kv["free_kb"]) * 1024
        c["clock_synchronized"] = ({"yes": True, "no": False}.get(kv["timedatectl"])
                                   if "timedatectl" in kv else
                                   (kv["chrony"] == "Normal") if kv.get("chrony") else None)
        c["clock_source"] = ("timedatectl" if "timedatectl" in kv else
                             "chrony" if "chrony" in kv else None)
        if t.stdout.strip().isdigit():
            # the remote clock was read between before and after: the offset lies within
            c["clock_offset_s"] = round((int(t.stdout) - (before + after) / 2) / 1e9, 6)
            c["clock_offset_bound_s"] = round((after - before) / 2e9, 6)
        words = " ".join(r.host.recorder_words())
        if "version_error" in kv or not kv.get("version"):
            r.fail("check failed", f"`{words} --version` failed there: "
                   f"{kv.get('version_error') or last_line(p.stderr) or 'no output'} "
                   "(install mbrec on the host or name it with --remote-mbrec)")
        elif c["record_check"] not in (None, "ok"):
            r.fail("check failed", f"`{words} record --check`: {c['record_check']}")
        elif c["record_check"] is None and c["uid"] != 0 and not r.host.sudo:
            r.fail("check failed", f"recording needs root: log in as root or pass --sudo "
                   f"(the user there has uid {c['uid']})")
        elif c["record_check"] is None and not c["bcc"]:
            r.fail("check failed", "BCC is not installed there (python3 -c 'import bcc' "
                   "fails): apt-get install python3-bpfcc")
        elif "dir_error" in kv:
            r.fail("check failed", kv["dir_error"])
        elif c.get("free_bytes") is not None and c["free_bytes"] < self.opts.min_free:
            r.fail("check failed", f"{c['free_bytes'] / 2**30:.1f} GiB free in "
                   f"{self.remote_dir}, less than --min-free {self.opts.min_free / 2**30:.1f} GiB")
        else:
            r.status = "checked"
            if c["clock_synchronized"] is False:
                say(f"{r.name}: warning: the clock is not synchronized ({c['clock_source']}); "
                    "align with `mbrec analyze --clock packets`")

    def _start(self) -> bool:
        for r in self.runs:
            log = open(r.log_path, "ab")
            words = [*r.host.recorder_words(), "record", "-o", r.remote_path,
                     *self.opts.record_args, *r.host.record_filters()]
            r.recorder = r.ssh.spawn(words, log)
        say(f"starting {len(self.runs)} recorders, waiting for each to record "
            f"(at most {self.opts.start_timeout:.0f} s)")
        deadline = time.monotonic() + self.opts.start_timeout
        waiting = list(self.runs)
        while waiting and not self.stop.why:
            for r in list(waiting):
                if r.recorder.recording.is_set():
                    r.status, r.recording_at = "recording", manifest.now_iso()
                    waiting.remove(r)
                elif not r.recorder.running():
                    r.recorder.wait(5)
                    self._ended(r, "start failed", "before it recorded")
                    waiting.remove(r)
            if any(r.failed for r in self.runs):
                break
            if time.monotonic() > deadline:
                for r in waiting:
                    r.fail("start failed", f"not recording after {self.opts.start_timeout:.0f} "
                           f"s (last line: {r.recorder.last_error() or 'none'})")
                break
            time.sleep(0.05)
        self.save()
        for r in self.runs:
            if r.failed:
                say(f"{r.name}: {r.status}: {r.errors[-1]}")
        if self.stop.why or any(r.failed for r in self.runs):
            return False
        self.manifest["recording"] = manifest.now_iso()
        self.save()
        say("every host is recording")
        return True

    def _ended(self, r: HostRun, status: str, when: str) -> None:
        rec = r.recorder
        if rec.connection_lost:
            r.fail("connection lost", f"the ssh connection to {r.host.destination} ended "
                   f"{when}" + (f": {rec.last_error()}" if rec.last_error() else ""))
        else:
            r.fail(status, f"the recorder exited {when} with status {rec.exit_status}: "
                   f"{rec.last_error() or 'no message'}")

    def _run_command(self) -> None:
        opts = self.opts
        m = self.manifest
        proc = remote = None
        m["command_start"] = manifest.now_iso()
        if opts.command and opts.on:
            r = next(r for r in self.runs if r.name == opts.on)
            log = open(os.path.join(opts.run_dir, "logs", "command.log"), "ab")
            remote = r.ssh.spawn(opts.command, log, stdout=None, echo=echo)
            say(f"running on {opts.on}: {' '.join(opts.command)}")
        elif opts.command:
            say(f"running: {' '.join(opts.command)}")
            try:
                proc = subprocess.Popen(opts.command)
            except OSError as e:
                m["command_exit"] = 127
                self.error(f"cannot run {opts.command[0]}: {e.strerror}")
        elif opts.duration is None:
            say("recording until Ctrl-C")
        t0 = time.monotonic()
        why = None
        while why is None:
            if self.stop.why:
                why = "interrupted"
            elif proc is not None and proc.poll() is not None:
                why = "command exited"
            elif remote is not None and not remote.running():
                why = "command exited"
            elif opts.command and proc is None and remote is None:
                why = "command failed"
            elif opts.duration is not None and time.monotonic() - t0 >= opts.duration:
                why = "duration"
            else:
                for r in self.runs:
                    if not r.recorder.running():
                        r.recorder.wait(5)
                        self._ended(r, "exited early", "while recording")
                        say(f"{r.name}: {r.status}: {r.errors[-1]}")
                        why = "recorder ended"
                time.sleep(0.1)
        if why == "interrupted" and not opts.command and opts.duration is None:
            why = self.stop.why  # "until Ctrl-C": the stop that was asked for
            self.stop.expected = True
        if proc is not None:
            m["command_exit"] = self._end_local(proc, why)
        elif remote is not None:
            m["command_exit"] = self._end_remote_command(remote, why)
            remote.log.close()
            m["command_log"] = "logs/command.log"  # its stderr (stdout was passed on)
        m["command_end"] = manifest.now_iso()
        m["stop_reason"] = why
        if m["command_exit"] not in (None, 0):
            self.error(f"the command exited with status {m['command_exit']}")

    @staticmethod
    def _end_local(proc, why) -> int:
        if proc.poll() is None:
            say(f"{why}: interrupting the command")
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(COMMAND_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
        return proc.wait()

    def _end_remote_command(self, remote: Remote, why) -> int | None:
        if remote.running():
            say(f"{why}: interrupting the command on {self.opts.on}")
            remote.stop()
            if not remote.wait(COMMAND_GRACE):
                r = next(r for r in self.runs if r.name == self.opts.on)
                self._signal(r, remote, "KILL")
                if not remote.wait(STOP_GRACE):
                    remote.kill_local()
        remote.wait(5)
        return remote.exit_status if remote.exit_status is not None else remote.proc.returncode

    # --- stop and collect ----------------------------------------------------------------

    def _signal(self, r: HostRun, remote: Remote, sig: str) -> bool:
        """Send a signal to a remote process by its pid; False where the host is not reached."""
        if remote.target is None or r.ssh.connect():
            return False
        # with --sudo the pid is sudo's, the ssh user's own, and sudo relays INT and TERM
        return r.ssh.run(["kill", f"-{sig}", remote.target],
                         timeout=30).returncode != SSH_FAILED

    def _alive(self, r: HostRun, remote: Remote) -> bool | None:
        """Whether the remote process still runs; None where the host is not reached."""
        if remote.target is None or r.ssh.connect():
            return None
        p = r.ssh.run(["kill", "-0", remote.target], timeout=30)
        return None if p.returncode == SSH_FAILED else p.returncode == 0

    def _stop_recorders(self) -> None:
        started = [r for r in self.runs if r.recorder is not None]
        if not started:
            return
        say(f"stopping {sum(r.recorder.running() for r in started)} recorders")
        for r in started:
            if r.recorder.running():
                r.stopped_by = "SIGINT"
                r.recorder.stop()
        parallel(self._stop_one, started)
        self.manifest["stop"] = manifest.now_iso()
        self.save()

    def _stop_one(self, r: HostRun) -> None:
        rec = r.recorder
        if rec.wait(self.opts.stop_timeout) and not rec.connection_lost:
            r.stopped_at = r.stopped_at or manifest.now_iso()
            if rec.exit_status not in (0, None) and not r.failed:
                r.fail("recorder failed", f"the recorder exited with status "
                       f"{rec.exit_status}: {rec.last_error() or 'no message'}")
            return
        # Either ssh still runs (the recorder ignores SIGINT) or the connection went away
        # (the recorder may still run there, if the host has not noticed): reach the process
        # by its pid, with SIGINT first where it has not had one.
        stages = [("INT", self.opts.stop_timeout)] if rec.connection_lost else []
        for sig, grace in stages + [("TERM", STOP_GRACE), ("KILL", STOP_GRACE)]:
            if self._alive(r, rec) is not True:
                break
            if sig != "INT":
                r.fail("stopped by force", f"the recorder did not stop on SIGINT: sent SIG{sig}")
            r.stopped_by = f"SIG{sig}"
            self._signal(r, rec, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and self._alive(r, rec):
                time.sleep(0.5)
        if not rec.wait(5):
            rec.kill_local()
        alive = self._alive(r, rec)
        if alive:
            r.fail("not stopped", f"recorder pid {rec.pid} still runs on {r.host.destination}")
        elif alive is None and rec.connection_lost:
            r.fail("not stopped", f"{r.host.destination} is not reachable: the recorder "
                   f"(pid {rec.pid}) may still run there")
        r.stopped_at = manifest.now_iso()

    def _collect(self) -> None:
        started = [r for r in self.runs if r.recorder is not None]
        if started:
            say(f"collecting {len(started)} traces into {self.opts.run_dir}")
            parallel(self._collect_one, started)

    def _collect_one(self, r: HostRun) -> None:
        err = r.ssh.connect()
        if err:
            r.fail("not collected", f"{r.remote_path} is still on {r.host.destination}: {err}")
            return
        p = r.ssh.run(["sh", "-c", 'test -f "$1" || exit 3; sha256sum "$1"; wc -c < "$1"',
                       "sh", r.remote_path])
        if p.returncode == 3:
            r.fail("no trace", "the recorder wrote no trace")
            return
        lines = p.stdout.split()
        if p.returncode != 0 or len(lines) < 3:
            r.fail("not collected", f"checksum of {r.remote_path} on {r.host.destination} "
                   f"failed: {last_line(p.stderr) or p.stdout.strip()}")
            return
        remote_sum, nbytes = lines[0], int(lines[-1])
        name = f"{r.name}.mbrec"
        local = os.path.join(self.opts.run_dir, name)
        for attempt in range(2):
            err = r.ssh.copy_from(r.remote_path, local + ".part")
            if err is None and sha256_file(local + ".part") == remote_sum:
                os.replace(local + ".part", local)
                r.trace, r.sha256, r.nbytes = name, remote_sum, nbytes
                break
            err = err or "the sha256 of the copy differs from the host's"
        else:
            r.fail("not collected", f"{r.remote_path} from {r.host.destination}: {err} "
                   "(the file stays on the host)")
            return
        if not self.opts.keep_remote:
            r.ssh.run(["sh", "-c", 'rm -f "$1"; rmdir "$2" 2>/dev/null; exit 0', "sh",
                       r.remote_path, self.remote_dir])
        if not r.failed:
            r.status = "ok"

    def _finish(self) -> None:
        for r in self.runs:
            if r.recorder is not None:
                r.recorder.log.close()
        m = self.manifest
        m["stop"] = m["stop"] or manifest.now_iso()
        if self.stop.why and not self.stop.expected:
            m["status"] = "interrupted"
            m["errors"].append(f"interrupted by {self.stop.why}")
        elif any(r.failed or r.status != "ok" for r in self.runs) or \
                m["command_exit"] not in (None, 0) or m["errors"]:
            m["status"] = "failed"
        else:
            m["status"] = "ok"
        self.save()
        for r in self.runs:
            detail = (f"{r.trace} ({r.nbytes / 1e6:.1f} MB, sha256 verified)" if r.trace
                      else "no trace")
            say(f"  {r.name:<16} {r.status:<16} {detail}")
        if m["status"] == "ok":
            say(f"next: mbrec analyze {self.opts.run_dir}")
        else:
            say(f"run {m['status']}: see {os.path.join(self.opts.run_dir, manifest.MANIFEST)}")
