"""Elementwise ops, forward beside backward: arithmetic, comparisons with a gradient
(maximum, minimum, where), unary functions, piecewise-linear functions, casts.

Each backward returns gradients in the broadcast shape of the output; the engine reduces them to
each input's shape in one place (see :mod:`tinygrad_hw.autograd.engine`).
"""
from __future__ import annotations

from ..autograd.function import _PARTNERS, Function, first_order
from ..kernels import compiled, compiled_nn

__all__ = ["Add", "Sub", "Mul", "Div", "Pow", "Maximum", "Minimum", "Where", "Neg", "Exp", "Log",
           "Log1p", "Sqrt", "Tanh", "Sigmoid", "Abs", "Relu", "LeakyRelu", "Clamp", "Cast",
           "Clone", "Sin", "Cos"]


class Add(Function):
    saves = ()

    def forward(self, a, b):
        return a + b

    def backward(self, g):
        return g, g


class Sub(Function):
    saves = ()

    def forward(self, a, b):
        return a - b

    def backward(self, g):
        return g, (-g if self.needs_input_grad[1] else None)


class Mul(Function):
    def forward(self, a, b):
        self.saves = _PARTNERS[self.needs_input_grad]  # d/da reads b, d/db reads a
        return a * b

    def backward(self, g):
        a, b = self.inputs
        need_a, need_b = self.needs_input_grad
        if first_order():  # Mul's forward on the arrays: nothing to record
            return (self._times(g, b) if need_a else None, self._times(g, a) if need_b else None)
        return (g * b if need_a else None, g * a if need_b else None)

    def _times(self, g, t):
        """``g * t`` on the arrays where the dtypes agree, else through ``*`` (which promotes)."""
        gd = g.data
        return self.const(gd * t.data) if t.data.dtype == gd.dtype else g * t


class Div(Function):
    def forward(self, a, b):
        need = self.needs_input_grad
        self.save_for_backward(*((0, 1) if need[1] else (1,) if need[0] else ()))
        return a / b

    def backward(self, g):
        a, b = self.inputs
        ga = g / b if self.needs_input_grad[0] else None
        gb = -g * a / (b * b) if self.needs_input_grad[1] else None
        return ga, gb


class Pow(Function):
    """``a ** b``. The exponent's gradient uses log(a); like PyTorch it is 0 where a == 0 and b >= 0."""

    def forward(self, a, b):
        self.save_for_backward(0, 1)
        if self.needs_input_grad[1]:
            self.save_output()
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


class _Extremum(Function):
    """Elementwise maximum or minimum; on ties the gradient is split evenly, as in PyTorch.
    Subclasses name the array function (``pick``) and the comparison that makes ``a`` win."""

    saves = ()

    def forward(self, a, b):
        self.share_a = self.wins(a, b) + 0.5 * (a == b)
        return getattr(self.xp, self.pick)(a, b)

    def backward(self, g):
        share_a = self.const(self.share_a.astype(g.dtype, copy=False))
        return (g * share_a if self.needs_input_grad[0] else None,
                g * (1 - share_a) if self.needs_input_grad[1] else None)


class Maximum(_Extremum):
    pick = "maximum"

    @staticmethod
    def wins(a, b):
        return a > b


class Minimum(_Extremum):
    pick = "minimum"

    @staticmethod
    def wins(a, b):
        return a < b


class Where(Function):
    """``where(cond, a, b)`` with a boolean array ``cond`` given as a parameter (no gradient)."""

    saves = ()

    def forward(self, a, b):
        return self.xp.where(self.cond, a, b)

    def backward(self, g):
        return (g.where(self.cond, 0) if self.needs_input_grad[0] else None,
                g.where(~self.cond, 0) if self.needs_input_grad[1] else None)


class Neg(Function):
    saves = ()

    def forward(self, a):
        return -a

    def backward(self, g):
        return (-g,)


class Exp(Function):
    saves, saves_output = (), True

    def forward(self, a):
        return self.xp.exp(a)

    def backward(self, g):
        return (g * self.output(),)


