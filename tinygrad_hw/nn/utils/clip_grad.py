"""Gradient clipping with ``torch.nn.utils``' semantics: each ``.grad`` Tensor is updated in
place (it gets the clipped array), as in PyTorch."""
from __future__ import annotations

import math

import numpy

from ...tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_", "get_total_norm"]


def _grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def _norm_of(array, be, norm_type) -> float:
    xp = be.xp
    a = xp.abs(array.astype(numpy.float64, copy=False))
    if norm_type == math.inf:
        return float(a.max()) if a.size else 0.0
    if norm_type == 2:
        return float(xp.sqrt((a * a).sum()))
    return float((a ** norm_type).sum() ** (1.0 / norm_type))


def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite=False, foreach=None) -> Tensor:
    """The ``norm_type``-norm of all ``tensors`` together (the norm of their norms), as a 0-d
    float tensor (of the first tensor's dtype and backend; 0 when there are none)."""
    del foreach  # one path here
    norm_type = float(norm_type)
    if norm_type <= 0 and norm_type != -math.inf:
        raise ValueError(f"norm_type must be positive or inf, got {norm_type}")
    tensors = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    if not tensors:
        return Tensor(0.0)
    norms = [_norm_of(t.data, t._be, norm_type) for t in tensors]
    if norm_type == math.inf:
        total = max(norms)
    else:
        total = float(numpy.sum(numpy.asarray(norms) ** norm_type) ** (1.0 / norm_type))
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is "
                           "non-finite, so it cannot be clipped. To disable this error and scale the "
                           "gradients by the non-finite norm anyway, set `error_if_nonfinite=False`")
    first = tensors[0]
    return Tensor._make(first._be.xp.asarray(total, dtype=first.dtype), first._be)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None) -> Tensor:
    """Scale the gradients of ``parameters`` in place so that their total ``norm_type``-norm is
    at most ``max_norm``; returns the total norm before clipping. As in PyTorch, the factor is
    ``min(max_norm / (total + 1e-6), 1)`` and is applied even when it is 1."""
    grads = _grads(parameters)
    total = get_total_norm(grads, norm_type, error_if_nonfinite, foreach)
    if not grads:
        return total
    coef = min(float(max_norm) / (float(total.item()) + 1e-6), 1.0)
    for g in grads:  # a new array in the same .grad Tensor: an array shared by two gradients
        g.data = g.data * g.data.dtype.type(coef)  # (or a read-only view) is not scaled twice
    return total


def clip_grad_value_(parameters, clip_value, foreach=None) -> None:
    """Clamp every gradient of ``parameters`` into ``[-clip_value, clip_value]``, in place."""
    del foreach
    clip_value = float(clip_value)
    for g in _grads(parameters):
        g.data = g._be.xp.clip(g.data, -clip_value, clip_value).astype(g.data.dtype, copy=False)
