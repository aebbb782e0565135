"""The affine map ``input @ weight.T + bias``."""
from __future__ import annotations

from ...ops.linalg import Linear
from ..validation import check_float, check_tensor

__all__ = ['linear']


def linear(input, weight, bias=None):
    """``input @ weight.T + bias`` with ``weight`` (out_features, in_features), ``bias``
    (out_features,) or None; ``input`` (..., in_features)."""
    check_float("linear", input)
    check_tensor("linear", weight, "weight")
    if weight.ndim != 2:
        raise ValueError(f"linear: expected a 2-D weight (out_features, in_features), got {weight.shape}")
    if input.ndim == 0 or input.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input of shape {input.shape} has last dim "
                         f"{input.shape[-1] if input.ndim else None}, expected "
                         f"in_features={weight.shape[1]} (weight {weight.shape})")
    if weight.dtype != input.dtype:
        raise TypeError(f"linear: input dtype {input.dtype} and weight dtype {weight.dtype} differ")
    if bias is None:
        return Linear.apply(input, weight)
    check_tensor("linear", bias, "bias")
    if bias.shape != (weight.shape[0],):
        raise ValueError(f"linear: expected a bias of shape ({weight.shape[0]},), got {bias.shape}")
    if bias.dtype != input.dtype:
        raise TypeError(f"linear: input dtype {input.dtype} and bias dtype {bias.dtype} differ")
    return Linear.apply(input, weight, bias)
