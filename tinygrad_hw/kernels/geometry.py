"""Output sizes and index ranges of convolution and pooling windows (plain integer arithmetic)."""
from __future__ import annotations

__all__ = ["conv_output_size", "pool_output_size", "check_conv_shapes", "valid_range"]


def conv_output_size(size: int, kernel: int, stride: int, pad_lo: int, pad_hi: int, dilation: int) -> int:
    """Number of output positions of a convolution along one axis (may be <= 0 when too small)."""
    return (size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) // stride + 1


def pool_output_size(size, kernel, stride, pad, dilation, ceil_mode) -> int:
    """Output length of a pooling window along one axis, with PyTorch's ceil_mode rule: in ceil
    mode the last window must start inside the input or the left padding."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def check_conv_shapes(name, x_shape, w_shape, groups):
    """The input's channels (axis 1) must be the weight's input channels times ``groups``."""
    if x_shape[1] != w_shape[1] * groups:
        expected = w_shape[1] * groups
        raise ValueError(f"{name}: input of shape {tuple(x_shape)} has {x_shape[1]} channels, but "
                         f"weight {tuple(w_shape)} with groups={groups} expects (N, {expected}, H, W)")


def valid_range(out_len, in_len, stride, pad, offset):
    """Outputs [lo, hi) whose window element at ``offset`` (kernel index * dilation) falls inside
    the input, and the input index that output ``lo`` reads."""
    lo = max(0, -(-(pad - offset) // stride))
    hi = min(out_len, (in_len - 1 + pad - offset) // stride + 1)
    return lo, max(lo, hi), lo * stride - pad + offset
