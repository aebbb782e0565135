"""Array backends: NumPy on the CPU, CuPy on an NVIDIA GPU.

Everything in the engine reaches arrays through a :class:`Backend` object: its array module
``xp`` (``numpy`` or ``cupy``), its random generator, and the few helpers whose spelling differs
between the two libraries. A new backend is one new subclass. This is the only module that
imports CuPy, and it does so only when the ``cupy`` backend is first asked for.

The module also holds the library-wide settings that every layer needs: the default backend
and the global seed (the default dtype is in :mod:`tinygrad_hw.dtypes`).
"""
from __future__ import annotations

import contextlib
import os

import numpy

__all__ = [
    "Backend", "NumpyBackend", "CupyBackend", "get_backend", "set_backend", "backend_of",
    "manual_seed", "host_rng", "get_rng_state", "set_rng_state", "use_deterministic_algorithms",
    "are_deterministic_algorithms_enabled", "ordered_scatter_add",
]


class Backend:
    """One array library. Subclasses set ``name`` and ``xp`` and fill in the differing helpers."""

    name: str = ""
    xp = None  # the array module

    def __init__(self, seed: int | None = None):
        self.seed(seed)

    def __repr__(self):
        return f"<backend {self.name}>"

    # A backend is a process-wide singleton: copies and pickles of tensors must point back to it.
    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self

    def __reduce__(self):
        return get_backend, (self.name,)

    # -- arrays -------------------------------------------------------------------------------
    def asarray(self, data, dtype=None):
        """``data`` (list, scalar, NumPy or this backend's array) as an array of this backend."""
        return self.xp.asarray(data, dtype=dtype)

    def to_numpy(self, array) -> numpy.ndarray:
        """A NumPy copy of ``array`` (on the host)."""
        return numpy.array(array)

    def scalar(self, value, dtype):
        """A Python number as a 0-d array of ``dtype`` (how ops take ``x * 2``)."""
        return self.xp.asarray(value, dtype=dtype)

    def is_array(self, obj) -> bool:
        return isinstance(obj, self.xp.ndarray)

    def scatter_add(self, target, indices, values):
        """``target[indices] += values`` with repeated indices summed (unbuffered), in place."""
        raise NotImplementedError

    def as_strided(self, array, shape, strides):
        """A read-only strided view of ``array`` (strides in bytes), no copy."""
        raise NotImplementedError

    def synchronize(self):
        """Wait for the current stream's queued device work (a no-op on the CPU)."""

    def worker_context(self):
        """Called on the thread that will use a worker thread's arrays: a context manager factory
        for that worker (nothing to do on the CPU)."""
        return contextlib.nullcontext

    # -- random numbers -----------------------------------------------------------------------
    def seed(self, seed: int | None):
        raise NotImplementedError

    def rand(self, shape, dtype):
        """Uniform [0, 1) samples."""
        raise NotImplementedError

    def randn(self, shape, dtype):
        """Standard normal samples."""
        raise NotImplementedError

    def randint(self, low, high, shape):
        """Integers uniform in [low, high), int64."""
        raise NotImplementedError

    def permutation(self, n):
        """A random permutation of ``range(n)`` as an int64 array."""
        raise NotImplementedError

    def rng_state(self):
        """The generator's state as plain Python data (None where the library cannot export it)."""
        raise NotImplementedError

    def set_rng_state(self, state):
        raise NotImplementedError


# glibc's malloc returns large freed blocks to the system (each array over its mmap threshold
# is its own mapping, and the heap's free top is trimmed), so a training step, which frees and
# allocates the same ~100 MB of activations every time, page-faults them back in every step:
# about 3200 (vgg_style, batch 64) and 4200 (fast_cnn, batch 256) faults a step, ~5-15 ms.
# The NumPy backend keeps freed memory in the process instead (as PyTorch's caching allocators
# and the jemalloc/tcmalloc set-ups recommended for CPU training do): arrays up to 256 MiB come
# from the heap, whose free top is kept up to 1 GiB. The resident memory then stays near the
# peak of a step instead of falling between steps. TINYGRAD_HW_KEEP_FREED_MEMORY=0 leaves
# malloc as it is.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)
_KEEP_MMAP_BELOW, _KEEP_TRIM_BELOW = 256 << 20, 1 << 30
_malloc_tuned = None


def keep_freed_memory() -> bool:
    """Tune glibc's malloc to keep freed memory in the process (see above), once; False where
    it does not apply (not glibc, or switched off by ``TINYGRAD_HW_KEEP_FREED_MEMORY=0``)."""
    global _malloc_tuned
    if _malloc_tuned is None:
        _malloc_tuned = False
        if os.environ.get("TINYGRAD_HW_KEEP_FREED_MEMORY", "1").strip().lower() not in ("0", "false", "no", "off"):
            try:
                import ctypes
                import platform
                if platform.libc_ver()[0] == "glibc":
                    libc = ctypes.CDLL("libc.so.6")
                    _malloc_tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_MMAP_BELOW)
                                         and libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_TRIM_BELOW))
            except (OSError, AttributeError):  # no such library or function: malloc as it is
                _malloc_tuned = False
    return _malloc_tuned


