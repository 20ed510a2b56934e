"""Quick regression guard for the trace I/O hot path (in CI).

It fails only on a gross regression: the writer and the reader must stay within 5x of the bare
zstd work they wrap (today about 1.5x and 2x), measured on the same bytes in the same run.
Per-event Python creeping into either path costs far more than that.
"""

import os
import time

import numpy as np
import pytest
import zstandard

from mbrec.testing.synthetic import random_records
from mbrec.trace.format import make_header
from mbrec.trace.reader import read_trace
from mbrec.trace.writer import ZSTD_LEVEL, TraceWriter

pytestmark = pytest.mark.bench
N = 400_000
BATCH = 32768


def best_of(fn, repeat=3):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def test_trace_io_stays_close_to_bare_zstd(tmp_path):
    recs = random_records("pkt", N, seed=3)
    recs["saddr"] = 0  # make it compress like real data rather than noise
    recs["daddr"] = 0
    recs["skb"] = 0
    chunks = [recs[i:i + BATCH].tobytes() for i in range(0, N, BATCH)]
    path = str(tmp_path / "g.mbrec")

    def write():
        w = TraceWriter(path, make_header(), force=True)
        for c in chunks:
            w.write_events(1, c, count=len(c) // recs.itemsize)
        w.close()

    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)  # the writer's level
    frames = []

    def bare_compress():
        frames[:] = [cctx.compress(c) for c in chunks]

    def read():
        assert len(read_trace(path).events["pkt"]) == N

    dctx = zstandard.ZstdDecompressor()

    def bare_decompress():
        np.concatenate([np.frombuffer(dctx.decompress(f), dtype=recs.dtype) for f in frames])

    write_ratio = best_of(write) / best_of(bare_compress)
    read_ratio = best_of(read) / best_of(bare_decompress)
    print(f"write ratio {write_ratio:.2f}, read ratio {read_ratio:.2f}")
    assert os.path.getsize(path) < recs.nbytes
    assert write_ratio < 5, f"writer is {write_ratio:.1f}x bare zstd"
    assert read_ratio < 5, f"reader is {read_ratio:.1f}x bare zstd"
