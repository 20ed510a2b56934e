"""The -D constants that configure the BPF program, and the probe/kprobe plan."""

import os
import re

import pytest

from mbrec import events
from mbrec.errors import MbrecError
from mbrec.events import PROBE_IDS
from mbrec.recorder import environment as env
from mbrec.recorder.probes import (PACKET_PROBES, TRACEPOINT_PROBES, header_probes,
                                   kernel_functions, resolve_all, resolve_tracepoints)
from mbrec.recorder.program import (Filters, ProgramConfig, addr_words, cflags,
                                    kprobe_attachments, ring_pages, source_text,
                                    tracepoint_attachments)

from test_recorder_probes import FILTERS_61, KALLSYMS_61


def resolved(filters_text=FILTERS_61):
    done, missing = resolve_all(PACKET_PROBES, kernel_functions(filters_text, KALLSYMS_61))
    assert not missing
    return tuple(done)


def defines(flags):
    out = {}
    for f in flags:
        if f.startswith("-D"):
            name, _, value = f[2:].partition("=")
            out[name] = value
    return out


def test_fentry_config_names_each_kernel_function_and_turns_cookies_on():
    d = defines(cflags(ProgramConfig(resolved(), "fentry")))
    assert d["MBREC_ATTACH_TCP_TRANSMIT_SKB"] == "1"
    assert d["MBREC_FN_TCP_TRANSMIT_SKB"] == "__tcp_transmit_skb"
    assert d["MBREC_FN_IP_RCV"] == "ip_rcv_core" and d["MBREC_IP_RCV_CORE"] == "1"
    assert d["MBREC_SOCK_COOKIE"] == "1"
    assert "MBREC_FLOWS" not in d


def test_flows_with_function_probes_read_btf_offsets_and_the_socket_span():
    offsets = {"SK_STATE": 18, "SK_NET": 48, "SKB_LEN": 112}
    for attach in ("fentry", "kprobe"):
        d = defines(cflags(ProgramConfig(resolved(), attach, offsets=offsets,
                                         flow_cflags=("-DMBREC_FLOWS",))))
        assert "MBREC_KERNEL_HEADERS" not in d and d["MBREC_OFF_SK_STATE"] == "18"
        assert (d["MBREC_SK_SPAN_OFF"], d["MBREC_SK_SPAN_LEN"]) == ("18", "40")  # to SK_NET + 8
        assert "MBREC_SKB_SPAN_OFF" not in d
        # without the flows group no span is compiled; without BTF the headers are
        plain = defines(cflags(ProgramConfig(resolved(), attach, offsets=offsets)))
        assert "MBREC_SK_SPAN_OFF" not in plain
        assert "MBREC_KERNEL_HEADERS" in defines(cflags(ProgramConfig(resolved(), attach)))


def test_kprobe_config_attaches_by_name_from_python():
    cfg = ProgramConfig(resolved(FILTERS_61.replace("ip_rcv_core\n", "")), "kprobe")
    d = defines(cflags(cfg))
    assert d["MBREC_ATTACH_IP_RCV"] == "2" and d["MBREC_IP_RCV_CORE"] == "0"
    assert d["MBREC_SOCK_COOKIE"] == "0"
    pairs = dict(kprobe_attachments(cfg))
    assert pairs["ip_rcv"] == "mbrec_kp_ip_rcv" and pairs["ip_list_rcv"] == "mbrec_kp_ip_list_rcv"
    assert pairs["inet6_csk_xmit"] == "mbrec_kp_ip6_queue_xmit" and pairs["tcp_v6_rcv"] == "mbrec_kp_tcp_v6_rcv"
    assert pairs["ip6_rcv_core"] == "mbrec_kp_ip6_rcv" and d["MBREC_IP6_RCV_CORE"] == "1"
    assert pairs["__dev_queue_xmit"] == "mbrec_kp_dev_queue_xmit"
    assert kprobe_attachments(ProgramConfig(cfg.resolved, "fentry")) == []


