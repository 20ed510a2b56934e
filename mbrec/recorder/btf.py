"""Kernel struct field offsets from the running kernel's BTF (/sys/kernel/btf/vmlinux).

The packet probes read about thirty fields of sk_buff, sock, net_device and a few others (FIELDS),
the flow programs some forty more of tcp_sock and its relatives (FLOW_FIELDS, FLOW_BITS).
Giving BCC those offsets as -D constants, instead of including <linux/skbuff.h> and
<net/sock.h>, cuts the compile from ~9-15 s to ~1.5 s natively and from minutes to well under
one under the lab's emulated CPU; the offsets are the running kernel's own, so they are exact.
Where a kernel has no BTF the packet probes include the headers instead (MBREC_KERNEL_HEADERS);
the flow programs need BTF.

Format: https://docs.kernel.org/bpf/btf.html (header, type section, string section).
"""

from __future__ import annotations

import struct
import sys

BTF_PATH = "/sys/kernel/btf/vmlinux"
BTF_MAGIC = 0xEB9F

KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION = 1, 2, 3, 4, 5
KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG = 8, 9, 10, 11, 18
KIND_FUNC, KIND_FUNC_PROTO = 12, 13
_MODIFIERS = {KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG}
# Bytes that follow the 12-byte common part, by kind: fixed, or per vlen entry.
_EXTRA_FIXED = {1: 4, 3: 12, 14: 4, 17: 4}
_EXTRA_PER_VLEN = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}

# -D name -> (struct, member path). A path step may be inside an anonymous struct/union.
FIELDS = {
    "SKB_HEAD": ("sk_buff", "head"),
    "SKB_DATA": ("sk_buff", "data"),
    "SKB_LEN": ("sk_buff", "len"),
    "SKB_END": ("sk_buff", "end"),
    "SKB_NETWORK_HEADER": ("sk_buff", "network_header"),
    "SKB_TRANSPORT_HEADER": ("sk_buff", "transport_header"),
    "SKB_PROTOCOL": ("sk_buff", "protocol"),
    "SKB_SK": ("sk_buff", "sk"),
    "SKB_DEV": ("sk_buff", "dev"),
    "SKB_IIF": ("sk_buff", "skb_iif"),
    "SKB_CB": ("sk_buff", "cb"),
    "SKB_LIST": ("sk_buff", "list"),
    "SK_NET": ("sock", "__sk_common.skc_net"),
    "SK_STATE": ("sock", "__sk_common.skc_state"),
    "SK_FAMILY": ("sock", "__sk_common.skc_family"),
    "SK_DPORT": ("sock", "__sk_common.skc_dport"),
    "SK_NUM": ("sock", "__sk_common.skc_num"),
    "SK_DADDR": ("sock", "__sk_common.skc_daddr"),
    "SK_RCV_SADDR": ("sock", "__sk_common.skc_rcv_saddr"),
    "SK_V6_DADDR": ("sock", "__sk_common.skc_v6_daddr"),
    "SK_V6_RCV_SADDR": ("sock", "__sk_common.skc_v6_rcv_saddr"),
    "SK_COOKIE": ("sock", "__sk_common.skc_cookie"),
    "SK_PROTOCOL": ("sock", "sk_protocol"),
    "SK_TYPE": ("sock", "sk_type"),
    "SK_CGRP": ("sock", "sk_cgrp_data"),
    "DEV_NET": ("net_device", "nd_net"),
    "DEV_IFINDEX": ("net_device", "ifindex"),
    "NET_INUM": ("net", "ns.inum"),
    "SHINFO_GSO_SEGS": ("skb_shared_info", "gso_segs"),
    "CGROUP_KN": ("cgroup", "kn"),
    "KN_ID": ("kernfs_node", "id"),
    "TCB_SEQ": ("tcp_skb_cb", "seq"),
    "TCB_END_SEQ": ("tcp_skb_cb", "end_seq"),
    "TCB_TCP_FLAGS": ("tcp_skb_cb", "tcp_flags"),
    "TP_COPIED_SEQ": ("tcp_sock", "copied_seq"),
}


