"""What a field read costs in a raw tracepoint program and in a BTF-typed one (root, BTF):

    python3 bench/tracepoint_kinds.py [--rounds 4] [--packets 200000]

One BCC source, two programs on net:net_dev_start_xmit reading the same four fields (skb->dev,
dev's struct net, its inode number, skb->len), the way mbrec's packet programs filter by network
namespace before they copy anything: `raw_tp` through bpf_probe_read_kernel() (as mbrec's
tracepoint programs read today), `tp_btf` as plain loads (mbrec/recorder/tp_btf.py). Each round
attaches one kind, sends UDP datagrams over loopback (each one run of net_dev_start_xmit), and
reads the program's run_time_ns / run_cnt (kernel.bpf_stats_enabled=1); the kinds alternate and
the order rotates. The program of each kind also records what it read, so a wrong read (a
wrong offset, a load the verifier typed wrong) shows as a mismatch, not as a number.
Timing every run costs time of its own (two clock reads): the floor of an empty program is in
the ns too.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import socket
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mbrec.recorder import tp_btf
from mbrec.recorder.btf import read_btf, field_offsets
from mbrec.recorder.environment import check_headers, import_bcc
from mbrec.recorder.progstats import prog_counters

STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"
PAYLOAD = 64
FIELDS = ("SKB_DEV", "DEV_NET", "NET_INUM", "SKB_LEN")

SOURCE = r"""
struct seen { u64 runs; u32 inum; u32 len; };
BPF_ARRAY(seen_raw, struct seen, 1);
BPF_ARRAY(seen_btf, struct seen, 1);

static __always_inline void remember(struct seen *s, u32 inum, u32 len)
{
	if (!s)
		return;
	s->runs += 1;
	if (len == WANT_LEN) {  /* one of the benchmark's datagrams */
		s->inum = inum;
		s->len = len;
	}
}

int raw_xmit(struct bpf_raw_tracepoint_args *ctx)
{
	char *skb = (char *)ctx->args[0], *dev = 0, *net = 0;
	u32 inum = 0, len = 0, zero = 0;
	bpf_probe_read_kernel(&dev, sizeof(dev), skb + OFF_SKB_DEV);
	bpf_probe_read_kernel(&net, sizeof(net), dev + OFF_DEV_NET);
	bpf_probe_read_kernel(&inum, sizeof(inum), net + OFF_NET_INUM);
	bpf_probe_read_kernel(&len, sizeof(len), skb + OFF_SKB_LEN);
	remember(seen_raw.lookup(&zero), inum, len);
	return 0;
}

/* u64 arithmetic, not pointers, so BCC leaves the loads alone (it would turn a dereference of
 * a context pointer into bpf_probe_read_kernel); the verifier types them by BTF */
int btf_xmit(u64 *ctx)
{
	u64 skb = ctx[0];
	u64 dev = *(u64 *)(skb + OFF_SKB_DEV);
	u64 net = *(u64 *)(dev + OFF_DEV_NET);
	u32 inum = *(u32 *)(net + OFF_NET_INUM), len = *(u32 *)(skb + OFF_SKB_LEN), zero = 0;
	remember(seen_btf.lookup(&zero), inum, len);
	return 0;
}
"""


def send_datagrams(n: int) -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = b"x" * PAYLOAD
    for i in range(n):
        tx.sendto(payload, rx.getsockname())
        if i % 64 == 63:  # keep the receive queue short
            try:
                while True:
                    rx.recv(PAYLOAD)
            except BlockingIOError:
                pass
    tx.close()
    rx.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--packets", type=int, default=200000)
    args = ap.parse_args()
    check_headers()
    bcc = import_bcc()
    btf = read_btf()
    if btf is None:
        sys.exit("tracepoint_kinds: this kernel has no BTF (/sys/kernel/btf/vmlinux)")
    offsets = field_offsets(btf)
    want_len = PAYLOAD + 8 + 20 + 14  # UDP, IPv4 and Ethernet headers: loopback's skb->len
    cflags = [f"-DOFF_{k}={offsets[k]}" for k in FIELDS] + [f"-DWANT_LEN={want_len}"]
    bpf = bcc.BPF(text=SOURCE.encode(), cflags=cflags)
    raw_fd = bpf.load_func("raw_xmit", bcc.BPF.RAW_TRACEPOINT).fd
    btf_fd = tp_btf.load(bpf, "btf_xmit", "net_dev_start_xmit", btf)
    netns = os.stat("/proc/self/ns/net").st_ino
    was = open(STATS_SYSCTL).read().strip()
    open(STATS_SYSCTL, "w").write("1")
    per_run: dict[str, list[float]] = {"raw_tp": [], "tp_btf": []}
    try:
        for r in range(args.rounds):
            for kind in (["raw_tp", "tp_btf"] if r % 2 == 0 else ["tp_btf", "raw_tp"]):
                fd = raw_fd if kind == "raw_tp" else btf_fd
                before = prog_counters(fd)
                if kind == "raw_tp":
                    bpf.attach_raw_tracepoint(tp="net_dev_start_xmit", fn_name="raw_xmit")
                else:
                    link = tp_btf.attach(btf_fd)
                send_datagrams(args.packets)
                if kind == "raw_tp":
                    bpf.detach_raw_tracepoint(tp="net_dev_start_xmit")
                else:
                    os.close(link)
                after = prog_counters(fd)
                runs = after["run_cnt"] - before["run_cnt"]
                per_run[kind].append((after["run_time_ns"] - before["run_time_ns"]) / max(runs, 1))
                print(f"round {r} {kind:7s} {runs:8d} runs {per_run[kind][-1]:7.1f} ns per run",
                      flush=True)
    finally:
        open(STATS_SYSCTL, "w").write(was)
    reads = {}
    for kind, table in (("raw_tp", "seen_raw"), ("tp_btf", "seen_btf")):
        seen = bpf[table.encode()][ctypes.c_int(0)]
        reads[kind] = {"runs": seen.runs, "netns": seen.inum, "len": seen.len}
        if seen.inum != netns or seen.len != want_len:
            sys.exit(f"tracepoint_kinds: {kind} read netns {seen.inum} and len {seen.len}, "
                     f"not {netns} and {want_len}: its offsets or loads are wrong")
    med = {k: statistics.median(v) for k, v in per_run.items()}
    print(f"median ns per run: raw_tp {med['raw_tp']:.1f}, tp_btf {med['tp_btf']:.1f}: "
          f"{med['raw_tp'] - med['tp_btf']:.1f} ns saved per run for {len(FIELDS)} field reads")
    print(json.dumps({"rounds": args.rounds, "packets": args.packets, "ns_per_run": per_run,
                      "median_ns_per_run": med, "reads": reads}))


if __name__ == "__main__":
    main()
