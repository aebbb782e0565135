"""Fused neural-network ops with array-level backward passes: batch normalisation on batch
statistics, cross-entropy of (N, C) logits and integer labels, and the normal CDF inside GELU.

Each saves graph nodes and temporaries over the composition of basic ops. Their backward passes
are written with Tensor operations when a graph is recorded (``create_graph=True``), so they stay
differentiable to any order; for first-order gradients they work on the arrays directly.
"""
from __future__ import annotations

import math

import numpy

from ..autograd.function import Function
from ..autograd.grad_mode import is_grad_enabled
from ..kernels import compiled, compiled_nn, cuda
from ..kernels.special import erfc_nonnegative

__all__ = ["BatchNormTrain", "CrossEntropyRows", "NormalCdf", "BinaryCrossEntropy"]


class BatchNormTrain(Function):
    """Batch norm on batch statistics. ``forward`` receives the normalised input ``xhat`` and
    ``invstd`` (computed once by :func:`batch_norm`, which also needs them for the running
    statistics) and applies the affine transform; or, from the compiled kernel
    (:mod:`~tinygrad_hw.kernels.compiled_nn`), the finished output ``out`` (``xhat`` None).

    The backward pass is the closed form
    ``dx = w * invstd * (g - mean(g) - xhat * mean(g * xhat))``. For first-order gradients xhat
    and invstd are constants; when the backward pass is itself recorded (``create_graph``) they
    are recomputed from the input with Tensor operations so that higher-order gradients see their
    dependence on x.

    ``sum_over_ranks`` (SyncBatchNorm's): a function that sums the backward pass's two
    per-channel reductions over every rank's batch, whose total size is ``count``; the weight
    and bias gradients stay this rank's. First-order gradients only.

    Saves the input and the weight (and the per-channel ``mean`` and ``invstd``), as PyTorch
    does, not ``xhat``: the input is usually the convolution's output, which nothing else keeps,
    while ``xhat`` would be one more activation-sized array; backward makes it again.
    """

    sum_over_ranks = None
    out = None

    def forward(self, x, w=None, b=None):
        self.save_for_backward(*((0,) if w is None else (0, 1)))
        xhat = self.xhat
        del self.xhat  # not kept: backward recomputes it from the saved input
        if self.out is not None:
            out = self.out
            del self.out
            return out
        out = xhat * w.reshape(self.bshape) if w is not None else xhat.copy()
        if b is not None:
            out += b.reshape(self.bshape)
        return out

    def backward(self, g):
        x = self.inputs[0]
        affine = len(self.needs_input_grad) == 3
        axes = self.axes
        n = self.count
        if not is_grad_enabled():  # first order: the same closed form straight on the arrays
            return self._array_backward(g.data, affine)
        if self.sum_over_ranks is not None:
            raise NotImplementedError("SyncBatchNorm: gradients of gradients (create_graph=True) "
                                      "are not supported")
        # recording the backward pass: keep the dependence of xhat and invstd on x
        mean = x.mean(axes, keepdims=True)
        centred = x - mean
        invstd = ((centred * centred).mean(axes, keepdims=True) + self.eps).rsqrt()
        xhat = centred * invstd
        g_sum = g.sum(axes, keepdims=True)
        gx_hat_sum = (g * xhat).sum(axes, keepdims=True)
        gx = gw = gb = None
        if self.needs_input_grad[0]:
            scale = invstd * self.inputs[1].reshape(self.bshape) if affine else invstd
            gx = (g - g_sum / n - xhat * (gx_hat_sum / n)) * scale
        if affine:
            if self.needs_input_grad[1]:
                gw = gx_hat_sum.reshape(-1)
            if self.needs_input_grad[2]:
                gb = g_sum.reshape(-1)
            return gx, gw, gb
        return (gx,)

    def _array_backward(self, g, affine):
        # the Tensor version above is the definition; this one records no nodes and takes the
        # per-channel sums with einsum (3x faster than sum() here, and g * xhat needs no
        # temporary): dx = scale * g - xhat * (scale * mean(g * xhat)) - scale * mean(g), with
        # scale = invstd * w per channel
        n, xp = self.count, self.xp
        x = self.inputs[0].data
        w = self.inputs[1].data if affine else None
        if compiled.active(self.backend, g, x) and g.dtype == x.dtype and g.shape == x.shape \
                and (w is None or w.dtype == x.dtype):
            return self._compiled_backward(g, x, w)
        # xhat again from the saved input (it was not kept); its buffer becomes dx's below
        xhat = self.inputs[0].data - self.mean
        xhat *= self.invstd.reshape(self.bshape)
        if self.backend.name == "numpy":
            letters = "abcdefgh"[:g.ndim]
            per_channel = f"{letters}->{letters[1]}"
            g_sum = xp.einsum(per_channel, g).reshape(self.bshape)
            gx_hat_sum = xp.einsum(f"{letters},{per_channel}", g, xhat).reshape(self.bshape)
        else:  # CuPy's reductions take the non-channel axes in one kernel; its einsum would
            # transpose and copy for a matrix product (issue 19, item 7)
            g_sum = g.sum(axis=tuple(self.axes), keepdims=True)
            gx_hat_sum = (g * xhat).sum(axis=tuple(self.axes), keepdims=True)
        need = self.needs_input_grad
        gx = None
        if need[0]:
            scale = self.invstd.reshape(self.bshape)
            if affine:
                scale = scale * self.inputs[1].data.reshape(self.bshape)
            all_g, all_gx_hat = (g_sum, gx_hat_sum) if self.sum_over_ranks is None else \
                self.sum_over_ranks(g_sum, gx_hat_sum)
            fused = cuda.for_backend(self.backend)
            if fused is not None and fused.supports(g, xhat):  # one pass (kernels/cuda.py)
                gx = self.const(fused.batch_norm_backward(g, xhat, scale, scale * all_gx_hat / n,
                                                          scale * all_g / n))
                if not affine:
                    return (gx,)
                return (gx, self.const(gx_hat_sum.reshape(-1)) if need[1] else None,
                        self.const(g_sum.reshape(-1)) if need[2] else None)
            gx = xhat  # xhat is not read after this: dx is built in its buffer
            gx *= -(scale * all_gx_hat / n)
            gx += g * scale
            gx -= scale * all_g / n
            gx = self.const(gx)
        if not affine:
            return (gx,)
        return (gx, self.const(gx_hat_sum.reshape(-1)) if need[1] else None,
                self.const(g_sum.reshape(-1)) if need[2] else None)

    def _compiled_backward(self, g, x, w):
        # _array_backward's closed form as two compiled passes over g and x split by channel
        # (kernels/compiled_nn.py): the per-channel sums (no xhat made), then dx
        be, xp = self.backend, self.xp
        g, x = xp.ascontiguousarray(g), xp.ascontiguousarray(x)
        mean = self.mean.reshape(-1)
        g_sum, gx_hat_sum = compiled_nn.batch_norm_backward_sums(be, g, x, mean, self.invstd)
        need = self.needs_input_grad
        gx = None
        if need[0]:
            scale = self.invstd if w is None else self.invstd * w
            all_g, all_gx_hat = (g_sum, gx_hat_sum) if self.sum_over_ranks is None else \
                self.sum_over_ranks(g_sum, gx_hat_sum)
            gx = self.const(compiled_nn.batch_norm_backward_input(be, g, x, mean, self.invstd, scale, all_g,
                                                                  all_gx_hat, self.count))
        if w is None:
            return (gx,)
        return (gx, self.const(gx_hat_sum.astype(x.dtype)) if need[1] else None,
                self.const(g_sum.astype(x.dtype)) if need[2] else None)