class Log(Function):
    saves = (0,)

    def forward(self, a):
        return self.xp.log(a)

    def backward(self, g):
        return (g / self.inputs[0],)


class Log1p(Function):
    """log(1 + a), accurate for tiny a."""

    saves = (0,)

    def forward(self, a):
        return self.xp.log1p(a)

    def backward(self, g):
        return (g / (1 + self.inputs[0]),)


class Sqrt(Function):
    saves, saves_output = (), True

    def forward(self, a):
        return self.xp.sqrt(a)

    def backward(self, g):
        return (g / (2 * self.output()),)


class Tanh(Function):
    saves, saves_output = (), True

    def forward(self, a):
        return self.xp.tanh(a)

    def backward(self, g):
        y = self.output()
        return (g * (1 - y * y),)


class Sigmoid(Function):
    saves, saves_output = (), True

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

    saves = ()

    def backward(self, g):
        return (Mul.apply(g, self.const(self.slope)),)


class Abs(_Masked):
    """|a|; gradient sign(a), 0 at 0 like PyTorch."""

    def forward(self, a):
        self.slope = self.xp.sign(a)
        return self.xp.abs(a)


class Relu(_Masked):
    """max(a, 0): NaN stays NaN, gradient 1 where a > 0. Deviation: relu(-0.0) is +0.0 here
    (PyTorch keeps -0.0), the price of making the output with one ``maximum``.

    Saves its output, as PyTorch does, not a mask: the next layer (a convolution, a linear
    layer) usually saves that same array, so it costs no memory; the mask ``y > 0`` (equal to
    ``a > 0``, NaN included) is made again in backward.

    With numba (:mod:`~tinygrad_hw.kernels.compiled_nn`) both directions are one compiled pass
    over the worker threads; a first-order backward then records no ``Mul`` node and makes no
    mask. A recorded backward (``create_graph``) keeps the ``Mul`` of the mask, which is
    differentiable in ``g``."""

    saves_output = True

    def forward(self, a):
        if a.flags.c_contiguous and compiled.active(self.backend, a):
            return compiled_nn.relu_forward(self.backend, a)
        return self.xp.maximum(a, 0)  # keeps NaN, and -inf becomes 0

    def backward(self, g):
        y = self.output_data()
        if first_order():  # a plain first-order pass: the gradient straight from the arrays
            gd = g.data
            if (compiled.active(self.backend, y) and gd.shape == y.shape and gd.dtype == y.dtype
                    and y.flags.c_contiguous):  # one compiled pass (kernels/compiled_nn.py)
                return (self.const(compiled_nn.relu_backward(self.backend, self.xp.ascontiguousarray(gd), y)),)
            return (self.const(gd * (y > 0)),)  # Mul's forward, without the op
        return (Mul.apply(g, self.const(y > 0)),)


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
        self.slope = inside  # a boolean mask: a quarter of a float32 slope's memory
        return xp.clip(a, self.min, self.max).astype(a.dtype, copy=False)


class Cast(Function):
    """``a`` in ``dtype``; the gradient is cast back to the input's dtype."""

    saves = ()

    def forward(self, a):
        self.in_dtype = a.dtype
        return a.astype(self.dtype, copy=False)

    def backward(self, g):
        return (g.astype(self.in_dtype),)


# -- added for the PyTorch idioms (clone, sin, cos) -----------------------------------------------
class Clone(Function):
    """A copy of the data that stays in the graph (``torch.clone``)."""

    saves = ()

    def forward(self, a):
        return a.copy()

    def backward(self, g):
        return (g,)


class Sin(Function):
    saves = (0,)

    def forward(self, a):
        return self.xp.sin(a)

    def backward(self, g):
        return (g * self.inputs[0].cos(),)


class Cos(Function):
    saves = (0,)

    def forward(self, a):
        return self.xp.cos(a)

    def backward(self, g):
        return (-g * self.inputs[0].sin(),)
