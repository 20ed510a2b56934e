"""The flows group's decisions without a kernel: which hooks, which -D flags, the source."""

import os
import re

import pytest

from mbrec.errors import MbrecError
from mbrec.events import CONSTANTS, PROBE_IDS
from mbrec.recorder import flows
from mbrec.recorder.probes import KernelFunctions
from mbrec.recorder.program import source_text

LAB_61 = ["tcp_set_state", "tcp_ack", "tcp_ack_update_rtt", "tcp_enter_recovery", "tcp_syn_ack_timeout",
          "tcp_retransmit_timer", "tcp_sendmsg_locked", "tcp_recvmsg", "sk_stream_wait_memory"]
ALL_TPS = {"sock:inet_sock_set_state", "tcp:tcp_retransmit_skb"}


def kernel(names, clones=None):
    return KernelFunctions(frozenset(names), {n: 1 for n in names}, clones or {})


def test_fentry_plan_on_the_lab_kernel():
    plan = flows.plan_flows(kernel(LAB_61), "fentry", ALL_TPS)
    kinds = {h.function: h.attach for h in plan.hooks}
    assert kinds == {"tcp_set_state": "fentry", "tcp:tcp_retransmit_skb": "raw_tracepoint",
                     "tcp_ack": "fexit", "tcp_ack_update_rtt": "fentry",
                     "tcp_enter_recovery": "fentry", "tcp_retransmit_timer": "fentry",
                     "tcp_sendmsg_locked": "fexit", "tcp_recvmsg": "fentry+fexit",
                     "sk_stream_wait_memory": "fentry", "tcp_syn_ack_timeout": "fentry",
                     "mbrec_flow_tick": "test_run"}
    assert plan.missing == ()
    for h in plan.hooks:  # every hook is listed under a probe id the header defines
        assert h.header()["probe_id"] == PROBE_IDS[h.probe]


def test_kprobe_plan_uses_the_state_tracepoint_and_return_probes():
    plan = flows.plan_flows(kernel(LAB_61), "kprobe", ALL_TPS)
    by_fn = {h.function: h for h in plan.hooks}
    assert "tcp_set_state" not in by_fn
    assert by_fn["sock:inet_sock_set_state"].programs == ("mbrec_flow_tp_tcp_state",)
    assert by_fn["tcp_ack"].attach == "kretprobe"
    assert by_fn["tcp_ack"].programs == ("mbrec_flow_kp_tcp_ack", "mbrec_flow_kr_tcp_ack")
    assert by_fn["tcp_enter_recovery"].programs == ("mbrec_flow_kp_tcp_enter_recovery",)


def test_missing_and_cloned_functions_are_reported_not_attached():
    names = [n for n in LAB_61 if n != "tcp_enter_recovery"]
    kf = kernel(names, {"tcp_enter_recovery": ["tcp_enter_recovery.isra.0"]})
    plan = flows.plan_flows(kf, "fentry", {"sock:inet_sock_set_state"})
    fns = {h.function for h in plan.hooks}
    assert "tcp_enter_recovery" not in fns and "tcp:tcp_retransmit_skb" not in fns
    assert any("tcp_enter_recovery" in m and "clone" in m for m in plan.missing)
    assert any("tcp_retransmit_skb" in m for m in plan.missing)
    assert not any(f.startswith("-DMBREC_ATTACH_TCP_ENTER_RECOVERY") for f in flows.flow_cflags(plan))


def test_the_group_refuses_to_run_without_state_or_ack_hooks(monkeypatch):
    monkeypatch.setattr(flows, "read_tracepoints", lambda: set())
    kf = kernel([n for n in LAB_61 if n != "tcp_ack"])
    with pytest.raises(MbrecError, match="tcp_ack"):
        flows.FlowGroup.for_kernel(kf, "kprobe", 1.0, 1)


def test_flows_without_btf_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(flows, "read_btf", lambda: None)
    for plan in (flows.plan_flows(kernel(LAB_61), "kprobe", ALL_TPS),
                 flows.plan_flow_tracepoints({tp for _, tp, _, _ in flows.TP_FLOW_HOOKS})):
        with pytest.raises(MbrecError, match="needs the kernel's BTF"):
            flows.flow_cflags(plan)


