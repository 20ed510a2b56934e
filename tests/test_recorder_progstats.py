"""Reading per-program kernel counters (recursion misses), on a real BPF program of this kernel."""

import ctypes
import os
import shutil
import struct
import subprocess

import pytest

from mbrec.recorder import progstats


def load_socket_filter() -> int:
    """A two-instruction socket filter (r0 = 0; exit), loaded with the bpf syscall."""
    insns = struct.pack("<BBhi", 0xB7, 0, 0, 0) + struct.pack("<BBhi", 0x95, 0, 0, 0)
    insn_buf = ctypes.create_string_buffer(insns)
    license = ctypes.create_string_buffer(b"GPL")
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<IIQQ", attr, 0, 1, 2, ctypes.addressof(insn_buf),
                     ctypes.addressof(license))
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(progstats.SYS_BPF, 5, attr, 128)  # BPF_PROG_LOAD
    if fd < 0:
        pytest.skip(f"cannot load a BPF program here: {os.strerror(ctypes.get_errno())}")
    return fd


@pytest.mark.skipif(progstats.SYS_BPF is None or os.geteuid() != 0,
                    reason="needs root and a known bpf syscall number")
def test_counters_of_a_real_program():
    fd = load_socket_filter()
    try:
        c = progstats.prog_counters(fd)
        assert c == {"run_time_ns": 0, "run_cnt": 0, "recursion_misses": 0}
        assert progstats.missed_by_probe({"x": fd, "y": fd}, {}) == {}  # no misses, no entries
    finally:
        os.close(fd)


def test_a_bad_fd_is_not_an_answer():
    assert progstats.prog_counters(987654) is None


@pytest.mark.skipif(shutil.which("cc") is None or not os.path.exists("/usr/include/linux/bpf.h"),
                    reason="needs a C compiler and linux/bpf.h")
def test_offsets_match_the_kernel_header(tmp_path):
    src = tmp_path / "o.c"
    src.write_text('#include <stddef.h>\n#include <stdio.h>\n#include <linux/bpf.h>\n'
                   'int main(void) { printf("%zu %zu %zu %zu", '
                   'offsetof(struct bpf_prog_info, run_time_ns), '
                   'offsetof(struct bpf_prog_info, run_cnt), '
                   'offsetof(struct bpf_prog_info, recursion_misses), '
                   'sizeof(struct bpf_prog_info)); return 0; }\n')
    subprocess.run(["cc", "-o", str(tmp_path / "o"), str(src)], check=True)
    out = subprocess.run([str(tmp_path / "o")], capture_output=True, text=True, check=True)
    run_time, run_cnt, misses, size = map(int, out.stdout.split())
    assert (run_time, run_cnt, misses) == (progstats.RUN_TIME_OFF, progstats.RUN_CNT_OFF,
                                           progstats.MISSES_OFF)
    assert size >= progstats.PROG_INFO_SIZE


def test_programs_are_attributed_to_their_probes():
    probes = [{"name": "ip_queue_xmit", "function": "__ip_queue_xmit"},
              {"name": "ip_rcv", "function": "ip_rcv+ip_list_rcv"},
              {"name": "tcp_retransmit", "function": "tcp:tcp_retransmit_skb"},
              {"name": "tcp_transmit_skb", "function": "__tcp_transmit_skb"}]
    got = progstats.program_probes([b"kfunc____ip_queue_xmit", b"mbrec_kp_ip_queue_xmit",
                                    b"mbrec_kp_ip_list_rcv", b"mbrec_kp_ip_rcv",
                                    b"mbrec_flow_tp_tcp_retransmit_skb",
                                    b"kfunc____tcp_transmit_skb", b"unrelated"], probes)
    assert got == {"kfunc____ip_queue_xmit": "ip_queue_xmit",
                   "mbrec_kp_ip_queue_xmit": "ip_queue_xmit",
                   "mbrec_kp_ip_list_rcv": "ip_rcv", "mbrec_kp_ip_rcv": "ip_rcv",
                   "mbrec_flow_tp_tcp_retransmit_skb": "tcp_retransmit",
                   "kfunc____tcp_transmit_skb": "tcp_transmit_skb"}
