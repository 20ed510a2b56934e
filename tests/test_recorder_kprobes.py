"""Kprobe loss accounting (recorder/kprobes.py) on sample kprobe_profile text and counters."""

from mbrec.recorder import kprobes

PROFILE = """\
  mbrec_812_0                                              1200               3
  mbrec_812_1                                               500               0
  p_tcp_ack_bcc_77                                           10               0
"""


def test_profile_lines_give_hits_and_misses_by_event():
    assert kprobes.parse_profile(PROFILE) == {"mbrec_812_0": (1200, 3), "mbrec_812_1": (500, 0),
                                              "p_tcp_ack_bcc_77": (10, 0)}
    assert kprobes.parse_profile("garbage\n\n  x y z\n") == {}


class FakeKprobes(kprobes.TracefsKprobes):
    def __init__(self, profile, stats=True):
        self.dir, self.tag = "/nonexistent", "mbrec_812"
        self.stats_fd = 3 if stats else None
        self._profile = profile
        self.probes = [kprobes._Probe("mbrec_812_0", "__tcp_transmit_skb", "mbrec_kp_tcp_transmit_skb", 10),
                       kprobes._Probe("mbrec_812_1", "tcp_ack", "mbrec_flow_kr_tcp_ack", 11)]

    def profile(self):
        return kprobes.parse_profile(self._profile)


def test_skipped_runs_are_hits_minus_runs_and_kprobe_misses_are_separate():
    kp = FakeKprobes(PROFILE)
    runs = {10: {"run_cnt": 1190, "recursion_misses": 0}, 11: {"run_cnt": 500, "recursion_misses": 0}}
    prog_probe = {"mbrec_kp_tcp_transmit_skb": "tcp_transmit_skb", "mbrec_flow_kr_tcp_ack": "tcp_ack"}
    skipped, missed = kprobes.kprobe_losses(kp, prog_probe, runs.get)
    assert skipped == {"tcp_transmit_skb": 10}
    assert missed == {"tcp_transmit_skb": 3}


def test_recursion_misses_count_where_the_kernel_counts_them_without_double_counting():
    kp = FakeKprobes(PROFILE)
    # Linux >= 6.7 counts trace_call_bpf's skips as the program's misses too: the same runs
    runs = {10: {"run_cnt": 1190, "recursion_misses": 10}, 11: {"run_cnt": 500, "recursion_misses": 0}}
    skipped, _ = kprobes.kprobe_losses(kp, {}, runs.get)
    assert skipped == {"mbrec_kp_tcp_transmit_skb": 10}
    # without run statistics only the kernel's own count is there
    kp = FakeKprobes(PROFILE, stats=False)
    runs = {10: {"run_cnt": 0, "recursion_misses": 4}, 11: {"run_cnt": 0, "recursion_misses": 0}}
    skipped, _ = kprobes.kprobe_losses(kp, {}, runs.get)
    assert skipped == {"mbrec_kp_tcp_transmit_skb": 4}


def test_runs_ahead_of_the_hits_read_before_them_are_not_a_loss():
    kp = FakeKprobes(PROFILE)
    runs = {10: {"run_cnt": 1205, "recursion_misses": 0}, 11: {"run_cnt": 501, "recursion_misses": 0}}
    skipped, _ = kprobes.kprobe_losses(kp, {}, runs.get)
    assert skipped == {}


def test_stale_kprobes_of_dead_recorders_are_removed(tmp_path):
    import os
    events = tmp_path / "kprobe_events"  # a plain file: what would be written to tracefs is appended
    before = (f"p:mbrec/mbrec_999999999_0 __tcp_transmit_skb\n"
              f"p:mbrec/mbrec_{os.getpid()}_0 tcp_ack\nr64:kprobes/other tcp_ack\n")
    events.write_text(before)
    kprobes.remove_stale(str(tmp_path))
    assert events.read_text() == before + "-:mbrec/mbrec_999999999_0\n"
