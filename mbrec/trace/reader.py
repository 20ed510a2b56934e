"""Trace reader: frame by frame, tolerant of truncation and corruption, decoding in bulk.

A damaged frame costs only itself: a truncated last frame is dropped, a corrupt frame in the
middle is skipped by resynchronising on the next zstd frame magic. Every object is checked for
type and range before anything uses it (the check_* functions, one per object type): a
damaged header is refused in one line naming the file, the object and the field; a damaged
object elsewhere is skipped and counted. Frames carry sequence numbers (v3) and the trailer
counts the records written, so a frame that is missing, repeated or out of place is found and
the trace is no longer called clean. Warnings are aggregated by kind. Anything that is not an
mbrec trace, or a trace of a newer format, raises TraceFormatError; nothing else escapes.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import mmap
import os
import re
import stat
import struct
from dataclasses import dataclass, field
from typing import Iterator

import msgpack
import numpy as np
import zstandard

from mbrec.errors import TraceFormatError
from mbrec.events import SCHEMA_BY_NAME, dtype_from_header
from mbrec.trace.format import (FORMAT_VERSION, FRAME_SEQUENCE_SINCE, MAGIC, MAX_FRAME_BYTES,
                                MAX_FRAME_OBJECTS, READABLE_VERSIONS, RECORDS_KEY,
                                SIGNATURE_MAGIC, SIGNATURE_PAYLOAD, SIGNATURE_SIZE,
                                SKIPPABLE_MAGIC_RANGE, ZSTD_MAGIC)
from mbrec.trace.unpack import frame_objects

# Memory and time stay proportional to the file: the lab's recordings expand at most 10.5 times
# (fixtures/), so a file that has expanded more than MAX_EXPANSION times the bytes read so far
# (past the first GiB) is not a recording, and the rest of it is not read.
MAX_EXPANSION = 4096
MAX_EXPANSION_FLOOR = 1 << 30
MAX_JUNK_PER_FRAME = 64    # objects that are not mbrec records before a frame is given up
MAX_RECORD_SIZE = 1 << 16  # bytes per event record
MAX_JSON_DEPTH = 32        # nesting of options, probes and notes (they end up in JSON)
U63 = (1 << 63) - 1
FIELD_CODES = frozenset({"|u1", "<u2", "<u4", "<u8"})
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
DAMAGED = "the file is damaged or was not written by mbrec"


class _Bad(ValueError):
    """One object failed a check; the message names the field."""


def _check_signature(path: str, data, kind: str = "file") -> None:
    if len(data) == 0:
        if kind != "file":
            raise TraceFormatError(f"{path} is a {kind} that gave no data: write a trace "
                                   "into it, or give the trace file itself")
        raise TraceFormatError(f"{path} is empty: the recorder wrote nothing (was it killed "
                               "before start-up finished?)")
    if len(data) < SIGNATURE_SIZE:
        raise TraceFormatError(f"{path} is not an mbrec trace (too short): give a file "
                               "written by 'mbrec record'")
    magic, size = struct.unpack_from("<II", data, 0)
    if magic != SIGNATURE_MAGIC or size != 8 or bytes(data[8:14]) != SIGNATURE_PAYLOAD:
        raise TraceFormatError(f"{path} is not an mbrec trace: give a file written by "
                               "'mbrec record'")
    (version,) = struct.unpack_from("<H", data, 14)
    if version not in READABLE_VERSIONS:
        if version > FORMAT_VERSION:
            raise TraceFormatError(
                f"{path} uses trace format version {version}, newer than this mbrec reads "
                f"(up to {FORMAT_VERSION}): upgrade mbrec to read it")
        raise TraceFormatError(f"{path} uses unknown trace format version {version}")


# --------------------------------------------------------------------------------------------
# Checks, one per object type. Each raises _Bad naming the field; none changes the object.

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(obj: dict, key: str, lo: int = 0, hi: int = U63, *, required: bool = True):
    if key not in obj:
        if required:
            raise _Bad(f"field '{key}' is missing")
        return
    v = obj[key]
    if not _is_int(v) or not lo <= v <= hi:
        raise _Bad(f"field '{key}' is {_show(v)}, not an integer from {lo} to {hi}")


def _str(obj: dict, key: str, *, required: bool = False) -> None:
    if key not in obj:
        if required:
            raise _Bad(f"field '{key}' is missing")
        return
    if not isinstance(obj[key], str):
        raise _Bad(f"field '{key}' is {_show(obj[key])}, not a string")


def _show(v) -> str:
    text = repr(v)
    return f"{type(v).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def _jsonable(v, where: str, depth: int = 0) -> None:
    """What info --json and report.json can hold: maps with string keys, lists, scalars."""
    if depth > MAX_JSON_DEPTH:
        raise _Bad(f"field '{where}' is nested too deeply")
    if v is None or isinstance(v, (bool, str)) or _is_int(v):
        return
    if isinstance(v, float):
        if not math.isfinite(v):
            raise _Bad(f"field '{where}' holds {v}, not a finite number")
        return
    if isinstance(v, (list, tuple)):
        for i, item in enumerate(v):
            _jsonable(item, f"{where}[{i}]", depth + 1)
        return
    if isinstance(v, dict):
        for k, item in v.items():
            if not isinstance(k, str):
                raise _Bad(f"field '{where}' has the key {_show(k)}, not a string")
            _jsonable(item, f"{where}.{k}", depth + 1)
        return
    raise _Bad(f"field '{where}' holds {_show(v)}, which no mbrec object holds")


def _counts(obj: dict, key: str, key_type, *, required: bool = True) -> None:
    """A map from names (or ids) to counts, as lost and trailer objects hold."""
    if key not in obj:
        if required:
            raise _Bad(f"field '{key}' is missing")
        return
    m = obj[key]
    if not isinstance(m, dict):
        raise _Bad(f"field '{key}' is {_show(m)}, not a map")
    for k, v in m.items():
        if key_type is str and not isinstance(k, str) or key_type is int and not _is_int(k):
            raise _Bad(f"field '{key}' has the key {_show(k)}")
        if not _is_int(v) or not 0 <= v <= U63:
            raise _Bad(f"field '{key}.{k}' is {_show(v)}, not a count")


def check_clock(obj: dict) -> None:
    for key in ("monotonic_ns", "realtime_ns"):
        _int(obj, key)
    _int(obj, "boottime_ns", required=False)
    _int(obj, "uncertainty_ns", required=False)


def check_lost(obj: dict) -> None:
    _counts(obj, "counts", str)


def check_trailer(obj: dict) -> None:
    _int(obj, "end_monotonic_ns", required=False)
    _counts(obj, "events", int)
    _counts(obj, "lost", str, required=False)
    if not isinstance(obj.get("clean"), bool):
        raise _Bad(f"field 'clean' is {_show(obj.get('clean'))}, not true or false")
    _str(obj, "stop_reason")
    detail = obj.get("lost_detail", {})
    if not isinstance(detail, dict):
        raise _Bad(f"field 'lost_detail' is {_show(detail)}, not a map")
    for cause in detail:
        _counts(detail, cause, str)
    _int(obj, "records_skipped", required=False)


def check_note(obj: dict) -> None:
    _str(obj, "kind")
    _jsonable(obj, "note")


def check_header(header: dict) -> dict[int, tuple[str, np.dtype]]:
    """The header's schemas as {id: (name, dtype)}, after checking every field."""
    if header.get("magic") != MAGIC:
        raise _Bad(f"field 'magic' is {_show(header.get('magic'))}, not {MAGIC!r}")
    _int(header, "format_version", 0, 0xFFFF)
    _str(header, "host", required=True)
    for key in ("mbrec_version", "kernel", "boot_id", "trace_id", "clock"):
        _str(header, key)
    _int(header, "created_realtime_ns", required=False)
    if not isinstance(header.get("options", {}), dict):
        raise _Bad(f"field 'options' is {_show(header['options'])}, not a map")
    _jsonable(header.get("options", {}), "options")
    probes = header.get("probes", [])
    if not isinstance(probes, list):
        raise _Bad(f"field 'probes' is {_show(probes)}, not a list")
    for i, p in enumerate(probes):
        if not isinstance(p, dict):
            raise _Bad(f"field 'probes[{i}]' is {_show(p)}, not a map")
        for key in ("name", "function", "attach"):
            try:
                _str(p, key)
            except _Bad as e:
                raise _Bad(f"probes[{i}]: {e}") from None
        _jsonable(p, f"probes[{i}]")
    schemas = header.get("schemas")
    if not isinstance(schemas, list):
        raise _Bad(f"field 'schemas' is {_show(schemas)}, not a list")
    out: dict[int, tuple[str, np.dtype]] = {}
    names = set()
    for i, entry in enumerate(schemas):
        try:
            sid, name, dtype = check_schema(entry)
        except _Bad as e:
            raise _Bad(f"schemas[{i}]: {e}") from None
        if sid in out:
            raise _Bad(f"schemas[{i}]: id {sid} is used twice")
        if name in names:
            raise _Bad(f"schemas[{i}]: the name {name!r} is used twice")
        out[sid] = (name, dtype)
        names.add(name)
    return out


