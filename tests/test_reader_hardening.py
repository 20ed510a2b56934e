"""The reader checks what it interprets: files with valid checksums and odd content, frames
dropped, repeated or swapped, a decompression bomb, and inputs that are not regular files.
Each case ends in one clear line or a counted warning, never an internal error."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import zstandard

import tracecraft as tc
from mbrec.errors import TraceFormatError
from mbrec.trace import writer as writer_module
from mbrec.trace.format import MAX_FRAME_BYTES, make_header
from mbrec.trace.reader import read_trace
from mbrec.trace.writer import TraceWriter
from cliutil import run_cli as cli


def write(tmp_path, data: bytes, name="t.mbrec") -> str:
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def every_command(path, capsys):
    """info, replay and analyze on one file: (exit status, stderr) of each."""
    out = {}
    for args in (["info", path], ["info", "--json", path], ["replay", path],
                 ["analyze", "-q", "--no-plots", path]):
        code, _, err = cli(*args, capsys=capsys)
        assert "internal error" not in err and "Traceback" not in err, (args, err)
        out[args[0] if args[1] != "--json" else "info --json"] = (code, err)
    return out


# ------------------------------------------------------------------ the header

ODD_HEADERS = [
    ({"format_version": [3]}, "field 'format_version' is list"),
    ({"format_version": 2}, "field 'format_version' is 2 but the signature says 3"),
    ({"host": b"\x01binary"}, "field 'host' is bytes"),
    ({"host": None}, "field 'host' is missing"),
    ({"probes": ["not a map"]}, "field 'probes[0]' is str"),
    ({"probes": "packets"}, "field 'probes' is str"),
    ({"probes": [{"name": 7}]}, "probes[0]: field 'name' is int"),
    ({"options": [1, 2]}, "field 'options' is list"),
    ({"options": {1: "x"}}, "field 'options' has the key int"),
    ({"options": {"x": b"raw"}}, "field 'options.x' holds bytes"),
    ({"magic": "other"}, "field 'magic'"),
    ({"schemas": {"pkt": 1}}, "field 'schemas' is dict"),
]


@pytest.mark.parametrize("change,needle", ODD_HEADERS)
def test_an_odd_header_is_one_line_naming_the_field(tmp_path, capsys, change, needle):
    path = write(tmp_path, tc.assemble(tc.with_header(tc.good_frames(), **change)))
    with pytest.raises(TraceFormatError, match="header"):
        read_trace(path)
    for cmd, (code, err) in every_command(path, capsys).items():
        assert code == 2, (cmd, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and path in lines[0] and "header" in lines[0], lines
        assert needle in lines[0] and "damaged or was not written by mbrec" in lines[0], lines


def schemas_with(change):
    frames = tc.good_frames()
    change(frames[0][0]["schemas"])
    return frames


def _rename(schemas, i, name):
    schemas[i]["name"] = name


def _field(schemas, schema, field, value):
    entry = next(s for s in schemas if s["name"] == schema)
    for f in entry["fields"]:
        if f[0] == field:
            f[:] = value if isinstance(value, list) else [value] + f[1:]


ODD_SCHEMAS = [
    (lambda s: s.append(dict(s[0], id=50)), "the name 'pkt' is used twice"),
    (lambda s: _rename(s, 1, "with space"), "not a name"),
    (lambda s: s[1].update(id=s[0]["id"]), "is used twice"),
    (lambda s: _field(s, "pkt", "seq", ""), "field name str '' is not a name"),
    (lambda s: _field(s, "pkt", "ts_ns", "when"), "schema 'pkt' has no field 'ts_ns'"),
    (lambda s: _field(s, "tcp", "ts_ns", ["ts_ns", "<u4", 0, 1]), "no field 'ts_ns' of type <u8"),
    (lambda s: _field(s, "pkt", "seq", ["seq", "<f8", 8, 1]), "has type str '<f8'"),
    (lambda s: _field(s, "pkt", "seq", ["seq", "<u4", 10**6, 1]), "does not fit"),
    (lambda s: _field(s, "pkt", "seq", ["seq", "<u4", 8, 0]), "does not fit"),
    (lambda s: s[0].update(size=0), "field 'size' is int 0"),
    (lambda s: s[0]["fields"].append(list(s[0]["fields"][0])), "appears twice"),
    (lambda s: s[0].update(fields=[f for f in s[0]["fields"] if f[0] != "saddr"]),
     "lacks the field 'saddr'"),
    (lambda s: s.append("x"), "is not a map"),
]


@pytest.mark.parametrize("change,needle", ODD_SCHEMAS)
def test_an_odd_schema_is_one_line_naming_it(tmp_path, capsys, change, needle):
    path = write(tmp_path, tc.assemble(schemas_with(change)))
    with pytest.raises(TraceFormatError, match="schemas\\["):
        read_trace(path)
    for cmd, (code, err) in every_command(path, capsys).items():
        assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, (cmd, err)


def test_a_schema_this_mbrec_does_not_know_is_read_and_replayed(tmp_path, capsys):
    frames = tc.good_frames()
    frames[0][0]["schemas"].append({"id": 99, "name": "future", "size": 16,
                                    "fields": [["ts_ns", "<u8", 0, 1], ["x", "<u4", 8, 1]]})
    recs = np.zeros(3, dtype=[("ts_ns", "<u8"), ("x", "<u4"), ("pad", "<u4")])
    recs["ts_ns"], recs["x"] = [10, 20, 30], [7, 8, 9]
    frames[1].append({"t": "events", "s": 99, "n": 3, "data": recs.tobytes()})
    frames[-1][-1]["events"][99] = 3
    path = write(tmp_path, tc.assemble(frames))
    t = read_trace(path)
    assert t.clean and list(t.events["future"]["x"]) == [7, 8, 9]
    code, out, err = cli("replay", "--type", "pkt", path, capsys=capsys)
    assert code == 0
    result = every_command(path, capsys)
    assert all(code == 0 for code, _ in result.values()), result


def test_fields_in_any_order_are_analysed_whole_and_in_partitions(tmp_path, capsys):
    # a header may lay fields out in any order (here sport after dport): numpy reads such a
    # layout, but it is no buffer numpy can hand out as one, which the partition spill needs
    frames = tc.good_frames()
    pkt = next(s for s in frames[0][0]["schemas"] if s["name"] == "pkt")
    by_name = {f[0]: f for f in pkt["fields"]}
    by_name["sport"][2], by_name["dport"][2] = by_name["dport"][2], by_name["sport"][2]
    path = write(tmp_path, tc.assemble(frames))
    reports = []
    for parts in ("1", "2"):
        code, out, err = cli("analyze", "--json", "--partitions", parts, path, capsys=capsys)
        assert code == 0 and "internal error" not in err, err
        report = json.loads(out)
        report.pop("partitions", None)
        reports.append(report["hosts"])
    assert reports[0] == reports[1]


# ------------------------------------------------------------------ objects after the header

def frames_with(extra_objects, frame=2):
    frames = tc.good_frames()
    frames[frame] = frames[frame] + extra_objects
    return frames


ODD_OBJECTS = [
    ({"t": "lost", "counts": {"ip_rcv": "12"}}, "damaged lost object"),
    ({"t": "lost", "counts": ["ip_rcv"]}, "damaged lost object"),
    ({"t": "lost", "counts": {"ip_rcv": -1}}, "damaged lost object"),
    ({"t": "clock", "monotonic_ns": "now", "realtime_ns": 1}, "damaged clock object"),
    ({"t": "clock", "monotonic_ns": 1}, "damaged clock object"),
    ({"t": "clock", "monotonic_ns": 1, "realtime_ns": 2**64 - 1}, "damaged clock object"),
    ({"t": "note", "kind": b"bin"}, "damaged note object"),
    ({"t": "note", "kind": "x", "value": float("nan")}, "damaged note object"),
    ({"t": "events", "s": 1, "n": "3", "data": b""}, "damaged event batch"),
    ({"t": "events", "s": 77, "n": 0, "data": b""}, "damaged event batch"),
    ({"t": "events", "s": 1, "n": 1, "data": "text"}, "damaged event batch"),
    ({"t": "events", "s": 1, "n": 0, "data": b"", "d": [["seq", "nope"]]}, "damaged event batch"),
    ({"t": "events", "s": 1, "n": 0, "data": b"", "d": "x"}, "damaged event batch"),
]


@pytest.mark.parametrize("obj,needle", ODD_OBJECTS)
def test_an_odd_object_is_skipped_counted_and_the_rest_is_read(tmp_path, capsys, obj, needle):
    good = read_trace(write(tmp_path, tc.assemble(tc.good_frames()), "good.mbrec"))
    path = write(tmp_path, tc.assemble(frames_with([obj, obj])))
    t = read_trace(path)
    assert [w for w in t.warnings if needle in w and "(1 more like it)" in w], t.warnings
    for name, recs in good.events.items():
        np.testing.assert_array_equal(t.events[name], recs)
    assert t.lost == {"ip_rcv": 2} and len(t.clocks) == len(good.clocks)
    assert not t.clean  # valid checksums around a damaged object: not as written by mbrec
    result = every_command(path, capsys)
    assert all(code == 0 for code, _ in result.values()), result


@pytest.mark.parametrize("trailer,needle", [
    ({"clean": "yes"}, "field 'clean'"),
    ({"events": {"1": 5}}, "field 'events' has the key str"),
    ({"lost": {"ip_rcv": 1.5}}, "field 'lost.ip_rcv'"),
    ({"stop_reason": 3}, "field 'stop_reason'"),
])
def test_an_odd_trailer_is_not_trusted(tmp_path, capsys, trailer, needle):
    frames = tc.good_frames()
    frames[-1][-1].update(trailer)
    path = write(tmp_path, tc.assemble(frames))
    t = read_trace(path)
    assert t.trailer is None and not t.clean
    assert any("damaged trailer" in w and needle in w for w in t.warnings), t.warnings
    code, out, err = cli("info", path, capsys=capsys)
    assert code == 0 and "UNCLEAN" in out


def test_a_decompression_bomb_costs_one_warning_not_millions(tmp_path, capsys):
    frames = [tc.pack(o) for o in tc.good_frames()[0]]
    bomb = tc.frame(b"\xc0" * (16 << 20))  # 16 MiB of msgpack nil
    data = tc.signature() + tc.frame(tc.pack({"t": "frame", "seq": 0}) + b"".join(frames)) \
        + bomb
    assert len(data) < 4096
    t = read_trace(write(tmp_path, data))
    assert len(t.warnings) <= 4, t.warnings
    assert any("more like it" in w for w in t.warnings)
    assert any("given up" in w for w in t.warnings)


def test_a_frame_larger_than_the_writer_writes_is_refused_unread(tmp_path):
    frames = tc.assemble(tc.good_frames()[:1])
    big = zstandard.ZstdCompressor(level=1, write_checksum=True).compress(
        b"\xc0" * (MAX_FRAME_BYTES + 1))
    t = read_trace(write(tmp_path, frames + big))
    assert any(f"more than the {MAX_FRAME_BYTES}" in w for w in t.warnings), t.warnings
    assert t.bytes_lost == len(big)


def test_the_writer_never_exceeds_the_frame_limits(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_module, "MAX_BATCH_BYTES", 64 << 10)
    monkeypatch.setattr(writer_module, "MAX_FRAME_OBJECTS", 100)
    path = str(tmp_path / "w.mbrec")
    recs = tc.random_records("pkt", 20_000)  # 1.9 MB in one batch
    with TraceWriter(path, make_header(), frame_bytes=1 << 30, flush_interval=1e9) as w:
        w.write_events(tc.PKT_ID, recs)
        for i in range(1000):
            w.write_object({"t": "note", "kind": "n", "i": i})
    data = open(path, "rb").read()
    pos, sizes, objects = 16, [], []
    while pos < len(data):
        dobj = zstandard.ZstdDecompressor().decompressobj()
        payload = dobj.decompress(data[pos:])
        pos = len(data) - len(dobj.unused_data)
        sizes.append(len(payload))
        u = tc.msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=1 << 30)
        u.feed(payload)
        objects.append(sum(1 for _ in u))
    assert max(sizes) <= (64 << 10) + 1024 and max(objects) <= 100
    t = read_trace(path)
    np.testing.assert_array_equal(t.events["pkt"], recs)
    assert len(t.notes) == 1000 and t.clean and t.warnings == []


# ------------------------------------------------------------------ frame integrity

def frame_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every zstd frame after the signature."""
    pos, out = 16, []
    while pos < len(data):
        dobj = zstandard.ZstdDecompressor().decompressobj()
        dobj.decompress(data[pos:])
        end = len(data) - len(dobj.unused_data)
        out.append((pos, end))
        pos = end
    return out


