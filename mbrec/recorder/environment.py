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


# Debian's header packages by machine: (package suffix, kernel arch directory)
DEBIAN_HEADER_ARCH = {"x86_64": ("amd64", "x86"), "aarch64": ("arm64", "arm64")}
HEADER_TREE_DIR = "/run/mbrec"


def check_headers(release: str | None = None, src: str = "/usr/src") -> bool:
    """Make sure BCC finds kernel headers. True when they are another kernel's (then only
    programs that read kernel structs at BTF offsets may be compiled: see foreign_header_tree)."""
    release = release or os.uname().release
    build = f"/lib/modules/{release}/build"
    if os.environ.get("BCC_KERNEL_SOURCE") or os.path.isdir(build) or \
            os.path.exists("/sys/kernel/kheaders.tar.xz"):
        return False
    tree = foreign_header_tree(src)
    if tree:
        os.environ["BCC_KERNEL_SOURCE"] = tree
        return True
    raise MbrecError(f"kernel headers for {release} are missing ({build} does not exist): "
                     f"apt-get install linux-headers-{release}; where that package does not "
                     "exist but the kernel has BTF, any Debian kernel's headers do "
                     "(apt-get install linux-headers-amd64)")


def foreign_header_tree(src: str = "/usr/src", out_dir: str = HEADER_TREE_DIR) -> str | None:
    """BCC compiles its own helper headers against a kernel tree (bpf.h, ptrace.h, types); it
    looks for one at /lib/modules/RELEASE/build or in kheaders. On a kernel without either,
    the newest Debian linux-headers-VERSION-{common,ARCH} pair under src does: BPF helpers and
    uapi are stable, and mbrec reads every kernel struct at offsets from this kernel's BTF.
    Debian splits a tree in two directories and BCC_KERNEL_SOURCE names one, so the pair is
    joined by symlinks under out_dir. None when no pair is installed."""
    arch = DEBIAN_HEADER_ARCH.get(os.uname().machine)
    if arch is None or not os.path.isdir(src):
        return None
    suffix, karch = arch
    versions = []
    for name in os.listdir(src):
        m = re.fullmatch(r"linux-headers-(\d+)\.(\d+)\.(\d+)-(\d+)-common", name)
        if m and os.path.isdir(os.path.join(src, name[:-len("common")] + suffix)):
            versions.append((tuple(int(x) for x in m.groups()), name[:-len("-common")]))
    if not versions:
        return None
    base = os.path.join(src, max(versions)[1])
    common, built = base + "-common", f"{base}-{suffix}"
    tree = os.path.join(out_dir, "bcc-" + os.path.basename(base))
    if os.path.exists(os.path.join(tree, "include", "linux")):
        return tree
    for sub in ("include", f"arch/{karch}/include"):
        os.makedirs(os.path.join(tree, sub), exist_ok=True)
        for part in (common, built):
            d = os.path.join(part, sub)
            for entry in (os.listdir(d) if os.path.isdir(d) else ()):
                link = os.path.join(tree, sub, entry)
                if not os.path.lexists(link):
                    os.symlink(os.path.join(d, entry), link)
    return tree


def existing_tracepoints(names) -> set[str]:
    """Which of the "category:event" tracepoints this kernel has."""
    events = os.path.join(os.path.dirname(tracing_file("available_events")), "events")
    return {n for n in names if os.path.isdir(os.path.join(events, *n.split(":")))}


DEBIAN_DIST_PACKAGES = "/usr/lib/python3/dist-packages"


def import_bcc():
    """The bcc module, or one line that says how to get it. Debian's python3-bpfcc is pure
    Python over libbcc.so, so a Python other than /usr/bin/python3 (a virtualenv) can use it:
    its directory is appended to sys.path, after everything else."""
    try:
        import bcc
        return bcc
    except ImportError:
        pass
    if os.path.isfile(os.path.join(DEBIAN_DIST_PACKAGES, "bcc", "__init__.py")) and \
            DEBIAN_DIST_PACKAGES not in sys.path:
        sys.path.append(DEBIAN_DIST_PACKAGES)
    try:
        import bcc
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
                         "functions (no ftrace/kprobes); record with --attach tracepoint, or "
                         "on a kernel built with them, e.g. a stock distribution kernel or "
                         "`mbrec lab`") from None
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
