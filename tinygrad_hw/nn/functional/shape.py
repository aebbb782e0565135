"""Shape helpers: flatten, constant padding, one-hot encoding."""
from __future__ import annotations

import numpy

from ...tensor import Tensor
from ..validation import check_tensor

__all__ = ['flatten', 'pad', 'one_hot', 'embedding']


def flatten(input, start_dim=0, end_dim=-1):
    return input.flatten(start_dim, end_dim)


def pad(input, pad, mode="constant", value=None):
    """Constant padding (``torch.nn.functional.pad``'s order); other modes are not supported."""
    if mode != "constant":
        raise NotImplementedError(f"pad: only mode='constant' is supported, got {mode!r}")
    return input.pad(pad, 0.0 if value is None else value)


def one_hot(tensor, num_classes=-1):
    """int64 one-hot encoding along a new last axis (``torch.nn.functional.one_hot``)."""
    check_tensor("one_hot", tensor)
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


def embedding(input, weight, padding_idx=None):
    """Rows of ``weight`` at the integer indices ``input`` (any shape); the gradient is scattered
    back to the rows (none to ``padding_idx``'s row, as in PyTorch)."""
    check_tensor("embedding", weight, "weight")
    index = input if isinstance(input, Tensor) else Tensor(input, backend=weight._be)
    if index.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be integers, got {index.dtype}")
    n = weight.shape[0]
    if index.numel() and (int(index.data.min()) < 0 or int(index.data.max()) >= n):
        raise IndexError(f"embedding: index out of range for {n} rows (got {int(index.data.min())}.."
                         f"{int(index.data.max())})")
    out = weight[index]
    if padding_idx is not None:
        keep = (index != padding_idx % n).unsqueeze(-1)
        out = out.where(keep, out.detach())  # the padding row gets no gradient
    return out
