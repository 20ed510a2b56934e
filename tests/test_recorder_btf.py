"""Kernel struct offsets from BTF: a hand-made BTF blob (anonymous unions, typedefs, nested
paths, bitfields) and, where this machine has one, the running kernel's own BTF."""

import os
import struct
import sys

import pytest

from mbrec.recorder import btf


def make_btf(types: list[bytes], strings: list[str]) -> tuple[bytes, dict]:
    """A BTF blob from encoded type records; returns it and the string offsets."""
    strtab, offs = b"\0", {}
    for s in strings:
        offs[s] = len(strtab)
        strtab += s.encode() + b"\0"
    type_sec = b"".join(types)
    hdr = struct.pack("<HBBIIIII", btf.BTF_MAGIC, 1, 0, 24, 0, len(type_sec), len(type_sec),
                      len(strtab))
    return hdr + type_sec + strtab, offs


def t(name_off, kind, vlen, size_type, kflag=0):
    return struct.pack("<III", name_off, (kflag << 31) | (kind << 24) | vlen, size_type)


def member(name_off, type_id, bit_offset):
    return struct.pack("<III", name_off, type_id, bit_offset)


def sample():
    names = ["int", "inner", "a", "b", "outer", "x", "nest", "y", "pnet", "net", "bits", "flag", "one"]
    _, o = make_btf([], names)
    types = [
        t(o["int"], btf.KIND_INT, 0, 4) + struct.pack("<I", 32),                 # 1 int
        t(o["inner"], btf.KIND_STRUCT, 2, 8) + member(o["a"], 1, 0) + member(o["b"], 1, 32),
        t(0, btf.KIND_UNION, 2, 8) + member(o["x"], 1, 0) + member(0, 2, 0),      # 3 anon union
        t(o["pnet"], btf.KIND_TYPEDEF, 0, 2),                                     # 4 typedef
        t(o["outer"], btf.KIND_STRUCT, 3, 40) + member(o["y"], 1, 0) + member(0, 3, 64)
        + member(o["nest"], 4, 128),                                              # 5 outer
        t(o["bits"], btf.KIND_STRUCT, 2, 4, kflag=1) + member(o["flag"], 1, (3 << 24) | 5)
        + member(o["one"], 1, (1 << 24) | 13),
    ]
    blob, _ = make_btf(types, names)
    return btf.Btf(blob)


def test_members_through_anonymous_unions_and_typedefs():
    b = sample()
    assert b.offset("outer", "y") == 0
    assert b.offset("outer", "x") == 8          # in the anonymous union at byte 8
    assert b.offset("outer", "b") == 12         # anonymous union -> anonymous struct inner.b
    assert b.offset("outer", "nest.b") == 16 + 4  # typedef resolved, then a dotted path


def test_missing_members_and_bitfields_are_errors():
    b = sample()
    with pytest.raises(btf.BtfError):
        b.offset("outer", "nope")
    with pytest.raises(btf.BtfError):
        b.offset("nostruct", "a")
    with pytest.raises(btf.BtfError):
        b.offset("bits", "flag")


def test_one_bit_fields_are_a_byte_and_a_mask():
    b = sample()
    # bit 13 of the struct: byte 1, its bit 5 counted from the least significant on
    # little-endian machines (from the most significant on big-endian ones)
    assert b.bit("bits", "one") == (1, 1 << 5 if sys.byteorder == "little" else 1 << 2)
    with pytest.raises(btf.BtfError):
        b.bit("bits", "flag")   # three bits
    with pytest.raises(btf.BtfError):
        b.bit("outer", "y")     # not a bitfield
    assert btf.bit_cflags(b, {"ONE": ("bits", "one")}) == [
        "-DMBREC_OFF_ONE=1", f"-DMBREC_MASK_ONE={b.bit('bits', 'one')[1]:#x}"]


def test_offset_cflags():
    assert btf.offset_cflags(None) == ["-DMBREC_KERNEL_HEADERS"]
    assert btf.offset_cflags({"SKB_LEN": 112}) == ["-DMBREC_OFF_SKB_LEN=112"]


@pytest.mark.skipif(not os.access(btf.BTF_PATH, os.R_OK), reason="no readable kernel BTF here")
def test_every_field_resolves_on_this_kernel():
    offs = btf.read_offsets()
    assert set(offs) == set(btf.FIELDS)
    assert offs["SKB_LIST"] == 0 and offs["TCB_SEQ"] == 0 and offs["TCB_END_SEQ"] == 4
    assert offs["SK_DADDR"] + 4 == offs["SK_RCV_SADDR"]  # skc_addrpair
    assert offs["SK_DPORT"] + 2 == offs["SK_NUM"]        # skc_portpair


@pytest.mark.skipif(not os.access(btf.BTF_PATH, os.R_OK), reason="no readable kernel BTF here")
def test_every_flow_field_resolves_on_this_kernel():
    offs = btf.read_offsets(fields=btf.FLOW_FIELDS)
    assert set(offs) == set(btf.FLOW_FIELDS)
    b = btf.read_btf()
    assert b is not None
    # saw_tstamp is the first bit after rcv_tsecr (struct tcp_options_received)
    assert b.bit("tcp_sock", "rx_opt.saw_tstamp")[0] == offs["TCP_RCV_TSECR"] + 4
    assert offs["TCB_TCP_GSO_SEGS"] == 8  # after seq and end_seq
    assert all(offs[f"TP_{f}"] > offs["ICSK_BACKOFF"] for f in ("SND_CWND", "BYTES_SENT"))


def test_a_functions_parameter_count_is_its_prototypes():
    _, o = make_btf([], ["int", "f", "g", "a", "b"])
    types = [
        t(o["int"], btf.KIND_INT, 0, 4) + struct.pack("<I", 32),                        # 1 int
        t(0, btf.KIND_FUNC_PROTO, 2, 1) + struct.pack("<II", o["a"], 1)
        + struct.pack("<II", o["b"], 1),                                                # 2 (a, b)
        t(o["f"], btf.KIND_FUNC, 0, 2),                                                 # 3 f
    ]
    blob, _ = make_btf(types, ["int", "f", "g", "a", "b"])
    b = btf.Btf(blob)
    assert b.params("f") == 2
    with pytest.raises(btf.BtfError, match="function g"):
        b.params("g")


@pytest.mark.skipif(not os.access(btf.BTF_PATH, os.R_OK), reason="no readable kernel BTF here")
def test_parameter_counts_agree_with_bpftool_on_this_kernel():
    import re
    import shutil
    import subprocess
    if shutil.which("bpftool") is None:
        pytest.skip("bpftool is not installed")
    dump = subprocess.run(["bpftool", "btf", "dump", "file", btf.BTF_PATH, "format", "raw"],
                          capture_output=True, text=True, check=True).stdout
    b = btf.read_btf()
    for function in ("tcp_recvmsg", "tcp_sendmsg_locked", "tcp_ack"):
        proto = re.search(rf"^\[\d+\] FUNC '{function}' type_id=(\d+)", dump, re.M).group(1)
        vlen = re.search(rf"^\[{proto}\] FUNC_PROTO '\(anon\)' ret_type_id=\d+ vlen=(\d+)", dump,
                         re.M).group(1)
        assert b.params(function) == int(vlen), function
