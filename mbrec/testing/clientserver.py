"""Synthetic client/server traces with known ground truth, for the analyzer's tests and benchmark.

A small simulation of keep-alive request/response exchanges between a client and a server,
emitting the events the recorder would write on each host (pkt and sock records) and, at the
same time, the true value of every latency the analyzer reports. It covers TSO super-segments
(one skb, several wire frames), GRO merges (several frames, one skb), receive-queue coalescing
(copies report the merged range), partial reads (several reads per skb) and coalesced reads (one
read over several skbs), immediate and delayed pure ACKs between the read and the response,
multi-segment requests and responses, multi-write responses, retransmissions after a wire loss,
duplicate arrivals, out-of-order arrival, sequence-number wraparound, connections with and
without a handshake, and missing hooks.

The truth is computed from the simulation's own state (which copy delivered which byte, which
skb carried which frame), not by any matching, so it checks the analyzer independently.
Timestamps are per host; ``server_offset_ns`` shifts the server's clock (differences within a
host do not change).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from mbrec.events import CONSTANTS, FLOW, PKT, PROBE_IDS, SOCK
from mbrec.testing.synthetic import ipv4

ACK = CONSTANTS["MBREC_TCP_ACK"]
FIN = CONSTANTS["MBREC_TCP_FIN"]
PSH = CONSTANTS["MBREC_TCP_PSH"]
SYN = CONSTANTS["MBREC_TCP_SYN"]
AF_INET = CONSTANTS["MBREC_AF_INET"]
MSS = 1000
TSO_FRAMES = 2        # wire frames per send skb at most
GRO_FRAMES = 2        # frames merged per receive skb at most
SEND_LAYERS = ("tcp_transmit_skb", "ip_queue_xmit", "dev_queue_xmit", "dev_hard_start_xmit")
RECV_LAYERS = ("eth_type_trans", "ip_rcv", "tcp_v4_rcv")
M32 = 0xFFFFFFFF


@dataclass
class Host:
    name: str
    addr: str
    clock_offset: int = 0
    pkt: list = field(default_factory=list)
    sock: list = field(default_factory=list)
    truth: dict = field(default_factory=lambda: defaultdict(list))
    flow: list = field(default_factory=list)
    flow_truth: dict = field(default_factory=dict)
    ip_id: int = 1

    def add_pkt(self, t, probe, fl, sent_by_me, seq, end, ack, flags, ip_id=0, gso=1):
        me, peer = (fl.client, fl.server) if self is fl.client_host else (fl.server, fl.client)
        src, dst = (me, peer) if sent_by_me else (peer, me)
        self.pkt.append((t + self.clock_offset, PROBE_IDS[probe], src[0], src[1], dst[0], dst[1],
                         seq & M32, end & M32, ack & M32, (end - seq), ip_id, gso, flags,
                         fl.cookie if sent_by_me or probe == "skb_copy_datagram_iter" else 0))

    def add_sock(self, t, kind, fl, a, b):
        me, peer = (fl.client, fl.server) if self is fl.client_host else (fl.server, fl.client)
        self.sock.append((t + self.clock_offset, kind, me[0], me[1], peer[0], peer[1], a & M32,
                          b & M32, b - a, fl.cookie))


@dataclass
class Side:
    """One endpoint's TCP state in the simulation (sequence numbers unwrapped)."""

    snd_nxt: int
    write_seq: int
    rcv_nxt: int = 0
    copied: int = 0
    queue: list = field(default_factory=list)    # [start, end, ack, coalescable]
    ofo: list = field(default_factory=list)      # (start, end, t_tcp, ack, skb id)
    rx: list = field(default_factory=list)       # received skbs: [start, end, t_tcp, copy_first, read_last]
    pieces: list = field(default_factory=list)   # (c0, c1, t_copy, t_read_end)
    tx_busy_until: int = 0                       # the send path is busy until then


@dataclass
class Flow:
    client: tuple
    server: tuple
    client_host: Host
    server_host: Host
    cookie: int
    c: Side
    s: Side


