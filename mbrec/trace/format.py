"""Trace file format v3: the constants and the header, shared by writer and reader.

See docs/trace-format.md for the full specification. In short: a 16-byte signature (a zstd
skippable frame), then independent zstd frames, each holding one or more msgpack maps whose
"t" key says what they are: frame (v3: the frame's sequence number, first in every frame),
header, events, clock, lost, note, trailer.
"""

from __future__ import annotations

import os
import socket
import struct
import time
import uuid

from mbrec import __version__
from mbrec.events import SCHEMAS

FORMAT_VERSION = 3
# v1: no sequence deltas in events objects; v2: no frame sequence numbers
READABLE_VERSIONS = frozenset({1, 2, 3})
FRAME_SEQUENCE_SINCE = 3

# What one frame may hold: the writer never exceeds these, so a reader refuses anything larger
# as damage without decompressing it (a few KB of zstd can claim gigabytes).
MAX_FRAME_BYTES = 64 << 20   # decompressed size of one frame
MAX_FRAME_OBJECTS = 65536    # msgpack objects in one frame
MAGIC = "mbrec-trace"
RECORDS_KEY = "data"  # an events object's key for its raw records (binary)
SUFFIX = ".mbrec"

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# A zstd skippable frame (magic 0x184D2A5D) whose payload is b"MBREC\0" + u16 format version:
# zstd tools skip it, and mbrec recognises its files from the first 16 bytes.
SKIPPABLE_MAGIC_RANGE = range(0x184D2A50, 0x184D2A60)
SIGNATURE_MAGIC = 0x184D2A5D
SIGNATURE_PAYLOAD = b"MBREC\0"
SIGNATURE_SIZE = 16


def signature(version: int = FORMAT_VERSION) -> bytes:
    payload = SIGNATURE_PAYLOAD + struct.pack("<H", version)
    return struct.pack("<II", SIGNATURE_MAGIC, len(payload)) + payload


def read_boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def clock_anchor() -> dict:
    """CLOCK_MONOTONIC, CLOCK_REALTIME and CLOCK_BOOTTIME read together.

    The realtime read is bracketed by two monotonic reads; the tightest of a few tries is kept
    and its width is the anchor's uncertainty.
    """
    best = None
    for _ in range(5):
        m0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        real = time.clock_gettime_ns(time.CLOCK_REALTIME)
        boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        m1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        if best is None or m1 - m0 < best[3] - best[0]:
            best = (m0, real, boot, m1)
    m0, real, boot, m1 = best
    return {"t": "clock", "monotonic_ns": (m0 + m1) // 2, "realtime_ns": real,
            "boottime_ns": boot, "uncertainty_ns": m1 - m0}


def make_header(*, options: dict | None = None, probes: list[dict] | None = None,
                host: str | None = None, kernel: str | None = None,
                boot_id: str | None = None, schemas=None) -> dict:
    """The header object of a new trace, describing this machine unless told otherwise."""
    return {
        "t": "header",
        "magic": MAGIC,
        "format_version": FORMAT_VERSION,
        "mbrec_version": __version__,
        "host": socket.gethostname() if host is None else host,
        "kernel": os.uname().release if kernel is None else kernel,
        "boot_id": read_boot_id() if boot_id is None else boot_id,
        "trace_id": uuid.uuid4().hex,
        "created_realtime_ns": time.clock_gettime_ns(time.CLOCK_REALTIME),
        "clock": "monotonic",
        "options": options or {},
        "probes": probes or [],
        "schemas": [s.to_header() for s in (schemas or SCHEMAS.values())],
    }


# Fields stored as a difference from another field of the same record (v2, events key "d"):
# a segment's end_seq is seq + its length in sequence space, so the difference is small and
# compresses to almost nothing where the absolute value costs 1.5 bytes per record.
SEQ_DELTAS = (("end_seq", "seq"), ("seq_end", "seq_start"))


def seq_deltas(field_names) -> list[list[str]]:
    """The (field, base) pairs of SEQ_DELTAS that a record layout has."""
    names = set(field_names)
    return [[f, b] for f, b in SEQ_DELTAS if f in names and b in names]
