"""Batch normalisation, on batch statistics (training) or running statistics."""
from __future__ import annotations

from ...ops.nn import BatchNormTrain
from ..validation import check_float, check_tensor

__all__ = ['batch_norm']


def _bn_check(name, t, what, channels, x):
    if t is None:
        return
    check_tensor(name, t, what)
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
    check_float(name, input)
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
            return BatchNormTrain.apply(input, **params)
        return BatchNormTrain.apply(input, weight, bias, **params)
    if running_mean is None or running_var is None:
        raise ValueError(f"{name}: running_mean and running_var are needed when training=False")
    # eval: an affine map with constant statistics; plain Tensor ops are differentiable as is
    invstd = running_var._const(1.0 / xp.sqrt(running_var.data + eps))
    scale = invstd if weight is None else weight * invstd
    shift = -(running_mean.detach() * scale)
    if bias is not None:
        shift = shift + bias
    return input * scale.reshape(bshape) + shift.reshape(bshape)
