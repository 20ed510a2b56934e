"""What every guest-side lab module shares: the output folder, progress lines, short commands, clocks.

Runs inside a lab guest with Debian's python3: stdlib only.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

OUT = Path("/mnt/out")


def say(msg: str) -> None:
    """A progress line on the console, which the host shows; prefixed with the guest's uptime."""
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    print(f"mbrec-lab: [{uptime:6.1f}] {msg}", flush=True)


def sh(argv, check=True, **kw) -> subprocess.CompletedProcess:
    """Run a short setup command; its failure is a scenario failure naming the command."""
    argv = shlex.split(argv) if isinstance(argv, str) else argv
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()[:300]}")
    return r


def clocks() -> dict:
    return {"monotonic_ns": time.monotonic_ns(), "realtime_ns": time.time_ns(),
            "boottime_ns": time.clock_gettime_ns(time.CLOCK_BOOTTIME)}
