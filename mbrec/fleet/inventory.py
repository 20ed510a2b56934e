"""The hosts of a fleet recording: ssh destinations from --hosts, or an inventory file (TOML)
with per-host ssh user and port, remote mbrec command, and recording filters."""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass, field

from mbrec.errors import MbrecError

# Inventory keys a host (or [defaults]) may set, and the type each must have.
HOST_KEYS = {"destination": str, "user": str, "port": int, "mbrec": str, "sudo": bool,
             "host_name": str, "netns": list, "ports": list, "addrs": list, "cgroup": str,
             "ssh_options": list}
TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "a list"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@dataclass
class Host:
    """One host: its name (the trace file is NAME.mbrec) and how to reach and record it."""

    name: str
    destination: str
    user: str | None = None
    port: int | None = None
    mbrec: str = "mbrec"  # the remote mbrec command line, shell words
    sudo: bool = False    # run mbrec through `sudo -n`
    host_name: str | None = None  # the trace header's host name (default: name)
    netns: list = field(default_factory=list)
    ports: list = field(default_factory=list)
    addrs: list = field(default_factory=list)
    cgroup: str | None = None
    ssh_options: list = field(default_factory=list)  # extra `-o Key=Value` for this host

    def mbrec_words(self) -> list[str]:
        try:
            words = shlex.split(self.mbrec)
        except ValueError as e:
            raise MbrecError(f"host {self.name}: mbrec command {self.mbrec!r}: {e}") from None
        if not words:
            raise MbrecError(f"host {self.name}: the mbrec command is empty")
        return words

    def recorder_words(self) -> list[str]:
        """The remote mbrec command as it records: through `sudo -n` (never a password
        prompt) where the ssh user is not root, so sudoers may allow exactly mbrec."""
        return (["sudo", "-n"] if self.sudo else []) + self.mbrec_words()

    def record_filters(self) -> list[str]:
        """This host's own filter options for `mbrec record` (added to the fleet-wide ones)."""
        out = []
        for ns in self.netns:
            out += ["--netns", str(ns)]
        for p in self.ports:
            out += ["--port", str(p)]
        for a in self.addrs:
            out += ["--addr", str(a)]
        if self.cgroup:
            out += ["--cgroup", self.cgroup]
        # the trace's host name is the fleet's name for the host, unique in the run and the
        # trace file's name, unless told otherwise (cloned hosts often share a hostname)
        return out + ["--host-name", self.host_name or self.name]

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in ("name", "destination", "user", "port", "mbrec",
                                                "sudo", "host_name", "netns", "ports", "addrs",
                                                "cgroup")}


def name_of(destination: str) -> str:
    """A file-safe host name for an ssh destination: user@host:port or ssh://user@host:port."""
    d = destination.removeprefix("ssh://")
    d = d.rsplit("@", 1)[-1]
    if d.startswith("["):  # [v6]:port
        d = d[1:].split("]", 1)[0]
    elif d.count(":") == 1:
        d = d.split(":", 1)[0]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", d).strip("._-")
    return name or "host"


def _unique(hosts: list[Host], where: str) -> list[Host]:
    seen = set()
    for h in hosts:
        if not NAME.match(h.name):
            raise MbrecError(f"{where}: host name {h.name!r}: use letters, digits, '.', '_' "
                             "and '-' (it names the trace file)")
        if h.name in seen:
            raise MbrecError(f"{where}: host {h.name} is listed twice: give each host once")
        seen.add(h.name)
    if not hosts:
        raise MbrecError(f"{where}: no hosts: give at least one")
    return hosts


def from_list(spec: str, mbrec: str, sudo: bool) -> list[Host]:
    """--hosts a,b,user@c: one host per ssh destination, named after its host part."""
    dests = [d.strip() for d in spec.split(",") if d.strip()]
    return _unique([Host(name_of(d), d, mbrec=mbrec, sudo=sudo) for d in dests], "--hosts")


def _typed(table: dict, where: str) -> dict:
    out = {}
    for key, value in table.items():
        if key not in HOST_KEYS:
            raise MbrecError(f"{where}: unknown key {key!r} (known: {', '.join(HOST_KEYS)})")
        want = HOST_KEYS[key]
        if want is list and not isinstance(value, list):
            value = [value]
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise MbrecError(f"{where}: {key} must be {TYPE_NAMES[want]}, not {value!r}")
        out[key] = value
    return out


def from_file(path: str, mbrec: str | None, sudo: bool) -> list[Host]:
    """An inventory: [defaults] for every host, then one [hosts.NAME] table per host.

    Command-line --remote-mbrec and --sudo apply where the inventory does not say.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise MbrecError(f"{path}: cannot read the inventory: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise MbrecError(f"{path}: not a valid TOML inventory: {e}") from None
    unknown = set(data) - {"defaults", "hosts"}
    if unknown:
        raise MbrecError(f"{path}: unknown table {sorted(unknown)[0]!r}: use [defaults] and "
                         "[hosts.NAME]")
    defaults = _typed(data.get("defaults", {}), f"{path} [defaults]")
    hosts = []
    for name, table in (data.get("hosts") or {}).items():
        if not isinstance(table, dict):
            raise MbrecError(f"{path}: hosts.{name} must be a table ([hosts.{name}])")
        kv = {"mbrec": mbrec or "mbrec", "sudo": sudo, **defaults,
              **_typed(table, f"{path} [hosts.{name}]")}
        kv.setdefault("destination", name)
        hosts.append(Host(name=name, **kv))
    return _unique(hosts, path)
