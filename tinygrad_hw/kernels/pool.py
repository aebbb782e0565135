"""Max and average pooling on raw arrays (NCHW), forward and backward.

Like PyTorch: padding never wins a max-pooling window, ties go to the first maximum in row-major
window order, and a NaN makes the window's output NaN. The differentiable ops that call these
are in :mod:`tinygrad_hw.ops.pool`. With numba installed, max pooling's forward (values and
first-maximum positions) and backward (the scatter to the maxima) are single compiled passes
(:mod:`~tinygrad_hw.kernels.compiled`); the NumPy code here is the reference.
"""
from __future__ import annotations

import math

from . import compiled, cuda
from .geometry import pool_output_size, valid_range
from .parallel import map_chunks, split_ranges
from .scratch import pad_image, workspace

__all__ = ["max_pool2d_forward", "max_pool2d_flat_indices", "max_pool2d_scatter", "max_pool2d_gather",
           "MaxPoolRoute", "avg_pool2d_forward", "avg_pool2d_backward"]


def _pool_windows(be, x, kernel, stride, pads, dilation, out_hw, fill):
    """All pooling windows of ``x`` (N, C, H, W) as a contiguous (kh*kw, N, C, OH, OW) scratch
    array: one copy. Windows that tile the input exactly are cut by a reshape, others by a strided view of
    the input padded with ``fill`` (right/bottom padding extended for ceil_mode)."""
    xp = be.xp
    n, c, h, w = x.shape
    kh, kw = kernel
    sh, sw = stride
    dh, dw = dilation
    oh, ow = out_hw
    if (kh, kw) == (sh, sw) and dilation == (1, 1) and (oh * sh, ow * sw) == (h, w) and not any(pads):
        # the windows tile the input: a reshape, no padding and no strided view
        view = x.reshape(n, c, oh, kh, ow, kw).transpose(3, 5, 0, 1, 2, 4)
    else:
        pt, pl = pads[0], pads[2]
        # rows/columns the last window reaches beyond the input (ceil_mode may go past the padding)
        pb = max(0, (oh - 1) * sh + dh * (kh - 1) + 1 - pt - h)
        pr = max(0, (ow - 1) * sw + dw * (kw - 1) + 1 - pl - w)
        xpad = pad_image(be, x, (pt, pb, pl, pr), "pool_pad", fill)
        s_n, s_c, s_h, s_w = xpad.strides
        view = be.as_strided(xpad, (kh, kw, n, c, oh, ow),
                             (dh * s_h, dw * s_w, s_n, s_c, sh * s_h, sw * s_w))
    out = workspace(be, "pool_windows", (kh * kw, n, c, oh, ow), x.dtype)
    xp.copyto(out.reshape(kh, kw, n, c, oh, ow), view)
    return out


def _pool_tiles(kernel, stride, padding, dilation, input_shape, out_hw):
    """Whether the pooling windows tile (a crop of) the input: stride = kernel, no padding, no
    dilation, and every window inside the input."""
    return (tuple(kernel) == tuple(stride) and not any(padding) and tuple(dilation) == (1, 1)
            and out_hw[0] * kernel[0] <= input_shape[2] and out_hw[1] * kernel[1] <= input_shape[3])


def _two_by_two(kernel, stride, padding, dilation, input_shape, out_hw):
    """2x2 windows at stride 2 that tile (a crop of) the input: the compiled special case."""
    return tuple(kernel) == (2, 2) and _pool_tiles(kernel, stride, padding, dilation, input_shape, out_hw)


