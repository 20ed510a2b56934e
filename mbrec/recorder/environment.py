"""What `mbrec record` needs from the machine, each missing piece as one line with its fix."""

from __future__ import annotations

import os
import re
import sys

from mbrec.errors import MbrecError

MIN_RINGBUF_KERNEL = (5, 8)
TRACING_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


def kernel_version(release: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def check_root() -> None:
    if os.geteuid() != 0:
        raise MbrecError("mbrec record needs root (BPF and kprobes): run it with sudo")


def check_kernel(release: str | None = None) -> None:
    release = release or os.uname().release
    if kernel_version(release) < MIN_RINGBUF_KERNEL:
        raise MbrecError(f"kernel {release} is too old: mbrec record needs BPF ring buffers, "
                         "Linux 5.8 or newer; upgrade the kernel")


def check_headers(release: str | None = None) -> None:
    release = release or os.uname().release
    build = f"/lib/modules/{release}/build"
    if os.path.isdir(build) or os.path.exists("/sys/kernel/kheaders.tar.xz"):
        return
    raise MbrecError(f"kernel headers for {release} are missing ({build} does not exist): "
                     f"apt-get install linux-headers-{release}")


def import_bcc():
    """The bcc module, or one line that says how to get it."""
    try:
        import bcc  # noqa: F401
    except ImportError:
        hint = ("" if sys.executable.startswith("/usr/bin/") else
                f"; {sys.executable} cannot see Debian's BCC, run mbrec with /usr/bin/python3")
        raise MbrecError("BCC's Python module is missing: apt-get install python3-bpfcc"
                         + hint) from None
    return bcc


def tracing_file(name: str) -> str:
    for d in TRACING_DIRS:
        path = os.path.join(d, name)
        if os.path.exists(path):
            return path
    raise MbrecError(f"cannot find {name} under {' or '.join(TRACING_DIRS)}: mount tracefs "
                     "(mount -t tracefs nodev /sys/kernel/tracing)")


def read_kernel_functions():
    from mbrec.recorder.probes import kernel_functions
    path = tracing_file("available_filter_functions")
    try:
        with open(path) as f:
            filters = f.read()
        with open("/proc/kallsyms") as f:
            kallsyms = f.read()
    except OSError as e:
        raise MbrecError(f"cannot read {e.filename} ({e.strerror}): this kernel cannot trace "
                         "functions (no ftrace/kprobes); record on a kernel built with them, "
                         "e.g. a stock distribution kernel or `mbrec lab`") from None
    return kernel_functions(filters, kallsyms)


def netns_inode(spec: str) -> int:
    """--netns: an inode number, a name under /run/netns, or pid:<PID>."""
    if spec.isdigit():
        return int(spec)
    if spec.startswith("pid:"):
        path = f"/proc/{spec[4:]}/ns/net"
        what = f"process {spec[4:]}"
    else:
        path = os.path.join("/run/netns", spec)
        what = f"network namespace {spec!r}"
    try:
        return os.stat(path).st_ino
    except OSError as e:
        raise MbrecError(f"--netns {spec}: cannot read {path} ({e.strerror}): no {what}; "
                         "give an inode number, a name from 'ip netns list', or pid:PID") from None


def cgroup_id(path: str) -> int:
    """--cgroup: a cgroup v2 directory (absolute, or relative to /sys/fs/cgroup); its inode is
    the id the kernel gives the cgroup."""
    full = path if os.path.isabs(path) else os.path.join("/sys/fs/cgroup", path)
    try:
        st = os.stat(full)
    except OSError as e:
        raise MbrecError(f"--cgroup {path}: cannot read {full} ({e.strerror}): give a cgroup v2 "
                         "directory, e.g. system.slice/apache2.service") from None
    if not os.path.isfile(os.path.join(full, "cgroup.procs")):
        raise MbrecError(f"--cgroup {path}: {full} is not a cgroup v2 directory")
    return st.st_ino
