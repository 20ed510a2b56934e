"""The frame decoder that leaves event records in place, against msgpack's own Unpacker."""

import random

import msgpack
import numpy as np
import pytest

from mbrec.trace.format import RECORDS_KEY
from mbrec.trace.unpack import frame_objects


def _random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(10 if depth < 3 else 6)
    if kind == 0:
        return rng.randrange(-2 ** 63, 2 ** 64)
    if kind == 1:
        return rng.random() * 10 ** rng.randrange(-5, 20)
    if kind == 2:
        n = rng.choice([rng.randrange(40), 200])  # fixstr, str8 and str16
        return "".join(chr(rng.randrange(32, 0x2000)) for _ in range(n))
    if kind == 3:
        return rng.randbytes(rng.choice([0, 3, 40, 300, 70000]))  # every bin length encoding
    if kind == 4:
        return rng.choice([None, True, False])
    if kind == 5:
        return rng.randrange(-40, 300)
    if kind < 8:
        return [_random_value(rng, depth + 1) for _ in range(rng.choice([0, 3, 17]))]
    return {(f"k{rng.randrange(50)}" if rng.random() < 0.8 else rng.randrange(-5, 99)):
            _random_value(rng, depth + 1) for _ in range(rng.choice([0, 2, 17]))}


def _plain(x):
    if isinstance(x, memoryview):
        return bytes(x)
    if isinstance(x, list):
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x


def _msgpack(buf: bytes) -> list:
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(buf)
    return list(unpacker)


@pytest.mark.parametrize("seed", range(4))
def test_frame_objects_are_what_msgpack_reads(seed):
    rng = random.Random(seed)
    for _ in range(40):
        objs = [_random_value(rng) for _ in range(rng.randrange(1, 5))]
        buf = b"".join(msgpack.packb(o, use_bin_type=True) for o in objs)
        assert _plain(frame_objects(buf, 100)) == _msgpack(buf)


def test_event_records_are_views_of_the_frame_and_other_binaries_are_bytes():
    records = np.arange(1000, dtype=np.uint64)
    buf = msgpack.packb({"t": "events", "s": 1, "n": 1000, RECORDS_KEY: records.tobytes(),
                         "other": b"\x01\x02"}, use_bin_type=True)
    (obj,) = frame_objects(buf, 10)
    assert isinstance(obj[RECORDS_KEY], memoryview) and obj[RECORDS_KEY].obj is buf
    assert np.array_equal(np.frombuffer(obj[RECORDS_KEY], np.uint64), records)
    assert isinstance(obj["other"], bytes)


def test_only_an_events_objects_records_stay_in_place():
    """A reader may decompress the next frame over this one once it has copied the records, so
    nothing else may point into the frame: not another object's "data", not a nested one, not
    records written before their object's "t"."""
    others = [{"t": "note", RECORDS_KEY: b"abc"},
              {"t": "events", "x": {"t": "events", RECORDS_KEY: b"abc"}},
              {RECORDS_KEY: b"abc", "t": "events"}]
    for obj in others:
        (got,) = frame_objects(msgpack.packb(obj, use_bin_type=True), 10)
        assert got == obj and not any(isinstance(v, memoryview) for v in got.values()), got
        assert not isinstance(got.get("x", {}).get(RECORDS_KEY), memoryview)


def test_what_it_does_not_read_is_left_to_msgpack():
    whole = msgpack.packb({"t": "frame", "seq": 7, "x": [1.5, "é", b"ab"]}, use_bin_type=True)
    assert frame_objects(whole, 10) == [{"t": "frame", "seq": 7, "x": [1.5, "é", b"ab"]}]
    for cut in range(1, len(whole)):  # every truncation, never an exception
        assert frame_objects(whole[:cut], 10) is None
    assert frame_objects(msgpack.packb(msgpack.ExtType(1, b"x")), 10) is None  # ext types
    assert frame_objects(b"\xc1", 10) is None  # the unused type byte
    assert frame_objects(b"\xa2\xff\xfe", 10) is None  # a string that is not UTF-8
    assert frame_objects(b"\x81\x90\x01", 10) is None  # an array as a map key
    assert frame_objects(b"\xdd\xff\xff\xff\xff", 10) is None  # an array longer than the frame
    assert frame_objects(b"\x91" * 40 + b"\x01", 10) is None  # nested deeper than mbrec writes
    assert frame_objects(b"\x01\x02\x03", 2) is None  # more objects than the limit
