"""`mbrec replay --format microbpf`: MicroBPF's line layouts, with values from matched packets."""

import subprocess
import sys

import numpy as np
import pytest

from mbrec.events import CONSTANTS, FLOW, PKT, PROBE_IDS, SOCK
from mbrec.testing.synthetic import ipv4, write_trace
from mbrec.trace.reader import read_trace

ACK, PSH = CONSTANTS["MBREC_TCP_ACK"], CONSTANTS["MBREC_TCP_PSH"]
CLIENT, SERVER = ("10.0.0.1", 40000), ("10.0.0.2", 80)


def pkt(ts, probe, src, dst, seq, end, ack, cookie=9):
    r = np.zeros(1, PKT)
    r["ts_ns"], r["probe"] = ts, PROBE_IDS[probe]
    r["saddr"], r["sport"] = ipv4(src[0]), src[1]
    r["daddr"], r["dport"] = ipv4(dst[0]), dst[1]
    r["seq"], r["end_seq"], r["ack"], r["len"] = seq, end, ack, end - seq
    r["tcp_flags"], r["family"], r["gso_segs"], r["sock_cookie"] = ACK | PSH, 2, 1, cookie
    return r


def client_trace(path):
    """A request sent through the four send layers, the response received through the four
    receive layers and read, then the next request: every latency known to the microsecond."""
    send = ("tcp_transmit_skb", "ip_queue_xmit", "dev_queue_xmit", "dev_hard_start_xmit")
    recv = ("eth_type_trans", "ip_rcv", "tcp_v4_rcv")
    recs = [pkt(t, p, CLIENT, SERVER, 1000, 1100, 5000)
            for t, p in zip((100_000, 103_000, 110_000, 125_000), send)]
    recs += [pkt(t, p, SERVER, CLIENT, 5000, 5500, 1100, cookie=0)
             for t, p in zip((200_000, 202_000, 206_000), recv)]
    recs += [pkt(230_000, "skb_copy_datagram_iter", SERVER, CLIENT, 5000, 5500, 1100)]
    recs += [pkt(t, p, CLIENT, SERVER, 1100, 1200, 5500)
             for t, p in zip((300_000, 301_000, 302_000, 303_000), send)]
    read = np.zeros(1, SOCK)
    read["ts_ns"], read["kind"], read["seq_start"], read["seq_end"] = 231_000, 2, 5000, 5500
    read["bytes"] = read["requested"] = 500
    read["saddr"], read["sport"], read["daddr"], read["dport"] = (ipv4(CLIENT[0]), CLIENT[1],
                                                                  ipv4(SERVER[0]), SERVER[1])
    read["family"], read["sock_cookie"] = 2, 9
    flow = np.zeros(1, FLOW)
    flow["ts_ns"], flow["reason"], flow["state"] = 207_000, CONSTANTS["MBREC_FLOW_ACK"], 1
    flow["saddr"], flow["sport"], flow["daddr"], flow["dport"] = (ipv4(CLIENT[0]), CLIENT[1],
                                                                  ipv4(SERVER[0]), SERVER[1])
    flow["family"], flow["rcv_nxt"], flow["snd_una"] = 2, 5500, 1100
    flow["srtt_us"], flow["snd_cwnd"], flow["sock_cookie"] = 95, 10, 9
    return write_trace(path, {"pkt": np.concatenate(recs), "sock": read, "flow": flow},
                       host="client")


@pytest.fixture
def lines(tmp_path):
    path = client_trace(str(tmp_path / "client.mbrec"))
    out = subprocess.run([sys.executable, "-m", "mbrec", "replay", "--format", "microbpf", path],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    anchor = read_trace(path).clocks[0]
    return [line.split() for line in out], anchor["realtime_ns"] - anchor["monotonic_ns"]


def by_label(lines, label):
    return [t for t in lines if t[0] == label]


def test_label_1_tcpout(lines):
    tokens, offset = lines
    first, second = by_label(tokens, "1")
    assert len(first) == 13 and first[2] == first[4] == "->"
    assert first[1] == "10.0.0.1:40000" and first[5] == "10.0.0.2:80"
    assert first[6:8] == ["1000", "5000"]
    assert float(first[8]) == pytest.approx((125_000 + offset) / 1e9, abs=1e-6)
    assert first[9:] == ["25", "15", "7", "3"]  # total, qdisc, ip, tcp in us
    assert second[6:8] == ["1100", "5500"]


def test_label_2_tcpin(lines):
    tokens, offset = lines
    (line,) = by_label(tokens, "2")
    assert len(line) == 11
    assert line[1] == "10.0.0.2:80" and line[3] == "10.0.0.1:40000"
    assert line[4:6] == ["5000", "1100"]
    assert float(line[6]) == pytest.approx((200_000 + offset) / 1e9, abs=1e-6)
    assert line[7:] == ["30", "2", "4", "24"]  # total, mac, ip, tcp in us


def test_label_3_tcpack(lines):
    tokens, _ = lines
    (line,) = by_label(tokens, "3")
    assert len(line) == 10
    assert line[1] == "10.0.0.2:80" and line[3] == "10.0.0.1:40000"
    assert line[4:] == ["5500", "1100", "95", "10", "ESTABLISHED", "(ACK)"]


def test_label_5_app(lines):
    tokens, _ = lines
    (line,) = by_label(tokens, "5")
    assert len(line) == 7
    # the response's tuple as app.py keyed it: its end seq, its ack; L_APP_1 read -> next send
    assert line[1] == "10.0.0.2:80" and line[3] == "10.0.0.1:40000"
    assert line[4:] == ["5500", "1100", "70"]


def test_lines_come_in_time_order(lines):
    tokens, _ = lines
    assert [t[0] for t in tokens] == ["1", "2", "3", "5", "1"]
