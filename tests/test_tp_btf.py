"""BTF-typed tracepoint programs (mbrec/recorder/tp_btf.py) on this machine's own kernel: a
program compiled by BCC, loaded with bpf(2) against net:net_dev_start_xmit's BTF type, reads
kernel fields with plain loads, and what it reads is the kernel's truth (this process's network
namespace, the datagram's length). A load the verifier cannot type is refused, with its words.

Marked `native`; skipped with the reason where the machine cannot run it (not root, no BCC, no
BTF).
"""

import ctypes
import os
import socket

import pytest

pytestmark = pytest.mark.native

PAYLOAD = 100
WANT_LEN = PAYLOAD + 8 + 20 + 14  # UDP, IPv4, Ethernet: skb->len on loopback's transmit

SOURCE = r"""
struct seen { u64 runs; u32 inum; u32 len; };
BPF_ARRAY(seen, struct seen, 1);

int btf_xmit(u64 *ctx)
{
	u64 skb = ctx[0];
	u64 dev = *(u64 *)(skb + OFF_SKB_DEV);
	u64 net = *(u64 *)(dev + OFF_DEV_NET);
	u32 inum = *(u32 *)(net + OFF_NET_INUM), len = *(u32 *)(skb + OFF_SKB_LEN), zero = 0;
	struct seen *s = seen.lookup(&zero);
	if (s) {
		s->runs += 1;
		if (len == WANT_LEN) {
			s->inum = inum;
			s->len = len;
		}
	}
	return 0;
}

int beyond_the_struct(u64 *ctx)
{
	u64 skb = ctx[0];
	return *(u32 *)(skb + 1000000);
}
"""


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "loading BPF programs needs root"
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return "this kernel has no BTF (/sys/kernel/btf/vmlinux)"
    from mbrec.errors import MbrecError
    from mbrec.recorder.environment import import_bcc
    try:
        import_bcc()
    except MbrecError as e:
        return str(e)
    return None


if skip_reason():
    pytestmark = [pytest.mark.native, pytest.mark.skip(reason=skip_reason())]


@pytest.fixture(scope="module")
def program():
    from mbrec.recorder.btf import field_offsets, read_btf
    from mbrec.recorder.environment import check_headers, import_bcc
    check_headers()
    btf = read_btf()
    offsets = field_offsets(btf)
    cflags = [f"-DOFF_{k}={offsets[k]}" for k in ("SKB_DEV", "DEV_NET", "NET_INUM", "SKB_LEN")]
    return import_bcc().BPF(text=SOURCE.encode(), cflags=cflags + [f"-DWANT_LEN={WANT_LEN}"]), btf


def test_plain_loads_read_the_kernels_fields(program):
    from mbrec.recorder import tp_btf
    bpf, btf = program
    fd = tp_btf.load(bpf, "btf_xmit", "net_dev_start_xmit", btf)
    link = tp_btf.attach(fd)
    try:
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(50):
            tx.sendto(b"x" * PAYLOAD, rx.getsockname())
            rx.recv(PAYLOAD)
    finally:
        os.close(link)
    seen = bpf[b"seen"][ctypes.c_int(0)]
    assert seen.runs >= 50
    assert seen.len == WANT_LEN
    assert seen.inum == os.stat("/proc/self/ns/net").st_ino
    os.close(fd)


def test_a_load_the_verifier_cannot_type_is_refused_with_its_words(program):
    from mbrec.recorder import tp_btf
    bpf, btf = program
    with pytest.raises(tp_btf.TpBtfError, match=r"refused beyond_the_struct .*access beyond struct sk_buff"):
        tp_btf.load(bpf, "beyond_the_struct", "net_dev_start_xmit", btf)
    with pytest.raises(Exception, match="not in the kernel's BTF"):
        tp_btf.load(bpf, "btf_xmit", "no_such_tracepoint", btf)


def test_a_refused_typed_program_falls_back_to_raw_tracepoints(tmp_path, monkeypatch, capsys):
    """A kernel that refuses BTF-typed tracepoints (here: one whose refusal is injected into
    tp_btf.load) still records, every packet probe as a raw tracepoint, and says why."""
    import threading
    import time

    from mbrec.recorder import tp_btf
    from mbrec.recorder.session import RecordOptions, record
    from mbrec.trace.reader import read_trace

    def refuse(*args, **kwargs):
        raise tp_btf.TpBtfError("the kernel refused it (Invalid argument): injected")
    monkeypatch.setattr(tp_btf, "load", refuse)
    out = str(tmp_path / "raw.mbrec")

    def traffic():
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        srv = socket.create_server(("127.0.0.1", 0))
        cli = socket.create_connection(srv.getsockname())
        conn, _ = srv.accept()
        for _ in range(200):
            cli.sendall(b"x" * 500)
            conn.recv(1000)
        for s in (cli, conn, srv, rx):
            s.close()
    def traffic_while_recording():  # however long the two compiles take, some of it is seen
        end = time.monotonic() + 6
        while time.monotonic() < end:
            traffic()
            time.sleep(0.2)
    timer = threading.Timer(1.0, traffic_while_recording)
    timer.start()
    record(RecordOptions(output=out, duration=8, attach="tracepoint", quiet=True))
    timer.join()
    assert "BTF-typed tracepoints refused" in capsys.readouterr().err
    trace = read_trace(out)
    kinds = {p["attach"] for p in trace.header["probes"]}
    assert kinds == {"raw_tracepoint"}
    assert "-DMBREC_TP_BTF=1" not in trace.header["options"]["cflags"]
    assert len(trace.events["pkt"]) >= 200
