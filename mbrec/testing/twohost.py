"""Two-host synthetic traffic with a known clock relation and known one-way delays.

Host a (10.0.0.1) is the client, host b (10.0.0.2:80) the server. True time is a's clock; b's
clock reads ``alpha * t + beta``. Each flow opens with a handshake, then exchanges requests (one
frame) and responses (one TSO skb of several frames on b, one event per frame on a), and a's pure
ACK of each response. Only the two wire probes are generated: dev_hard_start_xmit on the sender,
eth_type_trans per frame on the receiver.
"""

from __future__ import annotations

import numpy as np

from mbrec.events import CONSTANTS, PKT, PROBE_IDS
from mbrec.testing.synthetic import ipv4, write_trace

XMIT, RECV = PROBE_IDS["dev_hard_start_xmit"], PROBE_IDS["eth_type_trans"]
F_SYN, F_ACK, F_PSH = CONSTANTS["MBREC_TCP_SYN"], CONSTANTS["MBREC_TCP_ACK"], CONSTANTS["MBREC_TCP_PSH"]
A_ADDR, B_ADDR = "10.0.0.1", "10.0.0.2"


def _recs(n, probe, t, src, dst, sport, dport, seq, end, ack, flags, ip_id, segs=1):
    r = np.zeros(n, dtype=PKT)
    r["ts_ns"], r["probe"] = t, probe
    r["saddr"], r["daddr"] = ipv4(src), ipv4(dst)
    r["sport"], r["dport"] = sport, dport
    r["seq"] = np.asarray(seq, np.int64) & 0xFFFFFFFF
    r["end_seq"] = np.asarray(end, np.int64) & 0xFFFFFFFF
    r["ack"] = np.asarray(ack, np.int64) & 0xFFFFFFFF
    r["len"] = (np.asarray(end, np.int64) - np.asarray(seq, np.int64)) * (
        (np.asarray(flags) & F_SYN) == 0)
    r["tcp_flags"], r["ip_id"] = flags, np.asarray(ip_id, np.int64) & 0xFFFF
    r["gso_segs"], r["family"] = segs, CONSTANTS["MBREC_AF_INET"]
    return r