def test_every_wrapper_the_python_side_names_exists_in_the_source():
    src = source_text()
    for text in (FILTERS_61, FILTERS_61.replace("ip_rcv_core\n", "").replace("ip6_rcv_core\n", "")):
        cfg = ProgramConfig(resolved(text), "kprobe")
        for _, fn in kprobe_attachments(cfg):
            assert re.search(rf"\bint {fn}\(struct pt_regs \*ctx", src), fn
    for spec in PACKET_PROBES:
        assert f"MBREC_ATTACH_{spec.c_name} == 1" in src
        assert f"MBREC_PROBE_{spec.name.upper()}" in src
    assert "mbrec_pkt_ring" in src and "BPF_RB_NO_WAKEUP" in src


def test_filters_become_expressions():
    f = Filters(netns=(4026531992,), ports=(80, 8080), addrs=("10.0.0.1",), cgroup_id=77,
                sample_bits=3)
    d = defines(cflags(ProgramConfig(resolved(), "fentry", f)))
    assert d["MBREC_NETNS_OK(ns)"] == "((ns)==4026531992U)"
    assert "(sp)==8080||(dp)==8080" in d["MBREC_PORT_OK(sp,dp)"]
    assert "((u32*)(e)->daddr)[0]==16777226U" in d["MBREC_ADDR_OK(e)"]
    assert d["MBREC_CGROUP_ID"] == "77ULL" and d["MBREC_SAMPLE_BITS"] == "3"
    d0 = defines(cflags(ProgramConfig(resolved(), "fentry")))
    assert not any(k.startswith(("MBREC_NETNS_OK", "MBREC_PORT_OK", "MBREC_SAMPLE")) for k in d0)


def test_address_words_match_the_event_bytes():
    assert addr_words("10.0.0.1") == (0x0100000A, 0, 0, 0)
    w = addr_words("fd00::2")
    assert w[0] == 0xFD and w[3] == 0x02000000


@pytest.mark.parametrize("nbytes,pages", [(1, 1), (4096, 1), (4097, 2), (16 << 20, 4096),
                                          (5 << 20, 2048)])
def test_ring_pages_is_a_power_of_two(nbytes, pages):
    assert ring_pages(nbytes) == pages


def test_pkt_record_size_fits_the_ring_stride():
    # 8-byte header + record, 8-byte aligned: the bulk drain assumes a fixed stride.
    assert events.PKT.itemsize % 8 == 0


# ---- --attach tracepoint ----

ALL_TRACEPOINTS = {tp for spec in TRACEPOINT_PROBES for tp in spec.candidates[0]}


def test_tracepoint_plan_keeps_what_the_kernel_has_and_names_the_rest():
    have = ALL_TRACEPOINTS - {"qdisc:qdisc_dequeue", "net:napi_gro_receive_entry"}
    done, missing = resolve_tracepoints(TRACEPOINT_PROBES, have)
    by_name = {r.spec.name: r.functions for r in done}
    assert "qdisc_dequeue" not in by_name and missing == [
        "qdisc_dequeue: no tracepoint qdisc:qdisc_dequeue"]
    # the driver hand-over: every receive API's tracepoint that exists, one program
    assert by_name["eth_type_trans"] == ("net:netif_rx", "net:netif_receive_skb_entry",
                                         "net:netif_receive_skb_list_entry")
    assert by_name["ip_rcv"] == ("net:netif_receive_skb",)
    # same probe ids as the function probes of the same layers
    assert {r.spec.probe_id for r in done} >= {PROBE_IDS[p] for p in (
        "dev_queue_xmit", "dev_hard_start_xmit", "eth_type_trans", "ip_rcv",
        "skb_copy_datagram_iter")}