def check_schema(entry) -> tuple[int, str, np.dtype]:
    """One layout of header.schemas. A schema named like one of this mbrec's must have every
    field the analyzer reads from it (its current fields, with their types); every schema has
    a scalar u64 ts_ns (replay and info order by it)."""
    if not isinstance(entry, dict):
        raise _Bad(f"{_show(entry)} is not a map")
    _int(entry, "id", 0, (1 << 31) - 1)
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise _Bad(f"field 'name' is {_show(name)}, not a name (letters, digits, _)")
    _int(entry, "size", 1, MAX_RECORD_SIZE)
    size = entry["size"]
    fields = entry.get("fields")
    if not isinstance(fields, list) or not fields:
        raise _Bad(f"schema {name!r}: field 'fields' is {_show(fields)}, not a list of fields")
    seen = {}
    for f in fields:
        if not (isinstance(f, list) and len(f) == 4):
            raise _Bad(f"schema {name!r}: field {_show(f)} is not [name, type, offset, count]")
        fname, code, offset, count = f
        if not isinstance(fname, str) or not _NAME_RE.match(fname):
            raise _Bad(f"schema {name!r}: field name {_show(fname)} is not a name")
        if fname in seen:
            raise _Bad(f"schema {name!r}: field {fname!r} appears twice")
        if not isinstance(code, str) or code not in FIELD_CODES:
            raise _Bad(f"schema {name!r}: field {fname!r} has type {_show(code)}; mbrec "
                       f"writes {', '.join(sorted(FIELD_CODES))}")
        if not (_is_int(offset) and _is_int(count) and offset >= 0 and 1 <= count <= size
                and offset + int(code[2:]) * count <= size):
            raise _Bad(f"schema {name!r}: field {fname!r} at offset {_show(offset)}, count "
                       f"{_show(count)} does not fit a {size}-byte record")
        seen[fname] = (code, count)
    if seen.get("ts_ns") != ("<u8", 1):
        raise _Bad(f"schema {name!r} has no field 'ts_ns' of type <u8")
    known = SCHEMA_BY_NAME.get(name)
    if known is not None:
        for fname in known.dtype.names:
            ftype = known.dtype.fields[fname][0]
            base, n = (ftype.subdtype[0], ftype.subdtype[1][0]) if ftype.subdtype else (ftype, 1)
            if seen.get(fname) != (base.str, n):
                raise _Bad(f"schema {name!r} lacks the field {fname!r} ({base.str} x {n}) "
                           "that a schema of that name has")
    try:
        dtype = dtype_from_header(entry)
    except (TypeError, ValueError) as e:
        raise _Bad(f"schema {name!r} is not a record layout ({e})") from None
    return entry["id"], name, dtype


