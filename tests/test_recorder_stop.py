"""The recorder's stop tells the truth: run_loop of mbrec/recorder/session.py, driven without a
kernel (a stand-in for the loaded program and its rings), writing a real trace file that the
real reader reads back."""

import os
import signal
import threading

import pytest

from mbrec.events import SCHEMA_BY_NAME
from mbrec.recorder.session import RecordOptions, run_loop, stop_outcome
from mbrec.testing.synthetic import random_records
from mbrec.trace.format import make_header
from mbrec.trace.reader import read_trace
from mbrec.trace.writer import TraceWriter


class NoKernel:
    """What run_loop uses of a Recorder and of BCC's BPF object, without BPF: each drain
    hands one batch of real records to the writer; drain number `fail_at` raises."""

    def __init__(self, writer, fail_at=None, lost_fails=False):
        self.writer, self.fail_at, self.lost_fails = writer, fail_at, lost_fails
        self.rings, self.events, self.drains, self.cleaned = [], 0, 0, False
        self.capacity = 1 << 16
        self.recs = random_records("pkt", 10)

    def drain(self):
        self.drains += 1
        if self.fail_at is not None and self.drains >= self.fail_at:
            raise RuntimeError("the ring buffer map went away")
        self.writer.write_events(SCHEMA_BY_NAME["pkt"].id, self.recs.copy())
        self.events += len(self.recs)
        return len(self.recs)

    def drain_all(self):
        if self.fail_at is None:
            self.drain()

    def lost_detail(self):
        if self.lost_fails:
            raise OSError("cannot read the loss map")
        return {"ring_full": {"ip_rcv": 3}, "program_skipped": {}}

    def lost(self):
        if self.lost_fails:
            raise OSError("cannot read the loss map")
        return {"ip_rcv": 3}

    def fill(self):
        return 0.0

    def close(self):
        pass

    def cleanup(self):
        self.cleaned = True


def record_with(tmp_path, duration=None, **fake):
    path = str(tmp_path / "r.mbrec")
    writer = TraceWriter(path, make_header(), flush_interval=0.01)
    rec = NoKernel(writer, **fake)
    opts = RecordOptions(output=path, duration=duration, quiet=True)
    return path, rec, lambda: run_loop(opts, rec, writer, rec, [], "h")


def test_a_stop_at_the_duration_is_clean(tmp_path):
    path, rec, run = record_with(tmp_path, duration=0.05)
    assert run() == 0
    trace = read_trace(path)
    assert trace.clean and trace.trailer["stop_reason"] == "duration"
    assert trace.lost == {"ip_rcv": 3} and len(trace.events["pkt"]) == rec.events
    assert rec.cleaned


def test_a_signal_stop_is_clean_and_named(tmp_path):
    path, rec, run = record_with(tmp_path)
    timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGTERM))
    before = signal.getsignal(signal.SIGTERM)
    timer.start()
    run()
    timer.join()
    trace = read_trace(path)
    assert trace.clean and trace.trailer["stop_reason"] == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are given back


def test_an_exception_writes_an_unclean_trailer_with_the_error_and_the_losses(tmp_path):
    path, rec, run = record_with(tmp_path, fail_at=5)
    with pytest.raises(RuntimeError, match="went away"):
        run()
    trace = read_trace(path)
    assert trace.trailer is not None and not trace.clean
    assert trace.trailer["stop_reason"] == "error: RuntimeError: the ring buffer map went away"
    assert trace.lost == {"ip_rcv": 3}
    assert trace.trailer["lost_detail"]["ring_full"] == {"ip_rcv": 3}
    assert len(trace.events["pkt"]) == 40  # the four drains before the failure are kept
    assert rec.cleaned


def test_a_failure_while_stopping_is_not_a_clean_stop_either(tmp_path):
    from mbrec.errors import MbrecError
    path, rec, run = record_with(tmp_path, duration=0.05, lost_fails=True)
    with pytest.raises(MbrecError, match="clean: false"):
        run()
    trace = read_trace(path)
    assert not trace.clean and "cannot read the loss map" in trace.trailer["stop_reason"]


def test_stop_outcome():
    assert stop_outcome("duration", None) == (True, "duration")
    assert stop_outcome("command exited", None) == (True, "command exited")
    assert stop_outcome(None, KeyboardInterrupt()) == (True, "SIGINT")
    clean, why = stop_outcome("SIGINT", ValueError("bad\nsecond line"))
    assert not clean and why == "error: ValueError: bad"
