"""BTF-typed tracepoint programs (tp_btf): a tracepoint's arguments typed by the kernel's BTF,
so the program reads kernel struct fields with plain loads, which the verifier checks against
BTF, instead of one bpf_probe_read_kernel() call per read as a raw tracepoint program must.

Measured on this project's development kernel (bench/tracepoint_kinds.py): four field reads on
net:net_dev_start_xmit take a run from 65-69 ns as loads (about 60 of them the timing's own) to
169-188 ns through the helper. Kernels that refuse fentry may still load these (they attach
like raw tracepoints, without a trampoline): ours does, and Debian's 6.1 to 7.2 do.

BCC (0.26) loads tracing programs only by a name prefix that fixes their attach type (kfunc__,
kretfunc__, lsm__, bpf_iter__), none of them this one, so a program is compiled by BCC and its
instructions (maps already resolved) loaded here with the bpf(2) system call.
"""

from __future__ import annotations

import ctypes
import os
import struct

from mbrec.recorder.bpfsyscall import (BPF_PROG_LOAD, BPF_PROG_TYPE_TRACING,
                                       BPF_RAW_TRACEPOINT_OPEN, BPF_TRACE_RAW_TP, SYS_BPF)
from mbrec.recorder.btf import Btf

LOG_BYTES = 1 << 20  # the verifier's log, returned when a program is refused
ATTR_BYTES = 160     # union bpf_attr as the kernel accepts it (unused bytes zero)
# union bpf_attr for BPF_PROG_LOAD, up to attach_btf_id: prog_type, insn_cnt, insns, license,
# log_level, log_size, log_buf, kern_version, prog_flags, prog_name, prog_ifindex,
# expected_attach_type, prog_btf_fd, func_info_rec_size, func_info, func_info_cnt,
# line_info_rec_size, line_info, line_info_cnt, attach_btf_id
_PROG_LOAD = struct.Struct("<IIQQIIQII16sIIIIQIIQII")
_RAW_TRACEPOINT_OPEN = struct.Struct("<QI")  # name (NULL: the program's BTF type), prog_fd


class TpBtfError(Exception):
    """The kernel refused the program (with the verifier's last words) or its attachment."""


def kernel_name(function: str) -> bytes:
    """The name the kernel keeps for a program: 15 characters, so without the prefix every mbrec
    program shares (mbrec_flow_tp_tcp_recvmsg and _sendmsg would both be mbrec_flow_tp_t), as
    `bpftool prog` and the BPF statistics show them."""
    return function.removeprefix("mbrec_").encode()[:15]


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def load(bpf, function: str, tracepoint: str, btf: Btf) -> int:
    """Load BCC-compiled `function` of `bpf` (a bcc.BPF) as a tp_btf program on `tracepoint`
    (e.g. "net_dev_start_xmit"); its file descriptor."""
    from mbrec.recorder.environment import import_bcc
    lib = import_bcc().lib
    name = function.encode()
    start, size = lib.bpf_function_start(bpf.module, name), lib.bpf_function_size(bpf.module, name)
    if not start:
        raise TpBtfError(f"{function} is not a function of the compiled program")
    insns = ctypes.create_string_buffer(ctypes.string_at(start, size), size)
    license_ = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(LOG_BYTES)
    attr = ctypes.create_string_buffer(_PROG_LOAD.pack(
        BPF_PROG_TYPE_TRACING, size // 8, ctypes.addressof(insns), ctypes.addressof(license_),
        1, LOG_BYTES, ctypes.addressof(log), 0, 0, kernel_name(function), 0, BPF_TRACE_RAW_TP, 0, 0, 0, 0, 0,
        0, 0, btf.tracepoint_id(tracepoint)), ATTR_BYTES)
    fd = _libc().syscall(SYS_BPF, BPF_PROG_LOAD, attr, ATTR_BYTES)
    if fd < 0:
        err = os.strerror(ctypes.get_errno())
        last = log.value.decode(errors="replace").strip().splitlines()[-3:]
        raise TpBtfError(f"the kernel refused {function} as a tp_btf program on {tracepoint} "
                         f"({err}): {' / '.join(last)}")
    return fd


def attach(prog_fd: int) -> int:
    """Attach a loaded tp_btf program to its tracepoint; the link's file descriptor (closing it,
    or exiting, detaches)."""
    attr = ctypes.create_string_buffer(_RAW_TRACEPOINT_OPEN.pack(0, prog_fd), 16)
    fd = _libc().syscall(SYS_BPF, BPF_RAW_TRACEPOINT_OPEN, attr, 16)
    if fd < 0:
        raise TpBtfError(f"cannot attach tp_btf program {prog_fd}: "
                         f"{os.strerror(ctypes.get_errno())}")
    return fd


def attach_program(bcc, b, tp: str, bpf_fn: str, btf: Btf) -> None:
    """Load bpf_fn of b (a bcc.BPF) against tracepoint tp's BTF type and attach it. Both
    descriptors go where BCC keeps its own (a program per tracepoint: one BTF type each), so
    b.cleanup() detaches and closes them with the rest, and the program's counters are watched
    as the others' are (session.Recorder.watch_programs)."""
    key = f"{bpf_fn}@{tp}".encode()
    fd = load(b, bpf_fn, tp, btf)
    b.funcs[key] = bcc.BPF.Function(b, key, fd)
    b.raw_tracepoint_fds[tp.encode()] = attach(fd)