class NumpyBackend(Backend):
    name = "numpy"
    xp = numpy

    def __init__(self, seed=None):
        super().__init__(seed)
        keep_freed_memory()
        self.scalar = numpy.asarray  # scalar(value, dtype) without a Python frame: once per op with a number

    def scatter_add(self, target, indices, values):
        numpy.add.at(target, indices, values)

    def as_strided(self, array, shape, strides):
        return numpy.lib.stride_tricks.as_strided(array, shape, strides, writeable=False)

    def seed(self, seed):
        self.rng = numpy.random.default_rng(seed)

    def rand(self, shape, dtype):
        return self.rng.random(shape, dtype=_float_for_rng(dtype))

    def randn(self, shape, dtype):
        return self.rng.standard_normal(shape, dtype=_float_for_rng(dtype))

    def randint(self, low, high, shape):
        return self.rng.integers(low, high, size=shape, dtype=numpy.int64)

    def permutation(self, n):
        return self.rng.permutation(n).astype(numpy.int64)

    def rng_state(self):
        return self.rng.bit_generator.state

    def set_rng_state(self, state):
        self.rng.bit_generator.state = state


class CupyBackend(Backend):
    name = "cupy"

    def __init__(self, seed=None):
        try:
            import cupy
            import cupyx
            cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # ImportError, or CUDA present but no usable GPU
            raise RuntimeError(
                "the 'cupy' backend needs CuPy and an NVIDIA GPU with a working CUDA driver "
                f"({type(exc).__name__}: {exc}). Install it with: pip install \"tinygrad_hw[cuda13]\" "
                "(or \"tinygrad_hw[cuda12]\": the CUDA major version nvidia-smi shows), or use the "
                "'numpy' backend."
            ) from exc
        self.xp = cupy
        self._cupyx = cupyx
        super().__init__(seed)

    def to_numpy(self, array):
        return self.xp.asnumpy(array)

    def asarray(self, data, dtype=None):
        return self.xp.asarray(data, dtype=dtype)

    def scalar(self, value, dtype):
        # a fill kernel with the number as its argument, queued like any other; asarray would
        # copy it from pageable host memory, a synchronous transfer in every op with a number
        return self.xp.full((), value, dtype=dtype)

    def scatter_add(self, target, indices, values):
        if _deterministic:  # cupyx.scatter_add's atomics add repeated indices in any order
            ordered_scatter_add(self.xp, target, indices, values)
        else:
            self._cupyx.scatter_add(target, indices, values)

    def as_strided(self, array, shape, strides):
        return self.xp.lib.stride_tricks.as_strided(array, shape, strides)

    def synchronize(self):
        self.xp.cuda.get_current_stream().synchronize()

    def worker_context(self):
        # the caller's device (a thread starts on device 0) and a non-blocking stream of the
        # worker's own, so that its synchronize() does not wait for the training step's kernels
        # and its copies do not queue behind them (the legacy default stream would do both)
        device = self.xp.cuda.Device().id
        cuda = self.xp.cuda

        @contextlib.contextmanager
        def context():
            with cuda.Device(device), cuda.Stream(non_blocking=True):
                yield
        return context

    def use_device(self, index: int) -> None:
        """Make GPU ``index`` this process's device (one GPU per rank in data-parallel
        training): arrays made from now on, and the generator, live there."""
        self.xp.cuda.Device(int(index)).use()
        self.seed(_seed)

    def nccl(self):
        """CuPy's NCCL bindings (``cupy.cuda.nccl``), for :mod:`tinygrad_hw.distributed`."""
        try:
            from cupy.cuda import nccl
            nccl.get_version()
        except Exception as exc:  # a CuPy build without NCCL, or no libnccl on the machine
            raise RuntimeError(f"the nccl backend needs CuPy with NCCL ({type(exc).__name__}: "
                               f"{exc}); install NCCL for your CUDA version (pip install "
                               "nvidia-nccl-cu12), or use backend='mpi'") from exc
        return nccl

    # CuPy's cuRAND generators cannot export their state, so each draw comes from the one
    # Philox generator reseeded with (seed, number of draws so far): the state is those two
    # numbers, a checkpoint saves them, and a resumed GPU run continues the same streams bit for
    # bit (dropout masks are not repeated). Philox's seeding is cheap (no state-setup kernel).
    def seed(self, seed):
        if seed is None:  # a fresh random seed, recorded so that the state can still be saved
            seed = int(numpy.random.SeedSequence().generate_state(1, numpy.uint64)[0] >> 1)
        self._rng_seed, self._draws = int(seed), 0
        if not hasattr(self, "_rng"):
            philox = self.xp.cuda.curand.CURAND_RNG_PSEUDO_PHILOX4_32_10
            self._rng = self.xp.random.RandomState(0, method=philox)

    def _next_rng(self):
        key = numpy.random.SeedSequence([self._rng_seed, self._draws]).generate_state(1, numpy.uint64)[0]
        self._draws += 1
        self._rng.seed(int(key >> 1))
        return self._rng

    def rand(self, shape, dtype):
        return self._next_rng().random_sample(shape, dtype=_float_for_rng(dtype))

    def randn(self, shape, dtype):
        return self._next_rng().standard_normal(shape, dtype=_float_for_rng(dtype))

    def randint(self, low, high, shape):
        return self._next_rng().randint(low, high, size=shape, dtype=self.xp.int64)

    def permutation(self, n):
        return self._next_rng().permutation(n).astype(self.xp.int64)

    def rng_state(self):
        return {"seed": self._rng_seed, "draws": self._draws}

    def set_rng_state(self, state):
        self._rng_seed, self._draws = int(state["seed"]), int(state["draws"])