def max_pool2d_forward(be, x, kernel, stride, padding=(0, 0), dilation=(1, 1), ceil_mode=False):
    """Max pooling of ``x`` (N, C, H, W). Returns ``(y, argmax)`` where ``argmax`` (int8/int16/int32,
    shape of ``y``) is the kernel position kh_index * kw + kw_index of each window's maximum.

    Like PyTorch: padding never wins (padded cells are not candidates), ties go to the first
    maximum in row-major window order, and a NaN in a window makes the output NaN. (PyTorch's CPU
    kernel then points at the window's last NaN; here the index points at the first.)"""
    xp = be.xp
    n, c, h, w = x.shape
    kh, kw = kernel
    out_hw = (pool_output_size(h, kh, stride[0], padding[0], dilation[0], ceil_mode),
              pool_output_size(w, kw, stride[1], padding[1], dilation[1], ceil_mode))
    oh, ow = out_hw
    positions = kh * kw
    idx_dtype = xp.int8 if positions <= 127 else (xp.int16 if positions <= 32767 else xp.int32)
    fused = cuda.for_backend(be)
    if fused is not None and fused.supports(x):  # one kernel (kernels/cuda.py)
        return fused.max_pool2d_forward(x, out_hw, kernel, stride, padding, dilation, idx_dtype)
    y = xp.empty((n, c, oh, ow), dtype=x.dtype)
    argmax = xp.zeros((n, c, oh, ow), dtype=idx_dtype)
    if compiled.active(be, x):
        xc = xp.ascontiguousarray(x)

        two = _two_by_two(kernel, stride, padding, dilation, x.shape, out_hw)

        def chunk(span):
            n0, n1 = span
            if two:
                compiled.max_pool_2x2_forward(xc[n0:n1], y[n0:n1], argmax[n0:n1])
            else:
                compiled.max_pool_forward(xc[n0:n1], y[n0:n1], argmax[n0:n1], kh, kw, stride[0], stride[1],
                                          padding[0], padding[1], dilation[0], dilation[1])

        map_chunks(be, chunk, split_ranges(be, n, x.nbytes))
        return y, argmax

    def chunk(span):
        n0, n1 = span
        _max_pool_images(be, x[n0:n1], y[n0:n1], argmax[n0:n1], kernel, stride, padding, dilation)

    map_chunks(be, chunk, split_ranges(be, n, x.nbytes))
    return y, argmax


def _max_pool_images(be, x, y, argmax, kernel, stride, padding, dilation):
    """Fill ``y`` with the window maxima of images ``x`` and ``argmax`` (zeros) with their kernel
    positions."""
    xp = be.xp
    h, w = x.shape[2:]
    kh, kw = kernel
    oh, ow = y.shape[2:]
    positions = kh * kw
    if _pool_tiles(kernel, stride, padding, dilation, x.shape, (oh, ow)):
        # windows that tile the input are strided views of it: no window copy, no padding
        windows = [x[:, :, i:oh * kh:kh, j:ow * kw:kw] for i in range(kh) for j in range(kw)]
        xp.copyto(y, windows[0])
        for cell in windows[1:]:
            xp.maximum(y, cell, out=y)
    else:
        pads = (padding[0], padding[0], padding[1], padding[1])
        windows = _pool_windows(be, x, kernel, stride, pads, dilation, (oh, ow), -math.inf)
        windows.max(axis=0, out=y)
    is_nan = y != y
    has_nan = bool(is_nan.any()) if be.name == "numpy" else True  # skip the NaN pass when possible
    # the first maximum's position = how many leading positions miss it: count, position by
    # position, the outputs whose window has not matched yet. A position only counts as a
    # match where its window cell is inside the input (padding never wins, even against -inf).
    unmatched = xp.ones(y.shape, dtype=bool)
    for t in range(positions - 1):
        i, j = divmod(t, kw)
        r0, r1, _ = valid_range(oh, h, stride[0], padding[0], i * dilation[0])
        c0, c1, _ = valid_range(ow, w, stride[1], padding[1], j * dilation[1])
        if r0 < r1 and c0 < c1:
            block = (slice(None), slice(None), slice(r0, r1), slice(c0, c1))
            cand = windows[t][block]
            miss = cand != y[block]
            if has_nan:  # a NaN output is matched by the window's first NaN
                miss &= ~(is_nan[block] & (cand != cand))
            unmatched[block] &= miss
        argmax += unmatched


