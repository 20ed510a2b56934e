"""Streaming trace writer: bounded memory, a readable file at every frame boundary."""

from __future__ import annotations

import os
import time

import msgpack
import numpy as np
import zstandard

from mbrec.errors import MbrecError
from mbrec.events import dtype_from_header
from mbrec.trace.format import (MAX_FRAME_BYTES, MAX_FRAME_OBJECTS, RECORDS_KEY, clock_anchor,
                                seq_deltas, signature)


# zstd level 3: with sequence ranges stored as lengths, <= 12 bytes per packet event on the
# lab's traces (level 1: 13.3), for 1.5x the compression CPU (docs/performance.md, Trace I/O)
ZSTD_LEVEL = 3
# Match-finder tables of at most 2^14 and 2^13 entries (level 3's are 2^17 and 2^16, 768 KiB
# that spill out of L2 beside the workload): 12-15 % less compression CPU for the same bytes
# within 0.1 per packet event on the lab's traces (docs/performance.md, Trace I/O).
ZSTD_HASH_LOG = 14
ZSTD_CHAIN_LOG = 13

# A frame's objects other than its sequence number stay below this, well inside MAX_FRAME_BYTES.
MAX_BATCH_BYTES = MAX_FRAME_BYTES - (1 << 20)


def compressor(level: int = ZSTD_LEVEL) -> zstandard.ZstdCompressor:
    """The writer's compressor: the level's parameters with the tables capped."""
    params = zstandard.ZstdCompressionParameters
    own = params.from_level(level)
    return zstandard.ZstdCompressor(compression_params=params.from_level(
        level, hash_log=min(own.hash_log, ZSTD_HASH_LOG),
        chain_log=min(own.chain_log, ZSTD_CHAIN_LOG), write_checksum=1))


