"""The bpf(2) system call as the recorder issues it through libc's syscall(): its number on each
architecture and the commands used. tests/test_constants.py checks them against the system's
headers (asm/unistd_64.h, asm-generic/unistd.h, linux/bpf.h).
"""

from __future__ import annotations

import os

# __NR_bpf: x86_64's own table, arm64's is the generic one
SYS_BPF_BY_MACHINE = {"x86_64": 321, "aarch64": 280}
SYS_BPF = SYS_BPF_BY_MACHINE.get(os.uname().machine)  # None on an architecture not listed

# enum bpf_cmd
BPF_PROG_LOAD = 5
BPF_PROG_TEST_RUN = 10
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_ENABLE_STATS = 32
# enum bpf_stats_type
BPF_STATS_RUN_TIME = 0
# enum bpf_prog_type, enum bpf_attach_type: a BTF-typed tracepoint program (tp_btf)
BPF_PROG_TYPE_TRACING = 26
BPF_TRACE_RAW_TP = 23