# The flow programs (bpf/flows.bpf.c and its two hook sets) read these too, at MBREC_OFF_<name>:
# the one list for every attach kind, so no flow program compiles a kernel header either.
FLOW_FIELDS = {
    "TCB_TCP_GSO_SEGS": ("tcp_skb_cb", "tcp_gso_segs"),
    "ICSK_BACKOFF": ("inet_connection_sock", "icsk_backoff"),
    "SK_FLAGS": ("sock", "__sk_common.skc_flags"),  # sk_flags
    "REQ_NUM_RETRANS": ("request_sock", "num_retrans"),
    # read by the function hooks only (not in a snapshot: outside the span, TP_SPAN_FIELDS)
    "TCP_FASTOPEN_RSK": ("tcp_sock", "fastopen_rsk"),
    "TCP_MSTAMP": ("tcp_sock", "tcp_mstamp"),
    "TCP_RCV_TSECR": ("tcp_sock", "rx_opt.rcv_tsecr"),
    **{f"TP_{f.upper()}": ("tcp_sock", f) for f in (
        "bytes_sent", "bytes_acked", "bytes_received", "bytes_retrans", "snd_cwnd",
        "snd_ssthresh", "snd_wnd", "rcv_wnd", "mss_cache", "advmss", "packets_out",
        "sacked_out", "lost_out", "retrans_out", "total_retrans", "srtt_us", "mdev_us",
        "rtt_min", "snd_una", "snd_nxt", "write_seq", "rcv_nxt", "rate_delivered",
        "rate_interval_us")},
}
# One-bit fields: MBREC_OFF_<name> is the byte that holds the bit, MBREC_MASK_<name> the bit.
FLOW_BITS = {
    "TCP_SAW_TSTAMP": ("tcp_sock", "rx_opt.saw_tstamp"),
}


class BtfError(Exception):
    pass


class Btf:
    """The structs and unions of one BTF blob, enough to resolve member offsets."""

    def __init__(self, blob: bytes):
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", blob, 0)
        if magic != BTF_MAGIC:
            raise BtfError("not BTF (bad magic)")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", blob, 8)
        self._strings = blob[hdr_len + str_off: hdr_len + str_off + str_len]
        self._blob = blob
        # type id -> (kind, name_off, info, size_or_type, offset of the extra data)
        self.types: list[tuple] = [(0, 0, 0, 0, 0)]  # id 0 is void
        self.by_name: dict[str, list[int]] = {}
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        unpack = struct.Struct("<III").unpack_from
        while pos < end:
            name_off, info, size_type = unpack(blob, pos)
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            extra = pos + 12
            self.types.append((kind, name_off, info, size_type, extra))
            if kind in (KIND_STRUCT, KIND_UNION, KIND_FUNC, KIND_TYPEDEF) and name_off:
                self.by_name.setdefault(self.name(name_off), []).append(len(self.types) - 1)
            pos = extra + _EXTRA_FIXED.get(kind, 0) + _EXTRA_PER_VLEN.get(kind, 0) * vlen

    def name(self, off: int) -> str:
        end = self._strings.index(b"\0", off)
        return self._strings[off:end].decode()

    def resolve(self, tid: int) -> int:
        """Skip typedefs and qualifiers."""
        while self.types[tid][0] in _MODIFIERS:
            tid = self.types[tid][3]
        return tid

    def members(self, tid: int):
        """(name, type id, bit offset, bitfield size) of a struct or union."""
        kind, _, info, _, extra = self.types[tid]
        if kind not in (KIND_STRUCT, KIND_UNION):
            raise BtfError(f"type {tid} is not a struct or union")
        kflag = info >> 31
        for i in range(info & 0xFFFF):
            name_off, mtype, off = struct.unpack_from("<III", self._blob, extra + 12 * i)
            bits, size = (off & 0xFFFFFF, off >> 24) if kflag else (off, 0)
            yield (self.name(name_off) if name_off else ""), mtype, bits, size

    def find_member(self, tid: int, name: str):
        """(bit offset, type id, bitfield size) of member name, looking into anonymous members."""
        for mname, mtype, bits, size in self.members(tid):
            if mname == name:
                return bits, mtype, size
            if not mname:
                inner = self.resolve(mtype)
                if self.types[inner][0] in (KIND_STRUCT, KIND_UNION):
                    found = self.find_member(inner, name)
                    if found:
                        return bits + found[0], found[1], found[2]
        return None

    def params(self, function: str) -> int:
        """The number of parameters of a kernel function (an fexit program lists them all
        before the return value, so its prototype depends on the kernel)."""
        for tid in self.by_name.get(function, ()):
            kind, _, _, proto, _ = self.types[tid]
            if kind == KIND_FUNC and self.types[proto][0] == KIND_FUNC_PROTO:
                return self.types[proto][2] & 0xFFFF
        raise BtfError(f"function {function} is not in the kernel's BTF")

    def tracepoint_id(self, tracepoint: str) -> int:
        """The type a BTF-typed tracepoint program (tp_btf) is loaded against: the kernel's
        typedef btf_trace_<tracepoint>, whose prototype types the program's arguments."""
        for tid in self.by_name.get(f"btf_trace_{tracepoint}", ()):
            if self.types[tid][0] == KIND_TYPEDEF:
                return tid
        raise BtfError(f"tracepoint {tracepoint} is not in the kernel's BTF")

    def struct_id(self, name: str) -> int:
        for tid in self.by_name.get(name, ()):
            if self.types[tid][0] == KIND_STRUCT and self.types[tid][2] & 0xFFFF:
                return tid
        raise BtfError(f"struct {name} is not in the kernel's BTF")

    def _walk(self, struct_name: str, path: str) -> tuple[int, int]:
        """(bit offset, bitfield size or 0) of a (dotted) member path in a struct."""
        tid = self.struct_id(struct_name)
        total, size = 0, 0
        for step in path.split("."):
            if size:
                raise BtfError(f"struct {struct_name} has no member {path}")
            found = self.find_member(tid, step)
            if found is None:
                raise BtfError(f"struct {struct_name} has no member {path}")
            bits, mtype, size = found
            total += bits
            tid = self.resolve(mtype)
        return total, size

    def offset(self, struct_name: str, path: str) -> int:
        """Byte offset of a (dotted) member path in a struct."""
        bits, size = self._walk(struct_name, path)
        if size or bits % 8:
            raise BtfError(f"{struct_name}.{path} is a bitfield")
        return bits // 8

    def bit(self, struct_name: str, path: str) -> tuple[int, int]:
        """(byte offset, mask) of a one-bit field, as this machine's byte order lays it out:
        BTF counts a bitfield's offset from the least significant bit on little-endian
        machines and from the most significant one on big-endian ones."""
        bits, size = self._walk(struct_name, path)
        if size != 1:
            raise BtfError(f"{struct_name}.{path} is not a one-bit field")
        shift = bits % 8 if sys.byteorder == "little" else 7 - bits % 8
        return bits // 8, 1 << shift


