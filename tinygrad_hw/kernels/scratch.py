"""Scratch memory and batch chunks shared by the NumPy kernels.

Kernels take their temporaries for one call from :func:`workspace`; buffers up to 1 MiB are kept
per thread and reused from call to call, larger ones are made per call and freed (malloc reuses
the freed blocks, so the page faults of a fresh multi-megabyte array are not paid every call,
and between training steps nothing large stays held). :func:`image_chunks` cuts a batch into chunks small enough that a chunk's column buffer
stays in the CPU cache between the copy that writes it and the product that reads it; the
chunks run in :mod:`~tinygrad_hw.kernels.parallel`'s worker threads. Off NumPy (CuPy has its
own memory pool) scratch arrays are plain allocations, and a batch is cut into chunks only where
one chunk's buffer would pass ``DEVICE_CHUNK_BYTES``.
"""
from __future__ import annotations

import math
import threading

from .parallel import worker_count

__all__ = ["CHUNK_BYTES", "DEVICE_CHUNK_BYTES", "workspace", "bordered_workspace", "image_chunks", "pad_image"]

# Target size of one chunk's column buffer on the NumPy backend: small enough to stay in the
# cache between the copy that writes it and the product that reads it. Tuned on a 2-core EPYC
# (2 MiB L2 per core, 32 MiB L3); see benchmarks/bench_conv.py.
CHUNK_BYTES = 2 << 20
# Largest column buffer of one chunk on a GPU: the vgg preset's first layers at batch 512 need
# 1.2-2.4 GB for the whole batch, and three such buffers per layer and step (forward, input and
# weight gradient) would be built; in chunks of this size each is built and freed in turn, and
# every chunk's matrix product still has tens of images (plenty for the GPU).
DEVICE_CHUNK_BYTES = 256 << 20
# Scratch buffers larger than this are allocated per call instead of being kept alive between
# calls (and between training steps, where they would count in the training memory: with 64 MiB
# here about 40 MiB stayed held on vgg_style at batch 64, more than the step itself needs). Freed
# buffers go back to malloc, which hands the same blocks to the next call, so the page-fault cost
# of a fresh multi-megabyte array is not paid again: measured on vgg_style at batch 64 and bn_cnn at
# batch 256 the step time did not change between keeping 64 MiB buffers and keeping none (see
# docs/benchmarks.md, "Scratch memory"). Small buffers (the Winograd layers' zero-bordered input
# phases, kept for their zero borders) stay.
_SCRATCH_KEEP_MAX_BYTES = 1 << 20


class _ThreadState(threading.local):
    def __init__(self):
        self.buffers = {}
        self.bordered = {}


_local = _ThreadState()


def workspace(be, slot: str, shape, dtype):
    """A scratch array of ``shape`` for results that do not outlive one kernel call.

    On NumPy, up to ``_SCRATCH_KEEP_MAX_BYTES`` (1 MiB), the memory is kept per thread, slot and
    dtype and reused; larger arrays are fresh each call; elsewhere (CuPy has its own memory pool) it is a fresh
    ``empty``. Two scratch arrays alive at the same time must use different slots.
    """
    xp = be.xp
    if be.name != "numpy":
        return xp.empty(shape, dtype=dtype)
    size = math.prod(shape)
    dtype = xp.dtype(dtype)
    if size * dtype.itemsize > _SCRATCH_KEEP_MAX_BYTES:
        return xp.empty(shape, dtype=dtype)
    key = (slot, dtype.str)
    buf = _local.buffers.get(key)
    if buf is None or buf.size < size:
        buf = xp.empty(max(size, 1), dtype=dtype)
        _local.buffers[key] = buf
    return buf[:size].reshape(shape)


# How many zero-bordered scratch arrays (below) one thread keeps: enough for the input phases of
# every Winograd layer of a network in both directions (each under a megabyte at batch 64).
_BORDERED_KEEP = 32


def bordered_workspace(be, slot: str, shape, dtype, layout):
    """A scratch array that starts as zeros and is kept per thread for this exact ``shape`` and
    ``layout`` (a hashable description of which cells the caller writes). A caller that always
    writes the same cells for the same key may rely on every other cell still being zero, and
    so skips refilling the borders (a dozen small calls per chunk otherwise)."""
    xp = be.xp
    dtype = xp.dtype(dtype)
    if be.name != "numpy" or math.prod(shape) * dtype.itemsize > _SCRATCH_KEEP_MAX_BYTES:
        return xp.zeros(shape, dtype=dtype)
    cache = _local.bordered
    key = (slot, tuple(shape), dtype.str, layout)
    buf = cache.pop(key, None)
    if buf is None:
        buf = xp.zeros(shape, dtype=dtype)
        while len(cache) >= _BORDERED_KEEP:
            cache.pop(next(iter(cache)))  # the least recently used
    cache[key] = buf  # (re)inserted last: the dict's order is the order of use
    return buf


def image_chunks(be, n_images: int, bytes_per_image: int):
    """(start, stop) ranges of images processed together, cut so that one chunk's column buffer
    is about ``CHUNK_BYTES`` on NumPy (cache-sized, shared by the worker threads) and at most
    ``DEVICE_CHUNK_BYTES`` elsewhere (one after another: a bound on device memory, not a cache
    size)."""
    if n_images == 0:
        return [(0, n_images)]
    if be.name != "numpy":
        per = max(1, DEVICE_CHUNK_BYTES // max(bytes_per_image, 1))
        count = -(-n_images // per)
        per = -(-n_images // count)
        return [(s, min(n_images, s + per)) for s in range(0, n_images, per)]
    per = max(1, min(n_images, CHUNK_BYTES // max(bytes_per_image, 1)))
    count = -(-n_images // per)
    workers = worker_count()
    if count < workers <= n_images and n_images * bytes_per_image >= (1 << 20):
        count = workers  # enough work to share between the threads
    elif workers > 1 and count > 1:
        # a multiple of the workers, so that they finish together: 64 images in 3 chunks
        # (22+22+20) left one thread 42 images and the other 22, 1.3x the balanced time
        count = min(n_images, -(-count // workers) * workers)
    # sizes differing by at most one image: 64 in 10 is 7,7,7,7,6,...; not 9 x 7 + 1
    base, extra = divmod(n_images, count)
    bounds = [i * base + min(i, extra) for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def pad_image(be, x, pads, slot, fill=0.0):
    """``x`` (N, C, H, W) with (top, bottom, left, right) padding of value ``fill`` (a scratch
    array), or ``x`` itself when there is no padding."""
    pt, pb, pl, pr = pads
    if not (pt or pb or pl or pr):
        return x
    n, c, h, w = x.shape
    out = workspace(be, slot, (n, c, h + pt + pb, w + pl + pr), x.dtype)
    # fill only the border: the interior is overwritten right after
    out[:, :, :pt].fill(fill)
    out[:, :, pt + h:].fill(fill)
    out[:, :, pt:pt + h, :pl].fill(fill)
    out[:, :, pt:pt + h, pl + w:].fill(fill)
    out[:, :, pt:pt + h, pl:pl + w] = x
    return out
