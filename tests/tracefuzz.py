"""Fuzzing the trace reader and the commands that read traces.

Two kinds of case, each driven by a random.Random (so hypothesis can drive and shrink it):

- structure-aware: a valid trace's objects (header, schemas, events, clock, lost, note,
  trailer, frame sequence numbers) with a few values replaced by odd ones, keys removed or
  added, frames dropped, repeated, swapped or without sequence numbers, event data replaced by
  random records; assembled with valid zstd checksums, so the reader's checks, not zstd's, are
  what is tested;
- byte-level: a real trace file with bytes flipped, zeroed, repeated, cut or inserted.

run_case() runs `mbrec info`, `info --json`, `replay` in its three formats and (optionally)
`analyze` (in partitions, or with a second host) on a case through mbrec's own main(), in process, and returns what escaped: the text of every
"internal error" (a bug), or nothing.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import random

import numpy as np

import tracecraft as tc
from mbrec.events import SCHEMA_BY_NAME
from mbrec.testing.synthetic import random_records, write_trace

ODD_STRINGS = ["", "ts_ns", "pkt", "frame", "header", "trailer", "\x00", "é" * 3, "x" * 300]


def odd_value(rng: random.Random, depth: int = 0):
    """A value of any type msgpack carries, biased towards edges."""
    kind = rng.randrange(16 if depth < 3 else 11)
    if kind == 0:
        return rng.choice([0, 1, -1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, -2**63])
    if kind == 1:
        return rng.randrange(-1000, 100000)
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return rng.choice(ODD_STRINGS)
    if kind == 4:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
    if kind == 5:
        return rng.choice([0.0, -0.0, 1.5, 1e300, math.nan, math.inf, -math.inf])
    if kind == 6:
        return rng.choice(["<u8", "|u1", "<u4", "<i8", "<f8", "S4", "O", "V8", ">u8"])
    if kind == 7:
        return "".join(chr(rng.randrange(1, 0x2FF)) for _ in range(rng.randrange(1, 8)))
    if kind == 8:
        return rng.randrange(0, 300)
    if kind == 9:
        return []
    if kind == 10:
        return {}
    if kind in (11, 12):
        return [odd_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    if kind == 13:
        return {rng.choice(ODD_STRINGS + ["t", "s", "n", "d", "data"]): odd_value(rng, depth + 1)
                for _ in range(rng.randrange(0, 4))}
    if kind == 14:
        return {rng.randrange(-2, 10): odd_value(rng, depth + 1) for _ in range(2)}
    return [rng.choice(ODD_STRINGS), odd_value(rng, depth + 1), rng.randrange(0, 300), 1]


def _containers(obj, path=()):
    """Every (container, key) inside obj, with depth."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append((obj, k))
            out += _containers(v)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.append((obj, i))
            out += _containers(v)
    return out


def _random_records(rng: random.Random, schema: dict, n: int) -> bytes:
    return bytes(rng.randrange(256) for _ in range(n * schema["size"])) if n * schema[
        "size"] < 4096 else np.random.default_rng(rng.randrange(2**32)).integers(
        0, 256, n * schema["size"], dtype=np.uint8).tobytes()