def rearranged(data: bytes, order: list[int]) -> bytes:
    spans = frame_spans(data)
    return data[:16] + b"".join(data[spans[i][0]:spans[i][1]] for i in order)


@pytest.fixture(params=[3, 2], ids=["v3", "v2"])
def version(request):
    return request.param


def good_bytes(version):
    frames = tc.with_header(tc.good_frames(), format_version=version)
    return tc.assemble(frames, version=version)


def test_a_removed_frame_is_found_and_the_trace_is_not_clean(tmp_path, capsys, version):
    data = good_bytes(version)
    n = len(frame_spans(data))
    t = read_trace(write(tmp_path, rearranged(data, [i for i in range(n) if i != 2])))
    assert not t.clean and t.trailer is not None
    assert t.records_lost == {"pkt": 50, "tcp": 5}
    assert any("missing" in w and "no damage seen" in w for w in t.warnings), t.warnings
    if version >= 3:
        assert t.frames_lost == 1
    code, out, err = cli("info", str(tmp_path / "t.mbrec"), capsys=capsys)
    assert code == 0 and "UNCLEAN" in out and "clean stop" not in out
    assert "50 pkt records" in out


def test_a_repeated_frame_is_found_and_its_events_are_not_doubled(tmp_path, version):
    data = good_bytes(version)
    n = len(frame_spans(data))
    t = read_trace(write(tmp_path, rearranged(data, [0, 1, 2, 2] + list(range(3, n)))))
    assert not t.clean
    good = read_trace(write(tmp_path, data, "good.mbrec"))
    if version >= 3:
        assert any("frame 2 is repeated" in w for w in t.warnings), t.warnings
        np.testing.assert_array_equal(t.events["pkt"], good.events["pkt"])
    else:  # without sequence numbers, the trailer's counts show it
        assert any("more pkt records than the trailer" in w for w in t.warnings), t.warnings


