"""ss/nstat parsing and the rules that compare them with flow records (no kernel needed)."""

import json

import numpy as np

from mbrec.events import FLOW
from mbrec.testing import kernel_view as kv

SS = """# monotonic_ns 1000
ESTAB 0      0           10.0.0.1:41234     10.0.0.2:5201
\t cubic wscale:7,7 rto:204 rtt:10.5/2.25 ato:40 mss:1448 pmtu:1500 rcvmss:536 advmss:1448 cwnd:10 ssthresh:7 bytes_sent:5000 bytes_retrans:1448 bytes_acked:4000 segs_out:10 segs_in:8 data_segs_out:5 send 11Mbps lastsnd:4 lastrcv:4 lastack:4 pacing_rate 22Mbps delivery_rate 10000000bps delivered:4 busy:40ms unacked:2 retrans:1/3 lost:1 sacked:1 dsack_dups:1 rcv_space:14480 rcv_ssthresh:64088 minrtt:10.1 snd_wnd:64256 notsent:100
ESTAB 0      0           10.0.0.2:http     10.0.0.1:50000
\t cubic wscale:7,7 rto:204 rtt:0.05/0.025 mss:32768 advmss:65483 cwnd:10 bytes_acked:1 bytes_received:73 segs_out:1 segs_in:2 snd_wnd:65536
# monotonic_ns 3000
"""


def test_parse_ss():
    e = kv.parse_ss(SS)
    assert [x.stamp_ns for x in e] == [1000, 1000]
    a, b = e
    assert a.local == ("10.0.0.1", 41234) and a.peer == ("10.0.0.2", 5201)
    assert a.info["cwnd"] == 10 and a.info["ssthresh"] == 7 and a.info["mss"] == 1448
    assert a.info["retrans_out"] == 1 and a.info["total_retrans"] == 3
    assert a.info["rtt"] == 10.5 and a.info["rttvar"] == 2.25 and a.info["minrtt"] == 10.1
    assert a.info["notsent"] == 100 and a.info["snd_wnd"] == 64256
    assert a.info["packets_in_flight"] == 2 - 1 - 1 + 1
    assert a.info["delivery_rate"] == 10_000_000 // 8  # ss -n prints bits/s
    assert b.info["delivery_rate"] == 0  # not printed: zero
    rounded = kv.parse_ss_info("cwnd:10 delivery_rate 10Mbps delivered:4")  # ss without -n
    assert "delivery_rate" not in rounded
    assert b.local == ("10.0.0.2", 80)  # ss without -n names the port
    # fields ss leaves out are zero, ssthresh is "infinite" during the initial slow start
    assert b.info["bytes_sent"] == 0 and b.info["total_retrans"] == 0 and b.info["notsent"] == 0
    assert b.info["ssthresh"] == kv.TCP_INFINITE_SSTHRESH


def test_parse_nstat():
    text = (json.dumps({"monotonic_ns": 5, "counters": {"TcpExtTCPTimeouts": 2}}) + "\n"
            + json.dumps({"monotonic_ns": 9, "counters": {"TcpExtTCPTimeouts": 7}}) + "\n")
    (t0, c0), (t1, c1) = kv.parse_nstat(text)
    assert (t0, t1) == (5, 9)
    assert kv.nstat_delta(c0, c1, kv.NSTAT_TIMEOUTS) == 5


def flow_rec(ts, cookie=7, **values):
    r = np.zeros(1, FLOW)
    r["ts_ns"], r["sock_cookie"], r["family"] = ts, cookie, 2
    r["saddr"][0, :4] = [10, 0, 0, 1]
    r["daddr"][0, :4] = [10, 0, 0, 2]
    r["sport"], r["dport"] = 41234, 5201
    base = dict(snd_cwnd=10, snd_ssthresh=7, mss_cache=1448, advmss=1448, snd_wnd=64256,
                packets_out=2, retrans_out=1, lost_out=1, sacked_out=1, app_wqueue=100,
                packets_in_flight=1, bytes_sent=5000, bytes_acked=4000, bytes_received=0,
                bytes_retrans=1448, total_retrans=3, srtt_us=10500, rttvar_us=2250,
                min_rtt_us=10100, delivery_rate=1_250_000)
    base.update(values)
    for k, v in base.items():
        r[k] = v
    return r


