"""Differentiable operations on whole arrays: elementwise, reductions, shape, indexing, matmul.

Each op is a :class:`~tinygrad_hw.function.Function`: ``forward`` on raw arrays, ``backward`` on
Tensors with differentiable Tensor operations (so ``create_graph=True`` gives higher-order
gradients). Gradients may come back in the broadcast shape of the output; the engine reduces them
to each input's shape in one place (``Tensor.sum_to``). Convolution and pooling live in ``conv.py``.
"""
from __future__ import annotations

from . import parallel
from .function import Function


# --------------------------------------------------------------------------------------------------
# elementwise, two inputs
# --------------------------------------------------------------------------------------------------
class Add(Function):
    def forward(self, a, b):
        return a + b

    def backward(self, g):
        return g, g


class Sub(Function):
    def forward(self, a, b):
        return a - b

    def backward(self, g):
        return g, (-g if self.needs_input_grad[1] else None)


class Mul(Function):
    def forward(self, a, b):
        return a * b

    def backward(self, g):
        a, b = self.inputs
        return (g * b if self.needs_input_grad[0] else None,
                g * a if self.needs_input_grad[1] else None)


class Div(Function):
    def forward(self, a, b):
        return a / b

    def backward(self, g):
        a, b = self.inputs
        ga = g / b if self.needs_input_grad[0] else None
        gb = -g * a / (b * b) if self.needs_input_grad[1] else None
        return ga, gb


class Pow(Function):
    """``a ** b``. The exponent's gradient uses log(a); like PyTorch it is 0 where a == 0 and b >= 0."""

    def forward(self, a, b):
        return a ** b

    def backward(self, g):
        a, b = self.inputs
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = g * b * a ** (b - 1)
        if self.needs_input_grad[1]:
            log_a = a.where(a.data != 0, 1).log()  # log(1) = 0 where a == 0
            gb = g * self.output() * log_a
        return ga, gb


class Maximum(Function):
    """Elementwise maximum; on ties the gradient is split evenly, as in PyTorch."""

    def forward(self, a, b):
        self.share_a = (a > b) + 0.5 * (a == b)
        return self.xp.maximum(a, b)

    def backward(self, g):
        share_a = self.const(self.share_a.astype(g.dtype, copy=False))
        return (g * share_a if self.needs_input_grad[0] else None,
                g * (1 - share_a) if self.needs_input_grad[1] else None)


class Minimum(Function):
    """Elementwise minimum; on ties the gradient is split evenly, as in PyTorch."""

    def forward(self, a, b):
        self.share_a = (a < b) + 0.5 * (a == b)
        return self.xp.minimum(a, b)

    def backward(self, g):
        share_a = self.const(self.share_a.astype(g.dtype, copy=False))
        return (g * share_a if self.needs_input_grad[0] else None,
                g * (1 - share_a) if self.needs_input_grad[1] else None)


class Where(Function):
    """``where(cond, a, b)`` with a boolean array ``cond`` given as a parameter (no gradient)."""

    def forward(self, a, b):
        return self.xp.where(self.cond, a, b)

    def backward(self, g):
        return (g.where(self.cond, 0) if self.needs_input_grad[0] else None,
                g.where(~self.cond, 0) if self.needs_input_grad[1] else None)


# --------------------------------------------------------------------------------------------------
# elementwise, one input
# --------------------------------------------------------------------------------------------------
class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, g):
        return (-g,)


class Exp(Function):
    def forward(self, a):
        return self.xp.exp(a)

    def backward(self, g):
        return (g * self.output(),)


class Log(Function):
    def forward(self, a):
        return self.xp.log(a)

    def backward(self, g):
        return (g / self.inputs[0],)


class Log1p(Function):
    """log(1 + a), accurate for tiny a."""

    def forward(self, a):
        return self.xp.log1p(a)

    def backward(self, g):
        return (g / (1 + self.inputs[0]),)


