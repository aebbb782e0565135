"""A DataLoader over in-memory (or memory-mapped) image arrays, with a prefetching thread.

Each batch is gathered on the host as uint8, moved to the backend (to the GPU for ``cupy``: a
quarter of the bytes of float32), converted to float and scaled to [0, 1] there, augmented with a
batched transform and normalised, all on the backend. A background thread prepares the next
batches while the current one trains.

Shuffling and augmentation are deterministic given ``seed``: epoch ``e`` shuffles with a
permutation derived from ``(seed, e)`` and batch ``b`` of it augments with a generator derived from
``(seed, e, b)``. The loader never draws from the global generators that dropout uses (whose
order of use would depend on thread timing), and :meth:`state_dict` / :meth:`load_state_dict`
resume exactly, even in the middle of an epoch.
"""
from __future__ import annotations

import contextlib
import math
import queue
import threading

import numpy

from ..backend import get_backend, host_rng
from ..dtypes import get_default_dtype
from .transforms import Normalize, Transform

__all__ = ["DataLoader", "HostDraws"]


class _Failure:
    """An exception raised in the worker thread, carried to the consumer."""

    def __init__(self, exc):
        self.exc = exc


_DONE = object()


class HostDraws:
    """A random source for transforms that draws on the host (NumPy) and hands the draws over
    as arrays of ``backend``. The per-image parameters are tiny, so drawing them on the CPU
    costs nothing, a fresh generator per batch is cheap, and one seed gives the same
    augmentation on every backend."""

    def __init__(self, backend, seed):
        self.backend = backend
        self.rng = numpy.random.default_rng(seed)

    def rand(self, shape, dtype):
        dtype = numpy.dtype(dtype)
        draw_dtype = dtype if dtype in (numpy.float32, numpy.float64) else numpy.float64
        return self.backend.asarray(self.rng.random(shape, dtype=draw_dtype))

    def randint(self, low, high, shape):
        return self.backend.asarray(self.rng.integers(low, high, size=shape, dtype=numpy.int64))