def field_offsets(btf: Btf, fields: dict = FIELDS) -> dict[str, int]:
    return {name: btf.offset(s, path) for name, (s, path) in fields.items()}


def read_offsets(path: str = BTF_PATH, fields: dict = FIELDS) -> dict[str, int] | None:
    """The offsets for this kernel, or None where it has no BTF (then headers are used)."""
    btf = read_btf(path)
    return None if btf is None else field_offsets(btf, fields)


def field_span(offsets: dict[str, int], prefix: str) -> tuple[int, int]:
    """(offset, length) of the part of a struct holding every field named prefix*, which the
    tracepoint programs copy in one read: from the first field to 8 bytes past the last (no
    such field is wider), a multiple of 8."""
    offs = [v for k, v in offsets.items() if k.startswith(prefix)]
    start = min(offs)
    return start, -(-(max(offs) + 8 - start) // 8) * 8


def offset_cflags(offsets: dict[str, int] | None) -> list[str]:
    if offsets is None:
        return ["-DMBREC_KERNEL_HEADERS"]
    return [f"-DMBREC_OFF_{k}={v}" for k, v in sorted(offsets.items())]


def bit_cflags(btf: Btf, bits: dict = FLOW_BITS) -> list[str]:
    out = []
    for name, (s, path) in sorted(bits.items()):
        off, mask = btf.bit(s, path)
        out += [f"-DMBREC_OFF_{name}={off}", f"-DMBREC_MASK_{name}={mask:#x}"]
    return out


def read_btf(path: str = BTF_PATH) -> Btf | None:
    """This kernel's BTF, or None where it has none."""
    try:
        with open(path, "rb") as f:
            return Btf(f.read())
    except OSError:
        return None
