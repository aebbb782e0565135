"""How tinygrad_hw uses the cores on the NumPy backend: its own worker threads, each calling a
single-threaded BLAS.

NumPy's OpenBLAS parallelises one matrix product at a time, and after each parallel product its
threads spin for a while waiting for the next one. Between two products the engine runs other
NumPy work (the tile transforms of a convolution, element-wise ops) that the spinning threads then
compete with for the cores: on the 2-core benchmark machine that cost about 15% of a VGG-style
training step. So the large products of tinygrad_hw run inside its own worker threads, each with
one BLAS thread: a convolution's images are cut into chunks that ``WORKERS`` threads take in turn
(:func:`map_chunks`), and a large matrix product is cut into row blocks the same way
(:func:`matmul`). Small products (one chunk, or under ``MATMUL_SPLIT_MACS``) are left to BLAS:
switching its thread count costs more than it saves there. The BLAS thread count is restored
after each kernel, so NumPy code outside tinygrad_hw keeps its multi-threaded BLAS.

NumPy releases the GIL inside each call, so the worker threads run at once; but every call hands
the GIL over (several microseconds on a virtual machine), so kernels meant for the workers do
their work in few, large NumPy calls.

All of this needs ``threadpoolctl`` (an optional dependency, in the ``data``, ``test`` and
``bench`` extras) to find and set BLAS's thread count; without it kernels run in the calling
thread with BLAS as configured. Off NumPy (CuPy) everything here is a plain call.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait

__all__ = ["WORKERS", "worker_count", "map_chunks", "map_sum", "matmul", "single_threaded_blas", "split_ranges",
           "limit_blas_threads"]

# Threads that take chunks of a kernel on NumPy (the calling thread is one of them).
# None: the number of usable cores. 1 turns the worker threads off.
WORKERS = None
# Matrix products with at least this many multiply-adds are split into row blocks over the
# workers; smaller ones are left to BLAS as configured (too short to pay for a hand-over).
MATMUL_SPLIT_MACS = 4_000_000
# Memory-bound kernels (max pooling and its backward) split their images over the workers from
# this many bytes of input.
SPLIT_BYTES = 1 << 20


class _ThreadState(threading.local):
    def __init__(self):
        self.in_worker = False  # inside a chunk: BLAS is already single-threaded, no fan-out
        self.blas_depth = 0  # nesting of single_threaded_blas in this thread


_local = _ThreadState()
_state = {"pool": None, "pool_size": 0, "blas": None, "workers": None}
_lock = threading.Lock()


def _forget_pool_after_fork():
    # a forked child has none of the parent's pool threads: work queued there would never run
    global _lock
    _state.update(pool=None, pool_size=0)
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def worker_count() -> int:
    """``WORKERS``, or the number of cores this process may run on."""
    if WORKERS is not None:
        return max(1, int(WORKERS))
    if _state["workers"] is None:
        try:
            _state["workers"] = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            _state["workers"] = os.cpu_count() or 1
    return _state["workers"]


def _blas_libraries():
    """threadpoolctl's controllers of the loaded BLAS libraries, or () without threadpoolctl."""
    if _state["blas"] is None:
        with _lock:
            if _state["blas"] is None:
                try:
                    from threadpoolctl import ThreadpoolController
                    _state["blas"] = tuple(ThreadpoolController().select(user_api="blas").lib_controllers)
                except Exception:  # threadpoolctl missing or unable to inspect the libraries
                    _state["blas"] = ()
    return _state["blas"]


def _thread_pool():
    """The executor of the ``worker_count() - 1`` helper threads, or None where threads cannot
    help: one worker, or no threadpoolctl to keep BLAS from oversubscribing the cores."""
    workers = worker_count()
    if workers < 2 or not _blas_libraries():
        return None
    with _lock:
        if _state["pool"] is None or _state["pool_size"] != workers:
            _state["pool"] = ThreadPoolExecutor(workers - 1, thread_name_prefix="tinygrad_hw")
            _state["pool_size"] = workers
        return _state["pool"]


def limit_blas_threads(threads: int) -> bool:
    """Give NumPy's BLAS ``threads`` threads from now on (outside the kernels, which choose their
    own); False where threadpoolctl cannot find or set it."""
    libraries = _blas_libraries()
    for lib in libraries:
        lib.set_num_threads(int(threads))
    return bool(libraries)


# OpenBLAS runs a product of at most this many multiply-adds (m * n * k) on one thread whatever
# its thread count (interface/gemm.c: SMP_THRESHOLD_MIN 65536 times GEMM_MULTITHREAD_THRESHOLD 4),
# so switching its threads off around such a product buys nothing and costs ~9 us.
BLAS_SERIAL_MACS = 65536 * 4
_AS_IS = contextlib.nullcontext()


def single_threaded_blas(be, macs=None):
    """Run the body with one BLAS thread on NumPy (restored afterwards; nests). ``macs``: the
    multiply-adds of the one product in the body, where one that BLAS runs on one thread anyway
    skips the switch."""
    if macs is not None and macs <= BLAS_SERIAL_MACS:
        return _AS_IS
    return _single_threaded_blas(be)