class DataLoader:
    """Iterate over ``(images, labels)`` in batches of backend Tensors.

    ``images``: an (N, C, H, W) host array (NumPy, or a memory map), uint8 (scaled to [0, 1] on
    conversion, like torchvision's ``ToTensor``) or floating (kept as is); ``labels``: (N,)
    integers. A data set object with ``.images`` and ``.labels``
    (such as :class:`~tinygrad_hw.data.CIFAR10`) may be given instead, with ``labels`` left out.

    Yields ``(x, y)``: ``x`` a float Tensor (N, C, H, W) of ``dtype`` (default: the default
    dtype), ``y`` an int64 Tensor (N,), on ``backend`` (default: the default backend at
    construction). ``transform`` (see :mod:`tinygrad_hw.data.transforms`) runs on the float batch
    on the backend, then ``mean``/``std`` normalisation when given. A
    :class:`~tinygrad_hw.data.transforms.Transform` draws from the loader's own per-batch
    generator; any other callable is called with the batch alone. ``seed`` defaults to a draw
    from the host generator, so :func:`tinygrad_hw.manual_seed` makes it reproducible.

    ``prefetch`` batches are prepared ahead in a background thread (0: none, all in the caller's
    thread). ``as_tensor=False`` yields the backend arrays instead of Tensors.

    Defaults follow ``torch.utils.data.DataLoader`` (batch_size=1, no shuffling, last partial batch
    kept). Each ``for`` loop over the loader is one epoch; the epoch counter advances by itself,
    or set it with :meth:`set_epoch`.

    ``sampler``: which indices an epoch serves, in order, instead of all of them (with
    ``shuffle``, exclusive of it): an object with ``__iter__`` and ``__len__``, such as a
    :class:`~tinygrad_hw.data.DistributedSampler` for data-parallel training. Where it has
    ``set_epoch`` the loader calls it with its own epoch before each epoch (in PyTorch that call
    is left to the training loop), so a resumed loader serves the same indices.
    """

    def __init__(self, images, labels=None, batch_size: int = 1, shuffle: bool = False,
                 drop_last: bool = False, seed: int | None = None, *, backend=None,
                 transform=None, mean=None, std=None, dtype=None, prefetch: int = 2,
                 as_tensor: bool = True, sampler=None):
        if labels is None:
            if not (hasattr(images, "images") and hasattr(images, "labels")):
                raise TypeError("DataLoader: give images and labels, or a data set with "
                                ".images and .labels")
            images, labels = images.images, images.labels
        if not isinstance(images, numpy.ndarray):  # host memory; memory maps are ndarrays too
            images = numpy.asarray(images)
        if images.ndim != 4:
            raise ValueError(f"DataLoader: images must be (N, C, H, W), got shape "
                             f"{getattr(images, 'shape', None)}")
        labels = numpy.asarray(labels)
        if labels.shape != (len(images),):
            raise ValueError(f"DataLoader: {labels.shape} labels for {len(images)} images")
        if int(batch_size) < 1:
            raise ValueError(f"DataLoader: batch_size must be positive, got {batch_size}")
        if (mean is None) != (std is None):
            raise ValueError("DataLoader: give both mean and std, or neither")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler option is mutually exclusive with shuffle")
        self.sampler = sampler
        self.images, self.labels = images, labels.astype(numpy.int64, copy=False)
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), bool(shuffle), bool(
            drop_last)
        self.seed = int(host_rng().integers(2 ** 63)) if seed is None else int(seed)
        self.backend = get_backend(backend)
        self.transform = transform
        self.normalize = None if mean is None else Normalize(mean, std)
        self.dtype = numpy.dtype(get_default_dtype() if dtype is None else dtype)
        if self.dtype.kind != "f":
            raise TypeError(f"DataLoader: dtype must be floating, got {self.dtype}")
        self.prefetch = int(prefetch)
        self.as_tensor = bool(as_tensor)
        self.epoch = 0          # the epoch the next ``for`` loop runs
        self._resume_batch = 0  # where that loop starts (non-zero after load_state_dict)
        self._running = None    # [epoch, batches consumed] while a loop is under way

    # -- sizes and state ------------------------------------------------------------------------
    def __len__(self) -> int:
        n = len(self.images) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``for`` loop run epoch ``epoch`` (its shuffle and augmentation draws)."""
        self.epoch, self._resume_batch = int(epoch), 0

    def state_dict(self) -> dict:
        """Where the loader is: the next batch to produce, and the seed. Taken in the middle of
        an epoch, loading it makes the next loop continue that epoch from there."""
        if self._running is not None:
            epoch, batch = self._running
        else:
            epoch, batch = self.epoch, self._resume_batch
        if batch >= len(self):
            epoch, batch = epoch + 1, 0
        return {"seed": self.seed, "epoch": epoch, "batch": batch, "num_samples": len(self.images),
                "batch_size": self.batch_size, "shuffle": self.shuffle,
                "drop_last": self.drop_last}

    def load_state_dict(self, state: dict) -> None:
        for key in ("num_samples", "batch_size", "shuffle", "drop_last"):
            mine = len(self.images) if key == "num_samples" else getattr(self, key)
            if key in state and state[key] != mine:
                raise ValueError(f"DataLoader.load_state_dict: saved {key}={state[key]!r} but "
                                 f"this loader has {mine!r}; the batches would not line up")
        self.seed = int(state["seed"])
        self.epoch, self._resume_batch = int(state["epoch"]), int(state["batch"])

    # -- the draws ------------------------------------------------------------------------------
    def order(self, epoch: int) -> numpy.ndarray:
        """The sample indices of epoch ``epoch``, in the order they are served."""
        if self.sampler is not None:
            if hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(epoch)
            return numpy.fromiter(iter(self.sampler), dtype=numpy.int64, count=len(self.sampler))
        n = len(self.images)
        if not self.shuffle:
            return numpy.arange(n, dtype=numpy.int64)
        rng = numpy.random.default_rng(numpy.random.SeedSequence([self.seed, epoch, 0]))
        return rng.permutation(n).astype(numpy.int64)

    def _augment_rng(self, epoch: int, batch: int) -> "HostDraws":
        """The generator that batch ``batch`` of epoch ``epoch`` augments with."""
        return HostDraws(self.backend, numpy.random.SeedSequence([self.seed, epoch, batch, 1]))

    # -- batches --------------------------------------------------------------------------------
    def _batch_indices(self, order):
        n, size = len(order), self.batch_size
        stop = (n // size) * size if self.drop_last else n
        return [order[i:i + size] for i in range(0, stop, size)]

    def _make_batch(self, epoch: int, batch: int, indices):
        """Gather on the host, move as uint8, convert, augment and normalise on the backend."""
        xp = self.backend.xp
        # Sorted reads are kinder to a memory-mapped file; the batch order is restored after.
        sort = numpy.argsort(indices, kind="stable")
        host = numpy.empty((len(indices),) + self.images.shape[1:], dtype=self.images.dtype)
        host[sort] = self.images[indices[sort]]
        x = self.backend.asarray(host)
        if x.dtype == numpy.uint8:
            x = x.astype(self.dtype)
            x /= self.dtype.type(255)  # a division, bit for bit like torchvision's ToTensor
        else:
            x = x.astype(self.dtype, copy=False)
        if self.transform is not None:
            if isinstance(self.transform, Transform):
                x = self.transform(x, rng=self._augment_rng(epoch, batch))
            else:  # any callable on a batch array; it draws from wherever it likes
                x = self.transform(x)
        if self.normalize is not None:
            x = self.normalize(x)
        y = self.backend.asarray(self.labels[indices])
        return xp.ascontiguousarray(x), y

    def _wrap(self, x, y):
        if not self.as_tensor:
            return x, y
        from ..tensor import Tensor
        return Tensor(x, backend=self.backend), Tensor(y, backend=self.backend)

    def __iter__(self):
        epoch, start = self.epoch, self._resume_batch
        self.epoch, self._resume_batch = epoch + 1, 0
        batches = self._batch_indices(self.order(epoch))
        self._running = [epoch, start]
        try:
            if self.prefetch <= 0:
                for b in range(start, len(batches)):
                    x, y = self._make_batch(epoch, b, batches[b])
                    self._running[1] = b + 1
                    yield self._wrap(x, y)
            else:
                yield from self._iter_prefetched(epoch, start, batches)
        finally:
            self._running = None

    def _iter_prefetched(self, epoch, start, batches):
        ready = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def put(item):
            # Wait for room, but give up as soon as the consumer has gone away.
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        # on a GPU: this thread's device, and a stream of the worker's own that does not wait for
        # the training step's queued work (nor it for the worker's)
        worker_context = self.backend.worker_context()

        def work():
            try:
                with worker_context():
                    for b in range(start, len(batches)):
                        batch = self._make_batch(epoch, b, batches[b])
                        # complete before the consumer's stream uses it: waits for the worker's
                        # own stream only (a no-op on the CPU)
                        self.backend.synchronize()
                        if not put(batch):
                            return
                put(_DONE)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                put(_Failure(exc))

        worker = threading.Thread(target=work, name="DataLoader-prefetch", daemon=True)
        worker.start()
        try:
            b = start
            while True:
                item = ready.get()
                if item is _DONE:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                b += 1
                self._running[1] = b
                yield self._wrap(*item)
        finally:
            stop.set()
            with contextlib.suppress(queue.Empty):
                while True:
                    ready.get_nowait()
            worker.join()

    def __repr__(self):
        return (f"DataLoader(n={len(self.images)}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, "
                f"backend={self.backend.name!r}, transform={self.transform!r})")
