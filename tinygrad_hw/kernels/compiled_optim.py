"""Compiled (numba) optimizer updates for the NumPy backend: one pass over a parameter per step.

The NumPy update of :class:`~tinygrad_hw.optim.SGD` (the reference, kept for CuPy and for when
numba is missing or off: ``TINYGRAD_HW_NUMBA=0`` or ``compiled.ENABLED = False``) takes about five
NumPy calls per parameter, each a pass over memory and a few microseconds of dispatch; at small
batches that was ~0.4 ms of a 4 ms training step of the 12-parameter ``small_cnn``. The kernel
here does the same arithmetic element by element in one call, in the same order and in the
parameter's dtype (the scalars are cast to it first, as NumPy casts a Python float operand), with
no fused multiply-add (``fastmath=False``), so its results are bit-identical to the NumPy path's.
"""
from __future__ import annotations

from numpy import ndarray

from . import compiled
from .compiled import _jit

__all__ = ["sgd_supports", "sgd_scalars", "sgd_step", "warm_up"]


def sgd_supports(be, x, g) -> bool:
    """Whether :func:`sgd_step` serves parameter ``x`` and gradient ``g``: the compiled kernels
    on (:func:`compiled.active <tinygrad_hw.kernels.compiled.active>`), the NumPy backend, one
    float32/float64 dtype and shape, both C-contiguous. The momentum buffer must be C-contiguous
    and of ``x``'s dtype too (the optimizer's state is)."""
    # compiled.active's test written out for two arrays: this runs once per parameter and step
    return (compiled.ENABLED and compiled.AVAILABLE and be.name == "numpy"
            and isinstance(x, ndarray) and isinstance(g, ndarray)  # not a NumPy scalar
            and x.dtype in compiled._FLOATS and g.dtype == x.dtype and g.shape == x.shape
            and x.flags.c_contiguous and g.flags.c_contiguous)


def sgd_scalars(dtype, lr, momentum, dampening, weight_decay) -> tuple:
    """The hyper-parameters as scalars of ``dtype``, as NumPy casts a Python float operand
    (made once per parameter group and step, not per parameter)."""
    t = dtype.type
    return t(lr), t(momentum), t(1 - dampening), t(weight_decay)


@_jit
def _sgd_kernel(x, g, buf, lr, momentum, damp, weight_decay, use_momentum, first, dampened,
                nesterov, maximize):
    # any C-contiguous shape, read flat (numba specialises on the number of dims)
    n = x.size
    xf = x.reshape(n)
    gf = g.reshape(n)
    bf = buf.reshape(n)
    # The common cases get a loop of their own: a loop with few branches vectorises.
    if use_momentum and not first and not dampened and not nesterov and not maximize \
            and weight_decay == 0:
        for k in range(n):  # plain momentum (the usual training setup)
            b = bf[k] * momentum
            b = b + gf[k]
            bf[k] = b
            xf[k] = xf[k] - b * lr
        return
    if not use_momentum and not maximize and weight_decay == 0:
        for k in range(n):  # plain gradient descent
            xf[k] = xf[k] - gf[k] * lr
        return
    for k in range(n):  # everything else: the reference's steps, one element at a time
        d = gf[k]
        if weight_decay != 0:
            w = xf[k] * weight_decay
            d = w - d if maximize else w + d
        elif maximize:
            d = -d
        if use_momentum:
            if first:
                b = d
            else:
                b = bf[k] * momentum
                b = b + d * damp if dampened else b + d
            bf[k] = b
            d = d + b * momentum if nesterov else b
        xf[k] = xf[k] - d * lr


def sgd_step(x, g, buf, scalars, momentum, dampening, weight_decay, nesterov, maximize,
             first) -> None:
    """One SGD update of ``x`` in place (and of ``buf``, the momentum buffer, when
    ``momentum != 0``; ``first``: the buffer is set to the step's direction, as at PyTorch's first
    step), the same arithmetic as the NumPy path of ``SGD._update_group``. ``scalars`` is
    :func:`sgd_scalars` of ``x``'s dtype."""
    lr, mom, damp, wd = scalars
    _sgd_kernel(x, g, buf if buf is not None else x, lr, mom, damp, wd, momentum != 0,
                first, dampening != 0, nesterov, maximize)


def warm_up() -> None:
    """Compile (or load from numba's cache) the kernels for float32 and float64."""
    import numpy
    for dtype in (numpy.float32, numpy.float64):
        x, g, buf = (numpy.zeros(2, dtype) for _ in range(3))
        sgd_step(x, g, buf, sgd_scalars(x.dtype, 0.1, 0.9, 0.0, 0.0), 0.9, 0.0, 0.0, False,
                 False, True)
