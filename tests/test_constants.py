"""Constants mbrec shares with the kernel, each defined once and checked against its source: TCP
states (bpf/mbrec_events.h vs include/net/tcp_states.h), bpf(2)'s numbers (recorder/bpfsyscall.py vs the
system's asm and linux headers), the kernel field paths (bpf/mbrec.bpf.c's offsetof block vs
recorder/btf.py FIELDS) and the ring buffers (bpf/ vs recorder/program.py RINGS)."""

import glob
import re
from importlib import resources

from mbrec.events import CONSTANTS, TCP_STATES
from mbrec.recorder import bpfsyscall, btf, program
from mbrec.recorder.flows import FLOW_RINGS

BPF = resources.files("mbrec.bpf")
# make setup installs them: linux-headers-amd64 (kernel tree), libc6-dev (linux-libc-dev)
KERNEL_TCP_STATES = "/usr/src/linux-headers-*-common/include/net/tcp_states.h"
UNISTD = {"x86_64": "/usr/include/x86_64-linux-gnu/asm/unistd_64.h",
          "aarch64": "/usr/include/asm-generic/unistd.h"}
LINUX_BPF_H = "/usr/include/linux/bpf.h"


def c_enum(text: str, name: str) -> dict[str, int]:
    """The members of `enum name { ... }` with their values (explicit ones and aliases too)."""
    body = re.search(r"enum\s+" + name + r"\s*\{(.*?)\};", text, re.S).group(1)
    body = re.sub(r"/\*.*?\*/|//[^\n]*", "", body, flags=re.S)
    out, nxt = {}, 0
    for item in (i.strip() for i in body.split(",")):
        if not item:
            continue
        key, _, value = (p.strip() for p in item.partition("="))
        nxt = out[value] if value in out else int(value, 0) if value else nxt
        out[key] = nxt
        nxt += 1
    return out


def test_tcp_states_are_the_kernels():
    headers = sorted(glob.glob(KERNEL_TCP_STATES))
    assert headers, f"no {KERNEL_TCP_STATES}: install linux-headers-amd64 (make setup)"
    kernel = c_enum(open(headers[-1]).read(), "")  # the anonymous enum of TCP_ESTABLISHED...
    kernel = {k.removeprefix("TCP_"): v for k, v in kernel.items() if k != "TCP_MAX_STATES"}
    ours = {name: value for value, name in TCP_STATES.items()}
    assert {name: kernel.get(name) for name in ours} == ours
    # newer kernels add states no TCP socket on the path is in (6.6: BOUND_INACTIVE)
    assert set(kernel) - set(ours) <= {"BOUND_INACTIVE"}


def test_tcp_states_are_defined_only_in_the_events_header():
    names = "|".join(TCP_STATES.values())
    define = re.compile(rf"^#define\s+MBREC_TCP_({names})\s", re.M)
    for f in BPF.iterdir():
        if f.name.endswith((".c", ".h")) and f.name != "mbrec_events.h":
            assert not define.search(f.read_text()), f"{f.name} defines a TCP state again"
    assert all(CONSTANTS[f"MBREC_TCP_{n}"] == v for v, n in TCP_STATES.items())


def test_bpf_syscall_numbers_are_the_headers():
    for machine, path in UNISTD.items():
        nr = re.search(r"^#define\s+__NR_bpf\s+(\d+)", open(path).read(), re.M)
        assert nr, f"{path} has no __NR_bpf"
        assert bpfsyscall.SYS_BPF_BY_MACHINE[machine] == int(nr.group(1)), machine
    cmds = c_enum(open(LINUX_BPF_H).read(), "bpf_cmd")
    assert bpfsyscall.BPF_PROG_TEST_RUN == cmds["BPF_PROG_TEST_RUN"]
    assert bpfsyscall.BPF_OBJ_GET_INFO_BY_FD == cmds["BPF_OBJ_GET_INFO_BY_FD"]
    assert bpfsyscall.BPF_ENABLE_STATS == cmds["BPF_ENABLE_STATS"]
    assert bpfsyscall.BPF_PROG_LOAD == cmds["BPF_PROG_LOAD"]
    assert bpfsyscall.BPF_RAW_TRACEPOINT_OPEN == cmds["BPF_RAW_TRACEPOINT_OPEN"]
    assert bpfsyscall.BPF_PROG_TYPE_TRACING == c_enum(open(LINUX_BPF_H).read(),
                                                      "bpf_prog_type")["BPF_PROG_TYPE_TRACING"]
    assert bpfsyscall.BPF_TRACE_RAW_TP == c_enum(open(LINUX_BPF_H).read(),
                                                 "bpf_attach_type")["BPF_TRACE_RAW_TP"]
    stats = c_enum(open(LINUX_BPF_H).read(), "bpf_stats_type")
    assert bpfsyscall.BPF_STATS_RUN_TIME == stats["BPF_STATS_RUN_TIME"]


