"""The dictionary matcher mbrec's analysis is measured against: MicroBPF's matching
(nic/process_entries.py) done offline with Python dicts over decoded packet events.

It computes far less than the analysis, and wrongly on TSO/GRO/coalescing (it pairs only
exact (address, port, seq, ack) keys): it is a speed reference for bench/analyze.py and the
CI ratio guard (tests/test_bench_guard.py), never a source of results.
"""

import numpy as np

from mbrec.events import PROBE_IDS


def dict_matcher(pkt: np.ndarray) -> int:
    """MicroBPF's matching, done offline with Python dicts (process_entries.py style): send side
    keyed on (daddr, dport, seq, ack) from tcp_transmit_skb to dev_hard_start_xmit, receive side
    on (saddr, sport, daddr, dport, seq, ack) from eth_type_trans to skb_copy_datagram_iter."""
    P = PROBE_IDS
    saddr = pkt["saddr"][:, :4].copy().view("<u4").ravel().tolist()
    daddr = pkt["daddr"][:, :4].copy().view("<u4").ravel().tolist()
    cols = [pkt[c].tolist() for c in ("ts_ns", "probe", "sport", "dport", "seq", "ack")]
    out_ts, in_ts, results = {}, {}, []
    t_tcp, t_ipq, t_dev, t_xmit = (P[n] for n in ("tcp_transmit_skb", "ip_queue_xmit",
                                                  "dev_queue_xmit", "dev_hard_start_xmit"))
    t_eth, t_iprcv, t_tcprcv, t_copy = (P[n] for n in ("eth_type_trans", "ip_rcv",
                                                       "tcp_v4_rcv", "skb_copy_datagram_iter"))
    for ts, probe, sa, da, sp, dp, seq, ack in zip(cols[0], cols[1], saddr, daddr, cols[2],
                                                   cols[3], cols[4], cols[5]):
        if probe <= t_xmit:
            out_key = (da, dp, seq, ack)
            if probe == t_tcp:
                out_ts[out_key] = [ts, 0, 0]
            else:
                e = out_ts.get(out_key)
                if e is None:
                    continue
                if probe == t_ipq:
                    e[1] = ts
                elif probe == t_dev:
                    e[2] = ts
                else:
                    del out_ts[out_key]
                    results.append((e[1] - e[0], e[2] - e[1], ts - e[2]))
        else:
            in_key = (sa, sp, da, dp, seq, ack)
            if probe == t_eth:
                in_ts[in_key] = [ts, 0, 0]
            else:
                e = in_ts.get(in_key)
                if e is None:
                    continue
                if probe == t_iprcv:
                    e[1] = ts
                elif probe == t_tcprcv:
                    e[2] = ts
                else:
                    del in_ts[in_key]
                    results.append((e[1] - e[0], e[2] - e[1], ts - e[2]))
    return len(results)