class TraceWriter:
    """Writes one trace file.

    Objects are packed with msgpack as they arrive and held until the current frame is closed:
    when ``flush_interval`` seconds have passed since the last frame, when ``frame_bytes`` are
    pending, or at close. Each frame is compressed on its own and written with one write(), so
    a recorder killed at any instant leaves a file readable up to its last complete frame.
    Every frame starts with its sequence number, and none exceeds MAX_FRAME_BYTES or
    MAX_FRAME_OBJECTS (larger batches are split), so a reader can tell a frame that is missing,
    repeated or out of place, and refuse an oversized one without decompressing it.
    """

    def __init__(self, path: str, header: dict, *, force: bool = False, level: int = ZSTD_LEVEL,
                 flush_interval: float = 0.2, frame_bytes: int = 4 << 20, clock=clock_anchor):
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
        try:
            self._fd = os.open(path, flags, 0o644)
        except FileExistsError:
            raise MbrecError(f"{path} already exists: choose another name or pass --force "
                             "to overwrite it") from None
        except IsADirectoryError:
            raise MbrecError(f"{path} is a directory: give a file name") from None
        except OSError as e:
            raise MbrecError(f"cannot create {path}: {e.strerror}") from None
        self.path = path
        self._packer = msgpack.Packer(use_bin_type=True)
        self._dtypes = {int(e["id"]): dtype_from_header(e) for e in header.get("schemas", ())}
        self._deltas = {sid: d for sid, dt in self._dtypes.items() if (d := seq_deltas(dt.names))}
        self._cctx = compressor(level)
        self._pending: list[bytes | memoryview] = []
        self._pending_bytes = 0
        self._pending_objects = 0
        self._seq = 0  # the next frame's sequence number
        self._flush_interval = flush_interval
        self._frame_bytes = frame_bytes
        self._last_frame = time.monotonic()
        self._clock = clock  # returns a clock object; tests pass crafted anchors
        self.counts: dict[int, int] = {}
        self.bytes_written = 0
        self.closed = False
        self._write_raw(signature())
        self.write_object(header)
        self.write_object(self._clock())
        self.flush()

    def write_events(self, schema_id: int, data, count: int | None = None, *,
                     owned: bool = False) -> None:
        """Append one batch of raw fixed-size records (bytes, memoryview or numpy array).

        The batch is packed as msgpack {"t": "events", "s", "n", ["d",] "data": bin} without
        copying the records: the map's prefix and the raw bytes go to the compressor
        separately, so the caller must not modify ``data`` until the frame is flushed (hand
        over fresh buffers). Layouts with sequence ranges are delta-encoded ("d", see
        SEQ_DELTAS): in place when ``owned`` (the caller gives the batch away, as the recorder's
        drain does), else in a copy.
        """
        if isinstance(data, np.ndarray):
            count = len(data) if count is None else count
            data = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        if count is None:
            raise ValueError("count is required for raw bytes")
        if count == 0:
            return
        itemsize = len(memoryview(data).cast("B")) // count
        per_batch = max(1, MAX_BATCH_BYTES // max(itemsize, 1))
        if count > per_batch:  # split, so that no frame outgrows MAX_FRAME_BYTES
            view = memoryview(data).cast("B")
            for i in range(0, count, per_batch):
                k = min(per_batch, count - i)
                self.write_events(schema_id, view[i * itemsize:(i + k) * itemsize], k,
                                  owned=owned)
            return
        self.counts[schema_id] = self.counts.get(schema_id, 0) + count
        deltas = self._deltas.get(schema_id)
        if deltas:
            data = self._encode_deltas(schema_id, data, count, deltas, owned)
        view = memoryview(data).cast("B")
        prefix = (self._map4 if not deltas else self._map5 + self._packer.pack("d")
                  + self._packer.pack(deltas))
        prefix += (self._packer.pack("t") + self._packer.pack("events")
                   + self._packer.pack("s") + self._packer.pack(schema_id)
                   + self._packer.pack("n") + self._packer.pack(count)
                   + self._packer.pack(RECORDS_KEY) + b"\xc6" + len(view).to_bytes(4, "big"))
        self._make_room(len(prefix) + len(view))
        self._pending.append(prefix)
        self._pending.append(view)
        self._pending_bytes += len(prefix) + len(view)
        self._pending_objects += 1
        self.tick()

    _map4, _map5 = b"\x84", b"\x85"  # msgpack fixmap headers: 4 or 5 keys

    def _encode_deltas(self, schema_id: int, data, count: int, deltas, owned: bool) -> np.ndarray:
        records = np.frombuffer(data, dtype=self._dtypes[schema_id], count=count)
        if not (owned and records.flags.writeable):
            records = records.copy()
        for f, base in deltas:
            records[f] -= records[base]  # unsigned: wraps like sequence numbers do
        return records.view(np.uint8).reshape(-1)

    def write_object(self, obj: dict) -> None:
        packed = self._packer.pack(obj)
        if len(packed) > MAX_BATCH_BYTES:
            raise ValueError(f"a {obj.get('t')} object of {len(packed)} bytes is larger than a "
                             "frame may hold")
        self._make_room(len(packed))
        self._pending.append(packed)
        self._pending_bytes += len(packed)
        self._pending_objects += 1
        self.tick()

    def _make_room(self, nbytes: int) -> None:
        """Close the current frame first if one more object would take it past the limits."""
        if self._pending and (self._pending_bytes + nbytes > MAX_BATCH_BYTES or
                              self._pending_objects + 1 >= MAX_FRAME_OBJECTS):
            self.flush()

    def tick(self) -> None:
        """Close the current frame if it is due; call this periodically when idle."""
        if self._pending and (self._pending_bytes >= self._frame_bytes or
                              time.monotonic() - self._last_frame >= self._flush_interval):
            self.flush()

    def flush(self) -> None:
        """Close the current frame now and hand it to the kernel."""
        self._last_frame = time.monotonic()
        if not self._pending:
            return
        seq = self._packer.pack({"t": "frame", "seq": self._seq})
        self._seq += 1
        # one contiguous input compressed in one call: zstd's single-pass path, without the
        # streaming mode's copy into its window and its slower match finder across the copy's
        # wrap (3-17 % less CPU per event on a native ab trace); the join costs one memcpy
        frame = self._cctx.compress(b"".join([seq, *self._pending]))
        self._pending.clear()
        self._pending_bytes = 0
        self._pending_objects = 0
        self._write_raw(frame)

    def _write_raw(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.bytes_written += len(data)

    def close(self, *, clean: bool = True, end_ns: int | None = None,
              lost: dict | None = None, extra: dict | None = None) -> None:
        """Write the trailer, fsync and close. ``clean`` says the recording ended as asked."""
        if self.closed:
            return
        anchor = self._clock()
        self.write_object(anchor)
        trailer = {"t": "trailer", "end_monotonic_ns": end_ns or anchor["monotonic_ns"],
                   "events": {int(k): int(v) for k, v in self.counts.items()},
                   "lost": lost or {}, "clean": bool(clean)}
        trailer.update(extra or {})
        self.write_object(trailer)
        self.flush()
        os.fsync(self._fd)
        os.close(self._fd)
        self.closed = True

    def abandon(self) -> None:
        """Flush and close without a trailer: the file a killed recorder leaves (for tests)."""
        if not self.closed:
            self.flush()
            os.close(self._fd)
            self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.closed:
            self.close(clean=exc_type is None)
