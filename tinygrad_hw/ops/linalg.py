"""Matrix products, forward beside backward: ``MatMul`` and the fused ``Linear`` (x @ w.T + b)."""
from __future__ import annotations

from ..autograd.function import _PARTNERS, Function
from ..autograd.grad_mode import is_grad_enabled
from ..kernels import parallel

__all__ = ["MatMul", "Linear"]


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


class Linear(Function):
    """``x @ w.T (+ b)`` for x of shape (..., in); one node instead of transpose, matmul, add."""

    def forward(self, x, w, b=None):
        self.save_partners((0, 1))  # d/dx reads w, d/dw reads x; the bias's gradient reads neither
        self.x_shape = x.shape
        x2 = x.reshape(-1, x.shape[-1])
        out = parallel.matmul(self.backend, x2, w.T)
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
