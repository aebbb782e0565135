"""Stateless layer functions with ``torch.nn.functional``'s names, arguments and defaults.

Import as ``import tinygrad_hw.nn.functional as F``. The layer classes in :mod:`tinygrad_hw.nn`
are thin wrappers around these. Convolution and pooling come from :mod:`tinygrad_hw.conv`.

Three operations have dedicated :class:`~tinygrad_hw.function.Function` classes for speed (fewer
graph nodes and temporaries than the composition): ``linear``, training-mode ``batch_norm`` and the
normal CDF inside ``gelu``. Their backward passes are written with Tensor operations, so they are
differentiable to any order like everything else.
"""
from __future__ import annotations

import math
import numbers
import operator

import numpy

from ..conv import (AvgPool2d, Conv2d, Conv2dInputGrad, MaxPool2d, _check_conv_shapes, conv_output_size,
                   max_pool2d_flat_indices, pool_output_size)
from .. import parallel
from ..function import Function
from ..tensor import Tensor, is_grad_enabled

__all__ = [
    # layers
    "linear", "conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d",
    "adaptive_avg_pool2d", "dropout", "dropout2d", "batch_norm", "flatten", "pad", "one_hot",
    # activations
    "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "silu", "elu", "softplus", "softmax",
    "log_softmax",
    # losses
    "cross_entropy", "nll_loss", "mse_loss", "l1_loss", "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
]


def _check_tensor(name, x, what="input"):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected {what} to be a Tensor, got {type(x).__name__}")


def _check_float(name, x, what="input"):
    _check_tensor(name, x, what)
    if x.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating point {what}, got dtype {x.dtype}")


# ==================================================================================================
# linear
# ==================================================================================================
class _Linear(Function):
    """``x @ w.T (+ b)`` for x of shape (..., in); one node instead of transpose, matmul, add."""

    def forward(self, x, w, b=None):
        x2 = x.reshape(-1, x.shape[-1])
        out = parallel.matmul(self.backend, x2, w.T)
        if b is not None:
            out += b
        return out.reshape(x.shape[:-1] + (w.shape[0],))

    def backward(self, g):
        x, w = self.inputs[0], self.inputs[1]
        if not is_grad_enabled():  # first order: the same products straight on the arrays
            return self._array_backward(g.data, x.data, w.data)
        g2 = g.reshape(-1, g.shape[-1])
        gx = (g2 @ w).reshape(x.shape) if self.needs_input_grad[0] else None
        gw = g2.T @ x.reshape(-1, x.shape[-1]) if self.needs_input_grad[1] else None
        if len(self.inputs) == 2:
            return gx, gw
        gb = g2.sum(0) if self.needs_input_grad[2] else None
        return gx, gw, gb

    def _array_backward(self, g, x, w):
        # the Tensor version above is the definition; this one saves its seven graph nodes
        g2 = g.reshape(-1, g.shape[-1])
        need = self.needs_input_grad
        be = self.backend
        grads = [self.const(parallel.matmul(be, g2, w).reshape(x.shape)) if need[0] else None,
                 self.const(parallel.matmul(be, g2.T, x.reshape(-1, x.shape[-1]))) if need[1] else None]
        if len(need) == 3:
            grads.append(self.const(g2.sum(0)) if need[2] else None)
        return tuple(grads)


def linear(input, weight, bias=None):
    """``input @ weight.T + bias`` with ``weight`` (out_features, in_features), ``bias``
    (out_features,) or None; ``input`` (..., in_features)."""
    _check_float("linear", input)
    _check_tensor("linear", weight, "weight")
    if weight.ndim != 2:
        raise ValueError(f"linear: expected a 2-D weight (out_features, in_features), got {weight.shape}")
    if input.ndim == 0 or input.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input of shape {input.shape} has last dim "
                         f"{input.shape[-1] if input.ndim else None}, expected "
                         f"in_features={weight.shape[1]} (weight {weight.shape})")
    if weight.dtype != input.dtype:
        raise TypeError(f"linear: input dtype {input.dtype} and weight dtype {weight.dtype} differ")
    if bias is None:
        return _Linear.apply(input, weight)
    _check_tensor("linear", bias, "bias")
    if bias.shape != (weight.shape[0],):
        raise ValueError(f"linear: expected a bias of shape ({weight.shape[0]},), got {bias.shape}")
    if bias.dtype != input.dtype:
        raise TypeError(f"linear: input dtype {input.dtype} and bias dtype {bias.dtype} differ")
    return _Linear.apply(input, weight, bias)


# ==================================================================================================
# dropout
# ==================================================================================================
def _check_p(name, p):
    if not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{name}: dropout probability has to be between 0 and 1, but got {p}")


def _apply_mask(input, keep):
    """``input * keep / (1 - p)``: the mask is a constant in the graph, so backward (of any
    order) reuses exactly the mask drawn in forward."""
    return input * input._const(keep)