class Sqrt(Function):
    def forward(self, a):
        return self.xp.sqrt(a)

    def backward(self, g):
        return (g / (2 * self.output()),)


class Tanh(Function):
    def forward(self, a):
        return self.xp.tanh(a)

    def backward(self, g):
        y = self.output()
        return (g * (1 - y * y),)


class Sigmoid(Function):
    def forward(self, a):
        xp = self.xp
        # exp of a non-positive number only: no overflow for large |a|
        e = xp.exp(-xp.abs(a))
        return xp.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)

    def backward(self, g):
        y = self.output()
        return (g * y * (1 - y),)


class _Masked(Function):
    """Ops whose derivative is a piecewise-constant array ``self.slope`` (computed in forward).

    The slope may be boolean (0 or 1): ``Mul`` is applied directly, without the Tensor-level
    promotion that would first cast the mask to a float array (NumPy multiplies float by bool in
    one pass; ``where`` measured 7x slower)."""

    def backward(self, g):
        return (Mul.apply(g, self.const(self.slope)),)


class Abs(_Masked):
    """|a|; gradient sign(a), 0 at 0 like PyTorch."""

    def forward(self, a):
        self.slope = self.xp.sign(a)
        return self.xp.abs(a)


class Relu(_Masked):
    """max(a, 0): NaN stays NaN, gradient 1 where a > 0. Deviation: relu(-0.0) is +0.0 here
    (PyTorch keeps -0.0), the price of making the output with one ``maximum``."""

    def forward(self, a):
        self.slope = a > 0
        return self.xp.maximum(a, 0)  # keeps NaN, and -inf becomes 0


class LeakyRelu(_Masked):
    def forward(self, a):
        self.slope = self.xp.where(a > 0, 1, self.negative_slope).astype(a.dtype)
        return a * self.slope


class Clamp(_Masked):
    """Clamp to [min, max] (either may be None). Gradient 1 where min <= a <= max, as in PyTorch."""

    def forward(self, a):
        xp = self.xp
        inside = xp.ones(a.shape, dtype=bool)
        if self.min is not None:
            inside &= a >= self.min
        if self.max is not None:
            inside &= a <= self.max
        self.slope = inside.astype(a.dtype)
        return xp.clip(a, self.min, self.max).astype(a.dtype, copy=False)


class Cast(Function):
    def forward(self, a):
        self.in_dtype = a.dtype
        return a.astype(self.dtype)

    def backward(self, g):
        return (g.astype(self.in_dtype),)


# --------------------------------------------------------------------------------------------------
# reductions
# --------------------------------------------------------------------------------------------------
def _kept_shape(shape, axis):
    """The shape of a reduction over ``axis`` (a tuple of non-negative ints) with keepdims=True."""
    return tuple(1 if i in axis else n for i, n in enumerate(shape))


class Sum(Function):
    """Sum over ``axis`` (tuple of non-negative ints)."""

    def forward(self, a):
        self.in_shape = a.shape
        return a.sum(axis=self.axis, keepdims=self.keepdims)

    def backward(self, g):
        return (g.reshape(_kept_shape(self.in_shape, self.axis)).expand(self.in_shape),)


class Max(Function):
    """Maximum over ``axis`` (like ``torch.amax``: ties share the gradient evenly)."""

    def forward(self, a):
        out = a.max(axis=self.axis, keepdims=True)
        hit = a == out
        self.share = hit / hit.sum(axis=self.axis, keepdims=True)
        self.share = self.share.astype(a.dtype, copy=False)
        return out if self.keepdims else out.reshape([n for i, n in enumerate(out.shape) if i not in self.axis])

    def backward(self, g):
        kept = _kept_shape(self.share.shape, self.axis)
        return (g.reshape(kept) * self.const(self.share),)


class Min(Max):
    """Minimum over ``axis`` (like ``torch.amin``: ties share the gradient evenly)."""

    def forward(self, a):
        return -super().forward(-a)


