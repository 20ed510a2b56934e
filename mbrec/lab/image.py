"""`mbrec lab build`: a Debian VM image built from Debian packages only, cached by a hash of its recipe.

One image per Debian suite (bookworm, trixie, sid): each holds that suite's stock kernel with matching headers,
its BCC and the scenarios' tools. It carries no mbrec code:
the guest mounts the source tree over 9p at boot, so editing mbrec never needs a rebuild.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mbrec.errors import MbrecError

@dataclass(frozen=True)
class Suite:
    """A Debian suite the lab builds images of: its archive suites and what it brings."""

    name: str
    release: str  # what users call it
    updates: bool  # has <suite>-updates and <suite>-security
    brings: str  # kernel and BCC, as the archive had them when the lab was written


SUITES = {s.name: s for s in (
    Suite("bookworm", "Debian 12", True, "kernel 6.1, BCC 0.26"),
    Suite("trixie", "Debian 13", True, "kernel 6.12, BCC 0.31"),
    Suite("sid", "Debian unstable", False, "kernel 7.2, BCC 0.37"),
)}
DEFAULT_SUITE = "bookworm"
# One apt run installs the kernel and its headers from the same suites, so their versions match.
PACKAGES = (
    "linux-image-amd64", "linux-headers-amd64", "initramfs-tools", "kmod",
    "python3", "python3-bpfcc", "python3-msgpack", "python3-zstandard", "python3-click", "python3-numpy",
    "iproute2", "iputils-ping", "ethtool", "procps",
    "apache2", "apache2-utils", "iperf3",
    "openssh-server",  # `mbrec fleet record` between the two VMs (keys made per run)
)
# ext4 and virtio_blk are modules in Debian's kernel: the initrd needs them to find the root disk.
INITRD_MODULES = ("virtio_pci", "virtio_blk", "ext4", "virtio_net", "9pnet_virtio", "9p")
# udev in the initrd costs about 5 s of a TCG boot and isn't needed: the initrd loads the modules above by name
# and devtmpfs creates /dev/vda. mkinitramfs runs hooks before it lists the boot scripts, so this takes effect.
INITRD_HOOK = """#!/bin/sh
[ "$1" = prereqs ] && exit 0
rm -f "$DESTDIR/scripts/init-top/udev" "$DESTDIR/scripts/init-bottom/udev"
"""
IMAGE_SIZE = "3G"  # sparse; the root filesystem uses about 1.1 GB
MIN_FREE_BYTES = 5 << 30  # root tree + image while building

# PID 1 baked into the image. The real init lives in the shared source tree (mbrec/lab/guest_init.sh).
STUB_INIT = """#!/bin/sh
# mbrec lab: mount the source tree shared over 9p and hand over to its guest_init.sh.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sysfs /sys 2>/dev/null
mount -t devtmpfs devtmpfs /dev 2>/dev/null
modprobe 9pnet_virtio; modprobe 9p
mkdir -p /mnt/src /mnt/out
if mount -t 9p -o trans=virtio,version=9p2000.L,ro src /mnt/src && [ -f /mnt/src/mbrec/lab/guest_init.sh ]; then
    exec /bin/sh /mnt/src/mbrec/lab/guest_init.sh
