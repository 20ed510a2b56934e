"""Trace reader: frame by frame, tolerant of truncation and corruption, decoding in bulk.

A damaged frame costs only itself: a truncated last frame is dropped, a corrupt frame in the
middle is skipped by resynchronising on the next zstd frame magic. Each loss is reported as a
warning that says how many bytes were lost. Anything that is not an mbrec trace, or a trace of
a newer format, raises TraceFormatError; nothing else escapes.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from typing import Iterator

import msgpack
import numpy as np
import zstandard

from mbrec.errors import TraceFormatError
from mbrec.events import dtype_from_header
from mbrec.trace.format import (FORMAT_VERSION, MAGIC, READABLE_VERSIONS, SIGNATURE_MAGIC,
                                SIGNATURE_PAYLOAD, SIGNATURE_SIZE, SKIPPABLE_MAGIC_RANGE,
                                ZSTD_MAGIC)

_MAX_FRAME = 1 << 30  # a frame that claims to decompress to more is treated as corrupt


def _check_signature(path: str, data) -> None:
    if len(data) == 0:
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


@dataclass
class Trace:
    """Everything in one trace file, events decoded into one numpy array per schema."""

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

    @property
    def clean(self) -> bool:
        return bool(self.trailer and self.trailer.get("clean"))

    @property
    def host(self) -> str:
        return str(self.header.get("host", "?"))


@dataclass
class TraceReader:
    """Iterates the objects of one trace file. Warnings collect in ``warnings``."""

    path: str
    warnings: list[str] = field(default_factory=list)
    bytes_lost: int = 0

    def __post_init__(self):
        self.path = os.fspath(self.path)
        try:
            with open(self.path, "rb") as f:
                self.file_size = os.fstat(f.fileno()).st_size
                head = f.read(SIGNATURE_SIZE)
        except IsADirectoryError:
            raise TraceFormatError(f"{self.path} is a directory: give a trace file") from None
        except FileNotFoundError:
            raise TraceFormatError(f"{self.path} does not exist: check the path") from None
        except OSError as e:
            raise TraceFormatError(f"cannot read {self.path}: {e.strerror}") from None
        _check_signature(self.path, head)
        self.header: dict | None = None
        self.schemas: dict[int, tuple[str, np.dtype]] = {}

    def objects(self) -> Iterator[dict]:
        """Every object in file order, the header first. Damaged frames become warnings."""
        with open(self.path, "rb") as f:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                for payload in self._frames(mm):
                    yield from self._decode_frame(payload)
        if self.header is None:
            raise TraceFormatError(f"{self.path} has no readable header: the recorder stopped "
                                   "before writing one, or the file is damaged at its start")

    def _frames(self, data) -> Iterator[bytes]:
        pos, end = SIGNATURE_SIZE, len(data)
        while pos < end:
            if end - pos < 8:
                self._lose(end - pos, f"{end - pos} trailing bytes at offset {pos} are not a "
                           "frame (truncated file)")
                return
            (magic,) = struct.unpack_from("<I", data, pos)
            if magic in SKIPPABLE_MAGIC_RANGE:
                (size,) = struct.unpack_from("<I", data, pos + 4)
                pos += 8 + size
                continue
            if data[pos:pos + 4] != ZSTD_MAGIC:
                nxt = self._resync(data, pos + 1)
                self._lose(nxt - pos, f"{nxt - pos} bytes at offset {pos} are not a zstd "
                           "frame (corrupt data skipped)")
                pos = nxt
                continue
            payload, used, error = self._decompress_one(data, pos)
            if payload is not None:
                yield payload
                pos += used
            elif error == "truncated":
                self._lose(end - pos, f"the last frame (offset {pos}, {end - pos} bytes) is "
                           "truncated and was dropped: the recorder did not finish writing it")
                return
            else:
                nxt = self._resync(data, pos + 1)
                self._lose(nxt - pos, f"a corrupt frame at offset {pos} was skipped "
                           f"({nxt - pos} bytes lost: {error})")
                pos = nxt

    @staticmethod
    def _resync(data, start: int) -> int:
        """Offset of the next zstd frame magic at or after start, or the end of the data."""
        i = data.find(ZSTD_MAGIC, start)
        return len(data) if i < 0 else i

    @staticmethod
    def _decompress_one(data, pos: int):
        """(payload, compressed size, None) or (None, 0, 'truncated' | reason).

        The frame header gives the content size, which bounds the compressed size, so the frame
        is decompressed in one call into one buffer (the writer always records content sizes).
        """
        try:
            size = zstandard.get_frame_parameters(data[pos:pos + 18]).content_size
        except zstandard.ZstdError as e:
            return None, 0, ("truncated" if len(data) - pos < 18 else f"bad frame header: {e}")
        if size > _MAX_FRAME:
            return None, 0, "implausible frame size"
        bound = size + (size >> 7) + 1024  # above ZSTD_compressBound(size) + frame overhead
        dobj = zstandard.ZstdDecompressor().decompressobj(write_size=max(size, 1))
        try:
            payload = dobj.decompress(memoryview(data)[pos:pos + bound])
        except zstandard.ZstdError as e:
            return None, 0, str(e)
        if not dobj.eof:
            return None, 0, ("truncated" if pos + bound >= len(data) else "frame longer than "
                             "its content size allows")
        if len(payload) != size:
            return None, 0, "content size mismatch"
        return payload, min(bound, len(data) - pos) - len(dobj.unused_data), None

    def _lose(self, nbytes: int, message: str) -> None:
        self.bytes_lost += nbytes
        self.warnings.append(f"{self.path}: {message}")

    def _decode_frame(self, payload: bytes) -> Iterator[dict]:
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False,
                                    max_buffer_size=max(len(payload), 1 << 20))
        unpacker.feed(payload)
        objs = []
        try:
            for obj in unpacker:
                objs.append(obj)
        except Exception as e:  # msgpack raises many types on damaged input
            self.warnings.append(f"{self.path}: a frame's content is damaged and was skipped "
                                 f"({type(e).__name__})")
            return
        for obj in objs:
            if not isinstance(obj, dict) or not isinstance(obj.get("t"), str):
                self.warnings.append(f"{self.path}: skipped an object that is not an mbrec "
                                     "record")
                continue
            if obj["t"] == "header":
                if self.header is not None:
                    self.warnings.append(f"{self.path}: ignored a second header")
                    continue
                self._accept_header(obj)
            elif self.header is None:
                raise TraceFormatError(f"{self.path} does not start with a header: the file is "
                                       "damaged at its start")
            yield obj

    def _accept_header(self, header: dict) -> None:
        if header.get("magic") != MAGIC:
            raise TraceFormatError(f"{self.path} is not an mbrec trace (bad header magic)")
        version = header.get("format_version")
        if version not in READABLE_VERSIONS:
            raise TraceFormatError(f"{self.path} uses trace format version {version}; this "
                                   f"mbrec reads up to {FORMAT_VERSION}: upgrade mbrec")
        try:
            for entry in header["schemas"]:
                self.schemas[int(entry["id"])] = (str(entry["name"]), dtype_from_header(entry))
        except Exception as e:
            raise TraceFormatError(f"{self.path} has a damaged header ({e})") from None
        self.header = header

    def batches(self, obj: dict) -> tuple[str, np.ndarray] | None:
        """Decode one events object into (schema name, records), or None with a warning."""
        try:
            name, dtype = self.schemas[int(obj["s"])]
            count, data = int(obj["n"]), obj["data"]
            if not isinstance(data, bytes) or len(data) != count * dtype.itemsize:
                raise ValueError("size mismatch")
            records = np.frombuffer(data, dtype=dtype)
            deltas = obj.get("d")
            if deltas:  # v2: fields stored as differences from another field
                records = records.copy()
                for f, base in deltas:
                    records[f] += records[base]
        except Exception:
            self.warnings.append(f"{self.path}: skipped a damaged event batch")
            return None
        return name, records


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
        elif kind == "lost" and isinstance(obj.get("counts"), dict):
            self.lost = {str(k): int(v) for k, v in obj["counts"].items()}  # cumulative
        elif kind == "trailer":
            self.trailer = obj
            if isinstance(obj.get("lost"), dict):
                self.lost = {str(k): int(v) for k, v in obj["lost"].items()}
        elif kind == "note":
            self.notes.append(obj)

    def warnings(self, reader: TraceReader) -> list[str]:
        out = list(reader.warnings)
        if self.trailer is None:
            out.append(f"{reader.path}: no trailer: the recording did not stop cleanly "
                       "(killed?); everything up to the last complete frame was read")
        return out


def read_trace(path: str) -> Trace:
    """Read a whole trace into memory, one array per event type."""
    reader = TraceReader(path)
    parts: dict[str, list[np.ndarray]] = {}
    meta = TraceMeta()
    for obj in reader.objects():
        if obj["t"] == "events":
            batch = reader.batches(obj)
            if batch is not None:
                parts.setdefault(batch[0], []).append(batch[1])
        else:
            meta.take(obj)
    events = {}
    for name, dtype in reader.schemas.values():
        arrays = parts.get(name, [])
        events[name] = (np.concatenate(arrays) if len(arrays) > 1 else
                        arrays[0] if arrays else np.empty(0, dtype=dtype))
    return Trace(path=reader.path, header=reader.header, events=events, clocks=meta.clocks,
                 lost=meta.lost, trailer=meta.trailer, notes=meta.notes,
                 warnings=meta.warnings(reader), file_size=reader.file_size,
                 bytes_lost=reader.bytes_lost)