def mutate_objects(rng: random.Random, frames: list[list]) -> list[list]:
    """One structural change of a trace's objects (in place; frames is a deep copy)."""
    op = rng.randrange(12)
    objs = [(f, i) for f in frames for i in range(len(f))]
    if op <= 3:  # replace one value anywhere
        f, i = rng.choice(objs)
        spots = _containers(f[i])
        if spots:
            c, k = rng.choice(spots)
            c[k] = odd_value(rng)
        return frames
    if op == 4:  # remove a key (or a list element)
        f, i = rng.choice(objs)
        spots = _containers(f[i])
        if spots:
            c, k = rng.choice(spots)
            if isinstance(c, dict):
                del c[k]
            else:
                c.pop(k)
        return frames
    if op == 5:  # add a key
        f, i = rng.choice(objs)
        spots = [(c, k) for c, k in _containers(f[i]) if isinstance(c, dict)]
        if isinstance(f[i], dict):
            spots.append((f[i], None))
        if not spots:
            return frames
        c, _ = rng.choice(spots)
        c[rng.choice(ODD_STRINGS + ["t", "clean", "events", "lost", "seq"])] = odd_value(rng)
        return frames
    if op == 6 and len(frames) > 1:  # drop, repeat or swap frames
        i = rng.randrange(len(frames))
        j = rng.randrange(len(frames))
        what = rng.randrange(3)
        if what == 0:
            frames.pop(i)
        elif what == 1:
            frames.insert(j, copy.deepcopy(frames[i]))
        else:
            frames[i], frames[j] = frames[j], frames[i]
        return frames
    if op == 7:  # an object of any type, anywhere
        f = rng.choice(frames)
        f.insert(rng.randrange(len(f) + 1), rng.choice([
            {"t": rng.choice(["events", "clock", "lost", "note", "trailer", "header", "frame",
                              "other"]), **{k: odd_value(rng) for k in
                                            rng.sample(["s", "n", "d", "data", "counts",
                                                        "monotonic_ns", "realtime_ns", "seq",
                                                        "clean", "events", "kind"], 3)}},
            odd_value(rng)]))
        return frames
    header = frames[0][0] if frames and frames[0] and isinstance(frames[0][0], dict) else {}
    schemas = [s for s in header.get("schemas", []) if isinstance(s, dict)] if isinstance(
        header.get("schemas"), list) else []
    if op == 8 and schemas:  # random records, with a count that matches the layout
        s = rng.choice(schemas)
        if isinstance(s.get("size"), int) and 0 < s["size"] < 4096:
            n = rng.choice([0, 1, 2, 7, 50, 300])
            f = rng.choice(frames)
            f.append({"t": "events", "s": s.get("id"), "n": n, "data": _random_records(rng, s, n)})
        return frames
    if op == 9 and schemas:  # a layout changed in one field
        s = rng.choice(schemas)
        fields = s.get("fields")
        if isinstance(fields, list) and fields:
            fl = rng.choice(fields)
            if isinstance(fl, list) and fl:
                fl[rng.randrange(len(fl))] = odd_value(rng)
        return frames
    if op == 10 and schemas:  # a schema repeated or given another's name or id
        s = copy.deepcopy(rng.choice(schemas))
        other = rng.choice(schemas)
        s[rng.choice(["name", "id"])] = other.get(rng.choice(["name", "id"]))
        header["schemas"].append(s)
        return frames
    # the trailer's counts or cleanliness
    for f in frames:
        for o in f:
            if isinstance(o, dict) and o.get("t") == "trailer":
                o[rng.choice(["events", "lost", "clean", "lost_detail"])] = odd_value(rng)
    return frames


BASES: dict = {}


def base_frames(rng: random.Random) -> list[list]:
    """A valid trace's objects: small or with every schema's random records."""
    key = rng.randrange(3)
    if key not in BASES:
        frames = tc.good_frames(n_frames=3, per_frame=20, host="fz")
        if key == 1:  # every schema, random field values
            for i, name in enumerate(SCHEMA_BY_NAME):
                recs = random_records(name, 30, seed=i)
                frames[1].append(tc.events_object(recs, name))
                frames[-1][-1]["events"][SCHEMA_BY_NAME[name].id] = (
                    frames[-1][-1]["events"].get(SCHEMA_BY_NAME[name].id, 0) + 30)
        if key == 2:  # an older format: no sequence numbers
            frames[0][0]["format_version"] = 2
        BASES[key] = frames
    return copy.deepcopy(BASES[key])


def structured_case(rng: random.Random) -> bytes:
    frames = base_frames(rng)
    version = frames[0][0]["format_version"]
    for _ in range(rng.choice([1, 1, 2, 3, 5])):
        frames = mutate_objects(rng, frames)
    seqs = None
    if version >= 3 and rng.random() < 0.15:
        seqs = [rng.choice([i, i, None, odd_value(rng), 0]) for i in range(len(frames))]
    try:
        return tc.assemble(frames, version=version, seqs=seqs)
    except (TypeError, ValueError, OverflowError):  # a value msgpack cannot pack
        return tc.assemble(base_frames(rng), version=version)


