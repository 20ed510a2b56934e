"""Bulk drain of a BPF ring buffer (BPF_MAP_TYPE_RINGBUF) from Python, no per-event Python.

The kernel lets user space mmap a ring buffer map: one read-write page holding consumer_pos,
then read-only: one page holding producer_pos, and the data area mapped twice in a row, so any
span of up to the ring's size is contiguous in memory even when it wraps. Each record is an
8-byte header (u32 length with a BUSY bit while the producer is still writing it and a
DISCARD bit, u32 page offset) followed by the data, padded to 8 bytes.

All records of one ring here have the same size, so a whole span is checked with one strided
numpy comparison of its header words and copied with one strided copy; consumer_pos then moves
past it. Producers never overwrite unconsumed data: when the ring is full their reservation
fails and the BPF side counts the loss.
"""

from __future__ import annotations

import mmap

import numpy as np

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER_SIZE = 8
PAGE_SIZE = mmap.PAGESIZE


def record_stride(record_size: int) -> int:
    return (record_size + HEADER_SIZE + 7) & ~7


def drain_span(buf, data_offset: int, size: int, cons: int, prod: int,
               record_size: int) -> tuple[list[np.ndarray], int, int]:
    """Collect the committed records between consumer position cons and producer position prod.

    buf: a buffer whose bytes [data_offset, data_offset + 2*size) are the data area mapped
    twice. Returns (batches, new consumer position, records skipped). Each batch is a
    contiguous (n, record_size) uint8 copy. Stops at the first record still being written.
    Records of another size are skipped and counted (a ring holds one schema).
    """
    mask = size - 1
    stride = record_stride(record_size)
    batches: list[np.ndarray] = []
    skipped = 0
    pos = cons
    while pos < prod:
        off = data_offset + (pos & mask)
        n = min(prod - pos, size) // stride
        k = 0
        if n:
            lens = np.ndarray((n,), dtype="<u4", buffer=buf, offset=off, strides=(stride,))
            good = lens == record_size  # committed, not discarded, our size
            k = n if good.all() else int(np.argmin(good))
        if k:
            payload = np.ndarray((k, record_size), dtype=np.uint8, buffer=buf,
                                 offset=off + HEADER_SIZE, strides=(stride, 1))
            batches.append(payload.copy())  # always a copy (a 1-row view counts as contiguous)
            pos += k * stride
            continue
        # One odd record at pos: busy (stop), discarded or of another size (step over it).
        hdr = int(np.ndarray((1,), dtype="<u4", buffer=buf, offset=off)[0])
        if hdr & BUSY_BIT:
            break
        length = hdr & ~(BUSY_BIT | DISCARD_BIT)
        if not hdr & DISCARD_BIT:
            skipped += 1
        pos += record_stride(length)
    return batches, min(pos, prod), skipped


class RingReader:
    """A ring buffer map, mapped into this process, drained in bulk."""

    def __init__(self, map_fd: int, size: int, record_size: int):
        if size & (size - 1) or size % PAGE_SIZE:
            raise ValueError(f"ring size {size} is not a power-of-two multiple of the page size")
        self.size = size
        self.record_size = record_size
        self._cons_map = mmap.mmap(map_fd, PAGE_SIZE, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._data_map = mmap.mmap(map_fd, PAGE_SIZE + 2 * size, mmap.MAP_SHARED,
                                   mmap.PROT_READ, offset=PAGE_SIZE)
        self._cons = np.ndarray((1,), dtype="<u8", buffer=self._cons_map)
        self._prod = np.ndarray((1,), dtype="<u8", buffer=self._data_map)
        self.records = 0
        self.skipped = 0

    def pending_bytes(self) -> int:
        return int(self._prod[0]) - int(self._cons[0])

    def drain(self) -> list[np.ndarray]:
        """Copy out everything committed so far and release it to the producers."""
        cons = int(self._cons[0])
        prod = int(self._prod[0])  # x86 loads are acquire loads; headers are read after this
        if prod == cons:
            return []
        batches, new_cons, skipped = drain_span(self._data_map, PAGE_SIZE, self.size, cons,
                                                prod, self.record_size)
        self._cons[0] = new_cons  # release the space; x86 stores are release stores
        self.records += sum(len(b) for b in batches)
        self.skipped += skipped
        return batches

    def close(self) -> None:
        # numpy views keep the buffers exported; drop them before closing the maps.
        del self._cons, self._prod
        self._cons_map.close()
        self._data_map.close()


def open_bcc_ring(table, record_size: int) -> RingReader:
    """A RingReader over a BCC RingBuf table (BPF_RINGBUF_OUTPUT)."""
    return RingReader(table.map_fd, int(table.max_entries), record_size)