class CrossEntropyRows(Function):
    """Cross-entropy of logits (N, C) against integer labels in one node (the composition is
    about ten: log_softmax, a gather, weights, the reduction). Params: ``labels`` (N,) with
    ignored rows mapped to class 0, ``row_weight`` (N,) (0 for ignored rows), ``total`` (the 'mean'
    denominator) and ``reduction``. Keeps the softmax for the backward pass (and the logits,
    which only a recorded backward pass, ``create_graph``, reads)."""

    saves = (0,)

    def forward(self, x):
        xp = self.xp
        z = x - x.max(1, keepdims=True)
        e = xp.exp(z)
        s = e.sum(1, keepdims=True)
        picked = z[xp.arange(x.shape[0]), self.labels]
        losses = (xp.log(s[:, 0]) - picked) * self.row_weight
        e /= s
        self.probs = e
        if self.reduction == "none":
            return losses
        total = losses.sum(keepdims=True).reshape(())
        return total / self.total if self.reduction == "mean" else total

    def _row_scale(self):
        return self.row_weight / self.total if self.reduction == "mean" else self.row_weight

    def backward(self, g):
        scale = self._row_scale()
        if is_grad_enabled():  # create_graph: the same formula, written with differentiable ops
            x = self.inputs[0]
            onehot = self.xp.zeros(x.shape, dtype=x.dtype)
            onehot[self.xp.arange(x.shape[0]), self.labels] = 1
            g_rows = g.reshape(-1, 1) if self.reduction == "none" else g
            return ((x.softmax(1) - self.const(onehot)) * (g_rows * self.const(scale.reshape(-1, 1))),)
        fused = cuda.for_backend(self.backend)
        if fused is not None and fused.supports(self.probs):  # one pass (kernels/cuda.py)
            return (self.const(fused.cross_entropy_backward(self.probs, self.labels,
                                                            (scale * g.data).reshape(-1))),)
        grad = self.probs.copy()  # the softmax stays intact for a retained graph
        grad[self.xp.arange(grad.shape[0]), self.labels] -= 1
        grad *= (scale * g.data).reshape(-1, 1)
        return (self.const(grad),)


