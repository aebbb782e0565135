"""Reductions, forward beside backward: sum, max and min over axes, softmax and log-softmax."""
from __future__ import annotations

from ..autograd.function import Function

__all__ = ["Sum", "Max", "Min", "Softmax", "LogSoftmax", "Cumsum", "Norm2", "Prod", "NormP"]


def _kept_shape(shape, axis):
    """The shape of a reduction over ``axis`` (a tuple of non-negative ints) with keepdims=True."""
    return tuple(1 if i in axis else n for i, n in enumerate(shape))


class Sum(Function):
    """Sum over ``axis`` (tuple of non-negative ints)."""

    saves = ()

    def forward(self, a):
        self.in_shape = a.shape
        return a.sum(axis=self.axis, keepdims=self.keepdims)

    def backward(self, g):
        return (g.reshape(_kept_shape(self.in_shape, self.axis)).expand(self.in_shape),)


class Max(Function):
    """Maximum over ``axis`` (like ``torch.amax``: ties share the gradient evenly)."""

    saves = ()

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
    saves, saves_output = (), True

    def forward(self, a):
        xp = self.xp
        shifted = a - a.max(axis=self.axis, keepdims=True)
        e = xp.exp(shifted)
        return e / e.sum(axis=self.axis, keepdims=True)

    def backward(self, g):
        y = self.output()
        return (y * (g - (g * y).sum(axis=self.axis, keepdims=True)),)


class LogSoftmax(Function):
    saves, saves_output = (), True

    def forward(self, a):
        xp = self.xp
        shifted = a - a.max(axis=self.axis, keepdims=True)
        return shifted - xp.log(xp.exp(shifted).sum(axis=self.axis, keepdims=True))

    def backward(self, g):
        y = self.output()
        return (g - y.exp() * g.sum(axis=self.axis, keepdims=True),)


# -- added for the PyTorch idioms (cumsum, the 2-norm) ----------------------------------------------
class Cumsum(Function):
    """Running sum along ``axis`` (an int); its adjoint is the running sum from the other end."""

    saves = ()

    def forward(self, a):
        return self.xp.cumsum(a, axis=self.axis)

    def backward(self, g):
        return (g.flip(self.axis).cumsum(self.axis).flip(self.axis),)


class _Norm(Function):
    """What the norms share: the output kept for backward, the zero-norm mask for PyTorch's
    subgradient 0 there, and ``keepdim``."""

    saves, saves_output = (0,), True

    def _finish(self, out):
        """``out`` (reduced with keepdims) as the op's result; remembers where it is zero."""
        self.zero = out == 0
        return out if self.keepdims else out.reshape([n for i, n in enumerate(out.shape) if i not in self.axis])

    def _backward_parts(self, g):
        """The input, the norm and ``g`` in the input's rank, and the mask of non-zero norms."""
        a = self.inputs[0]
        kept = _kept_shape(a.shape, self.axis)
        return a, self.output().reshape(kept), g.reshape(kept), self.const(~self.zero)


class Norm2(_Norm):
    """The Euclidean norm over ``axis`` (tuple of ints). Like PyTorch, the gradient at a zero
    vector is 0 (the subgradient), not the 0/0 of the chain rule."""

    def forward(self, a):
        return self._finish(self.xp.sqrt((a * a).sum(axis=self.axis, keepdims=True)))

    def backward(self, g):
        a, norm, g, nonzero = self._backward_parts(g)
        return (a * (g / norm.where(nonzero, 1.0)).where(nonzero, 0.0),)


class Prod(Function):
    """Product over ``axis`` (tuple of ints). The gradient of each element is the product of the
    others, exact where the slice holds zeros (not the 0/0 of ``out / x``); written with Tensor
    ops, so it is differentiable again. Limitation: the second derivative is exact only in slices
    without zeros (the zero pattern is treated as a constant)."""

    saves = (0,)

    def forward(self, a):
        out = a.prod(axis=self.axis, keepdims=True)
        return out if self.keepdims else out.reshape([n for i, n in enumerate(out.shape) if i not in self.axis])

    def backward(self, g):
        x = self.inputs[0]
        kept = _kept_shape(x.shape, self.axis)
        nonzero = x.data != 0
        zeros = (~nonzero).sum(axis=self.axis, keepdims=True)
        safe = x.where(self.const(nonzero), 1.0)
        rest = safe.prod(self.axis, keepdim=True)  # the product of the non-zero elements
        others = (rest / safe * self.const((zeros == 0).astype(x.dtype))).where(
            self.const(nonzero), rest * self.const((zeros == 1).astype(x.dtype)))
        return (g.reshape(kept) * others,)


class NormP(_Norm):
    """The p-norm over ``axis`` for a finite ``p`` other than 0, 1 and 2:
    ``(sum |a|^p)^(1/p)``, with PyTorch's gradient ``sign(a) |a|^(p-1) / norm^(p-1)``, which is 0
    for an all-zero vector (the chain rule through the power gives 0/0 there)."""

    def forward(self, a):
        return self._finish((self.xp.abs(a) ** self.p).sum(axis=self.axis, keepdims=True) ** (1.0 / self.p))

    def backward(self, g):
        a, norm, g, nonzero = self._backward_parts(g)
        scale = (g / norm.where(nonzero, 1.0) ** (self.p - 1)).where(nonzero, 0.0)
        return (a.sign() * a.abs() ** (self.p - 1) * scale,)
