"""2-D convolution and pooling on NCHW float tensors, differentiable to any order.

Three layers, bottom up:

* **Array kernels** (``conv2d_forward``, ``conv2d_input_grad``, ``conv2d_weight_grad``,
  ``max_pool2d_forward`` ...): functions of a Backend ``be`` and raw arrays. They use only
  ``be.xp``, ``be.as_strided`` and ``be.scatter_add``, so the same code runs on NumPy and CuPy.
* **Function classes**: ``Conv2d``, ``Conv2dInputGrad`` (= transposed convolution) and
  ``Conv2dWeightGrad`` form a closed family: the backward of each is written with the other two,
  so gradients of any order exist. ``MaxPool2d`` / ``MaxPool2dBackward`` / ``MaxPool2dGather``
  and ``AvgPool2d`` / ``AvgPool2dBackward`` are closed the same way.
* The public functions with PyTorch's signatures (``conv2d``, ``conv_transpose2d``,
  ``max_pool2d``, ``avg_pool2d``, ``adaptive_avg_pool2d``) are in :mod:`tinygrad_hw.nn.functional`,
  above the Tensor in the import order.

How a convolution is computed (im2col): the padded input is viewed through ``as_strided`` as a
(groups, C/groups * kh * kw, images * OH * OW) matrix, copied once into a contiguous column buffer
and multiplied by the weight matrix (groups, O/groups, C/groups * kh * kw), one product per group;
the product is transposed once into NCHW. The weight gradient is one product of the output
gradient (transposed) with the same columns. The input gradient of a stride-1 convolution is a
forward convolution of the output gradient with the flipped, transposed kernel; with a larger
stride the weight's transpose times the output gradient gives columns that col2im folds back by
adding kh * kw strided slices into a padded buffer.

3x3 / stride-1 / undilated / ungrouped convolutions with at least ``WINOGRAD_MIN_CHANNELS``
channels use Winograd's F(2x2, 3x3) on NumPy instead: 16 products of (O, C) by (C, tiles)
matrices, 2.25 times fewer multiplications than im2col, for the forward pass, the input gradient
(through the flipped kernel) and the weight gradient.

On the NumPy backend the batch is cut into chunks of a few images so that the column buffer stays
in the CPU cache while the product reads it; the chunks run in worker threads, each with a
single-threaded BLAS, so the copies run in parallel too; scratch buffers are reused from call to
call (a fresh multi-megabyte allocation costs a page fault per 4 KiB). On the GPU the whole batch
is one chunk: one column buffer, one batched product.

Padding is carried internally as four numbers (top, bottom, left, right) so that
``padding="same"`` with an even kernel needs no extra copy.
"""
from __future__ import annotations

import math
import threading

import numpy

from .function import Function
from .parallel import map_chunks, split_ranges, worker_count

__all__ = [
    "Conv2d", "Conv2dInputGrad", "Conv2dWeightGrad",
    "MaxPool2d", "MaxPool2dBackward", "MaxPool2dGather", "AvgPool2d", "AvgPool2dBackward",
    "conv2d_forward", "conv2d_input_grad", "conv2d_weight_grad", "conv_output_size",
    "max_pool2d_forward", "max_pool2d_flat_indices", "max_pool2d_scatter", "max_pool2d_gather",
    "avg_pool2d_forward", "avg_pool2d_backward", "pool_output_size",
]

# Target size of one chunk's column buffer on the NumPy backend: small enough to stay in the
# cache between the copy that writes it and the product that reads it. Tuned on a 2-core EPYC
# (2 MiB L2 per core, 32 MiB L3); see benchmarks/bench_conv.py.
CHUNK_BYTES = 2 << 20
# Scratch buffers larger than this are allocated per call instead of being kept alive.
_SCRATCH_KEEP_MAX_BYTES = 64 << 20
# Winograd F(2x2, 3x3) for 3x3 / stride 1 / dilation 1 / groups 1 convolutions on NumPy, when
# both channel counts reach WINOGRAD_MIN_CHANNELS and the output map WINOGRAD_MIN_SIZE on each
# side (below that the tile transforms cost more than the 2.25x fewer multiplications save).
# Set WINOGRAD = False to always use im2col.
WINOGRAD = True
WINOGRAD_MIN_CHANNELS = 32
WINOGRAD_MIN_SIZE = 8
# The chunks run in tinygrad_hw.parallel's worker threads (parallel.WORKERS of them), each with a
# single-threaded BLAS.