# --------------------------------------------------------------------------------------------
# The trace

@dataclass
class Trace:
    """Everything in one trace file, events decoded into one numpy array per schema.

    ``trailer`` is the trailer as read, except that the reader clears its ``clean`` when frames
    are missing, repeated or out of place (the reason is then in its ``integrity`` key).
    """

    path: str
    header: dict
    events: dict[str, np.ndarray]
    clocks: list[dict]
    lost: dict[str, int]
    trailer: dict | None
    notes: list[dict]
    warnings: list[str]
    file_size: int
    bytes_lost: int = 0
    frames_lost: int = 0
    records_lost: dict[str, int] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return bool(self.trailer and self.trailer.get("clean"))

    @property
    def host(self) -> str:
        return str(self.header.get("host", "?"))


class TraceReader:
    """Iterates the objects of one trace file. Warnings collect in ``warnings``.

    Regular files are mapped; pipes, FIFOs and sockets (``/dev/stdin``, ``<(...)``) are read
    to their end first; devices are refused.
    """

    def __init__(self, path, *, reuse_frame_buffer: bool = False):
        """reuse_frame_buffer: decompress every frame into one buffer, for a caller that is done
        with a frame's objects (copied its records) before it asks for the next object."""
        self.path = os.fspath(path)
        self.bytes_lost = 0
        self.frames_lost = 0
        self.records_lost: dict[str, int] = {}
        self.header: dict | None = None
        self.schemas: dict[int, tuple[str, np.dtype]] = {}
        self.trailer: dict | None = None
        self._warnings: dict[str, list] = {}  # kind -> [first message, count]
        self._integrity: list[str] = []       # what makes the file no longer clean
        self._version = FORMAT_VERSION
        self._data: bytes | None = None       # the content of a pipe, read once
        self._damage_seen = False              # since the last frame in sequence
        self._dctx = zstandard.ZstdDecompressor()
        self._reuse_frame_buffer = reuse_frame_buffer
        self._frame_buffer: memoryview | None = None
        head = self._open()
        _check_signature(self.path, head, self._kind)
        (self._version,) = struct.unpack_from("<H", head, 14)

    def _open(self) -> bytes:
        """The first bytes of the file; a pipe is read whole (it can be read only once)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO without writer
        except IsADirectoryError:
            raise TraceFormatError(f"{self.path} is a directory: give a trace file") from None
        except FileNotFoundError:
            raise TraceFormatError(f"{self.path} does not exist: check the path") from None
        except OSError as e:
            raise TraceFormatError(f"cannot read {self.path}: {e.strerror}") from None
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise TraceFormatError(f"{self.path} is a directory: give a trace file")
            if stat.S_ISREG(st.st_mode):
                self._kind = "file"
                self.file_size = st.st_size
                return os.pread(fd, SIGNATURE_SIZE, 0)
            if not (stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode)):
                raise TraceFormatError(f"{self.path} is a device, not a trace file: give the "
                                       "file written by 'mbrec record' (or pipe it in)")
            self._kind = "pipe"
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            self._data = b"".join(chunks)
            self.file_size = len(self._data)
            return self._data[:SIGNATURE_SIZE]
        except OSError as e:
            raise TraceFormatError(f"cannot read {self.path}: {e.strerror}") from None
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _content(self):
        if self._data is not None:
            yield self._data
            return
        try:
            f = open(self.path, "rb")
        except OSError as e:
            raise TraceFormatError(f"cannot read {self.path}: {e.strerror}") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            if size < SIGNATURE_SIZE:  # shrank since it was opened
                raise TraceFormatError(f"{self.path} was truncated while being read")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                yield mm

    # ---------------------------------------------------------------- warnings

    @property
    def warnings(self) -> list[str]:
        out = []
        for message, count in self._warnings.values():
            more = f" ({count - 1} more like it)" if count > 1 else ""
            out.append(f"{self.path}: {message}{more}")
        return out

    def _warn(self, kind: str, message: str) -> None:
        entry = self._warnings.setdefault(kind, [message, 0])
        entry[1] += 1

    def _lose(self, nbytes: int, kind: str, message: str) -> None:
        self.bytes_lost += nbytes
        self._damage_seen = True
        self._warn(kind, message)

    def _broken(self, kind: str, message: str) -> None:
        """Damage that valid checksums do not explain: the file is not called clean."""
        self._integrity.append(message)
        self._damage_seen = True
        self._warn(kind, message)

    # ---------------------------------------------------------------- objects

    def objects(self) -> Iterator[dict]:
        """Every object in file order, the header first. Damaged frames become warnings.
        Each pass starts afresh (a second pass gives the same objects and warnings)."""
        self.header, self.schemas, self.trailer = None, {}, None
        self.bytes_lost, self.frames_lost, self.records_lost = 0, 0, {}
        self._warnings, self._integrity = {}, []
        self._next_seq = 0
        self._seen_seqs: set[int] = set()
        self._damage_seen = False
        self._read_counts: dict[int, int] = {}
        with self._content() as data:
            for payload in self._frames(data):
                yield from self._decode_frame(payload)
        if self.header is None:
            raise TraceFormatError(f"{self.path} has no readable header: the recorder stopped "
                                   "before writing one, or the file is damaged at its start")
        self._check_counts()

    def _frames(self, data) -> Iterator[bytes]:
        pos, end = SIGNATURE_SIZE, len(data)
        expanded = 0
        while pos < end:
            if expanded > max(MAX_EXPANSION_FLOOR, MAX_EXPANSION * pos):
                self.bytes_lost += end - pos
                self._broken("expansion", f"the file expands to more than {MAX_EXPANSION} "
                             f"times its size by offset {pos}, which no recording does: the "
                             f"remaining {end - pos} bytes were not read")
                return
            if end - pos < 8:
                self._lose(end - pos, "tail", f"{end - pos} trailing bytes at offset {pos} are "
                           "not a frame (truncated file)")
                return
            (magic,) = struct.unpack_from("<I", data, pos)
            if magic in SKIPPABLE_MAGIC_RANGE:
                (size,) = struct.unpack_from("<I", data, pos + 4)
                pos += 8 + size
                continue
            if data[pos:pos + 4] != ZSTD_MAGIC:
                nxt = self._resync(data, pos + 1)
                self._lose(nxt - pos, "not-zstd", f"{nxt - pos} bytes at offset {pos} are not a "
                           "zstd frame (corrupt data skipped, bytes lost)")
                pos = nxt
                continue
            payload, used, error = self._decompress_one(data, pos)
            if payload is not None:
                expanded += len(payload)
                yield payload
                pos += used
            elif error == "truncated":
                self._lose(end - pos, "truncated", f"the last frame (offset {pos}, {end - pos} "
                           "bytes) is truncated and was dropped: the recorder did not finish "
                           "writing it")
                return
            else:
                nxt = self._resync(data, pos + 1)
                self._lose(nxt - pos, "corrupt", f"a corrupt frame at offset {pos} was skipped "
                           f"({nxt - pos} bytes lost: {error})")
                pos = nxt

    def content_bound(self) -> int | None:
        """The decompressed size of the whole file from its frame headers, without decompressing
        anything: an upper bound of its record bytes. None where a frame is not as mbrec writes
        it (then only reading tells)."""
        with self._content() as data:
            pos, total = SIGNATURE_SIZE, 0
            while pos < len(data):
                (magic,) = struct.unpack_from("<I", data, pos) if len(data) - pos >= 4 else (0,)
                if magic in SKIPPABLE_MAGIC_RANGE and len(data) - pos >= 8:
                    pos += 8 + struct.unpack_from("<I", data, pos + 4)[0]
                    continue
                try:
                    size = zstandard.frame_content_size(data[pos:pos + 18])
                except zstandard.ZstdError:
                    return None
                used = _frame_length(data, pos, len(data) - pos)
                if size < 0 or size > MAX_FRAME_BYTES or used <= 0:
                    return None
                total, pos = total + size, pos + used
            return total

    @staticmethod
    def _resync(data, start: int) -> int:
        """Offset of the next zstd frame magic at or after start, or the end of the data."""
        i = data.find(ZSTD_MAGIC, start)
        return len(data) if i < 0 else i

    def _decompress_one(self, data, pos: int):
        """(payload, compressed size, None) or (None, 0, 'truncated' | reason).

        The frame header gives the content size (the writer always records it, and never more
        than MAX_FRAME_BYTES), and the block headers the compressed size, so a whole frame is
        decompressed in one call into one buffer. A frame whose blocks do not add up is read
        by a streaming decompressor, which names what is wrong with it.
        """
        try:
            size = zstandard.frame_content_size(data[pos:pos + 18])
        except zstandard.ZstdError as e:
            return None, 0, ("truncated" if len(data) - pos < 18 else f"bad frame header: {e}")
        if size < 0:
            return None, 0, "no content size in the frame header"
        if size > MAX_FRAME_BYTES:
            return None, 0, (f"the frame claims {size} bytes, more than the {MAX_FRAME_BYTES} "
                             "mbrec writes")
        bound = size + (size >> 7) + 1024  # above ZSTD_compressBound(size) + frame overhead
        used = _frame_length(data, pos, min(bound, len(data) - pos))
        # Frames are passed on as bytes, not views of the mapped file: a view still alive when
        # an exception (Ctrl-C) unwinds would make the file's close fail (BufferError)
        if used > 0:  # in one call: a quarter faster than the streaming decompressor
            try:
                payload = self._decompress_whole(data[pos:pos + used], size)
            except zstandard.ZstdError:
                payload = None
            if payload is not None:
                return payload, used, None
        dobj = self._dctx.decompressobj(write_size=max(size, 1))
        try:
            payload = dobj.decompress(data[pos:pos + bound])
        except zstandard.ZstdError as e:
            return None, 0, str(e)
        if not dobj.eof:
            return None, 0, ("truncated" if pos + bound >= len(data) else "frame longer than "
                             "its content size allows")
        if len(payload) != size:
            return None, 0, "content size mismatch"
        return payload, min(bound, len(data) - pos) - len(dobj.unused_data), None

    def _decompress_whole(self, frame: bytes, size: int):
        """The content of one whole frame, or None if it is not `size` bytes. Into a bytes
        object of its own, or, where the caller copies each frame's records before it reads on,
        into the reader's one buffer: a fresh buffer per frame costs a page fault per 4 KiB, up
        to half of the read's time here."""
        if not self._reuse_frame_buffer:
            payload = self._dctx.decompress(frame)
            return payload if len(payload) == size else None
        if self._frame_buffer is None or size > len(self._frame_buffer):
            self._frame_buffer = memoryview(bytearray(size))
        reader = self._dctx.stream_reader(frame)
        # reading on past the content reaches the frame's end, where its checksum is checked
        whole = reader.readinto(self._frame_buffer[:size]) == size and reader.read(1) == b""
        return self._frame_buffer[:size] if whole else None

    def _unpack(self, payload: bytes) -> list[dict] | None:
        """The mbrec records of one frame, or None (with a warning) when its content is
        damaged. Work is bounded: at most MAX_FRAME_OBJECTS objects, and a frame with more
        than MAX_JUNK_PER_FRAME objects that are not records is given up. Binary fields are
        views of the frame (unpack.frame_objects); a frame that decoder leaves alone is read by
        msgpack's Unpacker, which names the damage."""
        plain = frame_objects(payload, MAX_FRAME_OBJECTS)
        if plain is not None:
            return self._records_of(plain)
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False,
                                    max_buffer_size=max(len(payload), 1 << 20))
        unpacker.feed(payload)
        objs, n = [], 0
        try:
            for obj in unpacker:
                n += 1
                if n > MAX_FRAME_OBJECTS:
                    self._broken("too-many", f"a frame holds more than {MAX_FRAME_OBJECTS} "
                                 "objects, more than mbrec writes: the rest was skipped")
                    break
                objs.append(obj)
        except Exception as e:  # msgpack raises many types on damaged input
            self._broken("frame-content", "a frame's content is damaged and was skipped "
                         f"({type(e).__name__})")
            return None
        return self._records_of(objs)

    def _records_of(self, objs: list) -> list[dict] | None:
        records, junk = [], 0
        for obj in objs:
            if isinstance(obj, dict) and isinstance(obj.get("t"), str):
                records.append(obj)
                continue
            junk += 1
            self._warn("not-a-record", "skipped an object that is not an mbrec record")
            if junk > MAX_JUNK_PER_FRAME:
                self._broken("junk-frame", "a frame of objects that are not mbrec records "
                             "was given up")
                return None
        return records

    def _decode_frame(self, payload: bytes) -> Iterator[dict]:
        objs = self._unpack(payload)
        if objs is None or not self._in_sequence(objs):
            return
        for obj in objs:
            kind = obj["t"]
            if kind == "frame":
                continue
            if kind == "header":
                if self.header is not None:
                    self._warn("second-header", "ignored a second header")
                    continue
                self._accept_header(obj)
            elif self.header is None:
                raise TraceFormatError(f"{self.path} does not start with a header: the file is "
                                       "damaged at its start")
            elif not self._accept(obj):
                continue
            yield obj

    def _in_sequence(self, objs: list[dict]) -> bool:
        """v3: the frame's sequence number is the next one. A gap is lost frames (explained by
        damage the reader saw since the last good frame, or else frames removed); a number
        seen before or behind the last is a repeated or misplaced frame, which is skipped."""
        if self._version < FRAME_SEQUENCE_SINCE:
            return True
        first = objs[0] if objs else {}
        seq = first.get("seq") if first.get("t") == "frame" else None
        if not _is_int(seq) or seq < 0:
            self._broken("no-seq", "a frame without a sequence number was skipped")
            return False
        if seq < self._next_seq:
            what = "repeated" if seq in self._seen_seqs else "out of order"
            self._broken("misplaced", f"frame {seq} is {what} and was skipped: frames were "
                         "copied or moved within the file")
            return False
        if seq > self._next_seq:
            gap = seq - self._next_seq
            self.frames_lost += gap
            span = (f"frame {self._next_seq}" if gap == 1 else
                    f"frames {self._next_seq} to {seq - 1}")
            if self._damage_seen:
                self._warn("frames-damaged", f"{span} lost in the damaged bytes")
            else:
                self._broken("frames-missing", f"{span} missing, with no damage seen: frames "
                             "were removed from the file")
        self._seen_seqs.add(seq)
        self._next_seq = seq + 1
        self._damage_seen = False
        return True

    def _accept_header(self, header: dict) -> None:
        try:
            self.schemas = check_header(header)
        except _Bad as e:
            raise TraceFormatError(f"{self.path}: header: {e}: {DAMAGED}") from None
        version = header["format_version"]
        if version not in READABLE_VERSIONS:
            raise TraceFormatError(f"{self.path} uses trace format version {version}; this "
                                   f"mbrec reads up to {FORMAT_VERSION}: upgrade mbrec")
        if version != self._version:
            raise TraceFormatError(f"{self.path}: header: field 'format_version' is {version} "
                                   f"but the signature says {self._version}: {DAMAGED}")
        self.header = header

    def _accept(self, obj: dict) -> bool:
        """Check one object after the header; a damaged one is counted and skipped."""
        kind = obj["t"]
        try:
            if kind == "events":
                self._check_events(obj)
            elif kind == "clock":
                check_clock(obj)
            elif kind == "lost":
                check_lost(obj)
            elif kind == "note":
                check_note(obj)
            elif kind == "trailer":
                check_trailer(obj)
                if self.trailer is not None:
                    self._broken("second-trailer", "ignored a second trailer")
                    return False
        except _Bad as e:
            what = "a damaged event batch" if kind == "events" else f"a damaged {kind} object"
            self._broken(f"bad-{kind}", f"skipped {what} ({e})")
            return False
        if kind == "events":
            self._read_counts[obj["s"]] = self._read_counts.get(obj["s"], 0) + obj["n"]
        elif kind == "trailer":
            self.trailer = obj
        return True

    def _check_events(self, obj: dict) -> None:
        _int(obj, "s")
        if obj["s"] not in self.schemas:
            raise _Bad(f"schema id {obj['s']} is not in the header")
        _int(obj, "n")
        name, dtype = self.schemas[obj["s"]]
        data = obj.get(RECORDS_KEY)
        if not isinstance(data, (bytes, memoryview)) or len(data) != obj["n"] * dtype.itemsize:
            raise _Bad(f"its data is not {obj['n']} {name} records (size mismatch)")
        deltas = obj.get("d", [])
        if not isinstance(deltas, list):
            raise _Bad("field 'd' is not a list")
        for pair in deltas:
            ok = isinstance(pair, list) and len(pair) == 2 and all(
                isinstance(f, str) and f in dtype.names for f in pair)
            if ok:
                a, b = (dtype.fields[f][0] for f in pair)
                ok = pair[0] != pair[1] and a == b and a.kind == "u" and a.shape == ()
            if not ok:
                raise _Bad(f"field 'd' holds {_show(pair)}, not two unsigned fields of {name}")

    def _check_counts(self) -> None:
        """The trailer's per-schema counts against the records read."""
        if self.trailer is None:
            return
        written = self.trailer["events"]
        for sid in sorted(set(written) | set(self._read_counts)):
            name = self.schemas.get(sid, (f"schema {sid}",))[0]
            w, r = written.get(sid, 0), self._read_counts.get(sid, 0)
            if r > w:
                self._broken("records-extra", f"{r - w} more {name} records than the trailer "
                             "says were written: frames were repeated")
            elif r < w:
                self.records_lost[name] = w - r
                if self.bytes_lost or self.frames_lost or self._integrity:
                    self._warn(f"records-lost-{name}", f"{w - r} {name} records written were "
                               "lost with the damaged frames")
                else:
                    self._broken("records-missing", f"{w - r} {name} records the trailer counts "
                                 "are missing, with no damage seen: frames were removed")
        if self._integrity and self.trailer.get("clean"):
            self.trailer["clean"] = False
            self.trailer["integrity"] = self._integrity[0]

    def batches(self, obj: dict) -> tuple[str, np.ndarray] | None:
        """Decode one events object (checked by objects()) into (schema name, records)."""
        raw = self.raw_batch(obj)
        if raw is None:
            return None
        name, records, deltas = raw
        if deltas:
            records = records.copy()
            undo_deltas(records, deltas)
        return name, records

    def raw_batch(self, obj: dict) -> tuple[str, np.ndarray, list] | None:
        """One events object as (schema name, read-only records over its bytes, the v2 delta
        pairs still to undo): for callers that copy the records anyway, so the deltas are
        undone once, in the copy."""
        try:
            name, dtype = self.schemas[int(obj["s"])]
            return name, np.frombuffer(obj[RECORDS_KEY], dtype=dtype), obj.get("d") or []
        except Exception:
            self._warn("bad-events", "skipped a damaged event batch")
            return None