def test_swapped_frames_are_found_in_v3(tmp_path):
    data = good_bytes(3)
    n = len(frame_spans(data))
    t = read_trace(write(tmp_path, rearranged(data, [0, 1, 3, 2] + list(range(4, n)))))
    assert not t.clean and t.frames_lost == 1 and t.records_lost == {"pkt": 50, "tcp": 5}
    assert any("frame 2 is out of order" in w for w in t.warnings), t.warnings
    ts = t.events["pkt"]["ts_ns"].astype(np.int64)
    assert (np.diff(ts) > 0).all()  # what was kept is in order


def test_a_frame_lost_to_byte_damage_is_counted_but_explained(tmp_path):
    data = bytearray(good_bytes(3))
    start, end = frame_spans(bytes(data))[2]
    data[start + 20] ^= 0xFF
    t = read_trace(write(tmp_path, bytes(data)))
    assert t.frames_lost == 1 and t.records_lost == {"pkt": 50, "tcp": 5} and t.bytes_lost > 0
    assert t.clean  # the recording stopped as asked; the damage is reported, not hidden
    assert any("lost in the damaged bytes" in w for w in t.warnings)


def test_frames_without_sequence_numbers_in_v3_are_skipped(tmp_path):
    frames = tc.good_frames()
    seqs = list(range(len(frames)))
    seqs[2] = None
    t = read_trace(write(tmp_path, tc.assemble(frames, seqs=seqs)))
    assert not t.clean and any("without a sequence number" in w for w in t.warnings)