def dropout(input, p=0.5, training=True, inplace=False):
    """Inverted dropout: zero each element with probability ``p`` and scale the rest by
    1 / (1 - p); the identity when not ``training`` (or p == 0). The mask comes from the
    backend's generator (``hw.manual_seed``). ``inplace`` is accepted and ignored (never in place)."""
    _check_p("dropout", p)
    _check_float("dropout", input)
    if not training or p == 0:
        return input
    be = input._be
    if p == 1:
        return input * 0.0
    keep = (be.rand(input.shape, input.dtype) >= p).astype(input.dtype)
    keep *= 1.0 / (1.0 - p)
    return _apply_mask(input, keep)


def dropout2d(input, p=0.5, training=True, inplace=False):
    """Channel dropout: zero whole channels of (N, C, H, W) or (C, H, W) input with probability
    ``p``, scaling the rest by 1 / (1 - p)."""
    _check_p("dropout2d", p)
    _check_float("dropout2d", input)
    if input.ndim not in (3, 4):
        raise ValueError(f"dropout2d: expected a 3-D or 4-D input, got shape {input.shape}")
    if not training or p == 0:
        return input
    if p == 1:
        return input * 0.0
    shape = input.shape[:-2] + (1, 1)
    keep = (input._be.rand(shape, input.dtype) >= p).astype(input.dtype)
    keep *= 1.0 / (1.0 - p)
    return _apply_mask(input, keep)


# ==================================================================================================
# batch norm
# ==================================================================================================
class _BatchNormTrain(Function):
    """Batch norm on batch statistics. ``forward`` receives the normalised input ``xhat`` and
    ``invstd`` (computed once by :func:`batch_norm`, which also needs them for the running
    statistics) and applies the affine transform.

    The backward pass is the closed form
    ``dx = w * invstd * (g - mean(g) - xhat * mean(g * xhat))``. For first-order gradients xhat
    and invstd are constants; when the backward pass is itself recorded (``create_graph``) they
    are recomputed from the input with Tensor operations so that higher-order gradients see their
    dependence on x.
    """

    def forward(self, x, w=None, b=None):
        out = self.xhat * w.reshape(self.bshape) if w is not None else self.xhat.copy()
        if b is not None:
            out += b.reshape(self.bshape)
        return out

    def backward(self, g):
        x = self.inputs[0]
        affine = len(self.inputs) == 3
        axes = self.axes
        n = self.count
        if not is_grad_enabled():  # first order: the same closed form straight on the arrays
            return self._array_backward(g.data, affine)
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
        n, xhat, xp = self.count, self.xhat, self.xp
        letters = "abcdefgh"[:g.ndim]
        per_channel = f"{letters}->{letters[1]}"
        g_sum = xp.einsum(per_channel, g).reshape(self.bshape)
        gx_hat_sum = xp.einsum(f"{letters},{per_channel}", g, xhat).reshape(self.bshape)
        need = self.needs_input_grad
        gx = None
        if need[0]:
            scale = self.invstd.reshape(self.bshape)
            if affine:
                scale = scale * self.inputs[1].data.reshape(self.bshape)
            gx = g * scale
            gx -= xhat * (scale * gx_hat_sum / n)
            gx -= scale * g_sum / n
            gx = self.const(gx)
        if not affine:
            return (gx,)
        return (gx, self.const(gx_hat_sum.reshape(-1)) if need[1] else None,
                self.const(g_sum.reshape(-1)) if need[2] else None)


