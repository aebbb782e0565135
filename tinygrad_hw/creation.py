"""Factories with ``torch``'s names: ``tensor``, ``zeros``, ``ones``, ``full``, ``zeros_like``,
``ones_like``, ``randn``, ``rand``, ``arange``. Random draws come from the backend's generator
(seeded by ``hw.manual_seed``)."""
from __future__ import annotations

import numbers

import numpy

from .backend import get_backend
from .dtypes import get_default_dtype, to_dtype
from .tensor import Tensor, as_shape

__all__ = ["tensor", "zeros", "ones", "full", "zeros_like", "ones_like", "randn", "rand", "arange"]


def _backend_arg(backend):
    return get_backend(backend)


def tensor(data, dtype=None, requires_grad=False, backend=None) -> Tensor:
    """A new tensor (copies ``data``), like ``torch.tensor``."""
    out = Tensor(data, dtype=dtype, requires_grad=requires_grad, backend=backend)
    src = data.data if isinstance(data, Tensor) else data
    if out.data is src or getattr(out.data, "base", None) is src:
        # the caller's own array (Tensor(array) wraps it): copy, so that in-place operations on
        # the new tensor do not write into it
        out.data = out.data.copy()
    return out


def _filled(fill, shape, dtype, requires_grad, backend):
    be = _backend_arg(backend)
    dtype = to_dtype(dtype) if dtype is not None else get_default_dtype()
    data = be.xp.full(as_shape(shape), fill, dtype=dtype)
    return Tensor._make(data, be).requires_grad_(requires_grad)


def zeros(*shape, dtype=None, requires_grad=False, backend=None) -> Tensor:
    return _filled(0, shape, dtype, requires_grad, backend)


def ones(*shape, dtype=None, requires_grad=False, backend=None) -> Tensor:
    return _filled(1, shape, dtype, requires_grad, backend)


def full(shape, fill_value, dtype=None, requires_grad=False, backend=None) -> Tensor:
    return _filled(fill_value, (shape,) if isinstance(shape, int) else tuple(shape), dtype, requires_grad, backend)


def zeros_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return zeros(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad, backend=t._be)


def ones_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return ones(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad, backend=t._be)


def randn(*shape, dtype=None, requires_grad=False, backend=None) -> Tensor:
    """Standard normal samples from the backend's generator (seeded by ``manual_seed``)."""
    be = _backend_arg(backend)
    dtype = to_dtype(dtype) if dtype is not None else get_default_dtype()
    return Tensor._make(be.randn(as_shape(shape), dtype).astype(dtype, copy=False), be).requires_grad_(requires_grad)


def rand(*shape, dtype=None, requires_grad=False, backend=None) -> Tensor:
    """Uniform [0, 1) samples from the backend's generator (seeded by ``manual_seed``)."""
    be = _backend_arg(backend)
    dtype = to_dtype(dtype) if dtype is not None else get_default_dtype()
    return Tensor._make(be.rand(as_shape(shape), dtype).astype(dtype, copy=False), be).requires_grad_(requires_grad)


def arange(start, end=None, step=1, dtype=None, backend=None) -> Tensor:
    """Like ``torch.arange``: int64 for integer arguments, the default float dtype otherwise."""
    if end is None:
        start, end = 0, start
    be = _backend_arg(backend)
    if dtype is None:
        ints = all(isinstance(v, numbers.Integral) for v in (start, end, step))
        dtype = numpy.int64 if ints else get_default_dtype()
    return Tensor._make(be.xp.arange(start, end, step, dtype=to_dtype(dtype)), be)