fi
echo "mbrec-lab: cannot mount the source tree over 9p; powering off"
echo o > /proc/sysrq-trigger
sleep 60
"""


@dataclass(frozen=True)
class Image:
    """A built image: what QEMU boots."""

    dir: Path
    rootfs: Path
    kernel: Path
    initrd: Path
    recipe: dict


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mbrec" / "lab"


def suite(name: str | None) -> Suite:
    """The named suite (default bookworm); an unknown name is one line listing the known ones."""
    name = name or DEFAULT_SUITE
    if name not in SUITES:
        raise MbrecError(f"unknown lab suite {name!r}; the known suites are {', '.join(SUITES)}")
    return SUITES[name]


def host_mirrors(sources_dir: Path = Path("/etc/apt/sources.list.d"),
                 sources_list: Path = Path("/etc/apt/sources.list"), suite_name: str = DEFAULT_SUITE) -> dict:
    """The host's Debian mirror URIs for the main and the security archive, read from its apt sources.

    The entries for the suite itself come first; a host of another Debian release lends its mirrors (one
    that carries the host's suite carries the others)."""
    main = security = None
    any_main = any_security = None
    files = sorted(sources_dir.glob("*.sources")) + sorted(sources_dir.glob("*.list"))
    if sources_list.exists():
        files.append(sources_list)
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for uri, suites in _source_entries(text, deb822=path.suffix == ".sources"):
            if f"{suite_name}-security" in suites and security is None:
                security = uri
            elif suite_name in suites and main is None:
                main = uri
            if any(x.endswith("-security") and x[:-9] in DEBIAN_CODENAMES for x in suites):
                any_security = any_security or uri
            elif any(x in DEBIAN_CODENAMES for x in suites):
                any_main = any_main or uri
    main = main or any_main or "http://deb.debian.org/debian"
    security = security or any_security or "http://security.debian.org/debian-security"
    return {"main": main.rstrip("/"), "security": security.rstrip("/")}


# Codenames whose mirror entries can serve any of the lab's suites.
DEBIAN_CODENAMES = ("bullseye", "bookworm", "trixie", "forky", "sid", "stable", "testing", "unstable")


def _source_entries(text: str, deb822: bool):
    """(uri, suites) pairs of the `deb` entries of one apt sources file."""
    if deb822:
        for stanza in re.split(r"\n\s*\n", text):
            fields = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.split()
            if "deb" in fields.get("types", []) and fields.get("enabled", ["yes"]) != ["no"]:
                for uri in fields.get("uris", []):
                    yield uri, fields.get("suites", [])
    else:
        for line in text.splitlines():
            parts = re.sub(r"\[[^\]]*\]", "", line).split()
            if len(parts) >= 3 and parts[0] == "deb":
                yield parts[1], [parts[2]]


def recipe(mirrors: dict | None = None, suite_name: str = DEFAULT_SUITE) -> dict:
    """Everything that determines the image; its hash names the cache entry."""
    return {
        "suite": suite(suite_name).name,
        "mirrors": mirrors or host_mirrors(suite_name=suite_name),
        "packages": list(PACKAGES),
        "initrd_modules": list(INITRD_MODULES),
        "initrd_hook": INITRD_HOOK,
        "image_size": IMAGE_SIZE,
        "stub_init": STUB_INIT,
    }


def recipe_hash(r: dict) -> str:
    return hashlib.sha256(json.dumps(r, sort_keys=True).encode()).hexdigest()[:16]


def cached_image(r: dict | None = None, suite_name: str = DEFAULT_SUITE) -> Image | None:
    r = r or recipe(suite_name=suite_name)
    d = cache_root() / recipe_hash(r)
    image = Image(d, d / "rootfs.img", d / "vmlinuz", d / "initrd.img", r)
    done = d / "recipe.json"
    if done.exists() and all(p.exists() for p in (image.rootfs, image.kernel, image.initrd)):
        return image
    return None


_quiet = False


def set_quiet(quiet: bool) -> None:
    """-q/--quiet of `mbrec lab build` and `mbrec lab run`: no progress lines (errors still say what failed)."""
    global _quiet
    _quiet = quiet


def progress(msg: str) -> None:
    if not _quiet:
        print(f"mbrec lab: {msg}", file=sys.stderr, flush=True)


def require_tools(*tools: tuple[str, str]) -> None:
    for binary, package in tools:
        if shutil.which(binary) is None:
            raise MbrecError(f"{binary} not found; install it with: apt-get install {package}")


def check_mirror(url: str, suite_name: str = DEFAULT_SUITE) -> None:
    probe = f"{url}/dists/{suite_name}/Release"
    try:
        with urllib.request.urlopen(probe, timeout=15) as response:
            response.read(1)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise MbrecError(f"Debian mirror unreachable: {probe} ({reason}); check the network or the "
                         f"mirror in /etc/apt/sources.list.d") from None


def build(rebuild: bool = False, suite_name: str = DEFAULT_SUITE) -> Image:
    """Build the image unless a cached one matches the recipe. Needs root, debootstrap and the mirror."""
    r = recipe(suite_name=suite_name)
    if not rebuild:
        image = cached_image(r)
        if image is not None:
            progress(f"{r['suite']} image {image.dir} is cached (recipe {recipe_hash(r)})")
            return image
    if os.geteuid() != 0:
        raise MbrecError("building the lab image needs root (debootstrap, chroot); rerun as root "
                         "(e.g. sudo mbrec lab build)")
    require_tools(("debootstrap", "debootstrap"), ("mkfs.ext4", "e2fsprogs"), ("chroot", "coreutils"))
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if free < MIN_FREE_BYTES:
        raise MbrecError(f"not enough disk space in {root}: {free >> 20} MiB free, the build needs "
                         f"{MIN_FREE_BYTES >> 20} MiB; free some space or set XDG_CACHE_HOME elsewhere")
    check_mirror(r["mirrors"]["main"], r["suite"])

    final = root / recipe_hash(r)
    work = root / f"{recipe_hash(r)}.build-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    log = work / "build.log"
    started = time.monotonic()
    try:
        tree = work / "root"
        _build_tree(tree, r, log)
        _make_image(tree, work, log)
        shutil.rmtree(tree)
        (work / "recipe.json").write_text(json.dumps(r, indent=1, sort_keys=True) + "\n")
        if final.exists():
            shutil.rmtree(final)
        work.rename(final)
    except BaseException:
        _unmount_all(work / "root")
        keep = root / f"failed-build-{r['suite']}.log"
        if log.exists():
            shutil.copy(log, keep)
        shutil.rmtree(work, ignore_errors=True)
        raise
    progress(f"{r['suite']} image built in {time.monotonic() - started:.0f} s: {final}")
    return cached_image(r)


def _run(argv: list[str], log: Path, what: str) -> None:
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(argv)}\n")
        out.flush()
        rc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}).returncode
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        raise MbrecError(f"{what} failed (exit {rc}): {tail[0][:200]}; full log: "
                         f"{cache_root()}/failed-build-*.log")