class Sim:
    def __init__(self, seed: int, server_offset_ns: int, copy_ranges: str = "skb"):
        self.copy_ranges = copy_ranges
        self.rng = np.random.default_rng(seed)
        self.client = Host("client", "10.0.0.1")
        self.server = Host("server", "10.0.0.2", clock_offset=server_offset_ns)

    def gap(self, lo=1_000, hi=20_000) -> int:
        return int(self.rng.integers(lo, hi))

    def role(self, host):
        return 1 if host is self.client else 2  # index base: client send 1 / receive 4

    def names(self, host, direction):
        k = {(True, 0): 1, (True, 1): 4, (False, 0): 3, (False, 1): 2}[(host is self.client,
                                                                       direction)]
        return k

    # --- sending -------------------------------------------------------------------------
    def transmit(self, fl, sender, t_tcp, seq, end, flags, *, lost=False, drop=(),
                 reorder=False, drop_rx=None, qdisc_ns=0, backlog_ns=0):
        """One transmission: 4 send layers on the sender, frames on the wire, receive layers on
        the peer. Returns the time its last frame was processed at tcp_v4_rcv (or None)."""
        host = sender
        peer = self.server if host is self.client else self.client
        me, other = (fl.c, fl.s) if host is self.client else (fl.s, fl.c)
        ack = me.rcv_nxt
        # tcp_transmit_skb .. dev_queue_xmit of one socket run one packet at a time (the
        # socket lock); only the qdisc and the receive backlog let packets overtake
        t_tcp = max(t_tcp, me.tx_busy_until)
        self.last_tcp = t_tcp
        t = [t_tcp]
        for _ in range(3):
            t.append(t[-1] + self.gap())
        me.tx_busy_until = t[2] + 1
        t[3] += qdisc_ns  # held in the sender's qdisc (e.g. netem on its own egress)
        k = self.names(host, 0)
        for name, a, b in (("L_TCP", 0, 1), ("L_IP", 1, 2), ("L_NIC", 2, 3)):
            if a not in drop and b not in drop:
                host.truth[f"{name}_{k}"].append(t[b] - t[a])
        nframes = max(1, -(-(end - seq) // MSS)) if end - seq > 1 or flags & SYN == 0 else 1
        ip0 = host.ip_id
        host.ip_id += nframes
        for layer, name in enumerate(SEND_LAYERS):
            if layer in drop:
                continue
            ipid = ip0 if layer >= 2 else 0
            host.add_pkt(t[layer], name, fl, True, seq, end, ack, flags, ipid,
                         nframes if layer < 3 else nframes)
        if lost:
            return None
        # wire: frames of MSS bytes, 800 ns apart, then a fixed network delay
        frames = []
        for i in range(nframes):
            fs = seq + i * MSS if end - seq > 1 else seq
            fe = min(end, fs + MSS) if end - seq > 1 else end
            frames.append([fs, fe, t[3] + i * 800 + 50_000, ip0 + i])
        if reorder and len(frames) >= 2:  # the second-to-last frame arrives last
            frames[-2][2] = frames[-1][2] + 700
            frames.sort(key=lambda f: f[2])
        return self.receive(fl, peer, frames, ack, flags, drop_rx or {}, backlog_ns)

    # --- receiving -----------------------------------------------------------------------
    def receive(self, fl, host, frames, ack, flags, drop_rx, backlog_ns=0):
        """GRO-merge frames (in arrival order, contiguous, at most GRO_FRAMES) into skbs and run
        them through the receive layers and TCP's queues."""
        me = fl.c if host is self.client else fl.s
        k = self.names(host, 1)
        groups = []
        for f in frames:
            g = groups[-1] if groups else None
            if (g and len(g) < GRO_FRAMES and g[-1][1] == f[0] and f[1] > f[0]
                    and f[2] - g[-1][2] < 5_000):
                g.append(f)
            else:
                groups.append([f])
        t_last = None
        for gi, g in enumerate(groups):
            drop = drop_rx.get(gi, ())
            s, e = g[0][0], g[-1][1]
            t_ip = g[-1][2] + self.gap() + backlog_ns  # backlog_ns: waiting in a backlog
            t_tcp = t_ip + self.gap()
            for fi, (fs, fe, ta, ipid) in enumerate(g):
                if ("eth", fi) not in drop:
                    host.add_pkt(ta, "eth_type_trans", fl, False, fs, fe, ack, flags, ipid, 1)
                    if "ip" not in drop:
                        host.truth[f"L_NIC_{k}"].append(t_ip - ta)
            if "ip" not in drop:
                host.add_pkt(t_ip, "ip_rcv", fl, False, s, e, ack, flags, g[0][3], len(g))
            if "tcp" not in drop:
                host.add_pkt(t_tcp, "tcp_v4_rcv", fl, False, s, e, ack, flags, g[0][3], len(g))
                if "ip" not in drop:
                    host.truth[f"L_IP_{k}"].append(t_tcp - t_ip)
            t_last = t_tcp
            if flags & SYN:
                me.rcv_nxt = e
                continue
            if e <= s:
                continue  # pure ACK: nothing reaches the receive queue
            rec = [s, e, t_tcp if "tcp" not in drop else None, None, None]
            if e <= me.rcv_nxt:
                continue  # duplicate: dropped by TCP, never copied
            if s > me.rcv_nxt:
                me.ofo.append((s, e, ack, rec))
                me.rx.append(rec)
                continue
            me.rx.append(rec)
            self.enqueue(me, s, e, ack, coalescable=True)
            # the hole is filled: move contiguous out-of-order skbs (no coalescing for them)
            me.ofo.sort()
            while me.ofo and me.ofo[0][0] <= me.rcv_nxt:
                os_, oe, oack, orec = me.ofo.pop(0)
                if oe > me.rcv_nxt:
                    self.enqueue(me, max(os_, me.rcv_nxt), oe, oack, coalescable=False)
        return t_last

    def enqueue(self, me, s, e, ack, coalescable):
        tail = me.queue[-1] if me.queue else None
        if (coalescable and tail and tail[3] and tail[1] == s
                and self.rng.random() < 0.5):  # tcp_try_coalesce: merge into the tail skb
            tail[1] = e
            tail[2] = ack
        else:
            me.queue.append([s, e, ack, coalescable])
        me.rcv_nxt = e

    def app_read(self, fl, host, t, size):
        """The application reads everything queued, `size` bytes per read call. Returns the
        time of the last copy."""
        me = fl.c if host is self.client else fl.s
        last_copy = None
        while me.copied < me.rcv_nxt:
            a = me.copied
            b = min(me.rcv_nxt, a + size)
            tc = t
            pieces = []
            for skb in list(me.queue):
                s, e, ack, _ = skb
                if e <= a or s >= b:
                    continue
                tc += self.gap(300, 900)
                # "skb": the copy reports the whole (coalesced) skb's range; "bytes": the bytes
                # this call copied (what mbrec's recorder writes)
                c0, c1 = (s, e) if self.copy_ranges == "skb" else (max(s, a), min(e, b))
                host.add_pkt(tc, "skb_copy_datagram_iter", fl, False, c0, c1, ack, ACK | PSH)
                pieces.append((max(s, a), min(e, b), tc))
                last_copy = tc
            t_end = tc + self.gap(200, 600)
            host.add_sock(t_end, CONSTANTS["MBREC_SOCK_READ"], fl, a, b)
            for c0, c1, tcp_ in pieces:
                me.pieces.append((c0, c1, tcp_, t_end))
            me.copied = b
            me.queue = [q for q in me.queue if q[1] > b]
            t = t_end + self.gap(500, 2_000)
        return last_copy, t

    def app_write(self, fl, host, t, size):
        me = fl.c if host is self.client else fl.s
        a = me.write_seq
        me.write_seq += size
        host.add_sock(t, CONSTANTS["MBREC_SOCK_WRITE"], fl, a, me.write_seq)
        return a, me.write_seq

    def send_data(self, fl, host, t, start, end, **kw):
        """TCP sends [start, end) as TSO skbs of up to TSO_FRAMES * MSS bytes. Returns the
        tcp_transmit_skb time of each skb and the receive time of the last one."""
        skbs = []
        s = start
        while s < end:
            e = min(end, s + TSO_FRAMES * MSS)
            skbs.append((s, e))
            s = e
        out, t_rx = [], None
        lost = kw.pop("lost_first", False)
        drop = kw.pop("drop_first", ())
        reorder = kw.pop("reorder_first", False)
        drop_rx = kw.pop("drop_rx_first", None)
        for i, (s, e) in enumerate(skbs):
            first = i == 0
            r = self.transmit(fl, host, t, s, e, ACK | PSH, lost=lost and first,
                              drop=drop if first else (), reorder=reorder and first,
                              drop_rx=drop_rx if first else None)
            out.append((s, e, self.last_tcp))
            if r is not None:
                t_rx = max(t_rx or 0, r)
            if lost and first:  # retransmitted after an RTO, as a separate transmission
                t_re = t + 400_000
                r = self.transmit(fl, host, t_re, s, e, ACK | PSH)
                out.append((s, e, self.last_tcp))
                t_rx = max(t_rx or 0, r)
            t += self.gap(3_000, 8_000)
        me = fl.c if host is self.client else fl.s
        me.snd_nxt = max(me.snd_nxt, end)
        return out, t_rx

    def pure_ack(self, fl, host, t):
        me = fl.c if host is self.client else fl.s
        return self.transmit(fl, host, t, me.snd_nxt, me.snd_nxt, ACK)


def _sndbuf_truth(host, name, writes, sends):
    """W_SND: per write, first transmission covering its last byte minus the write time."""
    for t_w, a, b in writes:
        cands = [ts for s, e, ts in sends if s <= b - 1 < e and ts >= t_w]
        if cands:
            host.truth[name].append(min(cands) - t_w)


N_SNAPSHOTS = 40


def _flow_snapshots(host, fl, t0, t1, exact):
    """Periodic flow snapshots with simple known shapes, the last one at close."""
    me, peer = (fl.client, fl.server) if host is fl.client_host else (fl.server, fl.client)
    times = np.linspace(t0 + 1000, t1, N_SNAPSHOTS).astype(np.int64)
    off = host.clock_offset
    for j, t in enumerate(times.tolist()):
        host.flow.append({
            "ts_ns": t + off, "sock_cookie": fl.cookie, "established_ns": t0 + off,
            "snd_cwnd": 10 + j, "snd_ssthresh": 2**31 - 1, "srtt_us": 100 + 3 * j,
            "rttvar_us": 50, "min_rtt_us": 90, "packets_in_flight": j % 5,
            "bytes_in_flight": (j % 5) * MSS, "app_wqueue": (j * 37) % 1000,
            "max_app_wqueue": max((k * 37) % 1000 for k in range(j + 1)),
            "mss_cache": MSS, "advmss": MSS + 60, "total_retrans": j // 10,
            "bytes_sent": 1000 * j, "bytes_acked": 900 * j, "bytes_received": 700 * j,
            "fast_recoveries": j // 20, "timeouts": j // 30, "rtt_samples": j,
            "rtt_sum_us": sum(100 + 3 * k for k in range(j)), "read_bytes": 700 * j,
            "write_bytes": 1000 * j, "state": 1,
            "reason": CONSTANTS["MBREC_FLOW_CLOSE" if j == N_SNAPSHOTS - 1 else
                                "MBREC_FLOW_PERIODIC"],
            "flags": CONSTANTS["MBREC_FLOWF_SEEN_ESTABLISH"] if exact else 0,
            "saddr": ipv4(me[0]), "daddr": ipv4(peer[0]), "sport": me[1], "dport": peer[1],
            "family": AF_INET})
    j = N_SNAPSHOTS - 1
    host.flow_truth[fl.cookie] = {
        "CWND": 10 + j, "SampleRTT": j, "SumRTT_us": sum(100 + 3 * k for k in range(j)),
        "MaxAppWQueue": max((k * 37) % 1000 for k in range(N_SNAPSHOTS)),
        "Duration_ns": int(times[-1] - t0), "Duration_exact": exact, "RePackets": j // 10,
        "max_flight_packets": 4, "snapshots": N_SNAPSHOTS}


@dataclass
class GroundTruth:
    events: dict   # host name -> {"pkt": array, "sock": array}
    truth: dict    # host name -> {latency name: sorted int64 array of ns}
    hosts: dict    # host name -> {"boot_id": ..., "offset": ...}
    flows: dict = field(default_factory=dict)  # host -> socket cookie -> flow metric truth


def exchanges(n_flows: int = 4, n_exchanges: int = 12, *, seed: int = 0,
              server_offset_ns: int = 0, copy_ranges: str = "skb") -> GroundTruth:
    """The scenario described in the module docstring, with its truth. copy_ranges: what a
    copy event's seq/end_seq cover ("skb": the skb, "bytes": the bytes copied)."""
    sim = Sim(seed, server_offset_ns, copy_ranges)
    C, S = sim.client, sim.server
    for f in range(n_flows):
        cport, sport = 40000 + f, 80
        isn_c = (2**32 - 2500) if f == 1 else int(sim.rng.integers(0, 2**31))
        isn_s = int(sim.rng.integers(0, 2**31))
        fl = Flow((C.addr, cport), (S.addr, sport), C, S, 1000 + f,
                  Side(isn_c, isn_c), Side(isn_s, isn_s))
        t = 1_000_000_000 + f * 37_000
        handshake = f % 3 != 2
        if handshake:
            sim.transmit(fl, C, t, isn_c, isn_c + 1, SYN)
            fl.c.snd_nxt = fl.c.write_seq = isn_c + 1
            t += 120_000
            fl.s.rcv_nxt = fl.s.copied = isn_c + 1
            sim.transmit(fl, S, t, isn_s, isn_s + 1, SYN | ACK)
            fl.s.snd_nxt = fl.s.write_seq = isn_s + 1
            fl.c.rcv_nxt = fl.c.copied = isn_s + 1
            t += 120_000
            sim.pure_ack(fl, C, t)
            t += 100_000
        else:  # an established connection that recording joined late
            fl.s.rcv_nxt = fl.s.copied = fl.c.snd_nxt
            fl.c.rcv_nxt = fl.c.copied = fl.s.snd_nxt
        c_writes, c_sends, s_writes, s_sends = [], [], [], []
        c_last_read = None
        for i in range(n_exchanges):
            req = (300, 2500, 1500, 4200)[i % 4]
            resp = (3500, 200, 1200, 5200)[i % 4]
            a, b = sim.app_write(fl, C, t, req)
            c_writes.append((t, a, b))
            t_tx = t + sim.gap(2_000, 9_000)
            kw: dict = {}
            if i % 5 == 3:
                kw["lost_first"] = True
            if i % 6 == 4:
                kw["drop_first"] = (1,)          # ip_queue_xmit missing on the client
            if i % 4 == 3:
                kw["reorder_first"] = True       # 4200 bytes: first skb's frames reordered
            if i % 8 == 6:
                kw["drop_rx_first"] = {0: ("tcp",)}  # tcp_v4_rcv missing on the server
            if i % 7 == 5:
                kw["drop_rx_first"] = {0: (("eth", 0),)}  # one frame's eth_type_trans missing
            sends, t_rx = sim.send_data(fl, C, t_tx, a, b, **kw)
            c_sends += sends
            if c_last_read is not None:
                C.truth["L_APP_1"].append(sends[0][2] - c_last_read)
            if i % 9 == 8 or i % 7 == 3:  # a spurious retransmission: a duplicate arrival
                s0, e0, _ = sends[-1]       # (i % 7 == 3: only the tail, as a loss probe does)
                if i % 9 != 8:
                    s0 = max(s0, e0 - 300)
                t_dup = t_rx + 30_000
                sim.transmit(fl, C, t_dup, s0, e0, ACK | PSH)
                c_sends.append((s0, e0, sim.last_tcp))
                t_rx = t_dup + 100_000
            t = t_rx + sim.gap(2_000, 5_000)
            if i % 4 == 1:  # quick ACK before the application reads
                sim.pure_ack(fl, S, t)
                t += 20_000
            read_size = (700, 4000, 1000)[i % 3]
            last_copy, t = sim.app_read(fl, S, t + sim.gap(5_000, 30_000), read_size)
            # a delayed pure ACK between the read and the response: must not pair as response
            sim.pure_ack(fl, S, t + 20_000)
            t += 100_000 + sim.gap(0, 200_000)
            parts = [resp] if resp < 3000 else [resp // 2, resp - resp // 2]
            first_send = None
            tw = t
            for p in parts:
                a, b = sim.app_write(fl, S, tw, p)
                s_writes.append((tw, a, b))
                tw += 1_500
            t_tx = t + sim.gap(2_000, 9_000)
            kw = {}
            if i % 5 == 1:
                kw["drop_rx_first"] = {0: ("ip",)}  # ip_rcv missing on the client
            if i % 6 == 2:
                kw["reorder_first"] = True
            sends, t_rx = sim.send_data(fl, S, t_tx, fl.s.snd_nxt, fl.s.write_seq, **kw)
            s_sends += sends
            first_send = sends[0][2]
            S.truth["L_APP_2"].append(first_send - last_copy)
            t = t_rx + sim.gap(2_000, 5_000)
            sim.pure_ack(fl, C, t + 5_000)  # delayed ACK for the response
            t += 30_000
            c_last_read, t = sim.app_read(fl, C, t, (4000, 600, 1500)[i % 3])
            if i % 5 == 2:  # two identical ACKs queued together in a qdisc and a backlog:
                me = fl.c   # they must pair one to one (by IP id), not both with the first.
                # (tcp_transmit_skb..dev_queue_xmit of one socket run one packet at a time;
                # only the qdisc and the receive backlog let packets overtake layers)
                for k in range(2):
                    sim.transmit(fl, C, t + 1_000 + 70_000 * k, me.snd_nxt, me.snd_nxt, ACK,
                                 qdisc_ns=150_000, backlog_ns=150_000)
                t += 450_000
            t += sim.gap(50_000, 250_000)
        # the client closes: a bare FIN occupies sequence space but is no request (no L_APP_1)
        sim.transmit(fl, C, t, fl.c.snd_nxt, fl.c.snd_nxt + 1, FIN | ACK)
        fl.c.snd_nxt += 1
        t += 200_000
        _sndbuf_truth(C, "W_SND_1", c_writes, c_sends)
        _sndbuf_truth(S, "W_SND_3", s_writes, s_sends)
        for host, side, k in ((S, fl.s, 2), (C, fl.c, 4)):
            for rec in side.rx:
                s, e, t_tcp = rec[0], rec[1], rec[2]
                if t_tcp is None:
                    continue
                first = [p for p in side.pieces if p[0] <= s < p[1] and p[2] >= t_tcp]
                last = [p for p in side.pieces if p[0] <= e - 1 < p[1] and p[3] >= t_tcp]
                if first:
                    host.truth[f"L_TCP_{k}"].append(min(p[2] for p in first) - t_tcp)
                if last:
                    host.truth[f"W_RCV_{k}"].append(min(p[3] for p in last) - t_tcp)
        for host in (C, S):
            _flow_snapshots(host, fl, t0=1_000_000_000 + f * 37_000, t1=t, exact=handshake)
    out_events, out_truth = {}, {}
    for host in (C, S):
        pkt = np.zeros(len(host.pkt), PKT)
        if host.pkt:
            cols = list(zip(*host.pkt))
            pkt["ts_ns"] = cols[0]
            pkt["probe"] = cols[1]
            pkt["saddr"] = np.stack([ipv4(a) for a in cols[2]])
            pkt["sport"] = cols[3]
            pkt["daddr"] = np.stack([ipv4(a) for a in cols[4]])
            pkt["dport"] = cols[5]
            pkt["seq"], pkt["end_seq"], pkt["ack"] = cols[6], cols[7], cols[8]
            pkt["len"] = np.maximum(np.array(cols[9]), 0)
            pkt["ip_id"], pkt["gso_segs"], pkt["tcp_flags"] = cols[10], cols[11], cols[12]
            pkt["sock_cookie"] = cols[13]
            pkt["family"] = AF_INET
            pkt["netns"] = 4026531840 + (host is S)
        sock = np.zeros(len(host.sock), SOCK)
        if host.sock:
            cols = list(zip(*host.sock))
            sock["ts_ns"], sock["kind"] = cols[0], cols[1]
            sock["saddr"] = np.stack([ipv4(a) for a in cols[2]])
            sock["sport"] = cols[3]
            sock["daddr"] = np.stack([ipv4(a) for a in cols[4]])
            sock["dport"] = cols[5]
            sock["seq_start"], sock["seq_end"] = cols[6], cols[7]
            sock["bytes"] = sock["requested"] = cols[8]
            sock["sock_cookie"] = cols[9]
            sock["family"] = AF_INET
        flow = np.zeros(len(host.flow), FLOW)
        for i, rec in enumerate(host.flow):  # a few dozen records per flow
            for k, v in rec.items():
                flow[i][k] = v
        out_events_flow = flow[np.argsort(flow["ts_ns"], kind="stable")]
        pkt = pkt[np.argsort(pkt["ts_ns"], kind="stable")]
        sock = sock[np.argsort(sock["ts_ns"], kind="stable")]
        out_events[host.name] = {"pkt": pkt, "sock": sock, "flow": out_events_flow}
        out_truth[host.name] = {k: np.sort(np.array(v, np.int64)) for k, v in host.truth.items()}
    hosts = {"client": {"boot_id": "c" * 8, "offset": 0},
             "server": {"boot_id": ("c" if server_offset_ns == 0 else "s") * 8,
                        "offset": server_offset_ns}}
    flow_truth = {h.name: h.flow_truth for h in (C, S)}
    return GroundTruth(out_events, out_truth, hosts, flow_truth)


def replicate(events: dict, copies: int, *, shift_ns: int = 7_919,
              client_addr: str = "10.0.0.1", first: int = 0) -> dict:
    """The events of one host repeated `copies` times as independent connections: copy k's
    client address becomes 10.1.(k >> 8).(k & 255), its socket cookies move by k << 20 and its
    times by k * shift_ns, so the copies interleave like concurrent clients. Vectorised; for
    benchmarks (the truth of copy k is the truth of the original). first: the number of the
    first copy, so a large set can be made a slice at a time."""
    base = ipv4(client_addr)[:4]
    out = {}
    for name, recs in events.items():
        if len(recs) == 0:
            out[name] = recs
            continue
        n = len(recs)
        rep = np.tile(recs, copies)
        k = np.repeat(np.arange(first, first + copies, dtype=np.int64), n)
        rep["ts_ns"] += (k * shift_ns).astype(np.uint64)
        rep["sock_cookie"] += (k.astype(np.uint64) << np.uint64(20))
        new = np.zeros((len(rep), 4), np.uint8)
        new[:, 0], new[:, 1] = 10, 1
        new[:, 2], new[:, 3] = (k >> 8) & 255, k & 255
        for field_ in ("saddr", "daddr"):
            is_client = (rep[field_][:, :4] == base).all(axis=1)
            rep[field_][is_client, :4] = new[is_client]
        out[name] = rep[np.argsort(rep["ts_ns"], kind="stable")]
    return out
