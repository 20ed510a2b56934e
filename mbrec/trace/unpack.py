"""The msgpack objects of one decompressed frame, with binary fields left in place.

msgpack's own Unpacker copies a frame twice before numpy sees its records: into its buffer when
fed, and again into a bytes object per binary field. The records are nearly all of a frame's
bytes, so frame_objects decodes the few objects of a frame in Python instead and gives an event
batch's records (the binary value of an events object's "data" key) as a memoryview of the frame: the
only copy left is the one into the analysis' arrays. Other binary values are bytes, as msgpack
gives them. It reads the types mbrec writes (maps, arrays, strings, integers, floats, booleans, nil,
binary); for anything else, or any damage, it returns None and the reader falls back to msgpack,
which then names the damage.
"""

from __future__ import annotations

import struct

from mbrec.trace.format import RECORDS_KEY

MAX_DEPTH = 16  # mbrec's deepest object (a header's schemas) nests 4 levels

_FIXED = {  # type byte -> (struct format, size) of the fixed-size scalars
    0xca: (">f", 4), 0xcb: (">d", 8),
    0xcc: (">B", 1), 0xcd: (">H", 2), 0xce: (">I", 4), 0xcf: (">Q", 8),
    0xd0: (">b", 1), 0xd1: (">h", 2), 0xd2: (">i", 4), 0xd3: (">q", 8),
}
_LENGTH = {  # type byte -> (kind, size of the length that follows)
    0xc4: ("bin", 1), 0xc5: ("bin", 2), 0xc6: ("bin", 4),
    0xd9: ("str", 1), 0xda: ("str", 2), 0xdb: ("str", 4),
    0xdc: ("array", 2), 0xdd: ("array", 4), 0xde: ("map", 2), 0xdf: ("map", 4),
}
_CONSTANT = {0xc0: None, 0xc2: False, 0xc3: True}


class _NotPlain(Exception):
    """A type this decoder leaves to msgpack, or bytes that are not a whole object."""


def frame_objects(payload, limit: int) -> list | None:
    """Every object of the frame in order, or None: more than `limit` objects, a type mbrec
    does not write, or damage (let msgpack's Unpacker read such a frame)."""
    view = memoryview(payload)
    out: list = []
    pos = 0
    try:
        while pos < len(payload):
            if len(out) >= limit:
                return None
            obj, pos = _value(payload, view, pos, 0)
            out.append(obj)
    except (_NotPlain, IndexError, struct.error, UnicodeDecodeError, TypeError):
        return None  # TypeError: an unhashable map key
    return out


def _value(buf: bytes, view: memoryview, pos: int, depth: int, in_place: bool = False):
    """(the value at pos, the position after it); a binary value as a view if in_place."""
    b = buf[pos]
    pos += 1
    if b <= 0x7f:
        return b, pos
    if b >= 0xe0:
        return b - 0x100, pos
    if 0xa0 <= b <= 0xbf:
        return _str(buf, pos, b & 0x1f)
    if 0x80 <= b <= 0x8f:
        return _map(buf, view, pos, b & 0x0f, depth)
    if 0x90 <= b <= 0x9f:
        return _array(buf, view, pos, b & 0x0f, depth)
    if b in _CONSTANT:
        return _CONSTANT[b], pos
    if b in _FIXED:
        fmt, size = _FIXED[b]
        return struct.unpack_from(fmt, buf, pos)[0], pos + size
    if b not in _LENGTH:
        raise _NotPlain
    kind, size = _LENGTH[b]
    n = int.from_bytes(buf[pos:pos + size], "big")
    if pos + size > len(buf):
        raise _NotPlain
    pos += size
    if kind == "bin":
        if pos + n > len(buf):
            raise _NotPlain
        return (view[pos:pos + n] if in_place else bytes(buf[pos:pos + n])), pos + n
    if kind == "str":
        return _str(buf, pos, n)
    if kind == "array":
        return _array(buf, view, pos, n, depth)
    return _map(buf, view, pos, n, depth)


def _str(buf: bytes, pos: int, n: int):
    if pos + n > len(buf):
        raise _NotPlain
    return str(buf[pos:pos + n], "utf-8"), pos + n


def _array(buf: bytes, view: memoryview, pos: int, n: int, depth: int):
    if depth >= MAX_DEPTH or n > len(buf) - pos:  # every item takes a byte at least
        raise _NotPlain
    items = []
    for _ in range(n):
        item, pos = _value(buf, view, pos, depth + 1)
        items.append(item)
    return items, pos


def _map(buf: bytes, view: memoryview, pos: int, n: int, depth: int):
    if depth >= MAX_DEPTH or 2 * n > len(buf) - pos:
        raise _NotPlain
    out: dict = {}
    for _ in range(n):
        key, pos = _value(buf, view, pos, depth + 1)
        # in place only an events object's records (its "t" comes first, as mbrec writes it):
        # a reader may reuse the frame's buffer once it has copied them
        records = key == RECORDS_KEY and depth == 0 and out.get("t") == "events"
        out[key], pos = _value(buf, view, pos, depth + 1, records)
    return out, pos