def _build_tree(tree: Path, r: dict, log: Path) -> None:
    t = time.monotonic()
    name = r["suite"]
    progress(f"debootstrap {name} from {r['mirrors']['main']} (about 30 s)")
    _run(["debootstrap", "--variant=minbase", name, str(tree), r["mirrors"]["main"]], log, "debootstrap")
    progress(f"debootstrap done in {time.monotonic() - t:.0f} s")

    sources = f"deb {r['mirrors']['main']} {name} main\n"
    if SUITES[name].updates:
        sources += (f"deb {r['mirrors']['main']} {name}-updates main\n"
                    f"deb {r['mirrors']['security']} {name}-security main\n")
    (tree / "etc/apt/sources.list").write_text(sources)
    (tree / "etc/apt/apt.conf.d/90mbrec").write_text(
        'Acquire::Check-Valid-Until "false";\nAcquire::Languages "none";\n'
        'APT::Install-Recommends "false";\n')
    # Don't start daemons (apache2, iperf3) inside the chroot.
    policy = tree / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    initramfs = tree / "etc/initramfs-tools"
    (initramfs / "conf.d").mkdir(parents=True, exist_ok=True)
    (initramfs / "conf.d/mbrec").write_text("MODULES=list\n")
    (initramfs / "modules").write_text("\n".join(r["initrd_modules"]) + "\n")
    (initramfs / "hooks").mkdir(exist_ok=True)
    hook = initramfs / "hooks/mbrec-no-udev"
    hook.write_text(r["initrd_hook"])
    hook.chmod(0o755)
    (tree / "etc/hostname").write_text("mbrec-lab\n")
    init = tree / "sbin/mbrec-init"
    init.write_text(r["stub_init"])
    init.chmod(0o755)

    t = time.monotonic()
    progress(f"apt-get install {len(r['packages'])} packages with the kernel and headers (about 60 s)")
    _mount_for_chroot(tree)
    try:
        chroot = ["chroot", str(tree)]
        _run(chroot + ["apt-get", "update"], log, "apt-get update in the image")
        _run(chroot + ["apt-get", "install", "-y", "-o", "Dpkg::Options::=--force-confold",
                       *r["packages"]], log, "apt-get install in the image")
        _run(chroot + ["apt-get", "clean"], log, "apt-get clean")
    finally:
        _unmount_all(tree)
    policy.unlink()
    shutil.rmtree(tree / "var/lib/apt/lists", ignore_errors=True)
    (tree / "var/lib/apt/lists/partial").mkdir(parents=True)
    progress(f"packages installed in {time.monotonic() - t:.0f} s")


def _mount_for_chroot(tree: Path) -> None:
    subprocess.run(["mount", "-t", "proc", "proc", str(tree / "proc")], check=True)
    subprocess.run(["mount", "-t", "sysfs", "sysfs", str(tree / "sys")], check=True)
    subprocess.run(["mount", "--bind", "/dev", str(tree / "dev")], check=True)


def _unmount_all(tree: Path) -> None:
    for sub in ("dev", "sys", "proc"):
        target = tree / sub
        if os.path.ismount(target):
            subprocess.run(["umount", "-l", str(target)], check=False)


def _make_image(tree: Path, work: Path, log: Path) -> None:
    t = time.monotonic()
    progress("writing the ext4 image")
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    initrds = sorted((tree / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise MbrecError(f"the image has no kernel or initrd in {tree / 'boot'}; see {log}")
    shutil.copy(kernels[-1], work / "vmlinuz")
    shutil.copy(initrds[-1], work / "initrd.img")
    image = work / "rootfs.img"
    with open(image, "wb") as f:
        f.truncate(_size_bytes(IMAGE_SIZE))
    _run(["mkfs.ext4", "-q", "-F", "-L", "mbrec-lab", "-d", str(tree), str(image)], log, "mkfs.ext4 -d")
    progress(f"image written in {time.monotonic() - t:.0f} s (kernel {kernels[-1].name})")


def _size_bytes(size: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(size[:-1]) * units[size[-1]]
