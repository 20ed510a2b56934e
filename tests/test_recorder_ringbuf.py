"""The bulk ring-buffer drain on synthetic ring memory laid out as the kernel lays it out."""

import numpy as np

from mbrec import events
from mbrec.recorder.ringbuf import BUSY_BIT, DISCARD_BIT, drain_span, record_stride

SIZE = 4096
REC = events.PKT.itemsize
STRIDE = record_stride(REC)


class FakeRing:
    """Data area mapped twice (like the kernel's mmap); positions grow without bound."""

    def __init__(self, size=SIZE):
        self.size = size
        self.mem = np.zeros(2 * size + 64, dtype=np.uint8)
        self.prod = 0

    def _write(self, pos, data: bytes):
        for i, byte in enumerate(data):  # test helper: byte loop is fine
            off = (pos + i) % self.size
            self.mem[off] = byte
            self.mem[off + self.size] = byte

    def put(self, payload: bytes, flags=0):
        hdr = (len(payload) | flags).to_bytes(4, "little") + b"\0\0\0\0"
        self._write(self.prod, hdr + payload)
        start = self.prod
        self.prod += record_stride(len(payload))
        return start

    def drain(self, cons):
        return drain_span(self.mem, 0, self.size, cons, self.prod, REC)


def rec(i: int) -> bytes:
    r = np.zeros(1, dtype=events.PKT)
    r["ts_ns"] = 1000 + i
    r["seq"] = i
    return r.tobytes()


def test_whole_span_comes_out_in_order():
    ring = FakeRing()
    for i in range(20):
        ring.put(rec(i))
    batches, cons, skipped = ring.drain(0)
    out = np.concatenate(batches).view(events.PKT).ravel()
    assert list(out["seq"]) == list(range(20))
    assert cons == ring.prod and skipped == 0


def test_wrap_around_is_contiguous_thanks_to_the_double_mapping():
    ring = FakeRing()
    n_fit = SIZE // STRIDE
    cons = 0
    seen = []
    for i in range(3 * n_fit):  # several laps, consumer keeping up
        ring.put(rec(i))
        if i % 7 == 6:
            batches, cons, _ = ring.drain(cons)
            seen.extend(np.concatenate(batches).view(events.PKT).ravel()["seq"])
    batches, cons, _ = ring.drain(cons)
    seen.extend(np.concatenate(batches).view(events.PKT).ravel()["seq"])
    assert seen == list(range(3 * n_fit))


def test_stops_at_a_record_still_being_written():
    ring = FakeRing()
    ring.put(rec(0))
    busy = ring.put(rec(1), BUSY_BIT)
    ring.put(rec(2))
    batches, cons, _ = ring.drain(0)
    assert sum(len(b) for b in batches) == 1
    assert cons == busy  # the consumer must not pass it


def test_discarded_and_foreign_records_are_stepped_over():
    ring = FakeRing()
    ring.put(rec(0))
    ring.put(rec(1), DISCARD_BIT)
    ring.put(b"x" * 20)  # another size: skipped and counted
    ring.put(rec(3))
    batches, cons, skipped = ring.drain(0)
    out = np.concatenate(batches).view(events.PKT).ravel()
    assert list(out["seq"]) == [0, 3]
    assert skipped == 1 and cons == ring.prod


def test_empty_span():
    ring = FakeRing()
    assert ring.drain(0) == ([], 0, 0)


def test_batches_are_copies_not_views_of_the_ring():
    ring = FakeRing()
    ring.put(rec(5))
    batches, _, _ = ring.drain(0)
    ring.mem[:] = 0
    assert batches[0].view(events.PKT)["seq"][0] == 5
