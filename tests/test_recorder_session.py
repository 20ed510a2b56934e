"""The recorder's polling rule and status line (pure parts of mbrec/recorder/session.py)."""

import pytest

from mbrec.recorder.session import MAX_SLEEP, MIN_SLEEP, poll_interval, status_line


def test_idle_recorder_wakes_rarely_and_busy_one_often_enough():
    assert poll_interval(160_000, 0) == MAX_SLEEP
    # at 1 M events/s a 160k-record ring must be drained before it is an eighth full
    assert poll_interval(160_000, 1e6) * 1e6 <= 160_000 / 8
    assert poll_interval(1_000, 1e9) == MIN_SLEEP


def test_status_line_shows_rate_losses_and_size():
    line = status_line(12.0, 250000.0, 3_000_000, 7, 12_500_000)
    assert line.startswith("\r") and "250,000 events/s" in line and "lost 7" in line
    assert "12.5 MB" in line


def test_record_never_imports_plotting_or_the_analyzer():
    # the guest runs record with Debian's python: no matplotlib there, and no need for it
    import subprocess
    import sys
    code = ("import sys, mbrec.commands.record, mbrec.recorder.session, mbrec.recorder.ringbuf;"
            "bad = [m for m in sys.modules if m.startswith(('matplotlib', 'mbrec.analysis'))];"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_kprobes_warn_only_where_skipped_runs_cannot_be_counted():
    from types import SimpleNamespace

    from mbrec.recorder.session import kprobe_warning
    fentry = [{"name": "tcp_ack", "attach": "fexit", "function": "tcp_ack"},
              {"name": "tcp_state", "attach": "raw_tracepoint", "function": "sock:inet_sock_set_state"}]
    assert kprobe_warning(fentry) is None
    kp = fentry + [{"name": "tcp_rtt", "attach": "kprobe", "function": "tcp_ack_update_rtt"}]
    assert kprobe_warning(kp, SimpleNamespace(stats_fd=5)) is None  # hits - runs are counted
    assert "uncounted" in kprobe_warning(kp, SimpleNamespace(stats_fd=None))


def test_drain_pacer_polls_fast_until_a_rate_is_known_and_follows_bursts():
    from mbrec.recorder.session import ANCHOR_INTERVAL, MAX_SLEEP, DrainPacer, poll_interval
    cap = 160_000
    p = DrainPacer(cap, now=100.0)
    assert p.sleep_for(0, 100.0, 0.0) == DrainPacer.START_SLEEP  # nothing known yet
    t = 100.0 + ANCHOR_INTERVAL + 1
    assert p.sleep_for(0, t, 0.0) == MAX_SLEEP  # idle: cheap
    # a burst: 100 k events in the last 0.2 s, while the per-second rate still says idle
    wait = p.sleep_for(100_000, t + 0.2, 0.0)
    assert wait == pytest.approx(poll_interval(cap, 500_000)) and wait < MAX_SLEEP