# ==================================================================================================
# scratch buffers and chunks
# ==================================================================================================
class _ThreadState(threading.local):
    def __init__(self):
        self.buffers = {}
        self.bordered = {}


_local = _ThreadState()


def _workspace(be, slot: str, shape, dtype):
    """A scratch array of ``shape`` for results that do not outlive one kernel call.

    On NumPy the memory is kept per thread, slot and dtype and reused (a fresh multi-megabyte
    array costs a page fault per 4 KiB); elsewhere (CuPy has its own memory pool) it is a fresh
    ``empty``. Two scratch arrays alive at the same time must use different slots.
    """
    xp = be.xp
    if be.name != "numpy":
        return xp.empty(shape, dtype=dtype)
    size = math.prod(shape)
    dtype = xp.dtype(dtype)
    if size * dtype.itemsize > _SCRATCH_KEEP_MAX_BYTES:
        return xp.empty(shape, dtype=dtype)
    key = (slot, dtype.str)
    buf = _local.buffers.get(key)
    if buf is None or buf.size < size:
        buf = xp.empty(max(size, 1), dtype=dtype)
        _local.buffers[key] = buf
    return buf[:size].reshape(shape)


# How many zero-bordered scratch arrays (below) one thread keeps: enough for the input phases of
# every Winograd layer of a network in both directions (each under a megabyte at batch 64).
_BORDERED_KEEP = 32


def _bordered_workspace(be, slot: str, shape, dtype, layout):
    """A scratch array that starts as zeros and is kept per thread for this exact ``shape`` and
    ``layout`` (a hashable description of which cells the caller writes). A caller that always
    writes the same cells for the same key may rely on every other cell still being zero, and
    so skips refilling the borders (a dozen small calls per chunk otherwise)."""
    xp = be.xp
    dtype = xp.dtype(dtype)
    if be.name != "numpy" or math.prod(shape) * dtype.itemsize > _SCRATCH_KEEP_MAX_BYTES:
        return xp.zeros(shape, dtype=dtype)
    cache = _local.bordered
    key = (slot, tuple(shape), dtype.str, layout)
    buf = cache.pop(key, None)
    if buf is None:
        buf = xp.zeros(shape, dtype=dtype)
        while len(cache) >= _BORDERED_KEEP:
            cache.pop(next(iter(cache)))  # the least recently used
    cache[key] = buf  # (re)inserted last: the dict's order is the order of use
    return buf


