"""Trace format (v2, reading v1 too): round trips, sequence deltas, truncation, corruption, fuzzing, and the CLI's error paths."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mbrec.errors import TraceFormatError
from mbrec.events import SCHEMA_BY_NAME
from mbrec.testing.synthetic import random_records, write_trace
from mbrec.trace.format import FORMAT_VERSION, make_header, signature
from mbrec.trace.reader import TraceReader, read_trace
from mbrec.trace.writer import TraceWriter


def every_schema(n=500, seed=1):
    return {name: random_records(name, n, seed=seed + i)
            for i, name in enumerate(SCHEMA_BY_NAME)}


@pytest.fixture
def many_frames(tmp_path):
    """A trace of every schema, split into many small frames."""
    path = str(tmp_path / "many.mbrec")
    events = every_schema()
    write_trace(path, events, batch=50, frame_bytes=2048, lost={"ip_rcv": 4})
    return path, events


def test_round_trip_every_field_of_every_schema(tmp_path):
    events = every_schema()
    path = write_trace(str(tmp_path / "t.mbrec"), events, lost={"eth_type_trans": 2})
    trace = read_trace(path)
    for name, recs in events.items():
        got = trace.events[name]
        assert got.dtype == recs.dtype
        for field in recs.dtype.names:  # every field, every type: u8, u16, u32, u64, arrays
            np.testing.assert_array_equal(got[field], recs[field], err_msg=f"{name}.{field}")
    assert trace.clean and trace.warnings == []
    assert trace.lost == {"eth_type_trans": 2}
    assert trace.trailer["events"] == {SCHEMA_BY_NAME[n].id: len(r) for n, r in events.items()}
    assert len(trace.clocks) == 2  # at open and at close
    assert trace.header["format_version"] == FORMAT_VERSION


def test_sequence_ranges_are_stored_as_deltas_and_restored_exactly(tmp_path):
    pkt = random_records("pkt", 1000, seed=5)
    pkt["seq"][:10] = 2**32 - 5  # a range that wraps around the sequence space
    pkt["end_seq"] = pkt["seq"] + np.arange(1000, dtype=np.uint32) % 1449
    sock = random_records("sock", 100, seed=6)
    before = pkt.copy()
    path = write_trace(str(tmp_path / "d.mbrec"), {"pkt": pkt, "sock": sock})
    np.testing.assert_array_equal(pkt, before)  # the caller's records are left alone
    trace = read_trace(path)
    np.testing.assert_array_equal(trace.events["pkt"], pkt)
    np.testing.assert_array_equal(trace.events["sock"], sock)
    # on disk: the stored end_seq is the segment's length in sequence space
    reader = TraceReader(path)
    stored = [o for o in reader.objects() if o.get("t") == "events" and o["s"] == SCHEMA_BY_NAME["pkt"].id]
    assert stored[0]["d"] == [["end_seq", "seq"]]
    raw = np.frombuffer(stored[0]["data"], dtype=pkt.dtype)
    np.testing.assert_array_equal(raw["end_seq"], np.arange(len(raw), dtype=np.uint32) % 1449)


def test_an_owned_batch_is_encoded_in_place_and_still_read_back(tmp_path):
    pkt = random_records("pkt", 200, seed=7)
    batch = pkt.view(np.uint8).reshape(len(pkt), -1).copy()  # as the ring drain hands it over
    path = str(tmp_path / "o.mbrec")
    with TraceWriter(path, make_header()) as w:
        w.write_events(SCHEMA_BY_NAME["pkt"].id, batch, len(pkt), owned=True)
    np.testing.assert_array_equal(read_trace(path).events["pkt"], pkt)


def test_a_batch_with_a_bad_delta_is_skipped_with_a_warning(tmp_path):
    pkt = random_records("pkt", 10, seed=8)
    path = tmp_path / "bad.mbrec"
    with TraceWriter(str(path), make_header()) as w:
        w.write_object({"t": "events", "s": SCHEMA_BY_NAME["pkt"].id, "n": 10,
                        "d": [["end_seq", "no_such_field"]], "data": pkt.tobytes()})
        w.write_events(SCHEMA_BY_NAME["pkt"].id, pkt)
    trace = read_trace(str(path))
    assert len(trace.events["pkt"]) == 10
    assert any("damaged event batch" in m for m in trace.warnings)


def test_format_v1_files_are_still_read(tmp_path):
    path = tmp_path / "v1.mbrec"
    pkt = random_records("pkt", 50, seed=9)
    header = make_header()
    header["format_version"] = 1
    with TraceWriter(str(path), header) as w:  # v1 wrote records as they are, no "d"
        w.write_object({"t": "events", "s": SCHEMA_BY_NAME["pkt"].id, "n": 50, "data": pkt.tobytes()})
    data = path.read_bytes().replace(signature(FORMAT_VERSION), signature(1), 1)
    path.write_bytes(data)
    trace = read_trace(str(path))
    assert trace.header["format_version"] == 1
    np.testing.assert_array_equal(trace.events["pkt"], pkt)


def test_objects_keep_their_order_and_notes_survive(tmp_path):
    path = str(tmp_path / "n.mbrec")
    with TraceWriter(path, make_header()) as w:
        for i in range(5):
            w.write_object({"t": "note", "kind": "marker", "i": i})
    notes = read_trace(path).notes
    assert [n["i"] for n in notes] == list(range(5))


def test_writer_refuses_to_overwrite_unless_forced(tmp_path):
    path = str(tmp_path / "x.mbrec")
    write_trace(path, every_schema(10))
    with pytest.raises(Exception, match="already exists.*--force"):
        write_trace(path, every_schema(10))
    write_trace(path, every_schema(20), force=True)
    assert len(read_trace(path).events["pkt"]) == 20


def is_prefix(got: np.ndarray, full: np.ndarray) -> bool:
    return len(got) <= len(full) and got.tobytes() == full[:len(got)].tobytes()


def test_truncation_at_any_offset_gives_a_prefix(many_frames):
    path, events = many_frames
    data = open(path, "rb").read()
    cut_path = path + ".cut"
    first_frame_end = 16 + TraceReader(path)._decompress_one(data, 16)[1]  # the header frame
    offsets = sorted(set(range(0, first_frame_end + 50)) | set(range(0, len(data), 97))
                     | {len(data) - 1})
    for cut in offsets:
        with open(cut_path, "wb") as f:
            f.write(data[:cut])
        try:
            trace = read_trace(cut_path)
        except TraceFormatError:
            assert cut < first_frame_end, f"a cut at {cut} lost the whole file"
            continue
        for name, recs in events.items():
            assert is_prefix(trace.events[name], recs), (cut, name)
        assert not trace.clean
    # the largest cut keeps nearly everything
    assert len(trace.events["tcp"]) > 400


def test_corrupt_middle_frame_is_skipped_and_reported(many_frames):
    path, events = many_frames
    data = bytearray(open(path, "rb").read())
    middle = len(data) // 2
    data[middle:middle + 40] = os.urandom(40)
    with open(path, "wb") as f:
        f.write(data)
    trace = read_trace(path)
    total = sum(len(r) for r in events.values())
    got = sum(len(r) for r in trace.events.values())
    assert 0 < got < total
    assert any("bytes lost" in w or "corrupt" in w for w in trace.warnings)
    assert trace.bytes_lost > 0
    assert trace.clean  # the trailer after the damage is still found
    for name, recs in events.items():  # what survives is genuine: a subset, in order
        g = trace.events[name]
        assert np.isin(g["ts_ns"], recs["ts_ns"]).all()
        assert (np.diff(g["ts_ns"].astype(np.int64)) > 0).all()


@pytest.mark.parametrize("reuse", [False, True])
def test_an_interrupt_mid_frame_propagates_as_itself(many_frames, reuse):
    """Ctrl-C while a frame decompresses: the mapped file is closed on the way out, which fails
    (BufferError, an "internal error") if anything still points into it."""
    import zstandard

    path, _ = many_frames

    class Interrupting:  # zstd's decompressor, interrupted on the fourth frame
        def __init__(self):
            self.real, self.frames = zstandard.ZstdDecompressor(), 0

        def _count(self):
            self.frames += 1
            if self.frames == 4:
                raise KeyboardInterrupt

        def decompress(self, frame):
            self._count()
            return self.real.decompress(frame)

        def stream_reader(self, frame):
            self._count()
            return self.real.stream_reader(frame)

    reader = TraceReader(path, reuse_frame_buffer=reuse)
    reader._dctx = Interrupting()
    with pytest.raises(KeyboardInterrupt):
        for _ in reader.objects():
            pass


def test_content_bound_is_the_frames_decompressed_size(many_frames):
    """read_trace sizes its arrays from the frame headers: their content sizes add up to what
    decompression gives, and a file with bytes that are not frames has no bound."""
    path, events = many_frames
    data = open(path, "rb").read()
    reader = TraceReader(path)
    pos, total = 16, 0
    while pos < len(data):
        payload, used, _ = reader._decompress_one(data, pos)
        total, pos = total + len(payload), pos + used
    assert reader.content_bound() == total > sum(r.nbytes for r in events.values())
    with open(path, "ab") as f:
        f.write(b"not a frame")
    assert TraceReader(path).content_bound() is None
    assert sum(map(len, read_trace(path).events.values())) == sum(map(len, events.values()))


def test_a_frame_whose_checksum_alone_is_wrong_is_dropped(many_frames):
    """The one-call decompression reads each frame to its end, so a frame whose content
    decodes but whose checksum disagrees is counted as corrupt, not read."""
    path, events = many_frames
    data = bytearray(open(path, "rb").read())
    reader = TraceReader(path)
    pos = 16
    for _ in range(5):  # the fifth frame: past the header
        pos += reader._decompress_one(bytes(data), pos)[1]
    end = pos + reader._decompress_one(bytes(data), pos)[1]
    data[end - 1] ^= 0x01  # the last byte of the frame's 4-byte checksum
    with open(path, "wb") as f:
        f.write(data)
    trace = read_trace(path)
    total = sum(len(r) for r in events.values())
    assert 0 < sum(len(r) for r in trace.events.values()) < total
    assert any("corrupt" in w for w in trace.warnings), trace.warnings


def test_newer_format_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "new.mbrec"
    path.write_bytes(signature(FORMAT_VERSION + 1) + b"\0" * 64)
    with pytest.raises(TraceFormatError, match="newer.*upgrade mbrec"):
        read_trace(str(path))


@pytest.mark.parametrize("content,match", [
    (b"", "empty"),
    (b"hello world, not a trace at all", "not an mbrec trace"),
    (signature() + b"\x28\xb5\x2f\xfd" + b"\0" * 20, "no readable header"),
])
def test_bad_files_raise_format_errors(tmp_path, content, match):
    path = tmp_path / "bad.mbrec"
    path.write_bytes(content)
    with pytest.raises(TraceFormatError, match=match):
        read_trace(str(path))


def read_only_documented_errors(path):
    try:
        trace = read_trace(path)
    except TraceFormatError:
        return None
    for recs in trace.events.values():
        assert recs.dtype.names  # decoded records, whatever survived
    return trace


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=4096), st.booleans())
def test_fuzz_random_bytes(tmp_path, blob, with_signature):
    path = str(tmp_path / "fuzz.mbrec")
    with open(path, "wb") as f:
        f.write((signature() if with_signature else b"") + blob)
    read_only_documented_errors(path)


@pytest.fixture(scope="module")
def valid_bytes(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("v") / "v.mbrec")
    write_trace(path, every_schema(40), batch=10, frame_bytes=1024)
    return open(path, "rb").read()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=12),
       st.integers(0, 10**6), st.integers(0, 10**6))
def test_fuzz_mutated_valid_files(tmp_path, valid_bytes, flips, cut, dup):
    data = bytearray(valid_bytes)
    for pos, value in flips:
        data[pos % len(data)] = value
    d = dup % len(data)
    data = data[:d] + data[d:d + 300] + data[d:]  # a duplicated region
    data = data[:max(1, cut % (len(data) + 1))]
    path = str(tmp_path / "mut.mbrec")
    with open(path, "wb") as f:
        f.write(data)
    read_only_documented_errors(path)


WRITER_LOOP = """
import sys, time
from mbrec.testing.synthetic import random_records
from mbrec.trace.format import make_header
from mbrec.trace.writer import TraceWriter
w = TraceWriter(sys.argv[1], make_header(), flush_interval=0.02)
recs = random_records("pkt", 100)
print("ready", flush=True)
while True:
    w.write_events(1, recs)
    time.sleep(0.002)
