"""Where the map stage runs: in this process, in local worker processes, or on a Dask cluster.

Every executor runs the same function over the same partition numbers and hands back the same
results in partition order; only this module knows that executors exist. Workers read their
partition from the spill directory (analysis.partition), so on a cluster that directory must be
a path every worker sees (a shared filesystem): the client sends only the partition number and
the spill files' names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial

from mbrec.errors import MbrecError

SCHEDULER_TIMEOUT_S = 10


@dataclass
class Executor:
    """serial (jobs 1, no scheduler), local processes (jobs > 1), or Dask (scheduler)."""

    jobs: int = 1
    scheduler: str | None = None

    @property
    def kind(self) -> str:
        return "dask" if self.scheduler else "processes" if self.jobs > 1 else "serial"

    @property
    def workers(self) -> int:
        return self.jobs

    def describe(self) -> str:
        return {"serial": "in this process", "processes": f"{self.jobs} worker processes",
                "dask": f"Dask cluster at {self.scheduler}"}[self.kind]


def run_map(fn, items: list, executor: Executor, progress=None, describe=str) -> list:
    """[fn(x) for x in items], wherever the executor runs them; results in the order of items.
    progress(n_done) is called as results arrive. describe(x) names an item in an error."""
    tick = progress or (lambda n: None)
    if executor.kind == "serial" or len(items) <= 1 and executor.kind != "dask":
        out = []
        for x in items:
            out.append(fn(x))
            tick(1)
        return out
    if executor.kind == "processes":
        return _processes(fn, items, executor.jobs, tick, describe)
    return _dask(fn, items, executor.scheduler, tick, describe)


def _processes(fn, items, jobs, tick, describe):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    # forkserver: workers start clean (no copy of the client's memory, no inherited threads)
    ctx = multiprocessing.get_context("forkserver")
    results = [None] * len(items)
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_leave_sigint)
    try:
        futures = {pool.submit(fn, x): k for k, x in enumerate(items)}
        for fut in as_completed(futures):
            k = futures[fut]
            try:
                results[k] = fut.result()
            except BrokenProcessPool:
                raise MbrecError(f"a worker process died while analysing {describe(items[k])} "
                                 "(out of memory? try more partitions: --memory or "
                                 "--partitions)") from None
            tick(1)
    except BaseException:
        workers = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for w in workers:  # a partition under way is not waited for
            w.terminate()
        for w in workers:
            w.join(timeout=5)
        raise
    pool.shutdown()
    return results


def _leave_sigint() -> None:
    """Workers leave Ctrl-C (which the terminal sends to the whole process group) to the
    client, which stops them and removes the spill files."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    no_huge_page_advice()


def no_huge_page_advice() -> None:
    """What mbrec's command line does before numpy is imported (NUMPY_MADVISE_HUGEPAGE=0, see
    mbrec/cli.py), for a worker whose numpy is already imported: large fresh arrays are then
    not compacted into huge pages on every fault (measured: a 20 M-event analysis on two Dask
    workers took 92 s with the advice, 39 s without)."""
    import numpy as np
    core = getattr(np, "_core", None) or getattr(np, "core", None)
    switch = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)
    if switch is not None:
        switch(False)


def _on_dask_worker(fn, item):
    no_huge_page_advice()
    glibc_malloc_defaults()
    return fn(item)


def glibc_malloc_defaults() -> None:
    """Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also fixes glibc's
    mmap threshold at 128 KiB: every array the analysis allocates is then a fresh mapping,
    faulted in page by page and unmapped when freed. Back to what a plain process does (the
    mmap threshold may rise to 32 MiB, freed memory is kept for reuse up to 64 MiB)."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 << 20)
        libc.mallopt(m_trim_threshold, 64 << 20)
    except (OSError, AttributeError):  # not glibc: nothing to undo
        pass


def dask_client(address: str):
    """A client of the Dask scheduler at address, or one line saying why not (10 s at most)."""
    try:
        from distributed import Client
    except ImportError:
        raise MbrecError("--scheduler needs Dask's distributed package: pip install "
                         "'mbrec[dask]' (or distributed)") from None
    try:
        return Client(address, timeout=SCHEDULER_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise MbrecError(f"--scheduler {address}: no Dask scheduler answered within "
                         f"{SCHEDULER_TIMEOUT_S} s ({type(e).__name__}); start one with "
                         "`dask scheduler` and workers with `dask worker ADDRESS`") from None
    except ValueError as e:
        raise MbrecError(f"--scheduler {address}: {e}") from None


def _dask(fn, items, address, tick, describe):
    from distributed import as_completed
    from distributed.client import FutureCancelledError

    client = dask_client(address)
    try:
        ctx = client.as_current()
        ctx.__enter__()  # as_completed finds the client through it
        futures = client.map(partial(_on_dask_worker, fn), items, pure=False)
        index = {f.key: k for k, f in enumerate(futures)}
        results = [None] * len(items)
        for fut in as_completed(futures):
            k = index[fut.key]
            try:
                results[k] = fut.result()
            except FutureCancelledError:
                raise MbrecError(f"the Dask cluster cancelled {describe(items[k])}") from None
            except Exception as e:
                if type(e).__name__ == "KilledWorker":
                    raise MbrecError(f"Dask workers died analysing {describe(items[k])} (out "
                                     "of memory? try more partitions)") from None
                raise
            tick(1)
        return results
    except BaseException:
        client.cancel(futures) if "futures" in locals() else None
        raise
    finally:
        ctx.__exit__(None, None, None)
        client.close()


def default_memory() -> int:
    """Bytes the analysis may use by default: half of the machine's available memory."""
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        avail = 8 << 30
    return max(avail // 2, 1 << 30)


def parse_size(text: str) -> int:
    """'4G', '512M', '1.5G', or a number of bytes."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    mult = units.get(t[-1:], 1)
    try:
        value = float(t[:-1] if t[-1:] in units else t)
    except ValueError:
        raise MbrecError(f"--memory {text}: give a size such as 4G or 512M") from None
    if not (value > 0 and value * mult < float(1 << 60)):
        raise MbrecError(f"--memory {text}: give a positive size such as 4G or 512M")
    return int(value * mult)
