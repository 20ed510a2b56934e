"""`mbrec lab run`: plan the VMs for a scenario or a command, boot them, collect the ground truth."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tarfile
import time
from datetime import datetime
from pathlib import Path

import mbrec
from mbrec.commands.common import MANIFEST
from mbrec.errors import MbrecError
from mbrec.lab import image as lab_image
from mbrec.lab import scenario as lab_scenario
from mbrec.lab import vm
from mbrec.lab.image import progress

BOOT_TIMEOUT_S = 180  # QEMU start to guest init: 20-25 s under TCG here, 60 s when the machine is loaded
MEMORY_MB = {1: 2048, 2: 1536}
PYLIB_TAR = ".pylib.tar"


def source_root() -> Path:
    """The directory that holds the mbrec package (and, in a checkout, analysis/ and bpf/ beside it)."""
    return Path(mbrec.__file__).resolve().parent.parent


def pack_pylib(path: Path) -> None:
    """The guest's importable mbrec as one tar: mbrec/ with analysis/ and bpf/ inside, as when installed."""
    src = source_root()
    parts = [("mbrec", "mbrec")]
    parts += [(d, f"mbrec/{d}") for d in ("analysis", "bpf") if (src / d).is_dir()]
    skip = lambda info: None if "__pycache__" in info.name or info.name.endswith(".pyc") else info  # noqa: E731
    with tarfile.open(path, "w") as tar:
        for name, arcname in parts:
            tar.add(src / name, arcname=arcname, filter=skip)


