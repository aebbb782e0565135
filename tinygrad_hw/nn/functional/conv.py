"""Convolution and pooling with ``torch.nn.functional``'s signatures (the ops are in :mod:`tinygrad_hw.ops.conv` and :mod:`tinygrad_hw.ops.pool`, the array kernels in :mod:`tinygrad_hw.kernels`)."""
from __future__ import annotations

from ...kernels.geometry import check_conv_shapes, conv_output_size, pool_output_size
from ...kernels.pool import max_pool2d_flat_indices
from ...ops.conv import Conv2d, Conv2dInputGrad, Conv2dReLU
from ...ops.pool import AvgPool2d, MaxPool2d
from ..validation import check_bias, check_image_input, check_weight, conv_geometry, pair

__all__ = ['conv2d', 'conv2d_relu', 'conv_transpose2d', 'max_pool2d', 'avg_pool2d', 'adaptive_avg_pool2d']


def _batched(x):
    """(x as 4-D, whether it was unbatched)."""
    return (x.unsqueeze(0), True) if x.ndim == 3 else (x, False)


def _add_bias(op, y, bias, channels):
    if bias is None:
        return y
    check_bias(op, bias, channels, y.dtype)
    return y + bias.reshape(1, channels, 1, 1)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation like ``torch.nn.functional.conv2d``.

    ``input`` (N, C, H, W) or (C, H, W); ``weight`` (O, C/groups, kh, kw); ``bias`` (O,) or None;
    ``padding`` an int, a pair, ``"valid"`` or ``"same"`` (stride 1 only; an odd total padding puts
    the extra row/column at the bottom/right, as PyTorch does)."""
    return _conv2d(Conv2d, input, weight, bias, stride, padding, dilation, groups)


def conv2d_relu(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``relu(conv2d(...))`` as one op (:class:`~tinygrad_hw.ops.conv.Conv2dReLU`), the same values
    and gradients: what nn.Sequential runs for a Conv2d followed by a ReLU."""
    return _conv2d(Conv2dReLU, input, weight, bias, stride, padding, dilation, groups)


def _conv2d(op_class, input, weight, bias, stride, padding, dilation, groups):
    op = "conv2d"
    check_image_input(op, input)
    check_weight(op, weight, input)
    x, unbatched = _batched(input)
    stride, dilation = conv_geometry(op, groups, stride, dilation)
    o, cg, kh, kw = weight.shape
    if o % groups:
        raise ValueError(f"{op}: weight has {o} output channels, not divisible by groups={groups}")
    check_conv_shapes(op, x.shape, weight.shape, groups)
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
        ph, pw = pair(padding, op, "padding", 0)
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
        check_bias(op, bias, o, x.dtype)
        inputs += (bias,)
    y = op_class.apply(*inputs, stride=stride, padding=pads, dilation=dilation, groups=groups, out_hw=None)
    return y.squeeze(0) if unbatched else y


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """2-D transposed convolution like ``torch.nn.functional.conv_transpose2d``.

    ``input`` (N, C_in, H, W); ``weight`` (C_in, C_out/groups, kh, kw). Output height
    (H - 1) * stride - 2 * padding + dilation * (kh - 1) + output_padding + 1."""
    op = "conv_transpose2d"
    check_image_input(op, input)
    check_weight(op, weight, input)
    x, unbatched = _batched(input)
    stride, dilation = conv_geometry(op, groups, stride, dilation)
    ph, pw = pair(padding, op, "padding", 0)
    oph, opw = pair(output_padding, op, "output_padding", 0)
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
    kernel = pair(kernel_size, op, "kernel_size", 1)
    stride = kernel if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) \
        else pair(stride, op, "stride", 1)
    padding = pair(padding, op, "padding", 0)
    dilation = pair(dilation, op, "dilation", 1)
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
    check_image_input(op, input)
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
    check_image_input(op, input)
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
    check_image_input(op, input)
    x, unbatched = _batched(input)
    if isinstance(output_size, (list, tuple)):
        if len(output_size) != 2:
            raise ValueError(f"{op}: output_size must be an int or a pair, got {output_size!r}")
        size = tuple(output_size)
    else:
        size = (output_size, output_size)
    h, w = x.shape[2:]
    size = (h if size[0] is None else size[0], w if size[1] is None else size[1])
    size = pair(size, op, "output_size", 1)
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
