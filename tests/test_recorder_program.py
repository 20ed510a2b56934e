"""The -D constants that configure the BPF program, and the probe/kprobe plan."""

import re

import pytest

from mbrec import events
from mbrec.recorder.probes import PACKET_PROBES, kernel_functions, resolve_all
from mbrec.recorder.program import (Filters, ProgramConfig, addr_words, cflags,
                                    kprobe_attachments, ring_pages, source_text)

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


def test_kprobe_config_attaches_by_name_from_python():
    cfg = ProgramConfig(resolved(FILTERS_61.replace("ip_rcv_core\n", "")), "kprobe")
    d = defines(cflags(cfg))
    assert d["MBREC_ATTACH_IP_RCV"] == "2" and d["MBREC_IP_RCV_CORE"] == "0"
    assert d["MBREC_SOCK_COOKIE"] == "0"
    pairs = dict(kprobe_attachments(cfg))
    assert pairs["ip_rcv"] == "mbrec_kp_ip_rcv" and pairs["ip_list_rcv"] == "mbrec_kp_ip_list_rcv"
    assert pairs["__dev_queue_xmit"] == "mbrec_kp_dev_queue_xmit"
    assert kprobe_attachments(ProgramConfig(cfg.resolved, "fentry")) == []


def test_every_wrapper_the_python_side_names_exists_in_the_source():
    src = source_text()
    cfg = ProgramConfig(resolved(FILTERS_61.replace("ip_rcv_core\n", "")), "kprobe")
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