def test_fixtures_of_format_v1_and_v2_still_read_clean():
    root = os.path.join(os.path.dirname(__file__), "..", "fixtures")
    seen = set()
    for name in ("ab/a.mbrec", "latency/a.mbrec"):
        path = os.path.join(root, name)
        if not os.path.exists(path):
            pytest.skip("no fixtures")
        t = read_trace(path)
        seen.add(t.header["format_version"])
        assert t.clean and t.frames_lost == 0 and t.records_lost == {}, t.warnings
    assert seen == {1, 2}


# ------------------------------------------------------------------ any input path

def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)


@pytest.fixture
def good_file(tmp_path):
    return write(tmp_path, good_bytes(3), "good.mbrec")


def test_a_fifo_without_a_writer_is_one_line_not_a_hang(tmp_path):
    fifo = str(tmp_path / "f.mbrec")
    os.mkfifo(fifo)
    r = run([sys.executable, "-m", "mbrec", "info", fifo])
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "gave no data" in r.stderr and fifo in r.stderr


def test_a_pipe_is_read_as_a_stream(good_file):
    with open(good_file, "rb") as f:
        r = run([sys.executable, "-m", "mbrec", "info", "--json", "/dev/stdin"], stdin=f)
    assert r.returncode == 0, r.stderr  # a regular file behind /dev/stdin
    r = subprocess.run(f"cat {good_file} | {sys.executable} -m mbrec info /dev/stdin",
                       shell=True, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "clean stop" in r.stdout, r.stderr
    r = subprocess.run(["bash", "-c", f"{sys.executable} -m mbrec replay <(cat {good_file})"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 220, r.stderr


def test_a_fifo_with_a_writer_is_read(tmp_path, good_file):
    fifo = str(tmp_path / "f.mbrec")
    os.mkfifo(fifo)
    reader = subprocess.Popen([sys.executable, "-m", "mbrec", "info", fifo],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with open(fifo, "wb") as f:  # blocks until the reader has opened it
        f.write(open(good_file, "rb").read())
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0 and "clean stop" in out, err


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_a_device_is_refused_not_read_forever(device):
    r = run([sys.executable, "-m", "mbrec", "info", device])
    assert r.returncode == 2 and "is a device" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_file_that_expands_like_no_recording_is_not_read_to_its_end(tmp_path, monkeypatch):
    from mbrec.trace import reader as reader_module
    monkeypatch.setattr(reader_module, "MAX_EXPANSION_FLOOR", 1 << 20)
    head = tc.assemble(tc.good_frames()[:1])
    bomb = tc.frame(tc.pack({"t": "frame", "seq": 1}) + b"\xc0" * (4 << 20))
    t = read_trace(write(tmp_path, head + bomb * 8))
    assert any("expands to more than 4096 times" in w for w in t.warnings), t.warnings
    assert t.bytes_lost > 0 and not t.clean
