"""Boot lab guests in QEMU and make sure none is ever left running.

One VM holds every host as a network namespace; two VMs are joined only by a QEMU socket netdev on 127.0.0.1
(never user-mode networking: nothing outside the VMs is reachable). Each guest mounts the source tree read-only
and the output folder read-write over 9p, runs its job and writes its exit status to `status-<role>`.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mbrec.errors import MbrecError
from mbrec.lab.image import Image

INIT_MARK = "mbrec-lab: init"      # printed by guest_init.sh once it runs: boot is over
GUEST_MARK = "mbrec-lab:"          # guest progress lines echoed to the user
TIMEOUT_STATUS = 124


def detect_accel() -> tuple[str, str]:
    """('kvm' | 'tcg', why). Real hardware KVM only: a paravirtual /dev/kvm (kvm_pvm) can't boot the kernel."""
    forced = os.environ.get("MBREC_LAB_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced, "forced by MBREC_LAB_ACCEL"
    if not os.path.exists("/dev/kvm"):
        return "tcg", "no /dev/kvm"
    if os.path.isdir("/sys/module/kvm_pvm"):
        return "tcg", "/dev/kvm is served by kvm_pvm (paravirtual nested KVM), which can't boot a stock kernel"
    if not (os.path.isdir("/sys/module/kvm_intel") or os.path.isdir("/sys/module/kvm_amd")):
        return "tcg", "/dev/kvm exists but neither kvm_intel nor kvm_amd is loaded"
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as e:
        return "tcg", f"/dev/kvm can't be opened ({e.strerror})"
    return "kvm", "hardware KVM (kvm_intel/kvm_amd)"


def accel_args(accel: str) -> list[str]:
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg,thread=multi", "-cpu", "max"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_listening(port: int) -> bool:
    """True once something listens on 127.0.0.1:port. Reads /proc: a test connect would steal QEMU's one peer."""
    want = f"0100007F:{port:04X}"
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(cols[1] == want and cols[3] == "0A" for cols in (line.split() for line in lines))


@dataclass
class Guest:
    role: str
    argv: list[str]
    console: Path
    stderr_path: Path
    proc: subprocess.Popen | None = None
    started: float = 0.0
    init_at: float | None = None
    console_pos: int = 0
    echoed: list = field(default_factory=list)


def qemu_argv(image: Image, role: str, src: Path, out: Path, console: Path, accel: str, *, memory_mb: int,
              cpus: int, netdev: list[str] | None, keep: bool) -> list[str]:
    append = ("console=ttyS0 loglevel=4 root=/dev/vda rw init=/sbin/mbrec-init panic=-1 net.ifnames=0 "
              f"mbrec.role={role} mbrec.keep={int(keep)}")
    if keep:  # an interactive shell on the terminal after the job; the log still goes to the output folder
        serial = ["-chardev", f"stdio,id=con,signal=off,logfile={console}", "-serial", "chardev:con"]
    else:
        serial = ["-chardev", f"file,id=con,path={console}", "-serial", "chardev:con"]
    return [
        "qemu-system-x86_64", *accel_args(accel), "-smp", str(cpus), "-m", str(memory_mb),
        "-display", "none", "-monitor", "none", "-no-reboot", *serial,
        "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", append,
        "-drive", f"file={image.rootfs},format=raw,if=virtio,snapshot=on,cache=unsafe",
        "-virtfs", f"local,path={src},mount_tag=src,security_model=none,readonly=on",
        "-virtfs", f"local,path={out},mount_tag=out,security_model=none",
        *(netdev or ["-nic", "none"]),
    ]


class Runner:
    """Starts the guests, follows their consoles, enforces the timeout and always kills QEMU."""

    def __init__(self, guests: list[Guest], timeout_s: float, boot_timeout_s: float, quiet: bool = False):
        self.guests = guests
        self.timeout_s = timeout_s
        self.boot_timeout_s = boot_timeout_s
        self.quiet = quiet

    def kill_all(self) -> None:
        for g in self.guests:
            p = g.proc
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    def start(self, g: Guest) -> None:
        g.console.write_bytes(b"")
        interactive = any(a.startswith("stdio,") for a in g.argv)  # --keep: the serial console is the terminal
        with open(g.stderr_path, "wb") as err:
            g.proc = subprocess.Popen(g.argv, stdin=None if interactive else subprocess.DEVNULL,
                                      stdout=None if interactive else subprocess.DEVNULL, stderr=err,
                                      start_new_session=not interactive, preexec_fn=_die_with_parent)
        g.started = time.monotonic()

    def follow(self, g: Guest) -> None:
        """Echo the guest's own progress lines, note when its init ran."""
        try:
            with open(g.console, "rb") as f:
                f.seek(g.console_pos)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return
        g.console_pos += end + 1
        for line in data[:end].decode(errors="replace").splitlines():
            line = line.strip("\r")
            if INIT_MARK in line and g.init_at is None:
                g.init_at = time.monotonic()
            if line.startswith(GUEST_MARK) and not self.quiet:
                tag = f"[{g.role}] " if len(self.guests) > 1 else ""
                print(f"{tag}{line}", file=sys.stderr, flush=True)

    def run(self) -> str:
        """Run to completion. Returns 'ok', 'timeout' or 'no-boot'; raises on a QEMU start failure."""
        atexit.register(self.kill_all)
        old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
        old_hup = signal.signal(signal.SIGHUP, _raise_interrupt)
        # --keep: Ctrl-C belongs to the guest's shell (QEMU passes it on), not to us
        interactive = any(a.startswith("stdio,") for g in self.guests for a in g.argv)
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN) if interactive else None
        try:
            return self._run()
        finally:
            self.kill_all()
            signal.signal(signal.SIGTERM, old_term)
            signal.signal(signal.SIGHUP, old_hup)
            if old_int is not None:
                signal.signal(signal.SIGINT, old_int)
            atexit.unregister(self.kill_all)

    def _run(self) -> str:
        for g in self.guests:
            self.start(g)
            port = _listen_port(g.argv)
            if port is not None:  # the connecting VM must find the listener up
                deadline = time.monotonic() + 10
                while not port_listening(port) and g.proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.05)
            self._check_started(g)
        deadline = time.monotonic() + self.timeout_s
        while True:
            for g in self.guests:
                self.follow(g)
            if all(g.proc.poll() is not None for g in self.guests):
                for g in self.guests:
                    self._check_exit(g)
                return "ok"
            now = time.monotonic()
            if any(g.init_at is None and now - g.started > self.boot_timeout_s for g in self.guests):
                return "no-boot"
            if now > deadline:
                return "timeout"
            time.sleep(0.2)

    def _check_started(self, g: Guest) -> None:
        try:
            g.proc.wait(0.3)
        except subprocess.TimeoutExpired:
            return
        self._check_exit(g)

    def _check_exit(self, g: Guest) -> None:
        rc = g.proc.returncode
        if rc not in (0, None):
            err = g.stderr_path.read_text(errors="replace").strip().splitlines()
            raise MbrecError(f"qemu-system-x86_64 ({g.role}) exited with {rc}: "
                             f"{err[-1] if err else 'no message'}")


def _listen_port(argv: list[str]) -> int | None:
    for a in argv:
        if a.startswith("socket,") and "listen=" in a:
            return int(a.split("listen=")[1].split(",")[0].rsplit(":", 1)[1])
    return None


def _die_with_parent() -> None:
    """In the QEMU child before exec: SIGKILL it if mbrec dies, even by SIGKILL (no finally runs then)."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def require_qemu() -> None:
    if shutil.which("qemu-system-x86_64") is None:
        raise MbrecError("qemu-system-x86_64 not found; install it with: apt-get install qemu-system-x86")
