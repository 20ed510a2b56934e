"""IPv6 in the lab VM: the ipv6 scenario (ab over IPv6, 40 ms each way) and the dual-stack one
(ab over IPv4 and IPv6 at once, to apache2's one dual-stack listener). Marked `lab`; two boots.
MBREC_IPV6_OUT / MBREC_DUAL_STACK_OUT name an earlier `mbrec lab run ipv6|dual-stack -o DIR`
to check instead of booting.

Structure and counts only (no timing except netem's floor, which emulation cannot lower): the
IPv6 functions are attached, every layer records IPv6 packets, the analysis gives L_IP, L_TCP
and L_NET for them with IPv6 addresses, and L_NET is never below the netem delay.
"""

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from labutil import data, lab, uncovered, vm_skip_reason

from mbrec.analysis import clock, network
from mbrec.events import CONSTANTS, PACKET_PROBES, PROBE_IDS, SEND_PROBES
from mbrec.trace.reader import read_trace

pytestmark = pytest.mark.lab
if vm_skip_reason():
    pytestmark = [pytest.mark.lab, pytest.mark.skip(reason=vm_skip_reason())]

AF_INET, AF_INET6 = CONSTANTS["MBREC_AF_INET"], CONSTANTS["MBREC_AF_INET6"]
V6_FUNCTIONS = {"ip_queue_xmit": {"inet6_csk_xmit", "ip6_xmit"},
                "ip_rcv": {"ip6_rcv_core", "ipv6_rcv"}, "tcp_v4_rcv": {"tcp_v6_rcv"}}
ADDR = {"a": "fd00:0:0:1::1", "b": "fd00:0:0:2::1"}


