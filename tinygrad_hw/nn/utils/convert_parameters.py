"""One flat vector of all parameters and back (``torch.nn.utils.parameters_to_vector``)."""
from __future__ import annotations

from ...tensor import Tensor, cat

__all__ = ["parameters_to_vector", "vector_to_parameters"]


def parameters_to_vector(parameters) -> Tensor:
    """The parameters flattened and concatenated in order (differentiable)."""
    return cat([p.reshape(-1) for p in parameters])


def vector_to_parameters(vec: Tensor, parameters) -> None:
    """Copy consecutive slices of ``vec`` into the parameters' arrays (in place, no gradient)."""
    if not isinstance(vec, Tensor):
        raise TypeError(f"expected vec to be a Tensor, got {type(vec).__name__}")
    parameters = list(parameters)
    total = sum(p.numel() for p in parameters)
    if vec.numel() != total:
        raise ValueError(f"vector_to_parameters: vec has {vec.numel()} elements, the parameters {total}")
    start = 0
    for p in parameters:
        n = p.numel()
        p.data[...] = vec.data[start:start + n].reshape(p.shape).astype(p.dtype, copy=False)
        start += n
