"""Argument checks shared by the layers (:mod:`tinygrad_hw.nn.layers`, :mod:`~tinygrad_hw.nn.loss`)
and the functions of :mod:`tinygrad_hw.nn.functional`, so that each rule is written once.

Every check raises ``TypeError`` or ``ValueError`` with a message that starts with ``name``, the
function or layer being called.
"""
from __future__ import annotations

import numbers
import operator

from ..tensor import Tensor

__all__ = ["check_tensor", "check_float", "check_probability", "positive_int", "pair",
           "REDUCTIONS", "legacy_reduction", "check_reduction", "check_image_input",
           "check_weight", "check_bias", "conv_geometry"]


def check_tensor(name, x, what="input"):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected {what} to be a Tensor, got {type(x).__name__}")


def check_float(name, x, what="input"):
    check_tensor(name, x, what)
    if x.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating point {what}, got dtype {x.dtype}")


def check_probability(name, p):
    if not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{name}: dropout probability has to be between 0 and 1, but got {p}")


def positive_int(name, what, value):
    """``value`` must be an int > 0 (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}: {what} must be a positive int, got {value!r}")


def pair(value, op, what, minimum):
    """An int or a pair of ints as a pair, each at least ``minimum``."""
    # the usual arguments first (every layer call checks a few): a plain int, a pair of them
    kind = type(value)
    if kind is int:
        if value >= minimum:
            return (value, value)
    elif kind is tuple and len(value) == 2:
        a, b = value
        if type(a) is int and type(b) is int and a >= minimum and b >= minimum:
            return value
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


REDUCTIONS = ("mean", "sum", "none")


def legacy_reduction(size_average, reduce, reduction):
    """PyTorch's deprecated ``size_average`` / ``reduce`` arguments, mapped onto ``reduction``."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


def check_reduction(name, reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of {REDUCTIONS}, got {reduction!r}")


def check_image_input(op, x, unbatched_ok=True):
    """Checks that ``x`` is a float Tensor of 4 dims (or 3: one unbatched image)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected input to be a Tensor, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating point input, got dtype {x.dtype}")
    if x.ndim != 4 and not (unbatched_ok and x.ndim == 3):
        raise ValueError(f"{op}: expected a 4-D input (N, C, H, W) or a 3-D unbatched input "
                         f"(C, H, W), got shape {x.shape}")


def check_weight(op, weight, x):
    if not isinstance(weight, Tensor):
        raise TypeError(f"{op}: expected weight to be a Tensor, got {type(weight).__name__}")
    if weight.ndim != 4:
        raise ValueError(f"{op}: expected a 4-D weight, got shape {weight.shape}")
    if weight.dtype != x.dtype:
        raise TypeError(f"{op}: input dtype {x.dtype} and weight dtype {weight.dtype} differ")


def check_bias(op, bias, channels, dtype):
    if not isinstance(bias, Tensor):
        raise TypeError(f"{op}: expected bias to be a Tensor or None, got {type(bias).__name__}")
    if bias.shape != (channels,):
        raise ValueError(f"{op}: expected a bias of shape ({channels},), got {bias.shape}")
    if bias.dtype != dtype:
        raise TypeError(f"{op}: input dtype {dtype} and bias dtype {bias.dtype} differ")


def conv_geometry(op, groups, stride, dilation):
    """Validates ``groups``; ``stride`` and ``dilation`` as pairs of positive ints."""
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    return pair(stride, op, "stride", 1), pair(dilation, op, "dilation", 1)
