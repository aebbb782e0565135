"""Activation functions: ReLU and its relatives, sigmoid, tanh, GELU, SiLU, ELU, softplus, softmax."""
from __future__ import annotations

import math

from ...ops.nn import NormalCdf
from ..validation import check_float

__all__ = ['relu', 'leaky_relu', 'sigmoid', 'tanh', 'gelu', 'silu', 'elu', 'softplus', 'softmax', 'log_softmax',
           'hardtanh', 'relu6']


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
    check_float("softplus", input)
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


def gelu(input, approximate="none"):
    """x * Phi(x) (``approximate='none'``) or the tanh approximation (``'tanh'``)."""
    check_float("gelu", input)
    if approximate == "none":
        return input * NormalCdf.apply(input)
    if approximate == "tanh":
        inner = (input + input * input * input * 0.044715) * math.sqrt(2.0 / math.pi)
        return input * 0.5 * (inner.tanh() + 1.0)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    """Clamp into [min_val, max_val] (the gradient is 0 outside, as in PyTorch)."""
    if min_val > max_val:
        raise ValueError(f"hardtanh: min_val {min_val} is greater than max_val {max_val}")
    return input.clamp(min_val, max_val)


def relu6(input, inplace=False):
    return hardtanh(input, 0.0, 6.0)