def _bn_check(name, t, what, channels, x):
    if t is None:
        return
    _check_tensor(name, t, what)
    if t.shape != (channels,):
        raise ValueError(f"{name}: expected {what} of shape ({channels},) for an input of shape "
                         f"{x.shape}, got {t.shape}")


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalisation over every axis but the channel axis 1 of (N, C, ...) input.

    In ``training`` mode it normalises with the batch mean and biased variance and, where
    ``running_mean`` / ``running_var`` are given, updates them in place:
    ``running = (1 - momentum) * running + momentum * batch_stat`` with the *unbiased* batch
    variance, as PyTorch does. Otherwise it uses the running statistics.
    """
    name = "batch_norm"
    _check_float(name, input)
    if input.ndim < 2:
        raise ValueError(f"{name}: expected an input of at least 2 dims (N, C, ...), got {input.shape}")
    channels = input.shape[1]
    for t, what in ((running_mean, "running_mean"), (running_var, "running_var"),
                    (weight, "weight"), (bias, "bias")):
        _bn_check(name, t, what, channels, input)
    if (weight is None) != (bias is None):
        raise ValueError(f"{name}: give both weight and bias or neither")
    axes = (0,) + tuple(range(2, input.ndim))
    bshape = (1, channels) + (1,) * (input.ndim - 2)
    xp = input._be.xp
    if training:
        count = input.numel() // channels
        if count <= 1:
            raise ValueError(f"{name}: expected more than 1 value per channel when training, got "
                             f"input of shape {input.shape}")
        x = input.data
        mean = x.mean(axis=axes, keepdims=True)
        centred = x - mean
        var = xp.mean(centred * centred, axis=axes, keepdims=True)
        invstd = 1.0 / xp.sqrt(var + eps)
        xhat = centred
        xhat *= invstd
        if running_mean is not None or running_var is not None:
            m = float(momentum)
            if running_mean is not None:
                rm = running_mean.data
                rm *= 1.0 - m
                rm += (m * mean.reshape(-1)).astype(rm.dtype, copy=False)
            if running_var is not None:
                rv = running_var.data
                rv *= 1.0 - m
                rv += (m * count / (count - 1) * var.reshape(-1)).astype(rv.dtype, copy=False)
        params = dict(xhat=xhat, invstd=invstd.reshape(-1), axes=axes, bshape=bshape, count=count,
                      eps=eps)
        if weight is None:
            return _BatchNormTrain.apply(input, **params)
        return _BatchNormTrain.apply(input, weight, bias, **params)
    if running_mean is None or running_var is None:
        raise ValueError(f"{name}: running_mean and running_var are needed when training=False")
    # eval: an affine map with constant statistics; plain Tensor ops are differentiable as is
    invstd = running_var._const(1.0 / xp.sqrt(running_var.data + eps))
    scale = invstd if weight is None else weight * invstd
    shift = -(running_mean.detach() * scale)
    if bias is not None:
        shift = shift + bias
    return input * scale.reshape(bshape) + shift.reshape(bshape)


# ==================================================================================================
# shape helpers
# ==================================================================================================
def flatten(input, start_dim=0, end_dim=-1):
    return input.flatten(start_dim, end_dim)


def pad(input, pad, mode="constant", value=None):
    """Constant padding (``torch.nn.functional.pad``'s order); other modes are not supported."""
    if mode != "constant":
        raise NotImplementedError(f"pad: only mode='constant' is supported, got {mode!r}")
    return input.pad(pad, 0.0 if value is None else value)


def one_hot(tensor, num_classes=-1):
    """int64 one-hot encoding along a new last axis (``torch.nn.functional.one_hot``)."""
    _check_tensor("one_hot", tensor)
    if tensor.dtype.kind not in "iu":
        raise TypeError(f"one_hot: expected an integer tensor, got {tensor.dtype}")
    xp = tensor._be.xp
    labels = tensor.data
    if num_classes == -1:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"one_hot: class values must be in [0, {num_classes})")
    out = (labels[..., None] == xp.arange(num_classes)).astype(numpy.int64)
    return Tensor._make(out, tensor._be)


# ==================================================================================================
# activations
# ==================================================================================================
def relu(input, inplace=False):
    """max(x, 0); gradient 0 at 0 like PyTorch. ``inplace`` is accepted and ignored."""
    return input.relu()


def leaky_relu(input, negative_slope=0.01, inplace=False):
    return input.leaky_relu(negative_slope)


def sigmoid(input):
    return input.sigmoid()


def tanh(input):
    return input.tanh()


def silu(input, inplace=False):
    return input * input.sigmoid()


def elu(input, alpha=1.0, inplace=False):
    # exp of the non-positive part only: no overflow in the branch that where() discards
    negative = (input.clamp(max=0.0).exp() - 1) * alpha
    return input.where(input.data > 0, negative)