def exchange(n_requests=200, *, alpha=1.0, beta_ns=0, dmin_ab=20_000, dmin_ba=20_000,
             jitter_ns=5_000, nflows=3, frames=3, mss=1000, req_len=100, gap_ns=300_000,
             t_start=5_000_000_000, step_at=None, step_ns=0, seed=0):
    """Events for both hosts plus the truth. step_at/step_ns: b's clock jumps by step_ns at
    true time step_at (a clock step, which no single line can fit)."""
    rng = np.random.default_rng(seed)
    a_ev, b_ev = [], []
    truth_ab, truth_ba = [], []   # (a-send/true time, true delay) per frame

    def bclock(t):
        t = np.asarray(t, dtype=np.float64)
        out = alpha * t + float(beta_ns)
        if step_at is not None:
            out = out + np.where(t >= step_at, float(step_ns), 0.0)
        return np.round(out).astype(np.int64)

    def d_ab(k):
        return dmin_ab + rng.exponential(jitter_ns, size=k)

    def d_ba(k):
        return dmin_ba + rng.exponential(jitter_ns, size=k)

    per_flow = np.bincount(np.arange(n_requests) % nflows, minlength=nflows)
    starts = t_start + np.cumsum(gap_ns + rng.integers(0, gap_ns // 2, size=n_requests))
    for f in range(nflows):
        cport = 40000 + f
        isn_c, isn_s = int(rng.integers(0, 2**32)), int(rng.integers(0, 2**32))
        id_a, id_b = int(rng.integers(0, 65536)), int(rng.integers(0, 65536))
        t = float(t_start - 1_000_000 + f * 100_000)
        # handshake: SYN a->b, SYN-ACK b->a, ACK a->b
        d = d_ab(1)[0]
        a_ev.append(_recs(1, XMIT, int(t), A_ADDR, B_ADDR, cport, 80, isn_c, isn_c + 1, 0, F_SYN, id_a))
        b_ev.append(_recs(1, RECV, bclock(t + d), A_ADDR, B_ADDR, cport, 80, isn_c, isn_c + 1, 0, F_SYN, id_a))
        truth_ab.append((t, d))
        t2 = t + d + 10_000
        d = d_ba(1)[0]
        b_ev.append(_recs(1, XMIT, bclock(t2), B_ADDR, A_ADDR, 80, cport, isn_s, isn_s + 1, isn_c + 1, F_SYN | F_ACK, id_b))
        a_ev.append(_recs(1, RECV, int(t2 + d), B_ADDR, A_ADDR, 80, cport, isn_s, isn_s + 1, isn_c + 1, F_SYN | F_ACK, id_b))
        truth_ba.append((t2 + d, d))
        t3 = t2 + d + 5_000
        d = d_ab(1)[0]
        a_ev.append(_recs(1, XMIT, int(t3), A_ADDR, B_ADDR, cport, 80, isn_c + 1, isn_c + 1, isn_s + 1, F_ACK, id_a + 1))
        b_ev.append(_recs(1, RECV, bclock(t3 + d), A_ADDR, B_ADDR, cport, 80, isn_c + 1, isn_c + 1, isn_s + 1, F_ACK, id_a + 1))
        truth_ab.append((t3, d))
        k = per_flow[f]
        ts = starts[np.arange(n_requests) % nflows == f].astype(np.float64)
        idx = np.arange(k)
        rsp_len = frames * mss
        cseq = isn_c + 1 + idx * req_len
        sseq = isn_s + 1 + idx * rsp_len
        # request a->b
        d1 = d_ab(k)
        ida = id_a + 2 + 2 * idx
        a_ev.append(_recs(k, XMIT, ts.astype(np.int64), A_ADDR, B_ADDR, cport, 80, cseq, cseq + req_len, sseq, F_ACK | F_PSH, ida))
        b_ev.append(_recs(k, RECV, bclock(ts + d1), A_ADDR, B_ADDR, cport, 80, cseq, cseq + req_len, sseq, F_ACK | F_PSH, ida))
        truth_ab += list(zip(ts, d1))
        # response b->a: one TSO skb, `frames` wire frames
        tr = ts + d1 + 20_000 + rng.integers(0, 20_000, size=k)
        idb = id_b + 1 + frames * idx
        b_ev.append(_recs(k, XMIT, bclock(tr), B_ADDR, A_ADDR, 80, cport, sseq, sseq + rsp_len, cseq + req_len, F_ACK | F_PSH, idb, segs=frames))
        last_in = np.zeros(k)
        for j in range(frames):
            d2 = d_ba(k) + j * 1_000
            fl = F_ACK | (F_PSH if j == frames - 1 else 0)
            a_ev.append(_recs(k, RECV, (tr + d2).astype(np.int64), B_ADDR, A_ADDR, 80, cport, sseq + j * mss, sseq + (j + 1) * mss, cseq + req_len, fl, idb + j))
            truth_ba += list(zip(tr + d2, d2))
            last_in = np.maximum(last_in, tr + d2)
        # a's pure ACK of the response
        tack = last_in + 5_000
        d3 = d_ab(k)
        a_ev.append(_recs(k, XMIT, tack.astype(np.int64), A_ADDR, B_ADDR, cport, 80, cseq + req_len, cseq + req_len, sseq + rsp_len, F_ACK, ida + 1))
        b_ev.append(_recs(k, RECV, bclock(tack + d3), A_ADDR, B_ADDR, cport, 80, cseq + req_len, cseq + req_len, sseq + rsp_len, F_ACK, ida + 1))
        truth_ab += list(zip(tack, d3))
    a = np.concatenate(a_ev)
    b = np.concatenate(b_ev)
    a = a[np.argsort(a["ts_ns"], kind="stable")]
    b = b[np.argsort(b["ts_ns"], kind="stable")]
    truth = {"alpha": alpha, "beta_ns": beta_ns,
             "ab": np.array(truth_ab), "ba": np.array(truth_ba)}
    return a, b, truth


def write_pair(tmp_path, a, b, *, same_boot=False, names=("a", "b")):
    pa = write_trace(str(tmp_path / f"{names[0]}.mbrec"), {"pkt": a}, host=names[0],
                     boot_id="11111111-1111-1111-1111-111111111111")
    pb = write_trace(str(tmp_path / f"{names[1]}.mbrec"), {"pkt": b}, host=names[1],
                     boot_id=("11111111-1111-1111-1111-111111111111" if same_boot
                              else "22222222-2222-2222-2222-222222222222"))
    return pa, pb


def true_b(t, alpha, beta_ns):
    return alpha * np.asarray(t, np.float64) + beta_ns


SEND_UP = [PROBE_IDS[p] for p in ("tcp_transmit_skb", "ip_queue_xmit", "dev_queue_xmit")]
RECV_UP = [PROBE_IDS[p] for p in ("ip_rcv", "tcp_v4_rcv", "skb_copy_datagram_iter")]


def add_layers(ev: np.ndarray, layer_ns: int) -> np.ndarray:
    """Every wire event gets its upper layers, layer_ns apart: three send probes before each
    dev_hard_start_xmit, ip_rcv and tcp_v4_rcv after each frame, and the copy to the
    application after each frame that carries data. Returns all events in time order."""
    out = [ev]
    tx = ev[ev["probe"] == XMIT]
    for k, probe in enumerate(SEND_UP):
        e = tx.copy()
        e["probe"] = probe
        e["ts_ns"] = tx["ts_ns"] - (3 - k) * layer_ns
        out.append(e)
    rx = ev[ev["probe"] == RECV]
    for k, probe in enumerate(RECV_UP):
        e = rx[rx["len"] > 0].copy() if k == 2 else rx.copy()
        e["probe"] = probe
        e["ts_ns"] = e["ts_ns"] + (k + 1) * layer_ns
        out.append(e)
    allev = np.concatenate(out)
    return allev[np.argsort(allev["ts_ns"], kind="stable")]
