"""The lab's one-VM topology built on this machine's own kernel: no QEMU, real CPUs.

Hosts a and b are network namespaces, each joined by a veth pair to a router namespace r that
forwards between them (the addresses of mbrec.lab.scenario: host h is 10.0.N.1, its router side
10.0.N.254). Namespace names carry a prefix so several testbeds (and other users' namespaces)
can share one machine. Servers: Debian's apache2 with a private configuration (its own
directory: pid file, logs, document root), and iperf3. No delay is injected: this kernel may
lack sch_netem (docs/lab.md).

Use as a context manager (root):

    with Testbed() as tb:
        tb.start_apache("b")
        recorders = tb.start_recorders(out_dir, ["a", "b"], ["--attach", "tracepoint"])
        tb.run("a", ["ab", "-k", "-c", "10", "-n", "1000", tb.url("b", "4k.bin")])
        tb.stop_recorders(recorders)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from mbrec.errors import MbrecError
from mbrec.lab.guestenv import sh
from mbrec.lab.scenario import host_ip, router_ip
from mbrec.lab.topology import ip_batch

APACHE_MODULES = "/usr/lib/apache2/modules"
PAGE_BYTES = 4096  # the lab's ab scenario fetches a 4 KiB file
# The few modules a static keep-alive server needs (mpm_event: threads, as Debian's default).
APACHE_CONF = """\
LoadModule mpm_event_module {mods}/mod_mpm_event.so
LoadModule authz_core_module {mods}/mod_authz_core.so
ServerName {host}
ServerRoot {dir}
Listen {addr}:80
User www-data
Group www-data
PidFile {dir}/apache2.pid
Mutex file:{dir} default
ErrorLog {dir}/error.log
DocumentRoot {dir}/www
KeepAlive On
MaxKeepAliveRequests 0
<Directory {dir}/www>
    Require all granted
