"""What a probe set can split (analysis/coverage.py), from headers as mbrec record writes them."""

from mbrec.analysis import coverage as cov
from mbrec.recorder import flows
from mbrec.recorder.probes import PACKET_PROBES as PACKET_SPECS
from mbrec.recorder.probes import (TRACEPOINT_PROBES, Resolved, header_probes,
                                   resolve_tracepoints)

PACKET_PROBES = [s.name for s in PACKET_SPECS]

ALL_TPS = {tp for spec in TRACEPOINT_PROBES for tp in spec.candidates[0]} | \
    {tp for _, tp, _, _ in flows.TP_FLOW_HOOKS}


def tracepoint_header(existing=ALL_TPS, with_flows=True):
    done, _ = resolve_tracepoints(TRACEPOINT_PROBES, existing)
    probes = header_probes(done, "tracepoint")
    if with_flows:
        probes += [h.header() for h in flows.plan_flow_tracepoints(existing).hooks]
    return {"options": {"attach": "tracepoint"}, "probes": probes}


def fentry_header(names=PACKET_PROBES):
    done = [Resolved(next(s for s in PACKET_SPECS if s.name == n), (n,)) for n in names]
    return {"options": {"attach": "fentry"}, "probes": header_probes(done, "fentry")}


def status(c, kind):
    return {n: v["status"] for n, v in c[kind].items()}


def test_the_full_function_set_needs_no_coverage_section():
    assert cov.coverage(fentry_header()) is None


def test_tracepoints_split_the_nic_layers_and_the_receive_stack_as_one_span():
    c = cov.coverage(tracepoint_header())
    lat = status(c, "latencies")
    for n in ("L_NIC_1", "L_NIC_2", "L_NIC_3", "L_NIC_4", "L_STACK_2", "L_STACK_4", "L_NET"):
        assert lat[n] == cov.APPROX, n
    for n in ("L_TCP_1", "L_IP_1", "L_IP_2", "L_TCP_2", "L_APP_1", "L_APP_2", "W_SND_1",
              "W_RCV_2"):
        assert lat[n] == cov.ABSENT, n
    assert "tcp_transmit_skb" in c["latencies"]["L_TCP_1"]["why"]
    assert set(c["definitions"]) == {"L_STACK_2", "L_STACK_4"}


def test_tracepoint_flow_metrics():
    fm = status(cov.coverage(tracepoint_header()), "flow_metrics")
    assert set(fm) == set(cov.FLOW_METRICS) and len(fm) == 16
    assert fm["SampleRTT"] == fm["SumRTT"] == cov.ABSENT
    assert fm["CWND"] == fm["Timeout"] == fm["MaxAppWQueue"] == cov.APPROX
    assert fm["BSent"] == fm["ReadByte"] == fm["WriteByte"] == fm["Duration"] == cov.EXACT
    assert fm["fastRetrans"] == cov.EXACT
    # a kernel without tcp_cong_state_set: no fast recoveries, no timeouts
    fm = status(cov.coverage(tracepoint_header(ALL_TPS - {"tcp:tcp_cong_state_set"})),
                "flow_metrics")
    assert fm["fastRetrans"] == fm["Timeout"] == cov.ABSENT
    # packets only: no flow metric at all
    fm = status(cov.coverage(tracepoint_header(with_flows=False)), "flow_metrics")
    assert set(fm.values()) == {cov.ABSENT}


def test_a_missing_function_probe_is_absent_and_the_span_replaces_it():
    c = cov.coverage(fentry_header([p for p in PACKET_PROBES if p != "tcp_v4_rcv"]))
    lat = status(c, "latencies")
    assert lat["L_IP_2"] == lat["L_TCP_2"] == cov.ABSENT
    assert lat["L_STACK_2"] == lat["L_TCP_1"] == lat["L_NIC_2"] == cov.EXACT


def test_absent_metrics_are_reported_as_null_not_zero():
    c = cov.coverage(tracepoint_header())
    summ = [{"CWND": {}, "SampleRTT": 0, "SumRTT_us": 0, "BReceived": 5}, None]
    out = cov.mask_flow_metrics(summ, c)
    assert out[0]["SampleRTT"] is None and out[0]["SumRTT_us"] is None
    assert out[0]["BReceived"] == 5 and out[1] is None
    lines = cov.text_lines(c)
    assert "absent (not reported) SampleRTT, SumRTT" in lines[-1]
    assert cov.text_lines(None) == []
