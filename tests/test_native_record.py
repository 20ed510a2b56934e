"""mbrec record --attach tracepoint on this machine's own kernel, no VM: the native testbed
(mbrec/lab/native.py: hosts a and b as network namespaces behind a router namespace), apache2
on b, ab -k -c 10 from a, one recorder per host (packets and flows), then mbrec analyze.

Real kernel events in seconds. Marked `native`; skipped with the reason where the machine
cannot run it (not root, no BCC, no apache2/ab, no tracepoints).
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from labutil import data, uncovered

from mbrec.events import CONSTANTS, PROBE_IDS

pytestmark = pytest.mark.native

REQUESTS = 2000
TRACING = "/sys/kernel/tracing"


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "native recording needs root"
    from mbrec.lab.native import missing_tools
    missing = missing_tools()
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install apache2 apache2-utils iperf3)"
    import importlib.util

    from mbrec.recorder import environment as env
    # as the recorder finds it (env.import_bcc), without changing this process's module path
    if importlib.util.find_spec("bcc") is None and not os.path.isfile(
            os.path.join(env.DEBIAN_DIST_PACKAGES, "bcc", "__init__.py")):
        return "BCC's Python module is missing (apt-get install python3-bpfcc)"
    if not os.path.isdir(os.path.join(TRACING, "events")):
        r = subprocess.run(["mount", "-t", "tracefs", "nodev", TRACING], capture_output=True)
        if r.returncode:
            return f"tracefs is not mounted at {TRACING} and cannot be"
    return None


if skip_reason():
    pytestmark = [pytest.mark.native, pytest.mark.skip(reason=skip_reason())]


def total_transferred(ab_out: str) -> int:
    return int(re.search(r"Total transferred:\s+(\d+) bytes", ab_out).group(1))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One native ab run recorded on a and b; returns (traces, ab output, out dir)."""
    from mbrec.lab.native import Testbed
    from mbrec.trace.reader import read_trace
    out = tmp_path_factory.mktemp("native-ab")
    with Testbed() as tb:
        tb.start_apache("b")
        recs = tb.start_recorders(str(out), ["a", "b"],
                                  ["--attach", "tracepoint", "--probes", "packets,flows"])
        ab = tb.run("a", ["ab", "-k", "-c", "10", "-n", str(REQUESTS), tb.url("b", "4k.bin")])
        rcs = tb.stop_recorders(recs)
    assert rcs == {"a": 0, "b": 0}, [(out / f"record-{h}.log").read_text() for h in "ab"]
    traces = {h: read_trace(str(out / f"{h}.mbrec")) for h in "ab"}
    return traces, ab.stdout, out