def softplus(input, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, and x itself where beta * x > threshold (as PyTorch)."""
    _check_float("softplus", input)
    scaled = input * beta
    smooth = scaled.softplus() / beta
    return input.where(scaled.data > threshold, smooth)


def softmax(input, dim=None, dtype=None):
    if dim is None:
        raise TypeError("softmax: give dim= (PyTorch's implicit choice of dimension is deprecated)")
    x = input.astype(dtype) if dtype is not None else input
    return x.softmax(dim)


def log_softmax(input, dim=None, dtype=None):
    if dim is None:
        raise TypeError("log_softmax: give dim= (PyTorch's implicit choice of dimension is deprecated)")
    x = input.astype(dtype) if dtype is not None else input
    return x.log_softmax(dim)


_SQRT_PI = math.sqrt(math.pi)


def _erfc_nonnegative(xp, a):
    """erfc(a) for a >= 0 in float64, relative error below 1e-11 everywhere.

    Below 2.5: 1 - erf(a) from the series erf(a) = 2/sqrt(pi) exp(-a^2) sum 2^n a^(2n+1) /
    (1*3*...*(2n+1)), whose terms are all positive (no cancellation). From 2.5 up: the continued
    fraction erfc(a) = exp(-a^2)/sqrt(pi) / (a + (1/2)/(a + 1/(a + (3/2)/(a + ...)))), evaluated
    from the tail. NumPy has no erf, and this keeps CuPy and NumPy on the same code.
    """
    small = a < 2.5
    s = xp.where(small, a, 0.0)
    term, total, two_s2 = s.copy(), s.copy(), 2.0 * s * s
    for k in range(1, 60):
        term *= two_s2 / (2 * k + 1)
        total += term
    erf_small = (2.0 / _SQRT_PI) * xp.exp(-s * s) * total
    big = xp.where(small, 2.5, a)
    frac = big.copy()
    for k in range(80, 0, -1):
        frac = big + (0.5 * k) / frac
    erfc_big = xp.exp(-big * big) / _SQRT_PI / frac
    return xp.where(small, 1.0 - erf_small, erfc_big)


class _NormalCdf(Function):
    """Phi(x) = P(Z <= x) for a standard normal Z; derivative the density, as a Tensor expression."""

    def forward(self, x):
        xp = self.xp
        z = x.astype(numpy.float64) / math.sqrt(2.0)
        tail = 0.5 * _erfc_nonnegative(xp, xp.abs(z))  # P(Z > |x|)
        return xp.where(z >= 0, 1.0 - tail, tail).astype(x.dtype, copy=False)

    def backward(self, g):
        x = self.inputs[0]
        return (g * ((x * x) * -0.5).exp() * (1.0 / math.sqrt(2.0 * math.pi)),)


def gelu(input, approximate="none"):
    """x * Phi(x) (``approximate='none'``) or the tanh approximation (``'tanh'``)."""
    _check_float("gelu", input)
    if approximate == "none":
        return input * _NormalCdf.apply(input)
    if approximate == "tanh":
        inner = (input + input * input * input * 0.044715) * math.sqrt(2.0 / math.pi)
        return input * 0.5 * (inner.tanh() + 1.0)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


# ==================================================================================================
# losses
# ==================================================================================================
_REDUCTIONS = ("mean", "sum", "none")


def _legacy_reduction(size_average, reduce, reduction):
    """PyTorch's deprecated ``size_average`` / ``reduce`` arguments, mapped onto ``reduction``."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


def _check_reduction(name, reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _as_tensor(value, like, name, what):
    """``value`` (Tensor, array, list, number) as a Tensor on ``like``'s backend."""
    if isinstance(value, Tensor):
        if value._be is not like._be:
            raise ValueError(f"{name}: {what} is on backend {value.backend} but the input is on "
                             f"{like.backend}; move one with .to()")
        return value
    return Tensor(value, backend=like._be)


def _float_like(value, like, name, what):
    t = _as_tensor(value, like, name, what)
    if t.dtype != like.dtype:
        if t.dtype.kind not in "biuf":
            raise TypeError(f"{name}: {what} has dtype {t.dtype}")
        t = t.astype(like.dtype)
    return t


def _same_shape(name, input, target):
    if input.shape != target.shape:
        raise ValueError(f"{name}: target shape {target.shape} differs from input shape "
                         f"{input.shape} (no broadcasting: it usually hides a bug)")


def _class_weight(name, weight, input, channels):
    if weight is None:
        return None
    w = _float_like(weight, input, name, "weight")
    if w.shape != (channels,):
        raise ValueError(f"{name}: expected weight of shape ({channels},) (one per class), got {w.shape}")
    return w


def _check_labels(name, target, channels, ignore_index):
    """Integer labels in [0, channels) (or == ignore_index); ValueError naming the first bad one."""
    if target.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer class labels (or float class probabilities of "
                        f"the input's shape), got a target of dtype {target.dtype}")
    labels = target.data
    bad = ((labels < 0) | (labels >= channels)) & (labels != ignore_index)
    if labels.size and bool(bad.any()):
        first = int(labels[bad].reshape(-1)[0])
        raise ValueError(f"{name}: label {first} is out of range for {channels} classes "
                         f"(labels must be in [0, {channels - 1}] or ignore_index={ignore_index})")


def _classes_last(input, target, name):
    """(N*d..., C) rows from (N, C, d...) input, labels (N*d...), and the per-sample shape."""
    if input.ndim == 1:  # one unbatched sample
        if target.ndim != 0:
            raise ValueError(f"{name}: for an input of shape {input.shape} the target must be a "
                             f"single label (shape ()), got {target.shape}")
        return input.reshape(1, -1), target.reshape(1), ()
    if input.ndim < 1:
        raise ValueError(f"{name}: expected an input of shape (C,), (N, C) or (N, C, d1, ...), got {input.shape}")
    expected = (input.shape[0],) + input.shape[2:]
    if target.shape != expected:
        raise ValueError(f"{name}: expected a target of shape {expected} for an input of shape "
                         f"{input.shape}, got {target.shape}")
    channels = input.shape[1]
    if input.ndim > 2:
        order = (0,) + tuple(range(2, input.ndim)) + (1,)
        rows = input.permute(*order).reshape(-1, channels)
    else:
        rows = input
    return rows, target.reshape(-1), expected


def _nll_rows(rows, labels, weight, ignore_index):
    """Per-row negative log-likelihood terms (0 for ignored rows), the row weights and their sum
    (a 0-d constant: the 'mean' denominator, PyTorch's sum of target weights)."""
    be = rows._be
    xp = be.xp
    lab = labels.data
    valid = lab != ignore_index
    safe = xp.where(valid, lab, 0)
    picked = rows[xp.arange(rows.shape[0]), safe]
    if weight is None:
        row_w = valid.astype(rows.dtype)
    else:
        row_w = weight.data[safe] * valid
    row_w_t = rows._const(row_w)
    return -(picked * row_w_t), row_w_t, rows._const(row_w.sum())


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    """Negative log-likelihood of integer labels given log-probabilities (N, C, ...).

    'mean' divides by the sum of the weights of the non-ignored targets (PyTorch's definition)."""
    name = "nll_loss"
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(name, reduction)
    _check_float(name, input)
    target = _as_tensor(target, input, name, "target")
    channels = input.shape[0] if input.ndim == 1 else input.shape[1]
    weight = _class_weight(name, weight, input, channels)
    _check_labels(name, target, channels, ignore_index)
    rows, labels, sample_shape = _classes_last(input, target, name)
    losses, _, total = _nll_rows(rows, labels, weight, ignore_index)
    if reduction == "none":
        return losses.reshape(sample_shape)
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / total


class _CrossEntropyRows(Function):
    """Cross-entropy of logits (N, C) against integer labels in one node (the composition is
    about ten: log_softmax, a gather, weights, the reduction). Params: ``labels`` (N,) with
    ignored rows mapped to class 0, ``row_weight`` (N,) (0 for ignored rows), ``total`` (the 'mean'
    denominator) and ``reduction``. Keeps the softmax for the backward pass."""

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
        grad = self.probs.copy()  # the softmax stays intact for a retained graph
        grad[self.xp.arange(grad.shape[0]), self.labels] -= 1
        grad *= (scale * g.data).reshape(-1, 1)
        return (self.const(grad),)


def _cross_entropy_rows(input, target, weight, ignore_index, reduction):
    """``cross_entropy`` of (N, C) logits and (N,) integer labels, without label smoothing."""
    xp = input._be.xp
    labels = target.data
    valid = labels != ignore_index
    safe = xp.where(valid, labels, 0)
    if weight is None:
        row_weight = valid.astype(input.dtype)
    else:
        row_weight = (weight.data[safe] * valid).astype(input.dtype)
    return _CrossEntropyRows.apply(input, labels=safe, row_weight=row_weight,
                                   total=row_weight.sum(keepdims=True).reshape(()), reduction=reduction)


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """Cross-entropy of logits ``input`` (C,), (N, C) or (N, C, d1, ...) against integer labels
    ``target`` (N,) / (N, d1, ...), or against class probabilities of the input's shape.

    As in PyTorch: with ``label_smoothing`` s the loss is (1 - s) * nll + s / C * smooth where
    smooth = -sum_c w_c log p_c; 'mean' divides both terms by the summed weight of the
    non-ignored targets (probability targets: by the number of samples).
    """
    name = "cross_entropy"
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(name, reduction)
    _check_float(name, input)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{name}: label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    target = _as_tensor(target, input, name, "target")
    class_axis = 0 if input.ndim == 1 else 1
    channels = input.shape[class_axis]
    weight = _class_weight(name, weight, input, channels)
    if (target.dtype.kind in "iu" and input.ndim == 2 and target.shape == input.shape[:1] and label_smoothing == 0
            and (weight is None or not weight.requires_grad)):
        _check_labels(name, target, channels, ignore_index)
        return _cross_entropy_rows(input, target, weight, ignore_index, reduction)
    logp = input.log_softmax(class_axis)
    wshape = [1] * input.ndim
    wshape[class_axis] = channels
    if target.dtype.kind == "f":  # class probabilities
        _same_shape(name, input, target)
        target = target.astype(input.dtype)
        if label_smoothing > 0:
            target = target * (1 - label_smoothing) + label_smoothing / channels
        weighted = logp * target
        if weight is not None:
            weighted = weighted * weight.reshape(wshape)
        losses = -weighted.sum(class_axis)
        if reduction == "mean":
            return losses.sum() / (input.numel() // channels if input.ndim > 1 else 1)
        return _reduce(losses, reduction)
    _check_labels(name, target, channels, ignore_index)
    rows, labels, sample_shape = _classes_last(logp, target, name)
    nll, _, total = _nll_rows(rows, labels, weight, ignore_index)
    if label_smoothing > 0:
        valid = rows._const((labels.data != ignore_index).astype(rows.dtype))
        per_class = rows if weight is None else rows * weight.reshape(1, channels)
        smooth = -per_class.sum(1) * valid
        losses = nll * (1 - label_smoothing) + smooth * (label_smoothing / channels)
    else:
        losses = nll
    if reduction == "none":
        return losses.reshape(sample_shape)
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / total


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """Mean squared error. Unlike PyTorch (which warns and broadcasts), input and target must
    have the same shape."""
    name = "mse_loss"
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(name, reduction)
    _check_float(name, input)
    target = _float_like(target, input, name, "target")
    _same_shape(name, input, target)
    diff = input - target
    return _reduce(diff * diff, reduction)


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """Mean absolute error (same shapes required, like :func:`mse_loss`)."""
    name = "l1_loss"
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(name, reduction)
    _check_float(name, input)
    target = _float_like(target, input, name, "target")
    _same_shape(name, input, target)
    return _reduce((input - target).abs(), reduction)


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None,
                         reduction="mean"):
    """-w * (y log x + (1 - y) log(1 - x)) for probabilities ``input`` in [0, 1]; each log is
    clamped at -100 as in PyTorch."""
    name = "binary_cross_entropy"
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(name, reduction)
    _check_float(name, input)
    target = _float_like(target, input, name, "target")
    _same_shape(name, input, target)
    x = input.data
    if x.size and bool(((x < 0) | (x > 1)).any()):
        raise ValueError(f"{name}: all elements of input should be between 0 and 1")
    log_x = input.log().clamp(min=-100.0)
    log_1mx = (1 - input).log().clamp(min=-100.0)
    loss = -(target * log_x + (1 - target) * log_1mx)
    if weight is not None:
        loss = loss * _float_like(weight, input, name, "weight")
    return _reduce(loss, reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None):
    """Sigmoid + binary cross-entropy in one numerically stable expression:
    (1 - y) x + (1 + (pos_weight - 1) y) softplus(-x), times ``weight``."""
    name = "binary_cross_entropy_with_logits"
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(name, reduction)
    _check_float(name, input)
    target = _float_like(target, input, name, "target")
    _same_shape(name, input, target)
    softplus_neg = (-input).softplus()  # -log(sigmoid(x)); its gradient at 0 is exactly -1/2
    if pos_weight is None:
        loss = (1 - target) * input + softplus_neg
    else:
        pw = _float_like(pos_weight, input, name, "pos_weight")
        loss = (1 - target) * input + (1 + (pw - 1) * target) * softplus_neg
    if weight is not None:
        loss = loss * _float_like(weight, input, name, "weight")
    return _reduce(loss, reduction)


# ==================================================================================================
# convolution and pooling (the kernels and their ops live in tinygrad_hw/conv.py)
# ==================================================================================================
def _pair(value, op, what, minimum):
    """An int or a pair of ints as a pair, each at least ``minimum``."""
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            value = (value[0], value[0])
        if len(value) != 2:
            raise ValueError(f"{op}: {what} must be an int or a pair of ints, got {value!r}")
        pair = tuple(value)
    else:
        pair = (value, value)
    try:
        if any(isinstance(v, bool) for v in pair):
            raise TypeError
        pair = tuple(operator.index(v) for v in pair)
    except TypeError:
        raise TypeError(f"{op}: {what} must be an int or a pair of ints, got {value!r}") from None
    if any(v < minimum for v in pair):
        raise ValueError(f"{op}: {what} must be >= {minimum}, got {value!r}")
    return pair


def _check_image_input(op, x, unbatched_ok=True):
    """Checks that ``x`` is a float Tensor of 4 dims (or 3: one unbatched image)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected input to be a Tensor, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating point input, got dtype {x.dtype}")
    if x.ndim != 4 and not (unbatched_ok and x.ndim == 3):
        raise ValueError(f"{op}: expected a 4-D input (N, C, H, W) or a 3-D unbatched input "
                         f"(C, H, W), got shape {x.shape}")


def _batched(x):
    """(x as 4-D, whether it was unbatched)."""
    return (x.unsqueeze(0), True) if x.ndim == 3 else (x, False)


def _check_weight(op, weight, x):
    if not isinstance(weight, Tensor):
        raise TypeError(f"{op}: expected weight to be a Tensor, got {type(weight).__name__}")
    if weight.ndim != 4:
        raise ValueError(f"{op}: expected a 4-D weight, got shape {weight.shape}")
    if weight.dtype != x.dtype:
        raise TypeError(f"{op}: input dtype {x.dtype} and weight dtype {weight.dtype} differ")


def _check_bias(op, bias, channels, dtype):
    if not isinstance(bias, Tensor):
        raise TypeError(f"{op}: expected bias to be a Tensor or None, got {type(bias).__name__}")
    if bias.shape != (channels,):
        raise ValueError(f"{op}: expected a bias of shape ({channels},), got {bias.shape}")
    if bias.dtype != dtype:
        raise TypeError(f"{op}: input dtype {dtype} and bias dtype {bias.dtype} differ")


def _add_bias(op, y, bias, channels):
    if bias is None:
        return y
    _check_bias(op, bias, channels, y.dtype)
    return y + bias.reshape(1, channels, 1, 1)


def _conv_geometry(op, groups, stride, dilation):
    """Validates ``groups``; ``stride`` and ``dilation`` as pairs of positive ints."""
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    return _pair(stride, op, "stride", 1), _pair(dilation, op, "dilation", 1)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation like ``torch.nn.functional.conv2d``.

    ``input`` (N, C, H, W) or (C, H, W); ``weight`` (O, C/groups, kh, kw); ``bias`` (O,) or None;
    ``padding`` an int, a pair, ``"valid"`` or ``"same"`` (stride 1 only; an odd total padding puts
    the extra row/column at the bottom/right, as PyTorch does)."""
    op = "conv2d"
    _check_image_input(op, input)
    _check_weight(op, weight, input)
    x, unbatched = _batched(input)
    stride, dilation = _conv_geometry(op, groups, stride, dilation)
    o, cg, kh, kw = weight.shape
    if o % groups:
        raise ValueError(f"{op}: weight has {o} output channels, not divisible by groups={groups}")
    _check_conv_shapes(op, x.shape, weight.shape, groups)
    if isinstance(padding, str):
        if padding == "valid":
            pads = (0, 0, 0, 0)
        elif padding == "same":
            if stride != (1, 1):
                raise ValueError(f"{op}: padding='same' is not supported for strided convolutions")
            th, tw = dilation[0] * (kh - 1), dilation[1] * (kw - 1)
            pads = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        else:
            raise ValueError(f"{op}: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    else:
        ph, pw = _pair(padding, op, "padding", 0)
        pads = (ph, ph, pw, pw)
    h, w = x.shape[2:]
    oh = conv_output_size(h, kh, stride[0], pads[0], pads[1], dilation[0])
    ow = conv_output_size(w, kw, stride[1], pads[2], pads[3], dilation[1])
    if oh < 1 or ow < 1:
        raise ValueError(
            f"{op}: kernel {kh}x{kw} (dilation {dilation}) is larger than the padded input "
            f"{h + pads[0] + pads[1]}x{w + pads[2] + pads[3]} (input {tuple(x.shape)}, padding {pads})")
    inputs = (x, weight)
    if bias is not None:
        _check_bias(op, bias, o, x.dtype)
        inputs += (bias,)
    y = Conv2d.apply(*inputs, stride=stride, padding=pads, dilation=dilation, groups=groups, out_hw=None)
    return y.squeeze(0) if unbatched else y


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """2-D transposed convolution like ``torch.nn.functional.conv_transpose2d``.

    ``input`` (N, C_in, H, W); ``weight`` (C_in, C_out/groups, kh, kw). Output height
    (H - 1) * stride - 2 * padding + dilation * (kh - 1) + output_padding + 1."""
    op = "conv_transpose2d"
    _check_image_input(op, input)
    _check_weight(op, weight, input)
    x, unbatched = _batched(input)
    stride, dilation = _conv_geometry(op, groups, stride, dilation)
    ph, pw = _pair(padding, op, "padding", 0)
    oph, opw = _pair(output_padding, op, "output_padding", 0)
    c_in, cg_out, kh, kw = weight.shape
    if x.shape[1] != c_in:
        raise ValueError(f"{op}: input has {x.shape[1]} channels but weight {weight.shape} expects {c_in}")
    if c_in % groups:
        raise ValueError(f"{op}: weight has {c_in} input channels, not divisible by groups={groups}")
    for opad, s, d in ((oph, stride[0], dilation[0]), (opw, stride[1], dilation[1])):
        if opad >= s and opad >= d:
            raise ValueError(f"{op}: output_padding must be smaller than either stride or dilation, "
                             f"got output_padding={output_padding}, stride={stride}, dilation={dilation}")
    h, w = x.shape[2:]
    out_h = (h - 1) * stride[0] - 2 * ph + dilation[0] * (kh - 1) + oph + 1
    out_w = (w - 1) * stride[1] - 2 * pw + dilation[1] * (kw - 1) + opw + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"{op}: output size {out_h}x{out_w} is too small (input {x.shape}, weight "
                         f"{weight.shape}, stride {stride}, padding {(ph, pw)})")
    y = Conv2dInputGrad.apply(x, weight, input_hw=(out_h, out_w), stride=stride,
                              padding=(ph, ph, pw, pw), dilation=dilation, groups=groups)
    y = _add_bias(op, y, bias, cg_out * groups)
    return y.squeeze(0) if unbatched else y


def _pool_args(op, x, kernel_size, stride, padding, dilation, ceil_mode):
    kernel = _pair(kernel_size, op, "kernel_size", 1)
    stride = kernel if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) \
        else _pair(stride, op, "stride", 1)
    padding = _pair(padding, op, "padding", 0)
    dilation = _pair(dilation, op, "dilation", 1)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{op}: padding should be at most half of the kernel size, got padding "
                         f"{padding} for kernel {kernel}")
    h, w = x.shape[2:]
    oh = pool_output_size(h, kernel[0], stride[0], padding[0], dilation[0], ceil_mode)
    ow = pool_output_size(w, kernel[1], stride[1], padding[1], dilation[1], ceil_mode)
    if oh < 1 or ow < 1:
        raise ValueError(f"{op}: kernel {kernel} (dilation {dilation}) is larger than the padded input "
                         f"{h + 2 * padding[0]}x{w + 2 * padding[1]} (input {x.shape}, padding {padding})")
    for size, out, k, s, p, d in zip((h, w), (oh, ow), kernel, stride, padding, dilation):
        # only windows starting in the left padding can miss the input (PyTorch does not check
        # and returns undefined indices there; we refuse)
        for o in range(out):
            start = o * s - p
            if start >= 0:
                break
            if not any(0 <= start + i * d < size for i in range(k)):
                raise ValueError(f"{op}: with kernel {kernel}, stride {stride}, padding {padding} and "
                                 f"dilation {dilation} a window of the input {x.shape} lies entirely "
                                 "in the padding")
    return kernel, stride, padding, dilation


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """2-D max pooling like ``torch.nn.functional.max_pool2d`` (padding counts as -inf; ties go
    to the first maximum; ``return_indices`` gives int64 indices into each H*W plane)."""
    op = "max_pool2d"
    _check_image_input(op, input)
    x, unbatched = _batched(input)
    kernel, stride, padding, dilation = _pool_args(op, x, kernel_size, stride, padding, dilation, ceil_mode)
    sink = {} if return_indices else None
    y = MaxPool2d.apply(x, kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                        ceil_mode=bool(ceil_mode), sink=sink)
    if unbatched:
        y = y.squeeze(0)
    if not return_indices:
        return y
    plane = max_pool2d_flat_indices(x._be, sink["argmax"], x.shape, kernel, stride, padding, dilation,
                                    plane=True)
    indices = x._const(plane)
    return y, (indices.squeeze(0) if unbatched else indices)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """2-D average pooling like ``torch.nn.functional.avg_pool2d`` (``divisor_override`` is not
    supported and must be None)."""
    op = "avg_pool2d"
    if divisor_override is not None:
        raise NotImplementedError(f"{op}: divisor_override is not supported")
    _check_image_input(op, input)
    x, unbatched = _batched(input)
    kernel, stride, padding, _ = _pool_args(op, x, kernel_size, stride, padding, 1, ceil_mode)
    y = AvgPool2d.apply(x, kernel=kernel, stride=stride, padding=padding, ceil_mode=bool(ceil_mode),
                        count_include_pad=bool(count_include_pad))
    return y.squeeze(0) if unbatched else y


