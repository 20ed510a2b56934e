"""Recorder control in the guest: one `mbrec record` per recorded local host, started, awaited and stopped."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from mbrec.lab.guestenv import OUT, say, sh
from mbrec.lab.topology import Layout

REC_DIR = Path("/tmp/rec")
# One recorder's BCC compile took 82 s under TCG on a loaded 2-core machine (20-35 s idle); two run in parallel.
RECORDER_READY_TIMEOUT_S = 600


class Recorders:
    """One `mbrec record` per recorded local host, in the root namespace with --netns; SIGINT stops them."""

    def __init__(self, layout: Layout, hosts: list[str], enabled: bool, extra_args=()):
        self.layout, self.hosts, self.enabled = layout, hosts, enabled
        self.extra_args = list(extra_args)  # job["record_args"], from mbrec lab run --record-args
        self.procs: dict[str, subprocess.Popen] = {}
        self.status = {h: "not recorded" for h in hosts}

    def start(self) -> None:
        if not self.enabled:
            self.status = {h: "disabled (--no-record)" for h in self.hosts}
            return
        if not self.hosts:
            return
        REC_DIR.mkdir(parents=True, exist_ok=True)
        for h in self.hosts:
            argv = [sys.executable, "-m", "mbrec", "record", "-o", str(REC_DIR / f"{h}.mbrec"),
                    "--host-name", h, "--quiet", *self.extra_args]
            if self.layout.ns.get(h):
                argv += ["--netns", self.layout.ns[h]]
            err = open(OUT / f"record-{h}.log", "w")
            self.procs[h] = subprocess.Popen(argv, stdout=err, stderr=subprocess.STDOUT)
            self.status[h] = "starting"
        say(f"recording on {', '.join(self.hosts)}: waiting for the recorders (BCC compiles under TCG: "
            "20-35 s each when the machine is idle, minutes when it is loaded)")
        deadline = time.monotonic() + RECORDER_READY_TIMEOUT_S
        waiting = set(self.procs)
        started = time.monotonic()
        next_note = started + 60
        while waiting and time.monotonic() < deadline:
            if time.monotonic() > next_note:
                say(f"still waiting for the recorders on {', '.join(sorted(waiting))} "
                    f"({time.monotonic() - started:.0f} s)")
                next_note += 60
            for h in sorted(waiting):
                path, proc = REC_DIR / f"{h}.mbrec", self.procs[h]
                if proc.poll() is not None:
                    log = (OUT / f"record-{h}.log").read_text(errors="replace")
                    self.status[h] = f"exited {proc.returncode} before ready: {log.strip()[-300:]}"
                    waiting.discard(h)
                elif path.exists() and path.stat().st_size > 0:
                    self.status[h] = "recording"
                    waiting.discard(h)
            time.sleep(0.5)
        for h in waiting:
            self.status[h] = f"not ready after {RECORDER_READY_TIMEOUT_S} s"
        took = time.monotonic() - started
        say(f"recorders: {self.status} after {took:.0f} s")

    def stop(self) -> None:
        for h, proc in self.procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for h, proc in self.procs.items():
            try:
                rc = proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
                self.status[h] = "killed: did not stop within 120 s of SIGINT"
            if self.status[h] == "recording":
                self.status[h] = "ok" if rc == 0 else f"exited {rc}"
            src = REC_DIR / f"{h}.mbrec"
            if src.exists():
                dst = OUT / f"{h}.mbrec"
                sh(["cp", str(src), str(dst)])

    def ok(self) -> bool:
        return all(v in ("ok", "not recorded", "disabled (--no-record)") for v in self.status.values())