def _run(scenario, env_name, tmp_path_factory):
    reuse = os.environ.get(env_name)
    if reuse:
        out = Path(reuse)
    else:
        out = tmp_path_factory.mktemp(scenario) / "run"
        r = lab("run", scenario, "-o", str(out))
        assert r.returncode == 0, r.stderr[-3000:]
    gt = json.loads((out / "ground_truth.json").read_text())
    traces = {h: read_trace(str(out / f"{h}.mbrec")) for h in "ab"}
    analysis = out / "analysis"
    if not (analysis / "report.json").exists():
        r = subprocess.run([sys.executable, "-m", "mbrec", "analyze", str(out / "a.mbrec"),
                            str(out / "b.mbrec"), "-o", str(analysis), "--no-plots", "--quiet"],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((analysis / "report.json").read_text())
    return gt, traces, report


@pytest.fixture(scope="module")
def v6(tmp_path_factory):
    return _run("ipv6", "MBREC_IPV6_OUT", tmp_path_factory)


@pytest.fixture(scope="module")
def dual(tmp_path_factory):
    return _run("dual-stack", "MBREC_DUAL_STACK_OUT", tmp_path_factory)


def addr(raw, family):
    b = bytes(np.asarray(raw, dtype=np.uint8))
    return str(ipaddress.ip_address(b[:4] if family == AF_INET else b))


def workload(pkt):
    """The HTTP connections' packets (port 80 at either end)."""
    return pkt[(pkt["sport"] == 80) | (pkt["dport"] == 80)]


def test_ipv6_functions_are_attached_and_every_layer_records_ipv6(v6):
    gt, traces, _ = v6
    assert gt["commands"][0]["parsed"]["complete_requests"] == 300
    for host, t in traces.items():
        assert t.clean, host
        functions = {}
        for p in t.header["probes"]:
            functions.setdefault(p["name"], set()).add(p["function"])
        for probe, v6fns in V6_FUNCTIONS.items():
            assert functions[probe] & v6fns, (host, probe, functions[probe])
        pkt = workload(t.events["pkt"])
        assert len(pkt) and set(np.unique(pkt["family"])) == {AF_INET6}, host
        for probe in PACKET_PROBES:
            n = int((pkt["probe"] == PROBE_IDS[probe]).sum())
            assert n > 0, (host, probe)
        ends = {addr(pkt["saddr"][i], AF_INET6) for i in range(0, len(pkt), max(1, len(pkt) // 50))}
        assert ends <= set(ADDR.values()) and len(ends) == 2, ends


@pytest.mark.parametrize("host", ["a", "b"])
def test_each_ipv6_segment_is_seen_at_every_layer_of_its_host(v6, host):
    _, traces, _ = v6
    pkt = workload(traces[host].events["pkt"])
    sent = data(pkt, "tcp_transmit_skb")
    assert len(sent)
    for layer in SEND_PROBES[1:]:
        assert uncovered(sent, data(pkt, layer)) == [], (host, layer)
    got = data(pkt, "tcp_v4_rcv")
    assert len(got)
    for layer in ("eth_type_trans", "ip_rcv"):
        assert uncovered(got, data(pkt, layer)) == [], (host, layer)


def test_the_analysis_gives_ip_tcp_and_net_latencies_for_ipv6(v6):
    gt, traces, report = v6
    for h in report["hosts"]:
        lat = h["latencies"]
        names = ["L_TCP_1", "L_IP_1", "L_IP_4", "L_TCP_4"] if h["host"] == "a" else \
            ["L_IP_2", "L_TCP_2", "L_TCP_3", "L_IP_3"]
        for name in names:
            assert lat[name]["count"] > 0, (h["host"], name)
    flows = report["flows"]
    assert flows and all(f["client"].startswith(f"[{ADDR['a']}]:") and
                         f["server"] == f"[{ADDR['b']}]:80" for f in flows), flows[:2]
    pair = report["cross_host"]["network"]["pairs"][0]
    for key in ("L_NET_1", "L_NET_2"):
        assert pair[key]["l_net"]["count"] > 0, key
    # one clock: L_NET is exact and netem never releases a frame early
    al = clock.align(list(traces.values()))
    res = network.analyze_network(list(traces.values()), al)
    for p in res.pairs:
        for d in (p.ab, p.ba):
            assert len(d.value) > 0 and np.array_equal(d.lo, d.hi)
            cfg = gt["configured"]["network"][f"{d.src}->{d.dst}"]["delay_ms"] * 1e6
            assert d.value.min() >= 0.99 * cfg, (d.src, d.dst, d.value.min())


def test_dual_stack_records_both_families_at_every_layer(dual):
    gt, traces, report = dual
    parsed = {c["name"]: c["parsed"] for c in gt["commands"]}
    assert parsed["ab4"]["complete_requests"] == parsed["ab6"]["complete_requests"] == 300
    for host, t in traces.items():
        assert t.clean, host
        pkt = workload(t.events["pkt"])
        for probe in PACKET_PROBES:
            fam = set(np.unique(pkt["family"][pkt["probe"] == PROBE_IDS[probe]]))
            assert fam == {AF_INET, AF_INET6}, (host, probe, fam)


def test_ipv4_mapped_sockets_record_as_ipv4(dual):
    """apache2 listens on [::]:80, so b's IPv4 connections are IPv6 sockets with IPv4-mapped
    addresses: the socket-side probes record them as IPv4, with the IPv4 addresses."""
    _, traces, report = dual
    pkt = workload(traces["b"].events["pkt"])
    for probe in ("tcp_transmit_skb", "ip_queue_xmit", "skb_copy_datagram_iter"):
        sel = pkt[(pkt["probe"] == PROBE_IDS[probe]) & (pkt["family"] == AF_INET)]
        assert len(sel), probe
        assert {addr(r, AF_INET) for r in sel["saddr"][:200]} | \
            {addr(r, AF_INET) for r in sel["daddr"][:200]} == {"10.0.1.1", "10.0.2.1"}, probe
        v6 = pkt[(pkt["probe"] == PROBE_IDS[probe]) & (pkt["family"] == AF_INET6)]
        assert not any(addr(r, AF_INET6).startswith("::ffff:") for r in v6["saddr"][:200])
    clients = {f["client"].rsplit(":", 1)[0] for f in report["flows"]}
    assert clients == {"10.0.1.1", f"[{ADDR['a']}]"}, clients
