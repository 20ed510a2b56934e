"""What the lab VM tests share: when they can run, and one way to run the lab."""

import os
import shutil
import subprocess
import sys


def vm_skip_reason() -> str | None:
    """Why the lab VM cannot run here, or None."""
    if os.geteuid() != 0:
        return "the lab needs root"
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
    from mbrec.lab import image
    if image.cached_image() is None and shutil.which("debootstrap") is None:
        return "no cached lab image and no debootstrap to build one (apt-get install debootstrap)"
    return None


def lab(*args, timeout=1800):
    """`mbrec lab ARGS` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "mbrec", "lab", *args], capture_output=True,
                          text=True, timeout=timeout)