REAL: dict = {}


def real_bytes(rng: random.Random, tmpdir: str) -> bytes:
    """A trace written by the real writer (many frames), in v3, v2 or v1 form."""
    key = rng.randrange(3)
    if key not in REAL:
        events = {name: random_records(name, 60, seed=i)
                  for i, name in enumerate(SCHEMA_BY_NAME)}
        path = write_trace(os.path.join(tmpdir, f"real{key}.mbrec"), events, batch=15,
                           frame_bytes=1500, lost={"ip_rcv": 1}, force=True)
        REAL[key] = open(path, "rb").read()
        if key:  # v2 / v1 written through crafted frames (the writer writes v3 only)
            frames = tc.with_header(tc.good_frames(n_frames=6, per_frame=25),
                                    format_version=3 - key)
            if key == 2:
                for f in frames:
                    for o in f:
                        o.pop("d", None) if isinstance(o, dict) else None
            REAL[key] = tc.assemble(frames, version=3 - key)
    return REAL[key]


def byte_case(rng: random.Random, tmpdir: str) -> bytes:
    data = bytearray(real_bytes(rng, tmpdir))
    for _ in range(rng.choice([1, 1, 2, 4, 8])):
        op = rng.randrange(7)
        n = len(data)
        if n == 0:
            break
        p = rng.randrange(n)
        if op == 0:
            data[p] = rng.randrange(256)
        elif op == 1:
            data[p] ^= 1 << rng.randrange(8)
        elif op == 2:
            k = rng.randrange(1, 200)
            data[p:p + k] = bytes(min(k, n - p))
        elif op == 3:
            k = rng.randrange(1, 600)
            q = rng.randrange(n)
            data[q:q] = data[p:p + k]
        elif op == 4:
            del data[rng.randrange(n + 1):]
        elif op == 5:
            data[p:p] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 30)))
        else:
            del data[p:p + rng.randrange(1, 300)]
    return bytes(data)


_SECOND_HOST: dict = {}


def second_host(tmpdir: str) -> str:
    """A good trace of another host, so that analyze also aligns clocks and matches frames."""
    if "path" not in _SECOND_HOST:
        frames = tc.good_frames(n_frames=3, per_frame=20, host="other")
        frames[0][0]["boot_id"] = "another-boot"
        path = os.path.join(tmpdir, "other.mbrec")
        with open(path, "wb") as f:
            f.write(tc.assemble(frames))
        _SECOND_HOST["path"] = path
    return _SECOND_HOST["path"]


class _Discard(io.TextIOBase):
    def write(self, s):
        return len(s)


# One stdout and one stderr for every call: click caches a wrapper per stream object, so a
# fresh StringIO per call would be kept alive forever (and look like a leak of the reader's).
_OUT, _ERR = _Discard(), io.StringIO()


def mbrec(*args) -> tuple[int, str]:
    """mbrec's main() in process: (exit status, stderr); stdout is discarded."""
    from mbrec.cli import main
    err = _ERR
    err.seek(0)
    err.truncate()
    with contextlib.redirect_stdout(_OUT), contextlib.redirect_stderr(err):
        try:
            main(["--debug", *args])
            code = 0
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


def run_case(path: str, *, analyze: bool = False, with_host: str | None = None) -> list[str]:
    """What escaped on one file: every internal error's text (empty when none did)."""
    commands = [["info", path], ["info", "--json", path], ["replay", path],
                ["replay", "--json", path], ["replay", "--format", "microbpf", path]]
    if analyze:  # one host: also streamed in partitions; two hosts: clocks and the network
        commands.append(["analyze", "-q", "--no-plots", path, with_host] if with_host else
                        ["analyze", "-q", "--no-plots", "--partitions", "2", path])
    escapes = []
    for args in commands:
        code, err = mbrec(*args)
        if "internal error" in err or code not in (0, 2):
            escapes.append(f"{' '.join(args)}: exit {code}: {err.strip()[-2000:]}")
    return escapes