</Directory>
"""


def missing_tools(tools=("ip", "apache2", "ab", "iperf3")) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


class Testbed:
    """Namespaces {prefix}a, {prefix}b and the router {prefix}r; removed on exit."""

    def __init__(self, hosts=("a", "b"), prefix: str | None = None):
        if os.geteuid() != 0:
            raise MbrecError("the native testbed needs root (network namespaces)")
        self.hosts = list(hosts)
        self.prefix = prefix or f"mbn{os.getpid() % 100000}"
        self.dir = tempfile.mkdtemp(prefix="mbrec-native-")
        self.procs: list[subprocess.Popen] = []

    def ns(self, host: str) -> str:
        return self.prefix + host

    def addr(self, host: str) -> str:
        return host_ip(host)

    def url(self, host: str, path: str) -> str:
        return f"http://{host_ip(host)}/{path}"

    def run_argv(self, host: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def run(self, host: str, argv: list[str], **kw) -> subprocess.CompletedProcess:
        """A command inside host's namespace, its output captured; failure raises."""
        r = subprocess.run(self.run_argv(host, argv), capture_output=True, text=True, **kw)
        if r.returncode != 0:
            raise MbrecError(f"{' '.join(argv)} in {self.ns(host)} failed ({r.returncode}): "
                             f"{(r.stderr or r.stdout).strip()[-300:]}")
        return r

    def start(self, host: str, argv: list[str], log: str) -> subprocess.Popen:
        """A background process inside host's namespace (its own process group)."""
        out = open(os.path.join(self.dir, log), "w")
        p = subprocess.Popen(self.run_argv(host, argv), stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.procs.append(p)
        return p

    # ---- topology ----

    def build(self) -> None:
        router = self.ns("r")
        root = [f"netns add {router}"]
        per_ns = {router: ["link set lo up"]}
        for h in self.hosts:
            nic, rif = f"{self.prefix}{h}0", f"{self.prefix}r{h}"  # unique in the root namespace
            root += [f"netns add {self.ns(h)}", f"link add {nic} type veth peer name {rif}",
                     f"link set {nic} netns {self.ns(h)}", f"link set {rif} netns {router}"]
            per_ns[router] += [f"link set {rif} name r-{h}", f"addr add {router_ip(h)}/24 dev r-{h}",
                               f"link set r-{h} up"]
            per_ns[self.ns(h)] = ["link set lo up", f"link set {nic} name eth0",
                                  f"addr add {host_ip(h)}/24 dev eth0", "link set eth0 up",
                                  f"route add default via {router_ip(h)}"]
        ip_batch(None, root)
        for ns, lines in per_ns.items():
            ip_batch(ns, lines)
        sh(["ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1"])

    def teardown(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        for h in self.hosts + ["r"]:
            sh(["ip", "netns", "del", self.ns(h)], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        try:
            self.build()
        except Exception:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc):
        self.teardown()

    # ---- servers ----

    def start_apache(self, host: str) -> None:
        """apache2 on host:80 serving 4k.bin (PAGE_BYTES of random data) from its own directory."""
        d = os.path.join(self.dir, f"apache-{host}")
        os.makedirs(os.path.join(d, "www"))
        with open(os.path.join(d, "www", "4k.bin"), "wb") as f:
            f.write(os.urandom(PAGE_BYTES))
        os.chmod(d, 0o755)
        os.chmod(self.dir, 0o755)
        conf = os.path.join(d, "apache2.conf")
        with open(conf, "w") as f:
            f.write(APACHE_CONF.format(mods=APACHE_MODULES, host=host, dir=d, addr=host_ip(host)))
        self.start(host, ["apache2", "-f", conf, "-DFOREGROUND"], f"apache-{host}.log")
        self.wait_port(host, 80)

    def start_iperf3(self, host: str) -> None:
        self.start(host, ["iperf3", "-s", "-B", host_ip(host)], f"iperf3-{host}.log")
        self.wait_port(host, 5201)

    # ---- recorders ----

    def start_recorders(self, out_dir: str, hosts, record_args=(), timeout_s: float = 120):
        """One `mbrec record` per host (root namespace, --netns of the host, as in the lab),
        writing out_dir/HOST.mbrec; returns when every one has attached (its header is on
        disk) and raises with the recorder's log if one exits first."""
        procs = {}
        for h in hosts:
            path = os.path.join(out_dir, f"{h}.mbrec")
            if os.path.exists(path):  # an earlier run's: replaced (--force), never taken as ready
                os.unlink(path)
            argv = [sys.executable, "-m", "mbrec", "record", "-o", path, "--host-name", h,
                    "--netns", self.ns(h), "--quiet", "--force", *record_args]
            log = open(os.path.join(out_dir, f"record-{h}.log"), "w")
            procs[h] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)  # teardown stops its group
            self.procs.append(procs[h])
        deadline = time.monotonic() + timeout_s
        waiting = set(hosts)
        while waiting:
            for h in sorted(waiting):
                path = os.path.join(out_dir, f"{h}.mbrec")
                if procs[h].poll() is not None:
                    with open(os.path.join(out_dir, f"record-{h}.log")) as f:
                        text = f.read()
                    raise MbrecError(f"the recorder of {h} exited ({procs[h].returncode}) "
                                     f"before attaching: {text.strip()[-400:]}")
                if os.path.exists(path) and os.path.getsize(path) > 0:
                    waiting.discard(h)
            if waiting and time.monotonic() > deadline:
                raise MbrecError(f"recorders of {', '.join(sorted(waiting))} not attached "
                                 f"after {timeout_s:.0f} s")
            time.sleep(0.05)
        return procs

    @staticmethod
    def stop_recorders(procs: dict, timeout_s: float = 60) -> dict:
        """SIGINT each recorder (a clean stop with a trailer); their exit codes."""
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        return {h: p.wait(timeout_s) for h, p in procs.items()}

    def wait_port(self, host: str, port: int, timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            r = subprocess.run(self.run_argv(host, ["ss", "-Hltn", f"sport = :{port}"]),
                               capture_output=True, text=True)
            if r.stdout.strip():
                return
            time.sleep(0.05)
        logs = " ".join(open(os.path.join(self.dir, n)).read()[-300:]
                        for n in os.listdir(self.dir) if n.endswith(".log"))
        raise MbrecError(f"nothing listens on {host_ip(host)}:{port} in {self.ns(host)} after "
                         f"{timeout_s:.0f} s: {logs.strip()}")