"""


def test_sigkilled_writer_leaves_a_readable_file(tmp_path):
    path = str(tmp_path / "killed.mbrec")
    proc = subprocess.Popen([sys.executable, "-c", WRITER_LOOP, path], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    trace = read_trace(path)
    assert not trace.clean
    assert any("no trailer" in w for w in trace.warnings)
    n = len(trace.events["pkt"])
    assert n > 0 and n % 100 == 0  # whole batches only


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "mbrec", *args], capture_output=True, text=True)


def file_with(content: bytes):
    def make(d):
        path = d / "bad.mbrec"
        path.write_bytes(content)
        return str(path)
    return make


@pytest.mark.parametrize("make,needle", [
    (lambda d: str(d / "missing.mbrec"), "does not exist"),
    (lambda d: str(d), "is a directory"),
    (file_with(b""), "empty"),
    (file_with(b"x" * 100), "not an mbrec"),
    (file_with(signature(FORMAT_VERSION + 1) + b"\0" * 32), "newer"),
])
@pytest.mark.parametrize("command", ["info", "replay"])
def test_cli_error_paths_are_one_line_exit_2(tmp_path, make, needle, command):
    path = make(tmp_path)
    result = run_cli(command, path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0] and path in lines[0]
    assert "Traceback" not in result.stderr


def test_reader_decodes_in_batches_not_per_event(tmp_path):
    path = write_trace(str(tmp_path / "b.mbrec"), {"pkt": random_records("pkt", 10000)},
                       batch=5000)
    reader = TraceReader(path)
    batches = [o for o in reader.objects() if o["t"] == "events"]
    assert [o["n"] for o in batches] == [5000, 5000]


@pytest.mark.parametrize("content", ["zeros", "random", "mixed"], ids=str)
@pytest.mark.parametrize("checksum", [False, True])
def test_frame_length_from_the_block_headers_is_the_decompressors(content, checksum):
    """The one-shot read's frame length (RLE, raw and compressed blocks, with and without a
    checksum) against what a streaming decompressor consumes; cut short, it is -1."""
    import zstandard
    from mbrec.trace.reader import _frame_length
    rng = np.random.default_rng(1)
    raw = {"zeros": bytes(300_000), "random": rng.bytes(300_000),
           "mixed": bytes(100_000) + rng.bytes(100_000) + b"ab" * 50_000}[content]
    frame = zstandard.ZstdCompressor(write_checksum=checksum).compress(raw)
    data = b"x" * 5 + frame + b"next frame"
    dobj = zstandard.ZstdDecompressor().decompressobj()
    assert dobj.decompress(data[5:]) == raw
    assert _frame_length(data, 5, len(data) - 5) == len(data) - 5 - len(dobj.unused_data)
    assert _frame_length(data, 5, len(frame) - 1) == -1
    assert _frame_length(data[:5 + len(frame) // 2], 5, len(frame) // 2) == -1