def max_pool2d_flat_indices(be, argmax, input_shape, kernel, stride, padding, dilation, plane=False):
    """Where each window's maximum sits in the input: int64 indices into the flattened input
    (N*C*H*W), or with ``plane=True`` PyTorch's ``return_indices`` format (index into H*W)."""
    xp = be.xp
    n, c, h, w = input_shape
    kw = kernel[1]
    oh, ow = argmax.shape[2:]
    # input index of each window's first cell, separable in rows and columns
    row0 = xp.arange(oh, dtype=xp.int64) * stride[0] - padding[0]
    col0 = xp.arange(ow, dtype=xp.int64) * stride[1] - padding[1]
    base = row0[:, None] * w + col0[None, :]
    # offset of kernel position t inside the flattened plane
    t = xp.arange(kernel[0] * kw, dtype=xp.int64)
    offset = (t // kw) * dilation[0] * w + (t % kw) * dilation[1]
    idx = offset[argmax.astype(xp.intp)]
    idx += base
    if not plane:
        idx += (xp.arange(n * c, dtype=xp.int64) * (h * w)).reshape(n, c, 1, 1)
    return idx


def max_pool2d_scatter(be, gy, flat_index, input_shape, overlapping=True):
    """Send each output gradient to its window's maximum: a (N, C, H, W) array, zeros elsewhere.
    Overlapping windows may share a maximum, whose gradients then add up."""
    xp = be.xp
    gx = xp.zeros(math.prod(input_shape), dtype=gy.dtype)

    def chunk(span):  # the images' cells are disjoint: chunks of images scatter independently
        n0, n1 = span
        index, grads = flat_index[n0:n1].reshape(-1), gy[n0:n1].reshape(-1)
        if overlapping:
            be.scatter_add(gx, index, grads)
        else:  # every input cell is in at most one window: a plain assignment is a scatter
            gx[index] = grads

    map_chunks(be, chunk, split_ranges(be, input_shape[0], gx.nbytes))
    return gx.reshape(input_shape)


def max_pool2d_gather(be, gx, flat_index):
    """The adjoint of ``max_pool2d_scatter``: each window reads ``gx`` at its maximum."""
    return gx.reshape(-1)[flat_index.reshape(-1)].reshape(flat_index.shape)


class MaxPoolRoute:
    """Where the windows' maxima of one max-pooling sit (flat int64 indices into the input), for
    the scatter of the backward pass and the gather of its adjoint. (A scatter through kh*kw
    masked writes into strided views of the input measured slower on NumPy, even when the
    windows tile the input.)"""

    def __init__(self, be, argmax, input_shape, kernel, stride, padding, dilation):
        self.be, self.input_shape = be, input_shape
        self.fused = cuda.for_backend(be)
        # the GPU kernel and the compiled scatter read the kernel positions directly; the
        # flat indices are made on first use
        self.argmax, self.geometry = argmax, (kernel, stride, padding, dilation)
        self.flat_index = None
        # windows overlap when the stride is shorter than the dilated kernel
        self.overlapping = any(s < d * (k - 1) + 1 for s, d, k in zip(stride, dilation, kernel))

    def scatter(self, gy):
        if self.fused is not None and self.fused.supports(gy):
            return self.fused.max_pool2d_backward(gy, self.argmax, self.input_shape, *self.geometry)
        if compiled.active(self.be, gy):
            return self._compiled_scatter(gy)
        return max_pool2d_scatter(self.be, gy, self._flat_index(), self.input_shape, self.overlapping)

    def _flat_index(self):
        if self.flat_index is None:
            self.flat_index = max_pool2d_flat_indices(self.be, self.argmax, self.input_shape,
                                                      *self.geometry)
        return self.flat_index

    def _compiled_scatter(self, gy):
        xp = self.be.xp
        (_, kw), stride, padding, dilation = self.geometry
        gy = xp.ascontiguousarray(gy)
        gx = xp.empty(self.input_shape, dtype=gy.dtype)

        two = _two_by_two(*self.geometry, self.input_shape, gy.shape[2:])

        def chunk(span):
            n0, n1 = span
            if two:
                compiled.max_pool_2x2_backward(gy[n0:n1], self.argmax[n0:n1], gx[n0:n1])
                return
            compiled.max_pool_backward(gy[n0:n1], self.argmax[n0:n1], gx[n0:n1], kw, stride[0], stride[1],
                                       padding[0], padding[1], dilation[0], dilation[1])

        map_chunks(self.be, chunk, split_ranges(self.be, self.input_shape[0], gx.nbytes))
        return gx

    def gather(self, gx):
        return max_pool2d_gather(self.be, gx, self._flat_index())


def _avg_pool_divisor(be, in_len, out_len, kernel, stride, pad, count_include_pad, dtype):
    """Divisor of every output along one axis (PyTorch's rule: a window is clipped to the padded
    input, and with count_include_pad=False further to the input)."""
    xp = be.xp
    start = xp.arange(out_len, dtype=xp.int64) * stride - pad
    end = xp.minimum(start + kernel, in_len + pad)
    if count_include_pad:
        return (end - start).astype(dtype)
    return (xp.minimum(end, in_len) - xp.maximum(start, 0)).astype(dtype)


def avg_pool2d_forward(be, x, kernel, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True):
    """Average pooling of ``x`` (N, C, H, W) (zero padding; PyTorch's divisor rules)."""
    n, c, h, w = x.shape
    out_hw = (pool_output_size(h, kernel[0], stride[0], padding[0], 1, ceil_mode),
              pool_output_size(w, kernel[1], stride[1], padding[1], 1, ceil_mode))
    pads = (padding[0], padding[0], padding[1], padding[1])
    windows = _pool_windows(be, x, kernel, stride, pads, (1, 1), out_hw, 0.0)
    y = windows.sum(axis=0)
    y /= _avg_pool_divisors(be, (h, w), out_hw, kernel, stride, padding, count_include_pad, x.dtype)
    return y


def _avg_pool_divisors(be, in_hw, out_hw, kernel, stride, padding, count_include_pad, dtype):
    rows = _avg_pool_divisor(be, in_hw[0], out_hw[0], kernel[0], stride[0], padding[0], count_include_pad, dtype)
    cols = _avg_pool_divisor(be, in_hw[1], out_hw[1], kernel[1], stride[1], padding[1], count_include_pad, dtype)
    return rows[:, None] * cols[None, :]


def avg_pool2d_backward(be, gy, input_shape, kernel, stride, padding=(0, 0), ceil_mode=False,
                        count_include_pad=True):
    """Gradient of ``avg_pool2d_forward``: each output's gradient, divided by its divisor, is
    spread over its window (kh*kw strided adds into a padded buffer)."""
    xp = be.xp
    n, c, h, w = input_shape
    kh, kw = kernel
    sh, sw = stride
    oh, ow = gy.shape[2:]
    share = gy / _avg_pool_divisors(be, (h, w), (oh, ow), kernel, stride, padding, count_include_pad,
                                    gy.dtype)
    pt, pl = padding
    if (kh, kw) == (sh, sw) and (oh * sh, ow * sw) == (h, w) and not any(padding):
        # windows tile the input: every cell receives exactly one share (one broadcast copy)
        gx = xp.empty(input_shape, dtype=gy.dtype)
        xp.copyto(gx.reshape(n, c, oh, kh, ow, kw), share[:, :, :, None, :, None])
        return gx
    hp = max(h + 2 * pt, (oh - 1) * sh + kh)
    wp = max(w + 2 * pl, (ow - 1) * sw + kw)
    acc = xp.zeros((n, c, hp, wp), dtype=gy.dtype)
    for i in range(kh):
        for j in range(kw):
            acc[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw] += share
    return xp.ascontiguousarray(acc[:, :, pt:pt + h, pl:pl + w])