def test_quiet_window_compares_every_field_exactly():
    ss = kv.parse_ss(SS)[:1]
    recs = np.concatenate([flow_rec(500), flow_rec(2000), flow_rec(3500)])
    recs["reason"] = kv.PERIODIC
    checks = kv.compare_ss(ss, recs, {1000: 3000})
    exact = {c.metric for c in checks if c.kind == "exact"}
    assert exact == set(kv.EXACT_FIELDS) | set(kv.MS_FIELDS)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]


def test_a_wrong_value_fails():
    ss = kv.parse_ss(SS)[:1]
    recs = np.concatenate([flow_rec(500, snd_cwnd=11), flow_rec(3500, snd_cwnd=11)])
    bad = [c for c in kv.compare_ss(ss, recs, {1000: 3000}) if not c.ok]
    assert [c.metric for c in bad] == ["cwnd"]
    recs = np.concatenate([flow_rec(500, srtt_us=10400), flow_rec(3500, srtt_us=10400)])
    assert [c.metric for c in kv.compare_ss(ss, recs, {1000: 3000}) if not c.ok] == ["rtt"]


def test_busy_window_checks_only_counter_brackets():
    ss = kv.parse_ss(SS)[:1]
    recs = np.concatenate([flow_rec(500, bytes_sent=4000, snd_cwnd=5),
                           flow_rec(2000, bytes_sent=4500, snd_cwnd=8),
                           flow_rec(3500, bytes_sent=6000, snd_cwnd=12)])
    recs["reason"][1] = 1  # an ACK record: the flow was busy
    checks = kv.compare_ss(ss, recs, {1000: 3000})
    assert {c.kind for c in checks} == {"bracket"}
    assert all(c.ok for c in checks)
    recs["bytes_sent"][2] = 4999  # ss saw more than was ever sent by the next record
    assert [c.metric for c in kv.compare_ss(ss, recs, {1000: 3000}) if not c.ok] == ["bytes_sent"]


def test_periodic_records_that_differ_in_a_field_skip_only_that_field():
    ss = kv.parse_ss(SS)[:1]
    recs = np.concatenate([flow_rec(500), flow_rec(2000, snd_wnd=1), flow_rec(3500)])
    recs["reason"] = kv.PERIODIC
    checks = kv.compare_ss(ss, recs, {1000: 3000})
    assert "snd_wnd" not in {c.metric for c in checks} and "cwnd" in {c.metric for c in checks}


def test_events_between_records_make_a_window_busy():
    ss = kv.parse_ss(SS)[:1]
    recs = np.concatenate([flow_rec(500), flow_rec(3500)])
    other = np.array([(7, 2000)], dtype=[("cookie", "<u8"), ("ts", "<u8")])
    assert {c.kind for c in kv.compare_ss(ss, recs, {1000: 3000}, other)} == {"bracket"}


def test_episode_totals_use_each_flows_last_record():
    recs = np.concatenate([flow_rec(1, cookie=1, fast_recoveries=1, total_retrans=2),
                           flow_rec(2, cookie=1, fast_recoveries=3, total_retrans=9, timeouts=1,
                                    timeouts_backoff=2),
                           flow_rec(1, cookie=2, fast_recoveries=1, total_retrans=1)])
    assert kv.episode_totals(recs) == {"fast_recoveries": 4, "timeouts": 3, "total_retrans": 10}


def test_rtt_residuals_tell_raw_samples_from_smoothed_ones():
    srtt8, recs, t, total = 80000, [], 0, 0
    rng = np.random.default_rng(1)
    for m in rng.integers(8000, 14000, 50):
        recs.append(flow_rec(t, srtt_us=srtt8 >> 3, rtt_samples=len(recs), rtt_sum_us=total))
        srtt8 += int(m) - (srtt8 >> 3)  # tcp_rtt_estimator
        total += int(m)
        t += 1
    recs = np.concatenate(recs)
    assert np.abs(kv.rtt_estimator_residuals(recs)).max() < 2
    recs["rtt_sum_us"] = np.cumsum(recs["srtt_us"])  # MicroBPF's "sum": smoothed values
    assert np.abs(kv.rtt_estimator_residuals(recs)).max() > 50