def test_cflags():
    plan = flows.plan_flows(kernel(LAB_61), "fentry", ALL_TPS)
    f = flows.flow_cflags(plan, sample=4, ring_pages=128)
    assert "-DMBREC_FLOWS" in f
    assert "-DMBREC_FLOW_SAMPLE=4" in f and "-DMBREC_FLOW_RING_PAGES=128" in f
    # the packet probes' style: MBREC_ATTACH_<HOOK> = 1 fentry/fexit, 2 kprobe, 3 raw tracepoint
    assert {x for x in f if x.startswith("-DMBREC_ATTACH_")} == {
        f"-DMBREC_ATTACH_{m}=1" for m in ("TCP_SET_STATE", "TCP_ACK", "TCP_ACK_UPDATE_RTT",
                                          "TCP_ENTER_RECOVERY", "TCP_RETRANSMIT_TIMER",
                                          "TCP_SENDMSG_LOCKED", "TCP_RECVMSG",
                                          "SK_STREAM_WAIT_MEMORY", "TCP_SYN_ACK_TIMEOUT")} | {
        "-DMBREC_ATTACH_TCP_RETRANSMIT_SKB=3"}
    kp = flows.flow_cflags(flows.plan_flows(kernel(LAB_61), "kprobe", ALL_TPS))
    assert "-DMBREC_ATTACH_TCP_ACK=2" in kp and "-DMBREC_ATTACH_TCP_RECVMSG=2" in kp
    assert not any(x.startswith("-DMBREC_ATTACH_TCP_SET_STATE") for x in kp)
    with pytest.raises(MbrecError, match="--flow-sample"):
        flows.flow_cflags(plan, sample=-1)


def test_every_program_the_plan_names_exists_in_the_bpf_source():
    text = flows.flows_source()
    for attach in ("fentry", "kprobe"):
        for h in flows.plan_flows(kernel(LAB_61), attach, ALL_TPS).hooks:
            for prog in h.programs:
                assert re.search(rf"\bint {prog}\(", text), prog
            if h.macro:
                assert re.search(rf"MBREC_ATTACH_{h.macro}\b", text), h.macro
    assert re.search(r"\bint mbrec_flow_tick\(", text)


def test_flows_source_is_pasted_into_the_main_file():
    src = 'int a;\n#include "flows.bpf.c"\nint b;\n'
    assert flows.inline_flows(src, "FLOWS") == "int a;\nFLOWS\nint b;\n"
    for attach in ("fentry", "tracepoint"):  # one program body, its hooks pasted in as well
        plan = flows.plan_flows(kernel(LAB_61), "fentry", ALL_TPS) if attach == "fentry" else \
            flows.plan_flow_tracepoints({tp for _, tp, _, _ in flows.TP_FLOW_HOOKS})
        text = flows.FlowGroup(plan).source(source_text())
        for name in (flows.PROGRAM, *flows.HOOKS):
            assert f'#include "{name}"' not in text
        assert text.count("void mbrec_flow_sock_event(") == 1
        assert text.count("void mbrec_flow_snapshot(") == 1
    with pytest.raises(ValueError):
        flows.inline_flows("int a;\n", "FLOWS")


def test_reasons_match_the_header():
    assert flows.REASON_PERIODIC == CONSTANTS["MBREC_FLOW_PERIODIC"]
    assert flows.REASON_STOP == CONSTANTS["MBREC_FLOW_STOP"]
    assert set(flows.FLOW_RINGS.values()) == {"flow", "tcp", "sock"}


def test_tracepoint_plan_and_flags():
    have = {tp for _, tp, _, _ in flows.TP_FLOW_HOOKS} - {"tcp:tcp_cong_state_set"}
    plan = flows.plan_flow_tracepoints(have)
    assert {h.probe for h in plan.hooks} == {"tcp_ack", "tcp_state", "tcp_retransmit",
                                             "tcp_sendmsg", "tcp_recvmsg", "flow_periodic"}
    assert sorted(m.split(":")[0] for m in plan.missing) == ["tcp_enter_recovery",
                                                             "tcp_timeout"]
    assert {h.attach for h in plan.hooks} == {"raw_tracepoint", "test_run"}
    src = flows.FlowGroup(plan).source(source_text())
    for h in plan.hooks:
        for prog in h.programs:
            assert re.search(rf"\bint {prog}\(struct bpf_raw_tracepoint_args \*ctx", src), prog
    assert "mbrec_flow_tick" in src
    if os.access("/sys/kernel/btf/vmlinux", os.R_OK):
        flags = flows.flow_cflags(plan)
        assert "-DMBREC_FLOWS" in flags
        assert any(f.startswith("-DMBREC_OFF_TP_SND_CWND=") for f in flags)
        # the packet probes' style: each tracepoint hook compiled by its MBREC_ATTACH_<HOOK>=3
        assert {x for x in flags if x.startswith("-DMBREC_ATTACH_")} == {
            f"-DMBREC_ATTACH_{m}=3" for m in ("TCP_PROBE", "TCP_RETRANSMIT_SKB",
                                              "SOCK_SEND_LENGTH", "SOCK_RECV_LENGTH")}
