"""Dropout of elements and of whole channels."""
from __future__ import annotations

from ...ops import Mul
from ..validation import check_float, check_probability

__all__ = ['dropout', 'dropout2d']


def _apply_mask(input, keep):
    """``input * keep / (1 - p)``: the mask is a constant in the graph, so backward (of any
    order) reuses exactly the mask drawn in forward. ``keep`` has the input's dtype and a shape
    that broadcasts to it: the product is ``Mul`` itself (what ``*`` checks is known)."""
    return Mul.apply(input, input._const(keep))


def dropout(input, p=0.5, training=True, inplace=False):
    """Inverted dropout: zero each element with probability ``p`` and scale the rest by
    1 / (1 - p); the identity when not ``training`` (or p == 0). The mask comes from the
    backend's generator (``hw.manual_seed``). ``inplace`` is accepted and ignored (never in place)."""
    check_probability("dropout", p)
    check_float("dropout", input)
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
    check_probability("dropout2d", p)
    check_float("dropout2d", input)
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
