"""Flow metrics vs ss/nstat in one lab boot with a single recorder for both hosts (the lab's
scenario runner starts one recorder per host, two BCC compiles that a loaded machine may not
finish in its ready timeout). Run in the guest with the `flows` network:

    mbrec lab run flows -o OUT -- python3 /mnt/src/bench/flows_check.py [RECORD ARGS, e.g. --attach kprobe]

Phase 1: the `flows` workload (2 connections, 2 MB with 2% loss, 300 kB back, 30 s idle:
ss runs every few seconds under a loaded TCG, so the idle time must cover several).
Phase 2: one 3 MB transfer with a 3 s blackhole both ways (retransmission timeouts).
Writes OUT/all.mbrec, OUT/netns.json and the ss/nstat files in the lab's format, so
tests/test_flow_metrics.py can check them: MBREC_FLOWS_LAB_OUT=OUT MBREC_FLOWS_LAB_SCENARIO=flows.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

OUT = "/mnt/out"
B = "10.0.2.1"


def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout


def take(phase):
    stamp = time.monotonic_ns()
    for h in ("a", "b"):
        ss = sh(f"ip netns exec {h} ss -tinH")
        nstat = sh(f"ip netns exec {h} nstat -asz --json")
        with open(f"{OUT}/ss-{h}-{phase}.txt", "a") as f:
            f.write(f"# monotonic_ns {stamp}\n{ss}")
        with open(f"{OUT}/nstat-{h}-{phase}.jsonl", "a") as f:
            f.write(json.dumps({"monotonic_ns": stamp,
                                "counters": json.loads(nstat).get("kernel", {})}) + "\n")


def say(msg):
    print(f"flows_check: [{time.monotonic():.1f}] {msg}", flush=True)


def main():
    server = subprocess.Popen(["ip", "netns", "exec", "b", sys.executable, "-m", "mbrec.lab.flowpeer",
                               "serve", "9000"])
    rec = subprocess.Popen([sys.executable, "-m", "mbrec", "record", "-o", "/tmp/all.mbrec", "--probes",
                            "flows", "--netns", "a", "--netns", "b", "--flow-interval", "0.5", "--quiet",
                            *sys.argv[1:]],
                           stdout=open(f"{OUT}/record.log", "w"), stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    while not (os.path.exists("/tmp/all.mbrec") and os.path.getsize("/tmp/all.mbrec") > 0):
        if rec.poll() is not None:
            say(f"recorder exited {rec.returncode}")
            return 3
        time.sleep(1)
    say(f"recorder ready after {time.monotonic() - t0:.0f} s")
    json.dump({h: os.stat(f"/run/netns/{h}").st_ino for h in ("a", "b")}, open(f"{OUT}/netns.json", "w"))
    take("before")
    stop = threading.Event()

    def loop():
        while not stop.wait(1.0):
            take("during")

    th = threading.Thread(target=loop, daemon=True)
    th.start()
    rc1 = subprocess.call(["ip", "netns", "exec", "a", sys.executable, "-m", "mbrec.lab.flowpeer", "client",
                           B, "9000", "--conns", "2", "--send", "2000000", "--recv", "300000", "--idle", "30"])
    say(f"phase 1 done ({rc1})")
    cl = subprocess.Popen(["ip", "netns", "exec", "a", sys.executable, "-m", "mbrec.lab.flowpeer", "client",
                           B, "9000", "--conns", "1", "--send", "3000000", "--recv", "1000", "--idle", "3"])
    time.sleep(1.5)
    sh("ip netns exec r tc qdisc change dev r-b root netem delay 5ms loss 100%; "
       "ip netns exec r tc qdisc change dev r-a root netem delay 5ms loss 100%")
    say("blackhole on")
    time.sleep(3)
    sh("ip netns exec r tc qdisc change dev r-b root netem delay 5ms loss 2%; "
       "ip netns exec r tc qdisc change dev r-a root netem delay 5ms loss 0%")
    say("blackhole off")
    rc2 = cl.wait()
    say(f"phase 2 done ({rc2})")
    stop.set()
    th.join()
    take("after")
    rec.send_signal(signal.SIGINT)
    rec.wait()
    server.send_signal(signal.SIGTERM)
    subprocess.call(["cp", "/tmp/all.mbrec", OUT])
    return rc1 or rc2


if __name__ == "__main__":
    sys.exit(main())