class Softmax(Function):
    def forward(self, a):
        xp = self.xp
        shifted = a - a.max(axis=self.axis, keepdims=True)
        e = xp.exp(shifted)
        return e / e.sum(axis=self.axis, keepdims=True)

    def backward(self, g):
        y = self.output()
        return (y * (g - (g * y).sum(axis=self.axis, keepdims=True)),)


class LogSoftmax(Function):
    def forward(self, a):
        xp = self.xp
        shifted = a - a.max(axis=self.axis, keepdims=True)
        return shifted - xp.log(xp.exp(shifted).sum(axis=self.axis, keepdims=True))

    def backward(self, g):
        y = self.output()
        return (g - y.exp() * g.sum(axis=self.axis, keepdims=True),)


# --------------------------------------------------------------------------------------------------
# shape
# --------------------------------------------------------------------------------------------------
class Reshape(Function):
    def forward(self, a):
        self.in_shape = a.shape
        return a.reshape(self.shape)

    def backward(self, g):
        return (g.reshape(self.in_shape),)


class Permute(Function):
    def forward(self, a):
        return a.transpose(self.axes)

    def backward(self, g):
        inverse = [0] * len(self.axes)
        for i, ax in enumerate(self.axes):
            inverse[ax] = i
        return (g.permute(*inverse),)


class Expand(Function):
    """Broadcast to ``shape`` (a read-only view); the engine sums the gradient back."""

    def forward(self, a):
        return self.xp.broadcast_to(a, self.shape)

    def backward(self, g):
        return (g,)  # reduced to the input's shape by the engine


class GetItem(Function):
    """``a[index]`` for basic and advanced indices; backward scatters (adding repeats)."""

    def forward(self, a):
        self.in_shape = a.shape
        return a[self.index]

    def backward(self, g):
        return (g._scatter_into(self.in_shape, self.index),)


class ScatterInto(Function):
    """Zeros of ``shape`` with ``g`` added at ``index`` (the adjoint of ``GetItem``)."""

    def forward(self, g):
        xp = self.xp
        out = xp.zeros(self.shape, dtype=g.dtype)
        if _has_int_array(self.index):
            self.backend.scatter_add(out, self.index, g)
        else:  # basic indices and boolean masks never hit one element twice
            out[self.index] = g
        return out

    def backward(self, gg):
        return (gg[self.index],)


def _has_int_array(index):
    items = index if isinstance(index, tuple) else (index,)
    return any(hasattr(i, "dtype") and i.dtype.kind in "iu" for i in items)


class Pad(Function):
    """Constant padding; ``widths`` is a tuple of (before, after) per axis."""

    def forward(self, a):
        return self.xp.pad(a, self.widths, mode="constant", constant_values=self.value)

    def backward(self, g):
        index = tuple(slice(lo, g.shape[i] - hi) for i, (lo, hi) in enumerate(self.widths))
        return (g[index],)


class Cat(Function):
    def forward(self, *arrays):
        self.sizes = [a.shape[self.axis] for a in arrays]
        return self.xp.concatenate(arrays, axis=self.axis)

    def backward(self, g):
        grads, start = [], 0
        lead = (slice(None),) * self.axis
        for size, need in zip(self.sizes, self.needs_input_grad):
            grads.append(g[lead + (slice(start, start + size),)] if need else None)
            start += size
        return tuple(grads)


# --------------------------------------------------------------------------------------------------
# linear algebra
# --------------------------------------------------------------------------------------------------
class MatMul(Function):
    """Batched matrix product of arrays with at least 2 dims (1-D cases are reshaped by Tensor.matmul)."""

    def forward(self, a, b):
        if a.ndim == 2 and b.ndim == 2:
            return parallel.matmul(self.backend, a, b)
        return self.xp.matmul(a, b)

    def backward(self, g):
        a, b = self.inputs
        ga = g @ b.mT if self.needs_input_grad[0] else None
        gb = a.mT @ g if self.needs_input_grad[1] else None
        return ga, gb
