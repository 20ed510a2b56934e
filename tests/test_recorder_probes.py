"""Probe resolution on sample kernel symbol tables (no kernel needed)."""

from mbrec.recorder import probes
from mbrec.recorder.probes import (PACKET_PROBES, Resolved, Unresolved, choose_attach,
                                   header_probes, kernel_functions, resolve, resolve_all)

# Shaped like Debian 6.1's available_filter_functions.
FILTERS_61 = """\
__tcp_transmit_skb
ip_queue_xmit
__ip_queue_xmit
__dev_queue_xmit
dev_hard_start_xmit
sch_direct_xmit
eth_type_trans
ip_rcv
ip_list_rcv
ip_rcv_core
tcp_v4_rcv
skb_copy_datagram_iter
inet6_csk_xmit
ip6_xmit
ipv6_rcv
ipv6_list_rcv
ip6_rcv_core
tcp_v6_rcv
tcp_retransmit_skb
__tcp_retransmit_skb
__tcp_send_ack.part.0
nf_conntrack_in [nf_conntrack]
"""
KALLSYMS_61 = """\
ffffffff81a00000 T __tcp_transmit_skb
ffffffff81a00100 T ip_queue_xmit
ffffffff81a00200 T __ip_queue_xmit
ffffffff81a00300 T __dev_queue_xmit
ffffffff81a00380 T dev_queue_xmit
ffffffff81a00400 T dev_hard_start_xmit
ffffffff81a00500 T eth_type_trans
ffffffff81a00600 T ip_rcv
ffffffff81a00700 T ip_list_rcv
ffffffff81a00800 t ip_rcv_core
ffffffff81a00900 T tcp_v4_rcv
ffffffff81a00a00 T skb_copy_datagram_iter
ffffffff81a01100 T inet6_csk_xmit
ffffffff81a01200 T ip6_xmit
ffffffff81a01300 T ipv6_rcv
ffffffff81a01400 T ipv6_list_rcv
ffffffff81a01500 t ip6_rcv_core
ffffffff81a01600 T tcp_v6_rcv
ffffffff81a00b00 t __tcp_send_ack.part.0
ffffffff81a00c00 T __tcp_send_ack
ffffffff81a00d00 t __netif_receive_skb_core.constprop.0
ffffffff81a00e00 d some_data_symbol
ffffffff81a00f00 t dup_fn
ffffffff81a01000 t dup_fn
"""


def kf61():
    return kernel_functions(FILTERS_61, KALLSYMS_61)


def test_every_packet_probe_resolves_on_61_to_the_traceable_name():
    done, missing = resolve_all(PACKET_PROBES, kf61())
    assert missing == []
    got = {r.spec.label: r.functions for r in done}
    assert got == {
        "ip_queue_xmit (IPv6)": ("inet6_csk_xmit",),
        "ip_rcv (IPv6)": ("ip6_rcv_core",),
        "tcp_v4_rcv (IPv6)": ("tcp_v6_rcv",),
        "tcp_transmit_skb": ("__tcp_transmit_skb",),
        "ip_queue_xmit": ("__ip_queue_xmit",),
        "dev_queue_xmit": ("__dev_queue_xmit",),  # dev_queue_xmit: kallsyms only (wrapper)
        "dev_hard_start_xmit": ("dev_hard_start_xmit",),
        "eth_type_trans": ("eth_type_trans",),
        "ip_rcv": ("ip_rcv_core",),
        "tcp_v4_rcv": ("tcp_v4_rcv",),
        "skb_copy_datagram_iter": ("skb_copy_datagram_iter",),
    }


def test_without_ip_rcv_core_both_receive_entry_points_are_taken():
    kf = kernel_functions(FILTERS_61.replace("ip_rcv_core\n", ""), KALLSYMS_61)
    spec = next(s for s in PACKET_PROBES if s.name == "ip_rcv")
    assert resolve(spec, kf) == Resolved(spec, ("ip_rcv", "ip_list_rcv"))


