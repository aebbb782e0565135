"""Reductions, forward beside backward: sum, max and min over axes, softmax and log-softmax."""
from __future__ import annotations

from ..autograd.function import Function

__all__ = ["Sum", "Max", "Min", "Softmax", "LogSoftmax"]


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
