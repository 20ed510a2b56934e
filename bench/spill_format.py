"""Benchmark: the partition spill format. Raw records (numpy tofile/fromfile, the format the
partitioned analysis uses) against Arrow IPC and Parquet through pyarrow (one column per field,
addresses as 16-byte fixed-size binaries), on real pkt records: the ab fixture's, repeated.

    python bench/spill_format.py [--events 2000000]      (needs pyarrow; not a dependency)

Prints per format: write and read-back seconds (best of 3), M records/s, file size.
"""

import argparse
import os
import tempfile
import time

import numpy as np

from mbrec.trace.reader import read_trace


def best(fn, repeat=3):
    t = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return min(t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--trace", default="fixtures/ab/a.mbrec")
    args = ap.parse_args()
    import pyarrow as pa
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    pkt = read_trace(args.trace).events["pkt"]
    recs = np.resize(pkt, args.events)
    work = tempfile.mkdtemp(prefix="mbrec-spillbench-")
    raw = os.path.join(work, "p.bin")

    def to_table(r):
        cols = {}
        for name in r.dtype.names:
            col = r[name]
            if col.ndim == 2:  # addresses
                cols[name] = pa.FixedSizeBinaryArray.from_buffers(
                    pa.binary(col.shape[1]), len(col), [None, pa.py_buffer(
                        np.ascontiguousarray(col).tobytes())])
            else:
                cols[name] = pa.array(np.ascontiguousarray(col))
        return pa.table(cols)

    def from_table(t):
        out = np.empty(t.num_rows, dtype=recs.dtype)
        for name in recs.dtype.names:
            col = t.column(name).combine_chunks()
            if out[name].ndim == 2:
                buf = np.frombuffer(col.buffers()[1], np.uint8)
                out[name] = buf.reshape(len(out), -1)
            else:
                out[name] = col.to_numpy()
        return out

    ipc_path = os.path.join(work, "p.arrow")
    pq_path = os.path.join(work, "p.parquet")

    def w_raw():
        recs.tofile(raw)

    def r_raw():
        return np.fromfile(raw, dtype=recs.dtype)

    def w_ipc():
        t = to_table(recs)
        with ipc.new_file(ipc_path, t.schema) as w:
            w.write_table(t)

    def r_ipc():
        with pa.memory_map(ipc_path) as src:
            return from_table(ipc.open_file(src).read_all())

    def w_pq():
        pq.write_table(to_table(recs), pq_path, compression="none")

    def r_pq():
        return from_table(pq.read_table(pq_path))

    n = len(recs)
    print(f"{n:,} pkt records of {recs.dtype.itemsize} bytes ({args.trace}, repeated)")
    for name, w, r, path in (("raw numpy", w_raw, r_raw, raw), ("Arrow IPC", w_ipc, r_ipc, ipc_path),
                             ("Parquet", w_pq, r_pq, pq_path)):
        tw = best(w)
        tr = best(r)
        assert np.array_equal(r(), recs)
        print(f"{name:>10}: write {tw:.3f} s ({n / tw / 1e6:.1f} M/s), read {tr:.3f} s "
              f"({n / tr / 1e6:.1f} M/s), {os.path.getsize(path) / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