def _adaptive_matrix(be, in_len, out_len, dtype):
    """(out_len, in_len) averaging matrix of PyTorch's adaptive windows
    [floor(i*in/out), ceil((i+1)*in/out))."""
    xp = be.xp
    i = xp.arange(out_len, dtype=xp.int64)
    start = (i * in_len) // out_len
    end = -((-(i + 1) * in_len) // out_len)
    pos = xp.arange(in_len, dtype=xp.int64)
    inside = (pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])
    return inside.astype(dtype) / (end - start).astype(dtype)[:, None]


def adaptive_avg_pool2d(input, output_size):
    """Adaptive average pooling like ``torch.nn.functional.adaptive_avg_pool2d``: any output size
    (None keeps that dimension). Size 1 is a mean, sizes that divide the input are avg_pool2d, the
    rest two products with constant averaging matrices."""
    op = "adaptive_avg_pool2d"
    _check_image_input(op, input)
    x, unbatched = _batched(input)
    if isinstance(output_size, (list, tuple)):
        if len(output_size) != 2:
            raise ValueError(f"{op}: output_size must be an int or a pair, got {output_size!r}")
        size = tuple(output_size)
    else:
        size = (output_size, output_size)
    h, w = x.shape[2:]
    size = (h if size[0] is None else size[0], w if size[1] is None else size[1])
    size = _pair(size, op, "output_size", 1)
    oh, ow = size
    if (oh, ow) == (1, 1):
        y = x.mean(axis=(2, 3), keepdims=True)
    elif h % oh == 0 and w % ow == 0:
        kernel = (h // oh, w // ow)
        y = AvgPool2d.apply(x, kernel=kernel, stride=kernel, padding=(0, 0), ceil_mode=False,
                            count_include_pad=True)
    else:
        rows = x._const(_adaptive_matrix(x._be, h, oh, x.dtype))
        cols = x._const(_adaptive_matrix(x._be, w, ow, x.dtype).T)
        y = rows.matmul(x).matmul(cols)
    return y.squeeze(0) if unbatched else y