def test_the_offsetof_block_reads_the_fields_btf_resolves():
    """Without BTF the program derives MBREC_OFF_* with offsetof: the same struct and member
    path as btf.FIELDS, or the two builds would read different fields."""
    text = BPF.joinpath("mbrec.bpf.c").read_text()
    block = dict((name, (struct, path.replace(" ", ""))) for name, struct, path in re.findall(
        r"^#define\s+MBREC_OFF_(\w+)\s+__builtin_offsetof\(struct\s+(\w+),\s*([\w.\s]+)\)",
        text, re.M))
    assert block == btf.FIELDS


def test_every_ring_of_the_program_is_in_the_one_list():
    declared = set()
    for f in BPF.iterdir():
        if f.name.endswith((".c", ".h")):
            declared |= set(re.findall(r"BPF_RINGBUF_OUTPUT\((\w+),", f.read_text()))
    assert declared == set(program.RINGS)
    assert set(FLOW_RINGS) <= set(program.RINGS) and "mbrec_pkt_ring" not in FLOW_RINGS


def test_the_flow_programs_kernel_constants_are_the_kernels():
    """The few kernel constants the flow hooks define themselves (the headers that hold them are
    not compiled): sock flags and MSG_PEEK from the kernel tree, congestion states from uapi."""
    tree = sorted(glob.glob(KERNEL_TCP_STATES))
    assert tree, f"no {KERNEL_TCP_STATES}: install linux-headers-amd64 (make setup)"
    include = tree[-1].rsplit("/net/", 1)[0]
    no_cpp = lambda text: re.sub(r"^\s*#.*$", "", text, flags=re.M)  # noqa: E731
    text = "".join(BPF.joinpath(f).read_text() for f in ("flows.bpf.c", "flows_function_hooks.bpf.c",
                                                         "flows_tracepoint_hooks.bpf.c"))
    ours = {k: int(v, 0) for k, v in re.findall(r"^#define\s+(MBREC_\w+)\s+(\d+|0x[0-9a-f]+)\b",
                                                text, re.M)}
    sock_flags = c_enum(no_cpp(open(f"{include}/net/sock.h").read()), "sock_flags")
    assert ours["MBREC_SOCK_DEAD"] == sock_flags["SOCK_DEAD"]
    peek = re.search(r"#define\s+MSG_PEEK\s+(\d+)", open(f"{include}/linux/socket.h").read())
    assert ours["MBREC_MSG_PEEK"] == int(peek.group(1))
    ca = c_enum(no_cpp(open("/usr/include/linux/tcp.h").read()), "tcp_ca_state")
    assert ours["MBREC_TCP_CA_RECOVERY"] == ca["TCP_CA_Recovery"]
    assert ours["MBREC_TCP_CA_LOSS"] == ca["TCP_CA_Loss"]


def test_every_field_the_flow_programs_read_is_in_one_table():
    """Each MBREC_OFF_* the flow programs read comes from btf.py's tables (read directly, or
    through TPR/TPT/SNAP/SNAP_AT, which paste TP_), and each flow table entry is read somewhere."""
    text = "".join(BPF.joinpath(f).read_text() for f in ("flows.bpf.c", "flows_function_hooks.bpf.c",
                                                         "flows_tracepoint_hooks.bpf.c"))
    used = {n for n in re.findall(r"MBREC_(?:OFF|MASK)_(\w+)", text) if not n.endswith("_")}
    used |= {"TP_" + n for n in re.findall(r"\b(?:TPR|TPT|SNAP)\([^;]*?,\s*(\w+)\);", text)
             if n.isupper()}  # not the macros' own parameter (f)
    used |= {"TP_" + n for n in re.findall(r"\bSNAP_AT\([^,;]*,\s*(\w+),", text) if n.isupper()}
    tables = set(btf.FIELDS) | set(btf.FLOW_FIELDS) | set(btf.FLOW_BITS)
    assert used <= tables, used - tables
    assert set(btf.FLOW_FIELDS) | set(btf.FLOW_BITS) <= used