def test_tracepoint_config_compiles_raw_tracepoint_programs_attached_from_python():
    done, _ = resolve_tracepoints(TRACEPOINT_PROBES, ALL_TRACEPOINTS)
    cfg = ProgramConfig(tuple(done), "tracepoint", offsets={"SKB_DEV": 16, "SKB_DATA": 200,
                                                            "SK_NUM": 14})
    d = defines(cflags(cfg))
    assert d["MBREC_ATTACH_DEV_HARD_START_XMIT"] == "3" and d["MBREC_SOCK_COOKIE"] == "0"
    # the sk_buff and sock fields are copied in one read each: from the first to 8 bytes past
    # the last
    assert (d["MBREC_SKB_SPAN_OFF"], d["MBREC_SKB_SPAN_LEN"]) == ("16", "192")
    assert (d["MBREC_SK_SPAN_OFF"], d["MBREC_SK_SPAN_LEN"]) == ("14", "8")
    with pytest.raises(MbrecError, match="BTF"):  # no offsets: the kernel has no BTF
        cflags(ProgramConfig(tuple(done), "tracepoint"))
    assert not any(k.startswith("MBREC_FN_") for k in d)
    pairs = tracepoint_attachments(cfg)
    assert ("netif_rx", "mbrec_tp_eth_type_trans") in pairs
    assert ("netif_receive_skb_list_entry", "mbrec_tp_eth_type_trans") in pairs
    assert ("skb_copy_datagram_iovec", "mbrec_tp_skb_copy_datagram_iter") in pairs
    src = source_text()
    for _, fn in pairs:
        assert re.search(rf"\bint {fn}\(struct bpf_raw_tracepoint_args \*ctx", src), fn
    for spec in TRACEPOINT_PROBES:
        assert f"MBREC_ATTACH_{spec.c_name} == 3" in src
    assert tracepoint_attachments(ProgramConfig(cfg.resolved, "kprobe")) == []
    assert header_probes(done, "tracepoint")[0]["attach"] == "raw_tracepoint"


def test_a_debian_header_pair_is_joined_into_one_tree(tmp_path):
    src = tmp_path / "src"
    for ver in ("6.1.0-40", "6.1.0-57"):
        (src / f"linux-headers-{ver}-common/include/linux").mkdir(parents=True)
        (src / f"linux-headers-{ver}-common/arch/x86/include/asm").mkdir(parents=True)
        (src / f"linux-headers-{ver}-amd64/include/generated").mkdir(parents=True)
        (src / f"linux-headers-{ver}-amd64/arch/x86/include/generated").mkdir(parents=True)
    (src / "linux-headers-6.2.0-1-common/include/linux").mkdir(parents=True)  # no arch part
    tree = env.foreign_header_tree(str(src), str(tmp_path / "out"))
    if os.uname().machine != "x86_64":
        assert tree is None
        return
    assert tree.endswith("bcc-linux-headers-6.1.0-57")
    for sub, part in (("include/linux", "common"), ("include/generated", "amd64"),
                      ("arch/x86/include/asm", "common"),
                      ("arch/x86/include/generated", "amd64")):
        assert os.path.realpath(os.path.join(tree, sub)) == str(
            src / f"linux-headers-6.1.0-57-{part}" / sub), sub
    assert env.foreign_header_tree(str(src), str(tmp_path / "out")) == tree  # reused
    assert env.foreign_header_tree(str(tmp_path / "none"), str(tmp_path / "out2")) is None


def test_every_typed_program_has_a_kernel_name_of_its_own():
    """The kernel keeps 15 characters of a program's name (what bpftool and the BPF statistics
    show): the BTF-typed tracepoint programs must still be told apart there."""
    from mbrec.recorder.flows import TP_FLOW_HOOKS
    from mbrec.recorder.program import TP_BTF_PROBES, tracepoint_program
    from mbrec.recorder.tp_btf import kernel_name
    functions = {tracepoint_program(p) for p in TP_BTF_PROBES}
    functions |= {prog for _, _, prog, _ in TP_FLOW_HOOKS if prog}
    names = {kernel_name(f) for f in functions}
    assert len(names) == len(functions) >= 11
    assert all(len(n) <= 15 for n in names)
    assert kernel_name("mbrec_flow_tp_tcp_recvmsg") == b"flow_tp_tcp_rec"
