"""mbrec record in the lab VM: two boots in all. Marked `lab` (run with `pytest -m lab`).

1. The ab scenario (apache2 on b, ab from a), recorded on hosts a and b by the lab itself:
   every packet probe fires, nothing is lost, each data segment is seen at all four send layers
   on its sender and all four receive layers on its receiver, the netns filter keeps a and b
   apart.
2. tests/lab/record_signals.sh: a recorder attached by kprobes stopped by SIGINT (clean file,
   exit 0, summary), one killed by SIGKILL (readable file without a trailer), and a sampled,
   port-filtered one whose every event passes the numpy reference of the kernel's sampling.

Under TCG nothing here asserts a timing. GRO/TSO: a segment is "seen" at a layer when its byte
range is covered by the ranges recorded there (a TSO skb is one range at the send layers, and
veth/the router pass it whole or as pieces; the receiver may coalesce), so the check is on
sequence-space coverage, not on one record per wire segment.
"""

import json
import os

import numpy as np
import pytest
from labutil import check_modes, data, lab, uncovered, vm_skip_reason

from mbrec.events import PACKET_PROBES, PROBE_IDS, RECV_PROBES, SEND_PROBES
from mbrec.trace.reader import read_trace

pytestmark = pytest.mark.lab


if vm_skip_reason():
    pytestmark = [pytest.mark.lab, pytest.mark.skip(reason=vm_skip_reason())]




# ---- the ab scenario, recorded by the lab on a and b ----

@pytest.fixture(scope="module")
def ab(request):
    reuse = os.environ.get("MBREC_RECORD_AB_OUT")  # an earlier `mbrec lab run ab -o DIR`
    if reuse:
        from pathlib import Path
        out = Path(reuse)
        return None, {h: read_trace(str(out / f"{h}.mbrec")) for h in "ab"}, out
    r, out = request.getfixturevalue("lab_ab_run")  # one boot shared with test_lab_vm.py
    assert (out / "a.mbrec").exists() and (out / "b.mbrec").exists(), r.stderr[-3000:]
    return r, {h: read_trace(str(out / f"{h}.mbrec")) for h in "ab"}, out


def no_ring_losses(t) -> bool:
    """Nothing lost to a full ring; runs the kernel skipped (a program never runs nested in
    itself on one CPU) are reported, rare, and all the trace's losses are accounted for."""
    detail = t.trailer["lost_detail"]
    skipped = dict(detail["program_skipped"])
    for probe, n in detail.get("kprobe_missed", {}).items():  # kprobes: their misses too
        skipped[probe] = skipped.get(probe, 0) + n
    events = sum(len(r) for r in t.events.values())
    return (detail["ring_full"] == {} and sum(skipped.values()) <= 0.01 * events
            and t.lost == t.trailer["lost"] == {k: v for k, v in skipped.items() if v})


def test_both_traces_are_clean_with_nothing_lost(ab):
    r, traces, out = ab
    for host, t in traces.items():
        assert t.clean, host
        assert no_ring_losses(t), (host, t.trailer.get("lost_detail"))
        assert t.header["host"] == host
        assert len(t.clocks) >= 2
        assert t.warnings == []


def test_every_packet_probe_is_attached_and_fires(ab):
    r, traces, out = ab
    for host, t in traces.items():
        names = {p["name"] for p in t.header["probes"]}
        assert set(PACKET_PROBES) <= names, host
        assert {p["attach"] for p in t.header["probes"]
                if p["name"] in PACKET_PROBES} <= {"fentry", "kprobe"}
        seen = set(np.unique(t.events["pkt"]["probe"]))
        for probe in PACKET_PROBES:
            assert PROBE_IDS[probe] in seen, (host, probe)


def test_netns_filter_keeps_the_hosts_apart(ab):
    r, traces, out = ab
    ns = {}
    for host, t in traces.items():
        (inode,) = t.header["options"]["netns"]
        assert set(np.unique(t.events["pkt"]["netns"])) == {inode}, host
        ns[host] = inode
    assert ns["a"] != ns["b"]
    a_addr = bytes([10, 0, 1, 1])
    b_pkt = traces["b"].events["pkt"]
    # b sees a's address only as the remote end of its connections, never a's own packets at
    # a's own send layers
    sent_by_b = b_pkt[np.isin(b_pkt["probe"], [PROBE_IDS[p] for p in SEND_PROBES])]
    assert not (sent_by_b["saddr"][:, :4] == np.frombuffer(a_addr, np.uint8)).all(axis=1).any()


