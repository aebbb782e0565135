"""Matrix products, forward beside backward: ``MatMul`` and the fused ``Linear`` (x @ w.T + b)."""
from __future__ import annotations

import numpy

from ..autograd.function import _PARTNERS, Function
from ..autograd.grad_mode import is_grad_enabled
from ..kernels import parallel

__all__ = ["MatMul", "Linear"]

_F32 = numpy.dtype(numpy.float32)


class MatMul(Function):
    """Batched matrix product of arrays with at least 2 dims (1-D cases are reshaped by Tensor.matmul)."""

    def forward(self, a, b):
        self.saves = _PARTNERS[self.needs_input_grad]  # d/da reads b, d/db reads a
        if a.ndim == 2 and b.ndim == 2:
            return parallel.matmul(self.backend, a, b)
        return self.xp.matmul(a, b)

    def backward(self, g):
        a, b = self.inputs
        ga = g @ b.mT if self.needs_input_grad[0] else None
        gb = a.mT @ g if self.needs_input_grad[1] else None
        return ga, gb


def _x_times_wt(be, x, w):
    """``x @ w.T`` for 2-D arrays x (m, k) and w (n, k).

    OpenBLAS (0.3.31's SkylakeX sgemm) takes about twice as long for a few rows times a wide
    weight (m = 4, k = 384, n = 512: 78 us against 45 us, one thread) when asked for
    ``x @ w.T`` as when asked for ``(w @ x.T).T``: the same "TN" product with the two operands'
    roles swapped. With that kernel each output is summed in the same order: the results were
    bit-identical in float32 on every shape tried (1,372 random ones with 3 <= m <= 32 and
    n >= 128, one and two BLAS threads); with OpenBLAS's Haswell kernel (OPENBLAS_CORETYPE=Haswell)
    they differ in the last bits, like any two ways of summing a float32 product. A small float32
    batch takes that form; float64 does not (for k = 100 its kernels sum differently), nor do
    products that parallel.matmul splits over the workers."""
    m, k = x.shape
    n = w.shape[0]
    if (2 < m <= 32 and n >= 128 and be.name == "numpy" and x.dtype == w.dtype == _F32
            and m * k * n < parallel.MATMUL_SPLIT_MACS and x.flags.c_contiguous
            and w.flags.c_contiguous):
        return be.xp.ascontiguousarray(be.xp.matmul(w, x.T).T)
    return parallel.matmul(be, x, w.T)


class Linear(Function):
    """``x @ w.T (+ b)`` for x of shape (..., in); one node instead of transpose, matmul, add."""

    def forward(self, x, w, b=None):
        self.save_partners((0, 1))  # d/dx reads w, d/dw reads x; the bias's gradient reads neither
        self.x_shape = x.shape
        x2 = x.reshape(-1, x.shape[-1])
        out = _x_times_wt(self.backend, x2, w)
        if b is not None:
            out += b
        return out.reshape(x.shape[:-1] + (w.shape[0],))

    def backward(self, g):
        x, w = self.inputs[0], self.inputs[1]
        if not is_grad_enabled():  # first order: the same products straight on the arrays
            return self._array_backward(g.data, x, w)
        g2 = g.reshape(-1, g.shape[-1])
        gx = (g2 @ w).reshape(self.x_shape) if self.needs_input_grad[0] else None
        gw = g2.T @ x.reshape(-1, x.shape[-1]) if self.needs_input_grad[1] else None
        if len(self.needs_input_grad) == 2:
            return gx, gw
        gb = g2.sum(0) if self.needs_input_grad[2] else None
        return gx, gw, gb

    def _array_backward(self, g, x, w):
        # the Tensor version above is the definition; this one saves its seven graph nodes
        g2 = g.reshape(-1, g.shape[-1])
        need = self.needs_input_grad
        be = self.backend
        grads = [self.const(parallel.matmul(be, g2, w.data).reshape(self.x_shape)) if need[0] else None,
                 self.const(parallel.matmul(be, g2.T, x.data.reshape(-1, self.x_shape[-1])))
                 if need[1] else None]
        if len(need) == 3:
            grads.append(self.const(g2.sum(0)) if need[2] else None)
        return tuple(grads)
