"""Shape and indexing ops, forward beside backward: reshape, permute, expand, indexing and its
adjoint (scatter), constant padding, concatenation."""
from __future__ import annotations

from ..autograd.function import Function, first_order

__all__ = ["Reshape", "Permute", "Expand", "GetItem", "ScatterInto", "SetItem", "Pad", "Cat"]


class Reshape(Function):
    saves = ()  # shape ops read no values in backward, only shapes and indices
    view = True

    def forward(self, a):
        self.in_shape = a.shape
        return a.reshape(self.shape)

    def backward(self, g):
        if first_order():  # the array's own reshape: nothing to record
            return (self.const(g.data.reshape(self.in_shape)),)
        return (g.reshape(self.in_shape),)


class Permute(Function):
    saves = ()
    view = True

    def forward(self, a):
        return a.transpose(self.axes)

    def backward(self, g):
        inverse = [0] * len(self.axes)
        for i, ax in enumerate(self.axes):
            inverse[ax] = i
        return (g.permute(*inverse),)


class Expand(Function):
    """Broadcast to ``shape`` (a read-only view); the engine sums the gradient back."""

    saves = ()
    view = True

    def forward(self, a):
        return self.xp.broadcast_to(a, self.shape)

    def backward(self, g):
        return (g,)  # reduced to the input's shape by the engine


class GetItem(Function):
    """``a[index]`` for basic and advanced indices; backward scatters (adding repeats)."""

    saves = ()

    def forward(self, a):
        self.in_shape = a.shape
        out = a[self.index]
        self.view = out.base is not None and not _has_array(self.index)  # basic indexing
        return out

    def backward(self, g):
        return (g._scatter_into(self.in_shape, self.index),)


class ScatterInto(Function):
    """Zeros of ``shape`` with ``g`` added at ``index`` (the adjoint of ``GetItem``)."""

    saves = ()

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


class SetItem(Function):
    """``a`` with ``v`` written at ``index`` (the differentiable form of ``a[index] = v``): the
    gradient of ``a`` is zero at ``index``, that of ``v`` the output's gradient read there."""

    saves = ()

    def forward(self, a, v):
        out = a.copy()
        out[self.index] = v
        if self.needs_input_grad[0]:
            self.written = self.xp.zeros(a.shape, dtype=bool)
            self.written[self.index] = True
        return out

    def backward(self, g):
        return (g.where(~self.written, 0) if self.needs_input_grad[0] else None,
                g[self.index] if self.needs_input_grad[1] else None)


def _has_array(index):
    items = index if isinstance(index, tuple) else (index,)
    return any(hasattr(i, "dtype") for i in items)


def _has_int_array(index):
    items = index if isinstance(index, tuple) else (index,)
    return any(hasattr(i, "dtype") and i.dtype.kind in "iu" for i in items)


class Pad(Function):
    """Constant padding; ``widths`` is a tuple of (before, after) per axis."""

    saves = ()

    def forward(self, a):
        return self.xp.pad(a, self.widths, mode="constant", constant_values=self.value)

    def backward(self, g):
        index = tuple(slice(lo, g.shape[i] - hi) for i, (lo, hi) in enumerate(self.widths))
        return (g[index],)


class Cat(Function):
    saves = ()

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