@pytest.mark.parametrize("host", ["a", "b"])
def test_each_data_segment_sent_is_seen_at_all_four_send_layers(ab, host):
    r, traces, out = ab
    pkt = traces[host].events["pkt"]
    sent = data(pkt, "tcp_transmit_skb")
    assert len(sent) > 0
    for layer in SEND_PROBES[1:]:
        assert uncovered(sent, data(pkt, layer)) == [], (host, layer)


@pytest.mark.parametrize("host", ["a", "b"])
def test_each_data_segment_received_is_seen_at_all_four_receive_layers(ab, host):
    r, traces, out = ab
    pkt = traces[host].events["pkt"]
    got = data(pkt, "tcp_v4_rcv")
    assert len(got) > 0
    for layer in ("eth_type_trans", "ip_rcv", "skb_copy_datagram_iter"):
        assert uncovered(got, data(pkt, layer)) == [], (host, layer)


@pytest.mark.parametrize("sender,receiver", [("a", "b"), ("b", "a")])
def test_what_one_host_sends_the_other_receives_at_every_layer(ab, sender, receiver):
    r, traces, out = ab
    sent = data(traces[sender].events["pkt"], "dev_hard_start_xmit")
    rpkt = traces[receiver].events["pkt"]
    for layer in RECV_PROBES:
        assert uncovered(sent, data(rpkt, layer)) == [], (sender, receiver, layer)


# ---- SIGINT and SIGKILL ----

@pytest.fixture(scope="module")
def signals(tmp_path_factory):
    reuse = os.environ.get("MBREC_RECORD_SIGNALS_OUT")  # an earlier run of the script
    if reuse:
        from pathlib import Path
        return None, Path(reuse)
    out = tmp_path_factory.mktemp("rec-signals") / "out"
    r = lab("run", "-o", str(out), "--", "sh /mnt/src/tests/lab/record_signals.sh")
    return r, out


def test_check_says_the_stock_kernel_records_with_fentry(signals):
    """`mbrec record --check` on Debian's stock kernel: every packet probe resolves, fentry,
    kprobes and tracepoints all attach, and auto picks fentry."""
    r, out = signals
    assert (out / "check.rc").read_text().strip() == "0", (out / "check.err").read_text()
    check = json.loads((out / "check.json").read_text())
    modes, probes = check_modes(check)
    assert set(modes["fentry"]["probes"]) == probes
    assert {f["name"]: f["ok"] for f in check["facts"]}["headers"]


def test_sigint_stops_cleanly_with_a_summary(signals):
    r, out = signals
    log = (out / "rec-a.log").read_text()
    assert "a rc 0" in (out / "signals.txt").read_text(), log
    assert "next: mbrec" in log and "recording on a" in log
    t = read_trace(str(out / "a.mbrec"))
    assert t.clean and t.trailer["stop_reason"] == "SIGINT"
    assert len(t.events["pkt"]) > 0 and no_ring_losses(t)


def test_kprobe_attach_fires_every_probe_and_ids_sockets_by_address(signals):
    r, out = signals
    t = read_trace(str(out / "a.mbrec"))
    assert {p["attach"] for p in t.header["probes"]} == {"kprobe"}
    assert t.header["options"]["sock_id"] == "pointer"
    pkt = t.events["pkt"]
    for probe in PACKET_PROBES:
        assert (pkt["probe"] == PROBE_IDS[probe]).any(), probe
    sent = pkt[pkt["probe"] == PROBE_IDS["tcp_transmit_skb"]]
    assert ((sent["sock_cookie"] >> np.uint64(56)) == 0xFF).all()  # kernel-half addresses


def test_sampling_and_port_filter_in_the_kernel_match_the_reference(signals):
    from mbrec.testing.sampling import kept
    r, out = signals
    assert "s rc 0" in (out / "signals.txt").read_text()
    s = read_trace(str(out / "s.mbrec"))
    full = read_trace(str(out / "b.mbrec")).events["pkt"]
    pkt = s.events["pkt"]
    assert s.header["options"]["sample_bits"] == 2 and s.header["options"]["ports"] == [8080]
    assert len(pkt) > 0 and ((pkt["sport"] == 8080) | (pkt["dport"] == 8080)).all()
    not_copy = pkt[pkt["probe"] != PROBE_IDS["skb_copy_datagram_iter"]]
    assert kept(not_copy, 2).all()
    # the unsampled recording of the same namespace holds about 4x as many port-8080 events
    full = full[(full["sport"] == 8080) | (full["dport"] == 8080)]
    assert len(pkt) < len(full) / 2


def test_sigkill_leaves_a_readable_file(signals):
    r, out = signals
    assert "b rc 137" in (out / "signals.txt").read_text()
    t = read_trace(str(out / "b.mbrec"))
    assert not t.clean and t.trailer is None
    assert len(t.events["pkt"]) > 0  # frames closed every 200 ms reached the disk
    assert len(t.clocks) >= 1
