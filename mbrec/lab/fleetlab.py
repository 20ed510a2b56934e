"""The lab's fleet scenario, in the guests: sshd in both VMs with keys made for this run, and VM a
recording a and b with `mbrec fleet record` over ssh while it runs the workload.

VM a makes the keys (a user key and a host key per VM) in the shared output folder, VM b waits
for them; each VM's sshd listens only on the address the other VM (or VM a itself) reaches it
by, the QEMU link between the two VMs. The keys are removed at the end of the run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mbrec.lab.guestenv import OUT, say, sh
from mbrec.lab.recorders import RECORDER_READY_TIMEOUT_S
from mbrec.lab.scenario import expand, router_ip
from mbrec.lab.topology import control_server, wait_for_peer
from mbrec.lab.workload import parse_output, start_servers, stop_servers

KEYS = OUT / ".fleet-keys"
SSHD_DIR = Path("/tmp/fleet-sshd")
CLIENT_DIR = Path("/tmp/fleet-client")
# Where VM a reaches each host's sshd: itself on loopback, VM b on its side of the link.
LISTEN = {"a": "127.0.0.1", "b": router_ip("a")}
RUN_DIR = OUT / "run"
# The hosts' mbrec: the guest's source tree, run by Debian's python3 (no pip install there).
REMOTE_MBREC = "env PYTHONPATH=/tmp/pylib python3 -m mbrec"


def make_keys() -> None:
    if KEYS.exists():
        shutil.rmtree(KEYS)
    KEYS.mkdir()
    for name in ("user", "host-a", "host-b"):
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"mbrec-lab-{name}",
            "-f", str(KEYS / name)])
    (KEYS / "done").write_text("")


def wait_keys(timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not (KEYS / "done").exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"fleet: VM a made no ssh keys within {timeout_s:.0f} s")
        time.sleep(0.5)


def private_copy(src: Path, dst: Path) -> Path:
    """ssh refuses private keys others can read; the 9p share does not keep modes."""
    shutil.copy(src, dst)
    os.chmod(dst, 0o600)
    return dst


def start_sshd(role: str) -> subprocess.Popen:
    SSHD_DIR.mkdir(parents=True, exist_ok=True)
    host_key = private_copy(KEYS / f"host-{role}", SSHD_DIR / "host_key")
    shutil.copy(KEYS / "user.pub", SSHD_DIR / "authorized_keys")
    config = SSHD_DIR / "sshd_config"
    config.write_text(f"""ListenAddress {LISTEN[role]}
Port 22
HostKey {host_key}
AuthorizedKeysFile {SSHD_DIR / 'authorized_keys'}
PidFile {SSHD_DIR / 'sshd.pid'}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
""")
    os.makedirs("/run/sshd", exist_ok=True)
    log = open(OUT / f"sshd-{role}.log", "w")
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not sh(["ss", "-ltnH", "sport = :22"], check=False).stdout.strip():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"sshd on {role} did not start (see sshd-{role}.log)")
        time.sleep(0.3)
    say(f"sshd on {role} listening on {LISTEN[role]}:22")
    return proc


def client_files() -> tuple[Path, Path]:
    CLIENT_DIR.mkdir(parents=True, exist_ok=True)
    key = private_copy(KEYS / "user", CLIENT_DIR / "id")
    known = CLIENT_DIR / "known_hosts"
    known.write_text("".join(
        f"{LISTEN[r]} {' '.join((KEYS / f'host-{r}.pub').read_text().split()[:2])}\n"
        for r in ("a", "b")))
    config = CLIENT_DIR / "ssh_config"
    config.write_text(f"""Host *
  User root
  IdentityFile {key}
  IdentitiesOnly yes
  UserKnownHostsFile {known}
  StrictHostKeyChecking yes
""")
    inventory = CLIENT_DIR / "hosts.toml"
    inventory.write_text(f"""[defaults]
mbrec = "{REMOTE_MBREC}"

[hosts.a]
destination = "{LISTEN['a']}"
host_name = "a"

[hosts.b]
destination = "{LISTEN['b']}"
host_name = "b"
netns = ["b"]   # VM b's root namespace is the router; host b is namespace b
""")
    return config, inventory


def record_workload(s: dict, job: dict, facts: dict) -> int:
    """VM a: `mbrec fleet record` on a and b around the workload (one step, on a)."""
    (step,) = [w for w in s["workload"] if w["host"] == "a"]
    config, inventory = client_files()
    cmd = expand(step["cmd"])
    # only the servers' ports: VM a's recorder would see the fleet's own ssh connections too
    ports = [x for srv in s["servers"] if srv.get("port") for x in ("--port", str(srv["port"]))]
    argv = [sys.executable, "-m", "mbrec", "fleet", "record", "--inventory", str(inventory),
            "-F", str(config), "-o", str(RUN_DIR), "--remote-dir", "/tmp/fleet-rec",
            "--start-timeout", str(RECORDER_READY_TIMEOUT_S), "--min-free", "64M", *ports,
            *job.get("record_args", []), "--", "sh", "-c", cmd]
    say(f"mbrec fleet record on a, b: {cmd}")
    start_ns = time.monotonic_ns()
    with open(OUT / f"{step['name']}.out", "w") as out, open(OUT / "fleet.log", "w") as err:
        rc = subprocess.run(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL).returncode
    end_ns = time.monotonic_ns()
    text = (OUT / f"{step['name']}.out").read_text(errors="replace")
    facts["commands"] = [{"name": step["name"], "host": "a", "cmd": cmd, "exit_status": rc,
                          "start_monotonic_ns": start_ns, "end_monotonic_ns": end_ns,
                          "output_file": f"{step['name']}.out", "parsed": parse_output(cmd, text),
                          "fleet_log": "fleet.log", "run_dir": "run"}]
    say(f"mbrec fleet record exited {rc} after {(end_ns - start_ns) / 1e9:.1f} s (fleet.log)")
    return rc


def run(layout, s: dict, job: dict, role: str, facts: dict) -> int:
    sshd = servers = None
    try:
        if role == "a":
            make_keys()
            sshd = start_sshd("a")
            conn = wait_for_peer(RECORDER_READY_TIMEOUT_S + 120)
            status = record_workload(s, job, facts)
            conn.sendall(b"done\n")
            conn.close()
            return status
        wait_keys(RECORDER_READY_TIMEOUT_S)
        sshd = start_sshd("b")
        servers = start_servers(layout, s)
        say("waiting for VM a's fleet recording")
        control_server(lambda conn: conn.recv(16))
        return 0
    finally:
        if servers:
            stop_servers(servers)
        if sshd is not None:
            sshd.terminate()
            sshd.wait(20)
        if role == "a":
            shutil.rmtree(KEYS, ignore_errors=True)