def _frame_length(data, pos: int, limit: int) -> int:
    """The compressed length of the zstd frame at pos, from its header and block headers
    (RFC 8878 section 3.1.1), or -1 if the blocks run past `limit` bytes or are malformed."""
    try:
        head = data[pos:pos + 18]
        end = pos + zstandard.frame_header_size(head)
        has_checksum = zstandard.get_frame_parameters(head).has_checksum
    except zstandard.ZstdError:
        return -1
    stop = pos + limit
    while end + 3 <= stop:
        block = int.from_bytes(data[end:end + 3], "little")
        kind, size = (block >> 1) & 3, block >> 3
        if kind == 3:  # reserved
            return -1
        end += 3 + (1 if kind == 1 else size)  # an RLE block holds one byte
        if block & 1:  # the last block
            end += 4 if has_checksum else 0
            return end - pos if end <= stop else -1
    return -1


def _grown(array: np.ndarray | None, used: int, records: np.ndarray,
           bound: int | None) -> np.ndarray:
    """An array of records' type with room for `used` more: the file's bound where its frame
    headers give one (reached only by a file that is nothing but records of this type), else
    twice what is needed, the first `used` records copied over."""
    need = used + len(records)
    items = bound // records.dtype.itemsize if bound is not None else 0
    grown = np.empty(items if items >= need else 2 * need, dtype=records.dtype)
    if array is not None:
        grown[:used] = array[:used]
    return grown


