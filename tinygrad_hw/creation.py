"""Factories with ``torch``'s names: ``tensor``, ``zeros``, ``ones``, ``full``, ``empty``, the
``*_like`` forms, ``randn``, ``rand``, ``randint``, ``randperm``, ``arange``, ``linspace``, ``eye``,
``from_numpy``, ``as_tensor``. Random draws come from the backend's generator (seeded by
``hw.manual_seed``). Each takes ``backend=`` or PyTorch's ``device=`` ('cpu' is NumPy, 'cuda'
CuPy)."""
from __future__ import annotations

import numbers

import numpy

from .backend import get_backend
from .device import backend_name
from .dtypes import get_default_dtype, to_dtype
from .tensor import Tensor, as_shape

__all__ = ["tensor", "zeros", "ones", "full", "zeros_like", "ones_like", "randn", "rand", "arange",
           "empty", "full_like", "randn_like", "rand_like", "empty_like", "randint", "randperm",
           "linspace", "eye", "from_numpy", "as_tensor"]


def _backend_arg(backend, device=None):
    if device is not None:
        if backend is not None:
            raise TypeError("give backend= or device=, not both")
        return get_backend(backend_name(device))
    return get_backend(backend)


def tensor(data, dtype=None, requires_grad=False, backend=None, device=None) -> Tensor:
    """A new tensor (copies ``data``), like ``torch.tensor``."""
    out = Tensor(data, dtype=dtype, requires_grad=requires_grad, backend=_backend_arg(backend, device))
    src = data.data if isinstance(data, Tensor) else data
    if out.data is src or getattr(out.data, "base", None) is src:
        # the caller's own array (Tensor(array) wraps it): copy, so that in-place operations on
        # the new tensor do not write into it
        out.data = out.data.copy()
    return out


def _filled(fill, shape, dtype, requires_grad, backend, device=None):
    be = _backend_arg(backend, device)
    dtype = to_dtype(dtype) if dtype is not None else get_default_dtype()
    data = be.xp.full(as_shape(shape), fill, dtype=dtype)
    return Tensor._make(data, be).requires_grad_(requires_grad)


def zeros(*shape, dtype=None, requires_grad=False, backend=None, device=None) -> Tensor:
    return _filled(0, shape, dtype, requires_grad, backend, device)


def ones(*shape, dtype=None, requires_grad=False, backend=None, device=None) -> Tensor:
    return _filled(1, shape, dtype, requires_grad, backend, device)


def empty(*shape, dtype=None, requires_grad=False, backend=None, device=None) -> Tensor:
    """Zeros here (an uninitialised array would make runs differ for no gain)."""
    return _filled(0, shape, dtype, requires_grad, backend, device)


def full(shape, fill_value, dtype=None, requires_grad=False, backend=None, device=None) -> Tensor:
    return _filled(fill_value, (shape,) if isinstance(shape, int) else tuple(shape), dtype, requires_grad,
                   backend, device)


def zeros_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return zeros(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad, backend=t._be)


def ones_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return ones(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad, backend=t._be)


def randn(*shape, dtype=None, requires_grad=False, backend=None, device=None) -> Tensor:
    """Standard normal samples from the backend's generator (seeded by ``manual_seed``)."""
    be = _backend_arg(backend, device)
    dtype = to_dtype(dtype) if dtype is not None else get_default_dtype()
    return Tensor._make(be.randn(as_shape(shape), dtype).astype(dtype, copy=False), be).requires_grad_(requires_grad)


def rand(*shape, dtype=None, requires_grad=False, backend=None, device=None) -> Tensor:
    """Uniform [0, 1) samples from the backend's generator (seeded by ``manual_seed``)."""
    be = _backend_arg(backend, device)
    dtype = to_dtype(dtype) if dtype is not None else get_default_dtype()
    return Tensor._make(be.rand(as_shape(shape), dtype).astype(dtype, copy=False), be).requires_grad_(requires_grad)


def arange(start, end=None, step=1, dtype=None, backend=None, device=None, requires_grad=False) -> Tensor:
    """Like ``torch.arange``: int64 for integer arguments, the default float dtype otherwise."""
    if end is None:
        start, end = 0, start
    be = _backend_arg(backend, device)
    if dtype is None:
        ints = all(isinstance(v, numbers.Integral) for v in (start, end, step))
        dtype = numpy.int64 if ints else get_default_dtype()
    return Tensor._make(be.xp.arange(start, end, step, dtype=to_dtype(dtype)), be).requires_grad_(requires_grad)


def full_like(t: Tensor, fill_value, dtype=None, requires_grad=False) -> Tensor:
    return full(t.shape, fill_value, dtype=dtype or t.dtype, requires_grad=requires_grad, backend=t._be)


def empty_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return zeros_like(t, dtype=dtype, requires_grad=requires_grad)


def randn_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return randn(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad, backend=t._be)


def rand_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return rand(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad, backend=t._be)


def randint(low, high=None, size=None, dtype=None, backend=None, device=None) -> Tensor:
    """Integers uniform in [low, high) (``randint(high, size)`` starts at 0), int64 by default."""
    if size is None:  # torch.randint(high, size)
        low, high, size = 0, low, high
    if size is None:
        raise TypeError("randint: missing the size argument")
    if high <= low:
        raise ValueError(f"randint: high ({high}) must be greater than low ({low})")
    be = _backend_arg(backend, device)
    out = be.randint(int(low), int(high), as_shape((size,) if isinstance(size, int) else tuple(size)))
    return Tensor._make(out.astype(to_dtype(dtype) if dtype is not None else numpy.int64, copy=False), be)


def randperm(n, dtype=None, backend=None, device=None) -> Tensor:
    """A random permutation of ``range(n)`` (int64 by default)."""
    be = _backend_arg(backend, device)
    return Tensor._make(be.permutation(int(n)).astype(to_dtype(dtype) if dtype is not None else numpy.int64,
                                                      copy=False), be)


def linspace(start, end, steps, dtype=None, backend=None, device=None, requires_grad=False) -> Tensor:
    be = _backend_arg(backend, device)
    dtype = to_dtype(dtype) if dtype is not None else get_default_dtype()
    return Tensor._make(be.xp.linspace(start, end, int(steps), dtype=dtype), be).requires_grad_(requires_grad)


def eye(n, m=None, dtype=None, backend=None, device=None, requires_grad=False) -> Tensor:
    be = _backend_arg(backend, device)
    dtype = to_dtype(dtype) if dtype is not None else get_default_dtype()
    return Tensor._make(be.xp.eye(int(n), None if m is None else int(m), dtype=dtype), be).requires_grad_(requires_grad)


def from_numpy(array) -> Tensor:
    """A tensor that shares ``array``'s memory (NumPy backend), like ``torch.from_numpy``."""
    if not isinstance(array, numpy.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(array).__name__}")
    return Tensor._make(array, get_backend("numpy"))


def as_tensor(data, dtype=None, backend=None, device=None) -> Tensor:
    """``data`` itself if it is a Tensor of that dtype and backend, else a new tensor of it."""
    be = _backend_arg(backend, device) if (backend is not None or device is not None) else None
    if isinstance(data, Tensor) and (be is None or data._be is be):
        return data if dtype is None else data.astype(dtype)
    return Tensor(data, dtype=dtype, backend=be)