@contextlib.contextmanager
def _single_threaded_blas(be):
    if be.name != "numpy" or _local.in_worker or _local.blas_depth:
        yield
        return
    libraries = _blas_libraries()
    saved = [lib.get_num_threads() for lib in libraries]
    for lib, count in zip(libraries, saved):
        if count != 1:
            lib.set_num_threads(1)
    _local.blas_depth += 1
    try:
        yield
    finally:
        _local.blas_depth -= 1
        for lib, count in zip(libraries, saved):
            if count and count != 1:
                lib.set_num_threads(count)


def map_chunks(be, fn, chunks):
    """``[fn(chunk) for chunk in chunks]``. On NumPy the calling thread and ``worker_count() - 1``
    pool threads take chunks in turn, each with a single-threaded BLAS; every chunk writes its own
    part of the result, so the order of completion does not matter."""
    if be.name != "numpy" or len(chunks) < 2:
        return [fn(c) for c in chunks]  # one chunk is small work: BLAS decides its threads
    with single_threaded_blas(be):
        pool = None if _local.in_worker else _thread_pool()
        if pool is None:
            return [fn(c) for c in chunks]
        results = [None] * len(chunks)
        taken = itertools.count()  # next() on a count is atomic under the GIL

        def work():
            _local.in_worker = True  # a kernel called from fn must not fan out again
            try:
                for i in iter(taken.__next__, None):
                    if i >= len(chunks):
                        return
                    results[i] = fn(chunks[i])
            finally:
                _local.in_worker = False

        helpers = min(_state["pool_size"] - 1, len(chunks) - 1)
        futures = [pool.submit(work) for _ in range(helpers)]
        try:
            work()
        finally:
            futures_wait(futures)  # every helper is done before BLAS gets its threads back
        for future in futures:
            future.result()  # re-raise a helper's error
        return results


def matmul(be, a, b):
    """``a @ b`` for 2-D ``a`` (m, k) and ``b`` (k, n) into a fresh array. On NumPy a large
    product is cut into row blocks of ``a`` (column blocks of ``b`` where n > m) over the
    workers, each with a single-threaded BLAS; a small one is left to BLAS (switching its thread
    count costs more than it saves there)."""
    xp = be.xp
    m, n = a.shape[0], b.shape[1]
    parts = min(worker_count(), max(m, n))
    if be.name != "numpy" or parts < 2 or m * a.shape[1] * n < MATMUL_SPLIT_MACS:
        return xp.matmul(a, b)
    out = xp.empty((m, n), dtype=xp.result_type(a, b))
    if m >= n:  # row blocks of a
        step = -(-m // parts)

        def block(start):
            xp.matmul(a[start:start + step], b, out=out[start:start + step])

        map_chunks(be, block, list(range(0, m, step)))
        return out
    # column blocks of b where the product is wider than tall: a batch's rows times a wide
    # layer split in rows gives each thread a product of few rows, which OpenBLAS runs slowly
    # (64 x 2048 by 2048 x 256, one thread: half the rows 0.41 ms, half the columns 0.28)
    step = -(-n // parts)

    def column_block(start):
        xp.matmul(a, b[:, start:start + step], out=out[:, start:start + step])

    map_chunks(be, column_block, list(range(0, n, step)))
    return out


def map_sum(be, fn, chunks):
    """``fn(chunks[0]) + fn(chunks[1]) + ...``, each ``fn`` returning a fresh array of one shape
    (a weight gradient's per-chunk part), with the same sums whichever thread runs first. On
    NumPy each worker sums a fixed share of the chunks as it goes (every W-th chunk), so only W
    partial sums are alive at once (one per chunk held to the end took 3-4 MB more at the peak
    of vgg_style b64), then the shares are added in order, split by elements over the workers
    (~2 ms a step of vgg_style in the calling thread alone otherwise); elsewhere the chunks are
    summed in order."""
    shares = worker_count() if be.name == "numpy" else 1
    groups = [chunks[k::shares] for k in range(min(shares, len(chunks)))]

    def share(spans):
        total = fn(spans[0])
        for span in spans[1:]:
            total += fn(span)
        return total

    parts = map_chunks(be, share, groups)
    total = parts[0]
    if len(parts) < 2:
        return total
    flat = [p.reshape(-1) for p in parts]  # fresh, contiguous: flat views of each share
    size = flat[0].size

    def add(span):
        lo, hi = span
        acc = flat[0][lo:hi]
        for part in flat[1:]:
            acc += part[lo:hi]

    map_chunks(be, add, split_ranges(be, size, size * total.itemsize * len(parts)))
    return total


def split_ranges(be, length, nbytes):
    """(start, stop) ranges of ``length`` items for a memory-bound kernel: one per worker on NumPy
    when ``nbytes`` reaches ``SPLIT_BYTES``, else one range."""
    parts = min(worker_count(), length) if be.name == "numpy" and nbytes >= SPLIT_BYTES else 1
    per = max(-(-length // max(parts, 1)), 1)  # >= 1: an empty batch is one empty range
    return [(s, min(length, s + per)) for s in range(0, length, per)] or [(0, 0)]