NO_EVENTS = np.zeros(0, dtype=[("cookie", "<u8"), ("ts", "<u8")])


def busy_window(**between):
    """Established flow, ACK records on both sides of the read and one between."""
    recs = np.concatenate([flow_rec(500), flow_rec(2000, **between), flow_rec(3500)])
    recs["reason"], recs["state"] = kv.ACK, kv.TCP_ESTABLISHED
    return recs


def test_every_ack_recorded_pins_the_ack_driven_fields_in_a_busy_window():
    ss = kv.parse_ss(SS)[:1]
    checks = kv.compare_ss(ss, busy_window(packets_out=5), {1000: 3000}, NO_EVENTS, NO_EVENTS,
                           every_ack=True)
    pinned = {c.metric for c in checks if c.kind == "pinned"}
    assert pinned == set(kv.ACK_PINNED_FIELDS)  # not unacked, notsent, ...: sends change them
    assert all(c.ok for c in checks)
    # thinned ACK records (--flow-sample N > 1) pin nothing
    checks = kv.compare_ss(ss, busy_window(), {1000: 3000}, NO_EVENTS, NO_EVENTS, every_ack=False)
    assert {c.kind for c in checks} == {"bracket"}


def test_a_pinned_value_that_differs_from_ss_fails():
    ss = kv.parse_ss(SS)[:1]
    recs = busy_window()
    recs["snd_wnd"] = 1000
    bad = [c for c in kv.compare_ss(ss, recs, {1000: 3000}, NO_EVENTS, NO_EVENTS, every_ack=True)
           if not c.ok]
    assert [(c.metric, c.kind) for c in bad] == [("snd_wnd", "pinned")]


def test_a_loss_event_unpins_cwnd_and_ssthresh_only():
    ss = kv.parse_ss(SS)[:1]
    loss = np.array([(7, 2500)], dtype=NO_EVENTS.dtype)  # a retransmission between the records
    checks = kv.compare_ss(ss, busy_window(), {1000: 3000}, loss, loss, every_ack=True)
    pinned = {c.metric for c in checks if c.kind == "pinned"}
    assert pinned == set(kv.ACK_PINNED_FIELDS) - set(kv.LOSS_FIELDS)


def test_a_flow_closing_before_the_next_stamp_is_bracketed_by_its_close_record():
    ss = kv.parse_ss(SS)[:1]
    recs = np.concatenate([flow_rec(500), flow_rec(2000, bytes_sent=6000)])
    recs["reason"] = [kv.PERIODIC, kv.CLOSE]
    recs["state"] = kv.TCP_ESTABLISHED
    checks = kv.compare_ss(ss, recs, {1000: 9000})  # the next stamp comes after the close
    assert {c.metric for c in checks if c.kind == "bracket"} == set(kv.COUNTER_FIELDS)
    assert all(c.ok for c in checks)
    recs["reason"][1] = kv.PERIODIC  # no record past ESTABLISHED: the read may be after it
    assert kv.compare_ss(ss, recs, {1000: 9000}) == []


def test_a_socket_address_reused_after_a_close_starts_a_new_life():
    """kprobe builds identify sockets by address, which the kernel reuses once a socket has
    closed: records and events after the first life's CLOSE belong to a second flow."""
    recs = np.concatenate([flow_rec(100, cookie=7, write_bytes=10), flow_rec(200, cookie=7, write_bytes=30),
                           flow_rec(300, cookie=7, write_bytes=5), flow_rec(400, cookie=7, write_bytes=9),
                           flow_rec(250, cookie=8, write_bytes=1)])
    recs["reason"] = [kv.ACK, kv.CLOSE, kv.ACK, kv.CLOSE, kv.ACK]
    assert kv.lives(recs["sock_cookie"], recs["ts_ns"], recs).tolist() == [0, 0, 1, 1, 0]
    final = kv.final_records(recs)
    assert sorted(final["write_bytes"].tolist()) == [1, 9, 30]  # three flows, each its own last
    # events: at the close's instant still the first life, after it the second
    ev_life = kv.lives(np.array([7, 7, 7, 8], np.uint64), np.array([150, 200, 201, 999], np.uint64), recs)
    assert ev_life.tolist() == [0, 0, 1, 0]