@pytest.fixture(scope="module")
def report(run):
    traces, _, out = run
    r = subprocess.run([sys.executable, "-m", "mbrec", "analyze", str(out / "a.mbrec"),
                        str(out / "b.mbrec"), "--json", "--no-plots", "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def lost(t, probe: str) -> int:
    return int(t.lost.get(probe, 0))


def test_ab_completes_and_both_traces_are_clean_with_every_loss_counted(run):
    """No ring overflows; a run the kernel skipped (a program never runs nested in itself on
    one CPU: a softirq sending an ACK while the same tracepoint's program runs in process
    context) is counted, and rare."""
    traces, ab, _ = run
    assert f"Complete requests:      {REQUESTS}" in ab and "Failed requests:        0" in ab, ab
    for host, t in traces.items():
        assert t.clean and t.trailer["stop_reason"] == "SIGINT", host
        detail = t.trailer["lost_detail"]
        assert detail["ring_full"] == {}, (host, detail)
        skipped = {k: v for k, v in detail["program_skipped"].items() if v}
        assert t.lost == t.trailer["lost"] == skipped, (host, detail)
        assert sum(skipped.values()) <= 0.01 * sum(len(r) for r in t.events.values()), detail
        assert t.warnings == []
        assert t.header["host"] == host


def test_every_probe_is_a_tracepoint_and_the_header_says_so(run):
    traces, _, _ = run
    for host, t in traces.items():
        assert t.header["options"]["attach"] == "tracepoint"
        assert t.header["options"]["sock_id"] == "pointer"
        kind = {p["name"]: p["attach"] for p in t.header["probes"]}
        assert set(kind.values()) == {"tp_btf", "raw_tracepoint", "test_run"}, host
        # this kernel has BTF and loads BTF-typed tracepoints: the packet programs that read
        # the skb (mbrec_tp_packet, the copy) and every flow hook are those; net_dev_xmit,
        # which reads no struct, a raw tracepoint
        flow_hooks = {p["name"] for p in t.header["probes"]
                      if p.get("group") == "flows" and p["attach"] != "test_run"}
        assert flow_hooks >= {"tcp_ack", "tcp_state", "tcp_sendmsg", "tcp_recvmsg"}, host
        assert {n for n, k in kind.items() if k == "tp_btf"} == ({
            "dev_queue_xmit", "qdisc_dequeue", "dev_hard_start_xmit", "eth_type_trans",
            "ip_rcv", "skb_copy_datagram_iter"} & set(kind)) | flow_hooks, host
        assert kind["net_dev_xmit"] == "raw_tracepoint"
        tps = {p["function"] for p in t.header["probes"]
               if p["attach"] in ("raw_tracepoint", "tp_btf")}
        for tp in tps:  # each one the kernel has
            assert os.path.isdir(os.path.join(TRACING, "events", *tp.split(":"))), tp
        names = {p["name"] for p in t.header["probes"]}
        # no tracepoint stands for these layers
        assert not names & {"tcp_transmit_skb", "ip_queue_xmit", "tcp_v4_rcv"}


def test_the_probes_on_the_path_fire_on_both_hosts(run):
    traces, _, _ = run
    for host, t in traces.items():
        seen = set(np.unique(t.events["pkt"]["probe"]).tolist())
        for probe in ("dev_queue_xmit", "dev_hard_start_xmit", "net_dev_xmit",
                      "eth_type_trans", "ip_rcv", "skb_copy_datagram_iter"):
            assert PROBE_IDS[probe] in seen, (host, probe)


def test_netns_filter_keeps_the_hosts_apart(run):
    traces, _, _ = run
    inodes = set()
    for host, t in traces.items():
        (inode,) = t.header["options"]["netns"]
        assert set(np.unique(t.events["pkt"]["netns"]).tolist()) == {inode}, host
        inodes.add(inode)
    assert len(inodes) == 2


@pytest.mark.parametrize("host", ["a", "b"])
def test_each_segment_queued_is_seen_at_the_driver_and_its_return(run, host):
    pkt = run[0][host].events["pkt"]
    queued = data(pkt, "dev_queue_xmit")
    assert len(queued) > 0
    for layer in ("dev_hard_start_xmit", "net_dev_xmit"):
        missed = uncovered(queued, data(pkt, layer))
        assert len(missed) <= lost(run[0][host], layer), (host, layer, missed[:5])


@pytest.mark.parametrize("sender,receiver", [("a", "b"), ("b", "a")])
def test_what_one_host_sends_the_other_receives_at_every_receive_tracepoint(run, sender,
                                                                           receiver):
    traces = run[0]
    sent = data(traces[sender].events["pkt"], "dev_hard_start_xmit")
    assert len(sent) > 0
    rpkt = traces[receiver].events["pkt"]
    for layer in ("eth_type_trans", "ip_rcv", "skb_copy_datagram_iter"):
        missed = uncovered(sent, data(rpkt, layer))
        assert len(missed) <= lost(traces[receiver], layer), (sender, receiver, layer,
                                                               missed[:5])


def test_copies_add_up_to_the_bytes_ab_received(run):
    """The copy tracepoint has no offset argument: the recorder derives it from copied_seq.
    Every byte a received was copied once: the copies sum to ab's total and cover every
    received byte."""
    traces, ab, _ = run
    pkt = traces["a"].events["pkt"]
    copies = data(pkt, "skb_copy_datagram_iter")
    copies = copies[copies["sport"] == 80]
    if lost(traces["a"], "skb_copy_datagram_iter") == 0:
        assert int(copies["len"].sum()) == total_transferred(ab)
    else:  # each skipped copy is a counted loss, and only a loss
        assert int(copies["len"].sum()) < total_transferred(ab)
    missed = uncovered(data(pkt, "ip_rcv"), copies)
    assert len(missed) <= lost(traces["a"], "skb_copy_datagram_iter"), missed[:5]


def test_reads_writes_and_flow_records_agree_with_ab(run):
    traces, ab, _ = run
    total = total_transferred(ab)
    read = CONSTANTS["MBREC_SOCK_READ"]
    write = CONSTANTS["MBREC_SOCK_WRITE"]
    a_sock, b_sock = traces["a"].events["sock"], traces["b"].events["sock"]
    assert int(a_sock["bytes"][a_sock["kind"] == read].sum()) == total
    assert int(b_sock["bytes"][b_sock["kind"] == write].sum()) == total
    # each read's range is where the copies of a put the same bytes
    copies = data(traces["a"].events["pkt"], "skb_copy_datagram_iter")
    reads = a_sock[a_sock["kind"] == read]
    assert int(((reads["seq_end"] - reads["seq_start"]) & 0xFFFFFFFF).sum()) == total
    flows = traces["a"].events["flow"]
    close = flows[flows["reason"] == CONSTANTS["MBREC_FLOW_CLOSE"]]
    assert len(close) == 10  # ab -c 10 -k: ten connections, each closed
    # the kernel's bytes_received counts the FIN each connection received too
    assert int(close["bytes_received"].sum()) == total + len(close)
    assert int(close["read_bytes"].sum()) == total
    assert len(copies) > 0


def test_analysis_shows_the_layers_the_tracepoints_give(report):
    lat = {h["host"]: h["latencies"] for h in report["hosts"]}
    # a is the client: its send NIC (qdisc) layer is L_NIC_1, b's receive NIC layer L_NIC_2
    assert {"L_NIC_1", "L_NIC_4"} <= set(lat["a"])
    assert {"L_NIC_2", "L_NIC_3"} <= set(lat["b"])
    for h in report["hosts"]:
        assert not {"L_TCP_1", "L_IP_1", "L_IP_2", "L_TCP_3"} & set(h["latencies"])
    pairs = report["cross_host"]["network"]["pairs"]
    assert pairs and all((p.get("L_NET_1") or {}).get("l_net", {}).get("count", 0) > 0
                         for p in pairs)
    # the receive IP and TCP layers as one span: every request (b) and response (a) copied
    assert lat["b"]["L_STACK_2"]["count"] >= REQUESTS
    assert lat["a"]["L_STACK_4"]["count"] >= REQUESTS


def test_the_report_marks_what_the_tracepoints_cannot_split(report):
    for h in report["hosts"]:
        c = h["coverage"]
        assert c["attach"] == "tracepoint"
        assert c["latencies"]["L_TCP_1"]["status"] == "absent"
        assert c["latencies"]["L_STACK_2"]["status"] == "approximate"
        assert c["flow_metrics"]["SampleRTT"]["status"] == "absent"
        # never a number from a missing layer
        for name, v in c["latencies"].items():
            if v["status"] == "absent":
                assert name not in h["latencies"], (h["host"], name)
    metrics = [f["metrics"] for f in report["flows"] if f.get("metrics")]
    assert metrics and all(m["SampleRTT"] is None and m["SumRTT_us"] is None for m in metrics)
    assert all(m["ReadByte"] is not None for m in metrics)


def test_auto_falls_back_to_tracepoints_where_functions_cannot_be_probed(tmp_path):
    from mbrec.lab.native import Testbed
    try:
        open(os.path.join(TRACING, "available_filter_functions")).close()
        functions_traceable = True
    except OSError:
        functions_traceable = False
    out = tmp_path / "auto.mbrec"
    with Testbed(hosts=("a",)) as tb:
        r = subprocess.run([sys.executable, "-m", "mbrec", "record", "-o", str(out),
                            "--netns", tb.ns("a"), "--duration", "0.3", "--quiet"],
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    from mbrec.trace.reader import read_trace
    attach = read_trace(str(out)).header["options"]["attach"]
    if functions_traceable:
        assert attach in ("fentry", "kprobe")
    else:
        assert attach == "tracepoint"
        assert "falling back to --attach tracepoint" in r.stderr


@pytest.fixture(scope="module")
def bulk(tmp_path_factory):
    """iperf3 a -> b (200 MB: TSO super-segments through veth and the router), recorded on a
    and b with the packet tracepoints."""
    from mbrec.lab.native import Testbed
    from mbrec.trace.reader import read_trace
    out = tmp_path_factory.mktemp("native-iperf3")
    with Testbed() as tb:
        tb.start_iperf3("b")
        recs = tb.start_recorders(str(out), ["a", "b"], ["--attach", "tracepoint"])
        r = tb.run("a", ["iperf3", "-J", "-c", tb.addr("b"), "-n", "200M"])
        rcs = tb.stop_recorders(recs)
    assert rcs == {"a": 0, "b": 0}, [(out / f"record-{h}.log").read_text() for h in "ab"]
    return {h: read_trace(str(out / f"{h}.mbrec")) for h in "ab"}, json.loads(r.stdout)


def test_bulk_transfer_big_segments_are_seen_whole_at_the_receive_tracepoints(bulk):
    traces, result = bulk
    sent = data(traces["a"].events["pkt"], "dev_hard_start_xmit")
    sent = sent[sent["dport"] == 5201]
    assert sent["gso_segs"].max() > 1  # TSO: super-segments, not wire frames
    rpkt = traces["b"].events["pkt"]
    for layer in ("eth_type_trans", "ip_rcv"):
        missed = uncovered(sent, data(rpkt, layer))
        assert len(missed) <= lost(traces["b"], layer), (layer, missed[:5])
    # the server's copies of the data connection (iperf3's other one is its control channel)
    # hold at least what iperf3 counted as received (plus its stream cookie, and what it reads
    # after counting) and at most what a's driver was handed
    copies = data(rpkt, "skb_copy_datagram_iter")
    copies = copies[copies["dport"] == 5201]
    by_port = {int(p): int(copies["len"][copies["sport"] == p].sum())
               for p in np.unique(copies["sport"])}
    port = max(by_port, key=by_port.get)
    if lost(traces["b"], "skb_copy_datagram_iter") == 0:
        assert result["end"]["sum_received"]["bytes"] <= by_port[port] <= int(
            sent["len"][sent["sport"] == port].sum()), by_port
    for host, t in traces.items():
        assert t.trailer["lost_detail"]["ring_full"] == {}, host


def test_partitioned_analysis_reports_the_same_coverage_and_spans(run, report):
    _, _, out = run
    r = subprocess.run([sys.executable, "-m", "mbrec", "analyze", str(out / "a.mbrec"),
                        str(out / "b.mbrec"), "--json", "--no-plots", "--quiet",
                        "--partitions", "3"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    parts = json.loads(r.stdout)
    for whole, split in zip(report["hosts"], parts["hosts"]):
        assert split["coverage"] == whole["coverage"]
        assert {k: v["count"] for k, v in split["latencies"].items()} == \
            {k: v["count"] for k, v in whole["latencies"].items()}


def _same_records(x, y, drop: tuple[str, ...]) -> list[str]:
    """Whether two batches hold the same records without the fields in drop (in any order):
    [] if so, else the fields whose values differ (or ["count"])."""
    from numpy.lib.recfunctions import repack_fields
    keep = [f for f in x.dtype.names if f not in drop]
    if len(x) != len(y):
        return ["count"]

    def rows(e):
        kept = repack_fields(e[keep])
        return sorted(kept.view(f"V{kept.dtype.itemsize}").tolist())
    if rows(x) == rows(y):
        return []
    return [f for f in keep if not np.array_equal(np.sort(x[f], axis=0), np.sort(y[f], axis=0))]


# What a flow's own state counts from the read and write hooks: a snapshot in softirq on one CPU
# may fall between the two recorders' runs of a read's or write's hook in process context on
# another, so only the close snapshots (after the last read and write) must agree on them.
RACING_COUNTS = ("read_bytes", "write_bytes", "max_app_wqueue")


def test_typed_and_raw_programs_record_the_same_values(tmp_path):
    """Two recorders on b at once, one with BTF-typed tracepoint programs (plain loads, the
    tcp_sock through bpf_skc_to_tcp_sock) and one with raw tracepoints (the helper and span
    copies), see the same tracepoint hits: every packet event, every per-ACK and close snapshot
    and every read and write must carry the same kernel values in both traces (only their own
    clocks differ)."""
    from mbrec.lab.native import Testbed
    from mbrec.trace.reader import read_trace
    dirs = {kind: tmp_path / kind for kind in ("typed", "raw")}
    for d in dirs.values():
        d.mkdir()
    args = ["--attach", "tracepoint", "--probes", "packets,flows", "--flow-interval", "0"]
    with Testbed() as tb:
        tb.start_apache("b")
        recs = {kind: tb.start_recorders(str(d), ["b"], args + (["--raw-tracepoints"]
                                                               if kind == "raw" else []))
                for kind, d in dirs.items()}
        ab = tb.run("a", ["ab", "-k", "-c", "4", "-n", "500", tb.url("b", "4k.bin")])
        rcs = {kind: tb.stop_recorders(r) for kind, r in recs.items()}
    assert "Failed requests:        0" in ab.stdout
    assert rcs == {"typed": {"b": 0}, "raw": {"b": 0}}
    traces = {kind: read_trace(str(d / "b.mbrec")) for kind, d in dirs.items()}
    kinds = {kind: {p["attach"] for p in t.header["probes"]} for kind, t in traces.items()}
    assert kinds == {"typed": {"tp_btf", "raw_tracepoint", "test_run"},  # net_dev_xmit raw
                     "raw": {"raw_tracepoint", "test_run"}}
    for kind, t in traces.items():
        assert t.lost == {}, (kind, t.lost)
    flows = {kind: t.events["flow"] for kind, t in traces.items()}
    clocks = ("ts_ns", "established_ns")
    for reason, n, drop in (("MBREC_FLOW_ACK", 500, clocks + RACING_COUNTS),
                            ("MBREC_FLOW_CLOSE", 4, clocks)):
        x, y = (f[f["reason"] == CONSTANTS[reason]] for f in flows.values())
        assert len(x) >= n, (reason, len(x))
        assert _same_records(x, y, drop) == [], reason
    socks = [t.events["sock"] for t in traces.values()]
    assert len(socks[0]) >= 1000  # a read and a write per request at least
    assert _same_records(*socks, ("ts_ns",)) == []
    pkts = [t.events["pkt"] for t in traces.values()]
    assert set(np.unique(pkts[0]["probe"]).tolist()) >= {
        PROBE_IDS[p] for p in ("dev_queue_xmit", "dev_hard_start_xmit", "eth_type_trans",
                               "ip_rcv", "skb_copy_datagram_iter")}
    assert _same_records(*pkts, ("ts_ns",)) == []