class NormalCdf(Function):
    """Phi(x) = P(Z <= x) for a standard normal Z; derivative the density, as a Tensor expression."""

    saves = (0,)

    def forward(self, x):
        xp = self.xp
        z = x.astype(numpy.float64) / math.sqrt(2.0)
        tail = 0.5 * erfc_nonnegative(xp, xp.abs(z))  # P(Z > |x|)
        return xp.where(z >= 0, 1.0 - tail, tail).astype(x.dtype, copy=False)

    def backward(self, g):
        x = self.inputs[0]
        return (g * ((x * x) * -0.5).exp() * (1.0 / math.sqrt(2.0 * math.pi)),)


class BinaryCrossEntropy(Function):
    """-(y log x + (1 - y) log(1 - x)) of probabilities ``x`` and targets ``y``, each log clamped at
    -100, with PyTorch's gradient ``(x - y) / max(x (1 - x), 1e-12)``: finite where a sigmoid
    saturated to exactly 0 or 1 (the chain rule through the clamped log gives 0/0 there). The
    target's gradient is ``log(1 - x) - log(x)``, unclamped, as in PyTorch."""

    def forward(self, x, y):
        xp = self.xp
        with numpy.errstate(divide="ignore"):
            log_x = xp.maximum(xp.log(x), -100.0)
            log_1mx = xp.maximum(xp.log(1 - x), -100.0)
        return -(y * log_x + (1 - y) * log_1mx)

    def backward(self, g):
        x, y = self.inputs
        gx = gy = None
        if self.needs_input_grad[0]:
            gx = g * (x - y) / (x * (1 - x)).clamp(min=1e-12)
        if self.needs_input_grad[1]:
            with numpy.errstate(divide="ignore"):
                gy = g * ((1 - x).log() - x.log())
        return gx, gy