def default_out(name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("lab-out") / f"{name}-{stamp}"


def clear_earlier_run(out: Path, force: bool) -> None:
    """An output folder that holds an earlier run is reused only with --force, which first removes what that
    run wrote (its manifest names it), so that no file of the earlier run passes for one of this run."""
    manifest = out / MANIFEST
    if not (manifest.exists() or any(out.glob("status-*"))):
        return
    if not force:
        raise MbrecError(f"-o {out}: holds an earlier run: pass --force to replace it, or choose another folder")
    if not manifest.exists():
        raise MbrecError(f"-o {out}: holds an earlier run without {MANIFEST} (from an older mbrec): remove "
                         "it yourself or choose another folder")
    remove_entries(out, [n for n in manifest.read_text().splitlines()
                         if n and os.sep not in n and n not in (".", "..")])
    manifest.unlink()


def remove_entries(out: Path, names) -> None:
    """Remove these entries of the output folder (files, links or whole directories)."""
    for name in names:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def note_outputs(out: Path, before: set) -> None:
    """The run's manifest: every entry of the folder this run wrote, for the next run's --force."""
    names = sorted(set(os.listdir(out)) - before - {MANIFEST})
    (out / MANIFEST).write_text("".join(n + "\n" for n in names))


def run(scenario_name: str | None, command: str | None, *, vms: int | None, keep: bool, out: Path | None,
        record: bool, timeout_s: float | None, quiet: bool = False, record_args: list | None = None,
        force: bool = False, suite: str | None = None) -> int:
    if os.geteuid() != 0:
        raise MbrecError("mbrec lab run needs root (to build the image and run QEMU with 9p shares); "
                         "rerun as root")
    suite_name = lab_image.suite(suite).name
    vm.require_qemu()
    if scenario_name:
        s = lab_scenario.load(scenario_name)
    else:
        s = lab_scenario.validate(dict(lab_scenario.DEFAULT_TOPOLOGY), "default topology")
    if vms is not None and vms != s["vms"]:
        if vms == 2 and (sorted(s["hosts"]) != ["a", "b"] or s["events"] or s["host_egress"]):
            raise MbrecError(f"scenario {scenario_name or 'default'} can't run on two VMs "
                             "(it needs hosts a and b only, without events or host_egress)")
        s = {**s, "vms": vms}
    if command and s["vms"] == 2:
        raise MbrecError("-- COMMAND runs in one VM; drop --vms 2")

    image = lab_image.cached_image(suite_name=suite_name) or lab_image.build(suite_name=suite_name)
    out = Path(out or default_out(scenario_name or "command")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    clear_earlier_run(out, force)
    before = set(os.listdir(out))

    pack_pylib(out / PYLIB_TAR)
    job = {"scenario_name": scenario_name, "scenario": s, "command": command, "record": record,
           "record_args": list(record_args or []), "suite": suite_name}
    (out / "job.json").write_text(json.dumps(job, indent=1) + "\n")
    roles = ["a", "b"] if s["vms"] == 2 else ["a"]
    accel, why = vm.detect_accel()
    timeout = timeout_s or s["timeout_s"]
    progress(f"{'scenario ' + scenario_name if scenario_name else 'command'} in {len(roles)} {suite_name} VM(s), "
             f"accelerator {accel} ({why}), output {out}, timeout {timeout:.0f} s")

    started = time.monotonic()
    # reads accel when called: a KVM boot that fails falls back to TCG
    boot_guests = lambda: _boot(image, roles, out, accel, keep, timeout, quiet, s.get("virtio_pair", False))  # noqa: E731
    reruns = []
    try:
        result, guests = boot_guests()
        if result == "no-boot" and accel == "kvm":
            progress("the guest did not reach its init under KVM: retrying with TCG")
            accel = "tcg"
            result, guests = boot_guests()
        crashed = _crashed_guests(guests, out) if result == "ok" else {}
        if crashed:
            # The emulator, not the job: under TCG a stock kernel dies now and then, at boot (seen on sid's
            # 7.2: an int3 Oops in sched_clock_cpu) or mid-job (seen on trixie's 6.12: a double fault in the
            # slab allocator with a garbage EFLAGS). The attempt's results are void; its consoles are kept
            # and the job runs once more from the start.
            for role, why in crashed.items():
                console = out / f"console-{role}.log"
                kept = console.with_name(f"console-{role}-crashed.log")
                console.replace(kept)
                reruns.append({"role": role, "reason": why, "console": kept.name})
            # nothing of the void attempt may pass for the rerun's
            remove_entries(out, set(os.listdir(out)) - before - {PYLIB_TAR, "job.json"}
                           - {r["console"] for r in reruns})
            progress(f"guest {', '.join(crashed)} kernel died ({next(iter(crashed.values()))}; console kept as "
                     f"{reruns[0]['console']}): running the job again")
            result, guests = boot_guests()
    finally:
        (out / PYLIB_TAR).unlink(missing_ok=True)
        note_outputs(out, before)
    wall = time.monotonic() - started

    statuses = {}
    for role in roles:
        f = out / f"status-{role}"
        statuses[role] = int(f.read_text().strip()) if f.exists() else None
    timing: dict = {"accelerator": accel, "accelerator_reason": why, "wall_s": round(wall, 1),
              "boot_to_init_s": {g.role: None if g.init_at is None else round(g.init_at - g.started, 1)
                                 for g in guests},
              "reruns": reruns}
    write_ground_truth(out, job, roles, statuses, timing)
    note_outputs(out, before)
    if command and (out / "command.out").exists():
        sys.stdout.write((out / "command.out").read_text(errors="replace"))
        sys.stdout.flush()
    if result == "timeout":
        progress(f"timeout after {timeout:.0f} s: QEMU killed; console in {out}")
        return vm.TIMEOUT_STATUS
    if result == "no-boot":
        raise MbrecError(f"the guest did not reach its init within {BOOT_TIMEOUT_S} s; see {guests[0].console}")
    missing = [r for r, st in statuses.items() if st is None]
    if missing:
        died = _crashed_guests(guests, out)
        how = f"kernel died ({died[missing[0]]})" if missing[0] in died else "powered off without an exit status"
        again = " twice" if reruns else ""
        raise MbrecError(f"guest {missing[0]} {how}{again}; see {out / ('console-' + missing[0] + '.log')}")
    status = next((st for st in statuses.values() if st), 0)
    boot = ", ".join(f"{k} {v} s" for k, v in timing["boot_to_init_s"].items())
    progress(f"done in {wall:.0f} s (boot to init: {boot}), guest exit status {status}; results in {out}")
    traces = sorted(out.glob("*.mbrec"))
    if traces:
        progress(f"next: mbrec analyze {' '.join(str(p) for p in traces)} -o {out / 'analysis'}")
    return status


PANIC_MARKS = ("Kernel panic - not syncing", "Oops: ")


def _crashed_guests(guests, out: Path) -> dict:
    """Role -> the console's panic line, for each guest whose kernel died before its job wrote an exit status."""
    crashed = {}
    for g in guests:
        if (out / f"status-{g.role}").exists():
            continue
        text = g.console.read_text(errors="replace") if g.console.exists() else ""
        lines = [re.sub(r"^\[\s*[\d.]+\]\s*", "", ln.strip()) for ln in text.splitlines()
                 if any(m in ln for m in PANIC_MARKS)]
        if lines or g.init_at is None:
            crashed[g.role] = lines[0] if lines else "stopped before its init"
    return crashed


def _boot(image, roles, out, accel, keep, timeout, quiet, virtio_pair):
    port = vm.free_port()
    guests = []
    for i, role in enumerate(roles):
        netdev = None
        if virtio_pair:  # two virtio NICs on a QEMU hub of their own: the receive path of a real NIC (GRO lists)
            netdev = [x for n in (1, 2) for x in (
                "-netdev", f"hubport,id=v{n},hubid=0",
                "-device", f"virtio-net-pci,netdev=v{n},mac=52:54:00:00:09:{n:02x}")]
        if len(roles) == 2:
            side = f"listen=127.0.0.1:{port}" if i == 0 else f"connect=127.0.0.1:{port}"
            netdev = ["-netdev", f"socket,id=n0,{side}",
                      "-device", f"virtio-net-pci,netdev=n0,mac=52:54:00:12:34:{0x56 + i:02x}"]
        console = out / f"console-{role}.log"
        argv = vm.qemu_argv(image, role, source_root(), out, console, accel,
                            memory_mb=MEMORY_MB[len(roles)], cpus=2, netdev=netdev, keep=keep and i == 0)
        guests.append(vm.Guest(role, argv, console, stderr_path=out / f"qemu-{role}.err"))
    runner = vm.Runner(guests, timeout, BOOT_TIMEOUT_S, quiet=quiet or keep)  # --keep: the console is on stdout
    return runner.run(), guests


def write_ground_truth(out: Path, job: dict, roles: list, statuses: dict, timing: dict) -> None:
    """ground_truth.json: what was configured, what each guest applied and saw, and what ran."""
    guests = {}
    for role in roles:
        f = out / f"guest-{role}.json"
        if f.exists():
            try:
                guests[role] = json.loads(f.read_text())
            except json.JSONDecodeError:
                guests[role] = {"error": f"{f.name} is not valid JSON"}
    s = job["scenario"]
    truth = {
        "scenario": job["scenario_name"], "command": job["command"], "description": s.get("description"),
        "suite": job.get("suite", lab_image.DEFAULT_SUITE),
        "vms": s["vms"], "hosts": {h: {"ip": lab_scenario.host_ip(h), "ip6": lab_scenario.host_ip6(h),
                                   "recorded": h in s["record"]}
                                   for h in s["hosts"]},
        "configured": {"network": s["network"], "host_egress": s["host_egress"], "offloads": s["offloads"],
                       "events": s["events"]},
        "where_delays_land": "network x->y: netem on the router's interface toward y, between x's and y's "
                             "NICs; host_egress: netem in the host's own qdisc (its L_NIC time)",
        "record_requested": job["record"],
        "exit_status": statuses, "timing": timing,
        "guests": guests,
        "commands": [c for g in guests.values() for c in g.get("commands", [])],
        "recording": {h: st for g in guests.values() for h, st in g.get("recording", {}).items()},
        "traces": sorted(p.name for p in out.glob("*.mbrec")),
    }
    (out / "ground_truth.json").write_text(json.dumps(truth, indent=1) + "\n")