def test_half_of_a_candidate_is_not_enough():
    text = FILTERS_61.replace("ip_rcv_core\n", "").replace("ip_list_rcv\n", "")
    spec = next(s for s in PACKET_PROBES if s.name == "ip_rcv")
    r = resolve(spec, kernel_functions(text, KALLSYMS_61))
    assert isinstance(r, Unresolved)
    assert any("ip_list_rcv" in reason for reason in r.reasons)


def test_clones_are_refused_and_named():
    kf = kf61()
    assert "compiler clone" in probes.why_not("__tcp_send_ack.part.0", kf)
    msg = probes.why_not("__netif_receive_skb_core", kf)
    assert "__netif_receive_skb_core.constprop.0" in msg and "clone" in msg
    msg = probes.why_not("__tcp_send_ack", kf)
    assert "not traceable" in msg and "__tcp_send_ack.part.0" in msg


def test_inlined_wrapper_and_missing_and_duplicate_are_told_apart():
    kf = kernel_functions(FILTERS_61 + "dup_fn\n", KALLSYMS_61)
    assert "not traceable" in probes.why_not("dev_queue_xmit", kf)
    assert "does not exist" in probes.why_not("tcp_transmit_skb", kf)
    assert "2 times" in probes.why_not("dup_fn", kf)


def test_module_suffix_in_filter_functions_is_ignored():
    kf = kf61()
    assert "nf_conntrack_in" in kf.traceable


def test_a_missing_function_makes_the_probe_unresolved_with_all_reasons():
    text = FILTERS_61.replace("__tcp_transmit_skb\n", "")
    spec = PACKET_PROBES[0]
    r = resolve(spec, kernel_functions(text, KALLSYMS_61))
    assert isinstance(r, Unresolved)
    assert len(r.reasons) == 2  # __tcp_transmit_skb not traceable, tcp_transmit_skb absent


def test_attach_choice_and_header_entries():
    assert choose_attach("auto", True) == "fentry"
    assert choose_attach("auto", False) == "kprobe"
    assert choose_attach("kprobe", True) == "kprobe"
    kf = kernel_functions(FILTERS_61.replace("ip_rcv_core\n", ""), KALLSYMS_61)
    done, _ = resolve_all(PACKET_PROBES, kf)
    entries = header_probes(done, "kprobe")
    ip = [e for e in entries if e["name"] == "ip_rcv"]
    assert [e["function"] for e in ip] == ["ip_rcv", "ip_list_rcv", "ip6_rcv_core"]
    assert {e["probe_id"] for e in ip} == {6}
    assert len(entries) == 12 and all(e["attach"] == "kprobe" for e in entries)


def test_ipv6_functions_fall_back_and_are_optional():
    text = FILTERS_61.replace("ip6_rcv_core\n", "").replace("inet6_csk_xmit\n", "")
    done, missing = resolve_all(PACKET_PROBES, kernel_functions(text, KALLSYMS_61))
    got = {r.spec.label: r.functions for r in done}
    assert got["ip_queue_xmit (IPv6)"] == ("ip6_xmit",)
    assert got["ip_rcv (IPv6)"] == ("ipv6_rcv", "ipv6_list_rcv")
    assert missing == []
    text = FILTERS_61.replace("tcp_v6_rcv\n", "")
    _, missing = resolve_all(PACKET_PROBES, kernel_functions(text, KALLSYMS_61))
    assert [(m.spec.label, m.spec.optional) for m in missing] == [("tcp_v4_rcv (IPv6)", True)]
    assert not any(s.optional for s in PACKET_PROBES if not s.ipv6)


def test_the_ipv6_specs_record_as_their_layers():
    v6 = [s for s in PACKET_PROBES if s.ipv6]
    assert {s.name for s in v6} == {"ip_queue_xmit", "ip_rcv", "tcp_v4_rcv"}
    assert len({s.c_name for s in PACKET_PROBES}) == len(PACKET_PROBES)  # distinct -D names
    assert [probes.kprobe_program(s) for s in v6] == ["mbrec_kp_ip6_queue_xmit", "mbrec_kp_ip6_rcv",
                                                       "mbrec_kp_tcp_v6_rcv"]