def _chunks(be, n_images: int, bytes_per_image: int):
    """(start, stop) ranges of images processed together (the whole batch off NumPy)."""
    if be.name != "numpy" or n_images == 0:
        return [(0, n_images)]
    per = max(1, min(n_images, CHUNK_BYTES // max(bytes_per_image, 1)))
    count = -(-n_images // per)
    workers = worker_count()
    if count < workers <= n_images and n_images * bytes_per_image >= (1 << 20):
        count = workers  # enough work to share between the threads
    per = -(-n_images // count)  # even chunks: 64 images in 3 chunks is 22+22+20, not 30+30+4
    return [(s, min(n_images, s + per)) for s in range(0, n_images, per)]


# ==================================================================================================
# geometry
# ==================================================================================================
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


def _pad_image(be, x, pads, slot, fill=0.0):
    """``x`` (N, C, H, W) with (top, bottom, left, right) padding of value ``fill`` (a scratch
    array), or ``x`` itself when there is no padding."""
    pt, pb, pl, pr = pads
    if not (pt or pb or pl or pr):
        return x
    n, c, h, w = x.shape
    out = _workspace(be, slot, (n, c, h + pt + pb, w + pl + pr), x.dtype)
    # fill only the border: the interior is overwritten right after
    out[:, :, :pt].fill(fill)
    out[:, :, pt + h:].fill(fill)
    out[:, :, pt:pt + h, :pl].fill(fill)
    out[:, :, pt:pt + h, pl + w:].fill(fill)
    out[:, :, pt:pt + h, pl:pl + w] = x
    return out


# ==================================================================================================
# convolution kernels: im2col
# ==================================================================================================
def _im2col(be, x, kernel_hw, stride, pads, dilation, groups, out_hw):
    """Columns of images ``x`` (n, C, H, W) as a contiguous (groups, C/groups*kh*kw, n*OH*OW)
    scratch array: one strided view of the padded input, one copy."""
    n, c, _, _ = x.shape
    kh, kw = kernel_hw
    oh, ow = out_hw
    cg = c // groups
    xpad = _pad_image(be, x, pads, "pad")
    s_n, s_c, s_h, s_w = xpad.strides
    view = be.as_strided(
        xpad, (groups, cg, kh, kw, n, oh, ow),
        (cg * s_c, s_c, dilation[0] * s_h, dilation[1] * s_w, s_n, stride[0] * s_h, stride[1] * s_w))
    cols = _workspace(be, "cols", view.shape, x.dtype)
    be.xp.copyto(cols, view)
    return cols.reshape(groups, cg * kh * kw, n * oh * ow)


def _grouped_matmul(be, a, b, slot):
    """``a @ b`` for stacks over groups (g, m, k) @ (g, k, n) into a scratch array."""
    xp = be.xp
    out = _workspace(be, slot, (a.shape[0], a.shape[1], b.shape[2]), a.dtype)
    if a.shape[0] == 1:  # a plain 2-D product skips the stacked loop
        xp.matmul(a[0], b[0], out=out[0])
    else:
        xp.matmul(a, b, out=out)
    return out


def _grads_by_group(be, gy, groups):
    """Output gradient images (n, O, OH, OW) as a (groups, O/groups, n*OH*OW) scratch array."""
    n, o, oh, ow = gy.shape
    og = o // groups
    out = _workspace(be, "gyt", (groups, og, n, oh * ow), gy.dtype)
    be.xp.copyto(out, gy.reshape(n, groups, og, oh * ow).transpose(1, 2, 0, 3))
    return out.reshape(groups, og, n * oh * ow)


def _check_conv_shapes(name, x_shape, w_shape, groups):
    if x_shape[1] != w_shape[1] * groups:
        raise ValueError(f"{name}: input has {x_shape[1]} channels but weight {tuple(w_shape)} with "
                         f"groups={groups} expects {w_shape[1] * groups}")


def _winograd_applies(be, c, o, kernel_hw, stride, dilation, groups, dtype, out_hw):
    return (WINOGRAD and be.name == "numpy" and tuple(kernel_hw) == (3, 3) and tuple(stride) == (1, 1)
            and tuple(dilation) == (1, 1) and groups == 1 and min(c, o) >= WINOGRAD_MIN_CHANNELS
            and min(out_hw) >= WINOGRAD_MIN_SIZE and dtype.kind == "f" and dtype.itemsize >= 4)


def conv2d_forward(be, x, w, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1,
                   out_hw=None, bias=None):
    """Cross-correlation of images ``x`` (N, C, H, W) with ``w`` (O, C/groups, kh, kw), plus
    ``bias`` (O,) when given (added chunk by chunk while the output is still in the cache).

    ``padding`` is (top, bottom, left, right) of zeros; ``out_hw`` restricts the output to its
    first rows/columns (used by the higher-order gradients of a transposed convolution)."""
    _check_conv_shapes("conv2d", x.shape, w.shape, groups)
    xp = be.xp
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    if out_hw is None:
        out_hw = (conv_output_size(h, kh, stride[0], padding[0], padding[1], dilation[0]),
                  conv_output_size(wd, kw, stride[1], padding[2], padding[3], dilation[1]))
    oh, ow = out_hw
    y = xp.empty((n, o, oh, ow), dtype=x.dtype)
    if n == 0:
        return y
    if _winograd_applies(be, c, o, (kh, kw), stride, dilation, groups, x.dtype, out_hw):
        _winograd_conv(be, x, w, padding, y, bias)
        return y
    og, k, positions = o // groups, cg * kh * kw, oh * ow
    w_mat = w.reshape(groups, og, k)

    def chunk(span):
        n0, n1 = span
        cols = _im2col(be, x[n0:n1], (kh, kw), stride, padding, dilation, groups, out_hw)
        prod = _grouped_matmul(be, w_mat, cols, "gemm")  # (g, O/g, n*OH*OW)
        if bias is not None:
            prod += bias.reshape(groups, og, 1)
        xp.copyto(y[n0:n1].reshape(n1 - n0, groups, og, positions),
                  prod.reshape(groups, og, n1 - n0, positions).transpose(2, 0, 1, 3))

    map_chunks(be, chunk, _chunks(be, n, c * kh * kw * positions * x.dtype.itemsize))
    return y


def conv2d_weight_grad(be, x, gy, kernel_hw, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1),
                       groups=1):
    """Gradient of a convolution's weight: ``gy`` (N, O, OH, OW) against the columns of ``x``."""
    xp = be.xp
    n, c, _, _ = x.shape
    o = gy.shape[1]
    kh, kw = kernel_hw
    oh, ow = gy.shape[2:]
    cg = c // groups
    if n == 0:
        return xp.zeros((o, cg, kh, kw), dtype=x.dtype)
    if _winograd_applies(be, c, o, kernel_hw, stride, dilation, groups, x.dtype, (oh, ow)):
        return _winograd_weight_grad(be, x, gy, padding)

    def chunk(span):
        n0, n1 = span
        cols = _im2col(be, x[n0:n1], kernel_hw, stride, padding, dilation, groups, (oh, ow))
        g_mat = _grads_by_group(be, gy[n0:n1], groups)
        return xp.matmul(g_mat, cols.transpose(0, 2, 1))  # (g, O/g, C/g*kh*kw), fresh

    parts = map_chunks(be, chunk, _chunks(be, n, c * kh * kw * oh * ow * x.dtype.itemsize))
    gw = parts[0]
    for part in parts[1:]:
        gw += part
    return gw.reshape(o, cg, kh, kw)


def conv2d_input_grad(be, gy, w, input_hw, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1),
                      groups=1):
    """Gradient of a convolution's input, i.e. the transposed convolution of ``gy`` (N, O, OH, OW)
    with ``w`` (O, C/groups, kh, kw), giving (N, C, *input_hw). ``input_hw`` is explicit because
    a stride that does not divide the input leaves rows no window reaches (their gradient is 0).

    Stride 1: a forward convolution of ``gy`` with the flipped, transposed kernel. Otherwise the
    weight's transpose times ``gy`` gives columns that col2im folds back into the image."""
    xp = be.xp
    n, o, oh, ow = gy.shape
    _, cg, kh, kw = w.shape
    h, wd = input_hw
    c, og = cg * groups, o // groups
    pt, pb, pl, pr = padding
    hp, wp = h + pt + pb, wd + pl + pr
    sh, sw = stride
    dh, dw = dilation
    if (oh - 1) * sh + dh * (kh - 1) >= hp or (ow - 1) * sw + dw * (kw - 1) >= wp:
        raise ValueError(f"conv2d_input_grad: {oh}x{ow} outputs do not fit an input of {h}x{wd} "
                         f"with kernel {kh}x{kw}, stride {stride}, padding {padding}, dilation {dilation}")
    if (sh, sw) == (1, 1):
        # x[h] gets gy[h + pt - i*dh] * w[i]: a correlation of gy padded by dh*(kh-1) - pt on top
        flipped_pads = (dh * (kh - 1) - pt, h + pt - oh, dw * (kw - 1) - pl, wd + pl - ow)
        if min(flipped_pads) >= 0:
            w_flip = w.reshape(groups, og, cg, kh, kw).transpose(0, 2, 1, 3, 4).reshape(c, og, kh, kw)
            w_flip = xp.ascontiguousarray(w_flip[:, :, ::-1, ::-1])
            return conv2d_forward(be, gy, w_flip, (1, 1), flipped_pads, dilation, groups, (h, wd))
    gx = xp.empty((n, c, h, wd), dtype=gy.dtype)
    w_t = w.reshape(groups, og, cg * kh * kw).transpose(0, 2, 1)  # (g, C/g*kh*kw, O/g)

    def chunk(span):
        n0, n1 = span
        b = n1 - n0
        cols = _grouped_matmul(be, w_t, _grads_by_group(be, gy[n0:n1], groups), "cols")
        cols = cols.reshape(c, kh, kw, b, oh, ow)
        # col2im: every kernel position adds its slice of columns into the padded image
        acc = _workspace(be, "pad", (c, b, hp, wp), gy.dtype)
        acc.fill(0)
        for i in range(kh):
            rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
            for j in range(kw):
                acc[:, :, rows, j * dw:j * dw + sw * (ow - 1) + 1:sw] += cols[:, i, j]
        xp.copyto(gx[n0:n1], acc[:, :, pt:pt + h, pl:pl + wd].transpose(1, 0, 2, 3))

    map_chunks(be, chunk, _chunks(be, n, c * kh * kw * oh * ow * gy.dtype.itemsize))
    return gx


# ==================================================================================================
# convolution kernels: Winograd F(2x2, 3x3)
# ==================================================================================================
# y = A^T [(G w G^T) * (B^T d B)] A for every 4x4 input tile d (tiles overlap by 2) giving a 2x2
# output tile: 16 products of (O, C) by (C, tiles) matrices instead of 36 multiplications per
# output per channel pair in 9 products. B^T and A^T hold only 0 and +-1, so the tile transforms
# are additions of shifted slices; G holds 0, +-1/2 and 1.
_WINOGRAD_G = numpy.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def _winograd_filter(be, w):
    """U (16, O, C): G w G^T for every (o, c), the 4x4 result flattened."""
    o, c = w.shape[:2]
    gg = be.asarray(numpy.kron(_WINOGRAD_G, _WINOGRAD_G).astype(w.dtype))  # (16, 9)
    # einsum's own loop: a tiny product not worth waking BLAS threads for
    return be.xp.einsum("ij,nj->in", gg, w.reshape(o * c, 9)).reshape(16, o, c)


def _winograd_input(be, x, pad_top, pad_left, tiles_hw):
    """V (16, C, n*Th*(Tw+1)): B^T d B of the 4x4 tile at rows 2*th - pad_top, columns
    2*tw - pad_left of images ``x`` (n, C, H, W) (zero outside). Column Tw of every tile row is
    filler (finite) that no output reads: it lets the column transform run on flat arrays.

    Every step below is one NumPy call over all four tile rows or columns at once: in worker
    threads each call is a hand-over of the GIL, so fewer, larger calls scale better."""
    xp = be.xp
    n, c, h, w = x.shape
    th, tw = tiles_hw
    r = tw + 1
    # de-interleave rows and columns: phase[a, e, ch, img, i, j] = padded x[img, ch, 2i + a, 2j + e];
    # the cells outside the input are never written, so they stay zero from the allocation
    phase = _bordered_workspace(be, "wino_phase", (2, 2, c, n, th + 1, r), x.dtype, (h, w, pad_top, pad_left))
    for a in range(2):
        i0, i1, h0 = _valid_range(th + 1, h, 2, pad_top, a)
        for e in range(2):
            j0, j1, w0 = _valid_range(r, w, 2, pad_left, e)
            if i1 > i0 and j1 > j0:
                src = x[:, :, h0:h0 + 2 * (i1 - i0 - 1) + 1:2, w0:w0 + 2 * (j1 - j0 - 1) + 1:2]
                xp.copyto(phase[a, e, :, :, i0:i1, j0:j1], src.transpose(1, 0, 2, 3))
    flat = phase.reshape(2, 2, c, n, (th + 1) * r)
    rows = th * r
    # B^T along rows: tile row 0..3 = even[i], odd[i], even[i+1], odd[i+1] (both column phases at once)
    even_lo, even_hi = flat[0, :, :, :, :rows], flat[0, :, :, :, r:]
    odd_lo, odd_hi = flat[1, :, :, :, :rows], flat[1, :, :, :, r:]
    q = _workspace(be, "wino_q", (4, 2, c, n, rows), x.dtype)
    xp.subtract(even_lo, even_hi, out=q[0])
    xp.add(odd_lo, even_hi, out=q[1])
    xp.subtract(even_hi, odd_lo, out=q[2])
    xp.subtract(odd_lo, odd_hi, out=q[3])
    # B along columns, on flat arrays: neighbours k and k+1 straddle a row end only in the filler
    size = c * n * rows
    q = q.reshape(4, 2, size)
    even, odd = q[:, 0], q[:, 1]
    v = _workspace(be, "wino_v", (4, 4, size), x.dtype)
    xp.subtract(even[:, :-1], even[:, 1:], out=v[:, 0, :-1])
    xp.add(odd[:, :-1], even[:, 1:], out=v[:, 1, :-1])
    xp.subtract(even[:, 1:], odd[:, :-1], out=v[:, 2, :-1])
    xp.subtract(odd[:, :-1], odd[:, 1:], out=v[:, 3, :-1])
    v[:, :, -1] = 0
    return v.reshape(16, c, n * rows)


def _winograd_output(be, m, y, tiles_hw):
    """y (n, O, OH, OW) = A^T M A of every tile, from M (16, O, n*Th*(Tw+1))."""
    xp = be.xp
    n, o, oh, ow = y.shape
    th, tw = tiles_hw
    r = tw + 1
    m = m.reshape(4, 4, o * n * th * r)
    s = _workspace(be, "wino_s", (2, 4, o * n * th * r), y.dtype)
    # A^T along rows, all four columns at once: (m0 + m1 + m2, m1 - m2 - m3)
    xp.add(m[0], m[1], out=s[0])
    s[0] += m[2]
    xp.subtract(m[1], m[2], out=s[1])
    s[1] -= m[3]
    z = _workspace(be, "wino_z", (2, 2, o, n, th, r), y.dtype)
    zf = z.reshape(2, 2, -1)
    # A along columns, both output rows at once
    xp.add(s[:, 0], s[:, 1], out=zf[:, 0])
    zf[:, 0] += s[:, 2]
    xp.subtract(s[:, 1], s[:, 2], out=zf[:, 1])
    zf[:, 1] -= s[:, 3]
    # interleave the four output phases into NCHW
    for a in range(2):
        rows = (oh - a + 1) // 2
        for e in range(2):
            cols = (ow - e + 1) // 2
            xp.copyto(y[:, :, a::2, e::2], z[a, e, :, :, :rows, :cols].transpose(1, 0, 2, 3))


def _winograd_conv(be, x, w, padding, y, bias=None):
    """y = conv2d(x, w) (+ bias) for a 3x3 kernel, stride 1, no dilation, one group, by Winograd."""
    xp = be.xp
    n, c = x.shape[:2]
    o, oh, ow = y.shape[1:]
    tiles = (-(-oh // 2), -(-ow // 2))
    u = _winograd_filter(be, w)

    def chunk(span):
        n0, n1 = span
        v = _winograd_input(be, x[n0:n1], padding[0], padding[2], tiles)
        m = _workspace(be, "gemm", (16, o, v.shape[2]), x.dtype)
        xp.matmul(u, v, out=m)
        _winograd_output(be, m, y[n0:n1], tiles)
        if bias is not None:
            y[n0:n1] += bias.reshape(o, 1, 1)

    map_chunks(be, chunk, _chunks(be, n, 16 * c * tiles[0] * (tiles[1] + 1) * x.dtype.itemsize))


def _winograd_weight_grad(be, x, gy, padding):
    """Weight gradient of a Winograd convolution: G^T [sum over tiles (A gy A^T) * V] G."""
    xp = be.xp
    n, c = x.shape[:2]
    o, oh, ow = gy.shape[1:]
    th, tw = tiles = (-(-oh // 2), -(-ow // 2))
    r = tw + 1

    def chunk(span):
        n0, n1 = span
        b = n1 - n0
        v = _winograd_input(be, x[n0:n1], padding[0], padding[2], tiles)
        # M = A gy A^T for every 2x2 tile of gy, with A = [[1, 0], [1, 1], [1, -1], [0, -1]] (the
        # two minus signs of the last row and column are folded into the final filter transform).
        # gy's phases go straight to the corners M[3a, 3e], zero in the filler column and past
        # the edge (the odd phase of an odd-sized map is one row or column short)
        m = _workspace(be, "wino_m", (4, 4, o, b, th, r), gy.dtype)
        corners = m[0::3, 0::3]
        corners[..., tw:] = 0
        if oh % 2:
            corners[1, :, :, :, th - 1] = 0
        if ow % 2:
            corners[:, 1, :, :, :, tw - 1] = 0
        for a in range(2):
            for e in range(2):
                src = gy[n0:n1, :, a::2, e::2]
                xp.copyto(m[3 * a, 3 * e, :, :, :src.shape[2], :src.shape[3]], src.transpose(1, 0, 2, 3))
        xp.add(m[0::3, 0], m[0::3, 3], out=m[0::3, 1])
        xp.subtract(m[0::3, 0], m[0::3, 3], out=m[0::3, 2])
        xp.add(m[0], m[3], out=m[1])
        xp.subtract(m[0], m[3], out=m[2])
        return xp.matmul(m.reshape(16, o, -1), v.transpose(0, 2, 1))  # (16, O, C), fresh

    parts = map_chunks(be, chunk, _chunks(be, n, 16 * c * th * r * x.dtype.itemsize))
    du = parts[0]
    for part in parts[1:]:
        du += part
    sign = numpy.ones((4, 4))
    sign[3, :] *= -1
    sign[:, 3] *= -1
    gg = be.asarray((numpy.kron(_WINOGRAD_G, _WINOGRAD_G) * sign.reshape(16, 1)).astype(x.dtype))
    return be.xp.einsum("in,ij->nj", du.reshape(16, o * c), gg).reshape(o, c, 3, 3)


# ==================================================================================================
# pooling kernels
# ==================================================================================================
def _valid_range(out_len, in_len, stride, pad, offset):
    """Outputs [lo, hi) whose window element at ``offset`` (kernel index * dilation) falls inside
    the input, and the input index that output ``lo`` reads."""
    lo = max(0, -(-(pad - offset) // stride))
    hi = min(out_len, (in_len - 1 + pad - offset) // stride + 1)
    return lo, max(lo, hi), lo * stride - pad + offset


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
        xpad = _pad_image(be, x, (pt, pb, pl, pr), "pool_pad", fill)
        s_n, s_c, s_h, s_w = xpad.strides
        view = be.as_strided(xpad, (kh, kw, n, c, oh, ow),
                             (dh * s_h, dw * s_w, s_n, s_c, sh * s_h, sw * s_w))
    out = _workspace(be, "pool_windows", (kh * kw, n, c, oh, ow), x.dtype)
    xp.copyto(out.reshape(kh, kw, n, c, oh, ow), view)
    return out


def _pool_tiles(kernel, stride, padding, dilation, input_shape, out_hw):
    """Whether the pooling windows tile (a crop of) the input: stride = kernel, no padding, no
    dilation, and every window inside the input."""
    return (tuple(kernel) == tuple(stride) and not any(padding) and tuple(dilation) == (1, 1)
            and out_hw[0] * kernel[0] <= input_shape[2] and out_hw[1] * kernel[1] <= input_shape[3])


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
    y = xp.empty((n, c, oh, ow), dtype=x.dtype)
    argmax = xp.zeros((n, c, oh, ow), dtype=idx_dtype)

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
        r0, r1, _ = _valid_range(oh, h, stride[0], padding[0], i * dilation[0])
        c0, c1, _ = _valid_range(ow, w, stride[1], padding[1], j * dilation[1])
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


class _MaxPoolRoute:
    """Where the windows' maxima of one max-pooling sit (flat int64 indices into the input), for
    the scatter of the backward pass and the gather of its adjoint. (A scatter through kh*kw
    masked writes into strided views of the input measured slower on NumPy, even when the
    windows tile the input.)"""

    def __init__(self, be, argmax, input_shape, kernel, stride, padding, dilation):
        self.be, self.input_shape = be, input_shape
        self.flat_index = max_pool2d_flat_indices(be, argmax, input_shape, kernel, stride, padding, dilation)
        # windows overlap when the stride is shorter than the dilated kernel
        self.overlapping = any(s < d * (k - 1) + 1 for s, d, k in zip(stride, dilation, kernel))

    def scatter(self, gy):
        return max_pool2d_scatter(self.be, gy, self.flat_index, self.input_shape, self.overlapping)

    def gather(self, gx):
        return max_pool2d_gather(self.be, gx, self.flat_index)


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


# ==================================================================================================
# differentiable ops
# ==================================================================================================
class Conv2d(Function):
    """y = conv(x, w) (+ b, one value per output channel, when a third input is given). Params:
    stride, padding (4-tuple), dilation, groups, out_hw (or None). The bias lives in this node
    rather than in a separate broadcast add: one pass over the output fewer each way."""

    def forward(self, x, w, b=None):
        return conv2d_forward(self.backend, x, w, self.stride, self.padding, self.dilation,
                              self.groups, self.out_hw, b)

    def backward(self, g):
        x, w = self.inputs[:2]
        geom = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)
        gx = Conv2dInputGrad.apply(g, w, input_hw=x.shape[2:], **geom) if self.needs_input_grad[0] else None
        gw = Conv2dWeightGrad.apply(x, g, kernel_hw=w.shape[2:], **geom) if self.needs_input_grad[1] else None
        if len(self.inputs) == 2:
            return gx, gw
        gb = g.sum((0, 2, 3)) if self.needs_input_grad[2] else None
        return gx, gw, gb


class Conv2dInputGrad(Function):
    """dx = conv_transpose(g, w) with dx of spatial size ``input_hw``: the adjoint of Conv2d in x.

    As a function of (g, w) its gradients are: in g, Conv2d(gg, w); in w, Conv2dWeightGrad(gg, g),
    because <gg, InputGrad(g, w)> = <Conv2d(gg, w), g>."""

    def forward(self, g, w):
        return conv2d_input_grad(self.backend, g, w, self.input_hw, self.stride, self.padding,
                                 self.dilation, self.groups)

    def backward(self, gg):
        g, w = self.inputs
        geom = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)
        dg = Conv2d.apply(gg, w, out_hw=g.shape[2:], **geom) if self.needs_input_grad[0] else None
        dw = Conv2dWeightGrad.apply(gg, g, kernel_hw=w.shape[2:], **geom) if self.needs_input_grad[1] else None
        return dg, dw


class Conv2dWeightGrad(Function):
    """dw = weight gradient of a convolution of x with output gradient g.

    <gw, WeightGrad(x, g)> = <Conv2d(x, gw), g>, so its gradients are: in x,
    Conv2dInputGrad(g, gw); in g, Conv2d(x, gw)."""

    def forward(self, x, g):
        return conv2d_weight_grad(self.backend, x, g, self.kernel_hw, self.stride, self.padding,
                                  self.dilation, self.groups)

    def backward(self, ggw):
        x, g = self.inputs
        geom = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)
        dx = Conv2dInputGrad.apply(g, ggw, input_hw=x.shape[2:], **geom) if self.needs_input_grad[0] else None
        dg = Conv2d.apply(x, ggw, out_hw=g.shape[2:], **geom) if self.needs_input_grad[1] else None
        return dx, dg


class MaxPool2d(Function):
    """Max pooling. Keeps the argmax of every window; ``sink`` (a dict or None) receives it for
    ``return_indices``."""

    def forward(self, x):
        y, self.argmax = max_pool2d_forward(self.backend, x, self.kernel, self.stride, self.padding,
                                            self.dilation, self.ceil_mode)
        self.input_shape = x.shape
        if self.sink is not None:
            self.sink["argmax"] = self.argmax
        return y

    def backward(self, g):
        route = _MaxPoolRoute(self.backend, self.argmax, self.input_shape, self.kernel, self.stride,
                              self.padding, self.dilation)
        return (MaxPool2dBackward.apply(g, route=route),)


class MaxPool2dBackward(Function):
    """Scatter of output gradients to the windows' maxima; its adjoint is MaxPool2dGather."""

    def forward(self, g):
        return self.route.scatter(g)

    def backward(self, gg):
        return (MaxPool2dGather.apply(gg, route=self.route),)


class MaxPool2dGather(Function):
    """Reads an input-shaped tensor at the windows' maxima; its adjoint is MaxPool2dBackward."""

    def forward(self, x):
        return self.route.gather(x)

    def backward(self, g):
        return (MaxPool2dBackward.apply(g, route=self.route),)


class AvgPool2d(Function):
    """Average pooling (linear): its gradient is AvgPool2dBackward, whose gradient is AvgPool2d."""

    def forward(self, x):
        self.input_shape = x.shape
        return avg_pool2d_forward(self.backend, x, self.kernel, self.stride, self.padding,
                                  self.ceil_mode, self.count_include_pad)

    def backward(self, g):
        return (AvgPool2dBackward.apply(g, input_shape=self.input_shape, kernel=self.kernel,
                                        stride=self.stride, padding=self.padding, ceil_mode=self.ceil_mode,
                                        count_include_pad=self.count_include_pad),)


class AvgPool2dBackward(Function):
    def forward(self, g):
        return avg_pool2d_backward(self.backend, g, self.input_shape, self.kernel, self.stride,
                                   self.padding, self.ceil_mode, self.count_include_pad)

    def backward(self, gg):
        return (AvgPool2d.apply(gg, kernel=self.kernel, stride=self.stride, padding=self.padding,
                                ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad),)
