"""Shape and indexing ops, forward beside backward: reshape, permute, expand, indexing and its
adjoint (scatter), constant padding, concatenation."""
from __future__ import annotations

from ..autograd.function import Function

__all__ = ["Reshape", "Permute", "Expand", "GetItem", "ScatterInto", "Pad", "Cat"]


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