def ordered_scatter_add(xp, target, indices, values):
    """``target[indices] += values`` with repeated positions summed one after another in the
    order they occur, which is ``numpy.add.at``'s order: bit-reproducible, with no atomics.

    Positions are sorted (stably) and added in rounds: round k adds the k-th occurrence of every
    position, so no round hits an element twice. The number of rounds (the largest repeat
    count) is read on the host: one synchronisation per call."""
    positions = xp.arange(target.size).reshape(target.shape)[indices]
    values = xp.broadcast_to(values, positions.shape).reshape(-1)
    positions = positions.reshape(-1)
    if positions.size == 0:
        return
    order = xp.argsort(positions, kind="stable")
    positions, values = positions[order], values[order]
    rank = xp.arange(positions.size) - xp.searchsorted(positions, positions, side="left")
    flat = target.reshape(-1) if target.flags.c_contiguous else target.copy().reshape(-1)
    for k in range(int(rank.max()) + 1):
        chosen = rank == k
        flat[positions[chosen]] += values[chosen]
    if not target.flags.c_contiguous:
        target[...] = flat.reshape(target.shape)


def _float_for_rng(dtype):
    """Random generators draw float32 or float64 only; anything else draws float64."""
    dtype = numpy.dtype(dtype)
    return dtype if dtype in (numpy.float32, numpy.float64) else numpy.float64


# -- library-wide settings ----------------------------------------------------------------------
_BACKEND_TYPES = {"numpy": NumpyBackend, "cupy": CupyBackend}
_instances: dict[str, Backend] = {}
_seed: int | None = None
_deterministic = False
_default_backend_name = os.environ.get("TINYGRAD_HW_BACKEND", "numpy").strip().lower() or "numpy"
# Host-side generator for draws that must not depend on the backend (parameter initialisation),
# so that one seed gives the same model on the CPU and on the GPU.
_host_rng = numpy.random.default_rng(None)


def get_backend(name: "str | Backend | None" = None) -> Backend:
    """The backend object called ``name`` (default: the current default backend)."""
    if isinstance(name, Backend):
        return name
    if name is None:
        name = _default_backend_name
    key = str(name).lower()
    if key not in _BACKEND_TYPES:
        raise ValueError(f"unknown backend {name!r}: expected one of {sorted(_BACKEND_TYPES)}")
    if key not in _instances:
        _instances[key] = _BACKEND_TYPES[key](_seed)
    return _instances[key]


def set_backend(name: str) -> Backend:
    """Make ``name`` ('numpy' or 'cupy') the backend of newly created tensors; returns it."""
    global _default_backend_name
    backend = get_backend(name)  # raises a clear error where it cannot be used
    _default_backend_name = backend.name
    return backend


def backend_of(array) -> Backend:
    """The backend an array lives on (NumPy arrays and scalars -> numpy)."""
    if isinstance(array, numpy.ndarray) or numpy.isscalar(array):
        return get_backend("numpy")
    if type(array).__module__.startswith("cupy"):
        return get_backend("cupy")
    raise TypeError(f"expected a numpy or cupy array, got {type(array).__name__}")


def manual_seed(seed: int) -> None:
    """Seed every random draw of the library: initialisation, dropout, shuffling, augmentation."""
    global _seed, _host_rng
    _seed = int(seed)
    _host_rng = numpy.random.default_rng(_seed)
    for backend in _instances.values():
        backend.seed(_seed)


def get_rng_state() -> dict:
    """Every generator's state (host and each backend in use), to save in a checkpoint."""
    return {"seed": _seed, "host": _host_rng.bit_generator.state,
            "backends": {name: be.rng_state() for name, be in _instances.items()}}


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned: the random draws continue exactly."""
    global _seed
    _seed = state["seed"]
    _host_rng.bit_generator.state = state["host"]
    for name, be_state in state["backends"].items():
        if be_state is not None:
            get_backend(name).set_rng_state(be_state)


def use_deterministic_algorithms(mode: bool) -> None:
    """Like ``torch.use_deterministic_algorithms``: with ``True`` the GPU backend sums repeated
    indices (indexing's and overlapping max-pooling's gradients) in a fixed order
    (:func:`ordered_scatter_add`, one host synchronisation per call) instead of with atomics.
    NumPy's are deterministic already."""
    global _deterministic
    _deterministic = bool(mode)


def are_deterministic_algorithms_enabled() -> bool:
    return _deterministic


def host_rng() -> numpy.random.Generator:
    """The host generator used for backend-independent draws such as parameter initialisation."""
    return _host_rng