def undo_deltas(records: np.ndarray, deltas: list) -> None:
    """v2: fields stored as differences from another field, back to values (in place)."""
    for f, base in deltas:
        records[f] += records[base]


@dataclass
class TraceMeta:
    """What a trace says besides its events: clock anchors, losses, notes, trailer."""

    clocks: list[dict] = field(default_factory=list)
    notes: list[dict] = field(default_factory=list)
    lost: dict[str, int] = field(default_factory=dict)
    trailer: dict | None = None

    def take(self, obj: dict) -> None:
        """Keep one non-event object (others are ignored, as the format asks)."""
        kind = obj["t"]
        if kind == "clock":
            self.clocks.append(obj)
        elif kind == "lost":
            self.lost = dict(obj["counts"])  # cumulative
        elif kind == "trailer":
            self.trailer = obj
            if "lost" in obj:
                self.lost = dict(obj["lost"])
        elif kind == "note":
            self.notes.append(obj)

    def warnings(self, reader: TraceReader) -> list[str]:
        out = list(reader.warnings)
        if self.trailer is None:
            out.append(f"{reader.path}: no trailer: the recording did not stop cleanly "
                       "(killed?); everything up to the last complete frame was read")
        return out


def read_trace(path: str) -> Trace:
    """Read a whole trace into memory, one array per event type.

    Every frame is decompressed into the same buffer and each record copied once from there
    into the one array of its type, where v2 deltas are undone. The arrays are allocated at
    the size the frame headers allow for (memory is only used where records are written) and
    handed out as views of the records read."""
    reader = TraceReader(path, reuse_frame_buffer=True)
    bound = reader.content_bound()
    outs: dict[str, list] = {}  # name -> [array, records in it]
    meta = TraceMeta()
    for obj in reader.objects():
        if obj["t"] != "events":
            meta.take(obj)
            continue
        batch = reader.raw_batch(obj)
        if batch is None:
            continue
        name, records, deltas = batch
        out = outs.setdefault(name, [None, 0])
        if out[0] is None or out[1] + len(records) > len(out[0]):
            out[0] = _grown(out[0], out[1], records, bound)
        dest = out[0][out[1]:out[1] + len(records)]
        dest.view(np.uint8)[...] = records.view(np.uint8)  # a memcpy, not a per-field copy
        undo_deltas(dest, deltas)
        out[1] += len(records)
    events = {}
    for name, dtype in reader.schemas.values():
        array, n = outs.get(name, [None, 0])
        events[name] = array[:n] if array is not None else np.empty(0, dtype=dtype)
    return Trace(path=reader.path, header=reader.header, events=events, clocks=meta.clocks,
                 lost=meta.lost, trailer=meta.trailer, notes=meta.notes,
                 warnings=meta.warnings(reader), file_size=reader.file_size,
                 bytes_lost=reader.bytes_lost, frames_lost=reader.frames_lost,
                 records_lost=dict(reader.records_lost))
