"""2-D convolution on raw arrays: forward, input gradient and weight gradient.

Functions of a Backend ``be`` and arrays (NCHW images, OIHW weights); they use only ``be.xp``,
``be.as_strided`` and the scratch helpers, so the same code runs on NumPy and CuPy. The
differentiable ops that call them are in :mod:`tinygrad_hw.ops.conv`.

How a convolution is computed (im2col): the padded input is viewed through ``as_strided`` as a
(groups, C/groups * kh * kw, images * OH * OW) matrix, copied once into a contiguous column buffer
and multiplied by the weight matrix (groups, O/groups, C/groups * kh * kw), one product per group;
the product is transposed once into NCHW. The weight gradient is one product of the output
gradient (transposed) with the same columns. The input gradient of a stride-1 convolution is a
forward convolution of the output gradient with the flipped, transposed kernel; with a larger
stride the weight's transpose times the output gradient gives columns that col2im folds back by
adding kh * kw strided slices into a padded buffer.

3x3 / stride-1 / undilated / ungrouped convolutions with enough channels use Winograd's
F(2x2, 3x3) on NumPy instead (:mod:`~tinygrad_hw.kernels.winograd`). With numba installed col2im
is a single compiled pass per chunk (:mod:`~tinygrad_hw.kernels.compiled`); the strided adds
below are the reference.

On the NumPy backend the batch is cut into chunks of a few images
(:func:`~tinygrad_hw.kernels.scratch.image_chunks`) that run in worker threads, each with a
single-threaded BLAS, so the copies run in parallel too. On the GPU a chunk is as many images as
keep one column buffer under ``DEVICE_CHUNK_BYTES`` (256 MiB), run one after another: the whole
batch at the usual sizes, a bounded buffer for large batches.

Padding is carried as four numbers (top, bottom, left, right) so that ``padding="same"`` with an
even kernel needs no extra copy.
"""
from __future__ import annotations

from . import compiled, winograd
from .geometry import check_conv_shapes, conv_output_size
from .parallel import map_chunks, map_sum
from .scratch import image_chunks, pad_image, workspace

__all__ = ["conv2d_forward", "conv2d_input_grad", "conv2d_weight_grad", "BY_IMAGE_MIN_POSITIONS"]

# im2col convolutions as one product per image from this many output positions: the forward
# (O, C*kh*kw) @ (C*kh*kw, OH*OW) straight into y, the weight gradient (O, OH*OW) @ (OH*OW,
# C*kh*kw) from gy as it is, no transposing copy of either; and BLAS runs the weight gradient's
# products faster than one (O, n*OH*OW) @ (n*OH*OW, C*kh*kw) with its very long K (3-channel
# stems at 32x32: 10.5 against 21.9 us an image, plus 3-9 us of the copy, one thread). Fewer
# positions keep the one product (per-image products would be matrix-vector at 1x1).
BY_IMAGE_MIN_POSITIONS = 64


def _im2col(be, x, kernel_hw, stride, pads, dilation, groups, out_hw, by_image=False):
    """Columns of images ``x`` (n, C, H, W) as a contiguous (groups, C/groups*kh*kw, n*OH*OW)
    scratch array: one strided view of the padded input, one copy. ``by_image``: each image's
    own columns, (n, groups, C/groups*kh*kw, OH*OW)."""
    n, c, _, _ = x.shape
    kh, kw = kernel_hw
    oh, ow = out_hw
    cg = c // groups
    xpad = pad_image(be, x, pads, "pad")
    s_n, s_c, s_h, s_w = xpad.strides
    if by_image:
        shape = (n, groups, cg, kh, kw, oh, ow)
        strides = (s_n, cg * s_c, s_c, dilation[0] * s_h, dilation[1] * s_w, stride[0] * s_h, stride[1] * s_w)
    else:
        shape = (groups, cg, kh, kw, n, oh, ow)
        strides = (cg * s_c, s_c, dilation[0] * s_h, dilation[1] * s_w, s_n, stride[0] * s_h, stride[1] * s_w)
    view = be.as_strided(xpad, shape, strides)
    cols = workspace(be, "cols", view.shape, x.dtype)
    be.xp.copyto(cols, view)
    if by_image:
        return cols.reshape(n, groups, cg * kh * kw, oh * ow)
    return cols.reshape(groups, cg * kh * kw, n * oh * ow)


def _grouped_matmul(be, a, b, slot):
    """``a @ b`` for stacks over groups (g, m, k) @ (g, k, n) into a scratch array."""
    xp = be.xp
    out = workspace(be, slot, (a.shape[0], a.shape[1], b.shape[2]), a.dtype)
    if a.shape[0] == 1:  # a plain 2-D product skips the stacked loop
        xp.matmul(a[0], b[0], out=out[0])
    else:
        xp.matmul(a, b, out=out)
    return out


def _grads_by_group(be, gy, groups):
    """Output gradient images (n, O, OH, OW) as a (groups, O/groups, n*OH*OW) scratch array."""
    n, o, oh, ow = gy.shape
    og = o // groups
    out = workspace(be, "gyt", (groups, og, n, oh * ow), gy.dtype)
    be.xp.copyto(out, gy.reshape(n, groups, og, oh * ow).transpose(1, 2, 0, 3))
    return out.reshape(groups, og, n * oh * ow)


def conv2d_forward(be, x, w, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1,
                   out_hw=None, bias=None, relu=False):
    """Cross-correlation of images ``x`` (N, C, H, W) with ``w`` (O, C/groups, kh, kw), plus
    ``bias`` (O,) when given (added chunk by chunk while the output is still in the cache);
    ``relu``: then max(., 0) the same way (a fused conv -> ReLU).

    ``padding`` is (top, bottom, left, right) of zeros; ``out_hw`` restricts the output to its
    first rows/columns (used by the higher-order gradients of a transposed convolution)."""
    check_conv_shapes("conv2d", x.shape, w.shape, groups)
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
    if winograd.applies(be, c, o, (kh, kw), stride, dilation, groups, x.dtype, out_hw):
        winograd.forward(be, x, w, padding, y, bias, relu)
        return y
    og, k, positions = o // groups, cg * kh * kw, oh * ow
    w_mat = w.reshape(groups, og, k)

    by_image = positions >= BY_IMAGE_MIN_POSITIONS

    def chunk(span):
        n0, n1 = span
        if by_image:  # one product per image straight into y: no transposing copy of the output
            cols = _im2col(be, x[n0:n1], (kh, kw), stride, padding, dilation, groups, out_hw, by_image=True)
            out = y[n0:n1].reshape(n1 - n0, groups, og, positions)
            xp.matmul(w_mat, cols, out=out)
            if bias is not None:
                out += bias.reshape(groups, og, 1)
            if relu:
                xp.maximum(out, 0, out=out)
            return
        cols = _im2col(be, x[n0:n1], (kh, kw), stride, padding, dilation, groups, out_hw)
        prod = _grouped_matmul(be, w_mat, cols, "gemm")  # (g, O/g, n*OH*OW)
        if bias is not None:
            prod += bias.reshape(groups, og, 1)
        if relu:
            xp.maximum(prod, 0, out=prod)
        xp.copyto(y[n0:n1].reshape(n1 - n0, groups, og, positions),
                  prod.reshape(groups, og, n1 - n0, positions).transpose(2, 0, 1, 3))

    map_chunks(be, chunk, image_chunks(be, n, c * kh * kw * positions * x.dtype.itemsize))
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
    if winograd.applies(be, c, o, kernel_hw, stride, dilation, groups, x.dtype, (oh, ow)):
        return winograd.weight_grad(be, x, gy, padding)

    by_image = oh * ow >= BY_IMAGE_MIN_POSITIONS

    def chunk(span):
        n0, n1 = span
        if by_image:  # one product per image, on gy as it is: no transposing copy of gy
            cols = _im2col(be, x[n0:n1], kernel_hw, stride, padding, dilation, groups, (oh, ow), by_image=True)
            g_img = gy[n0:n1].reshape(n1 - n0, groups, o // groups, oh * ow)
            return xp.matmul(g_img, cols.transpose(0, 1, 3, 2)).sum(axis=0)  # (g, O/g, C/g*kh*kw)
        cols = _im2col(be, x[n0:n1], kernel_hw, stride, padding, dilation, groups, (oh, ow))
        g_mat = _grads_by_group(be, gy[n0:n1], groups)
        return xp.matmul(g_mat, cols.transpose(0, 2, 1))  # (g, O/g, C/g*kh*kw), fresh

    gw = map_sum(be, chunk, image_chunks(be, n, c * kh * kw * oh * ow * x.dtype.itemsize))
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
        if compiled.active(be, gy):  # col2im in one compiled pass, straight into gx
            compiled.col2im(cols, gx[n0:n1], sh, sw, pt, pl, dh, dw)
            return
        # col2im: every kernel position adds its slice of columns into the padded image
        acc = workspace(be, "pad", (c, b, hp, wp), gy.dtype)
        acc.fill(0)
        for i in range(kh):
            rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
            for j in range(kw):
                acc[:, :, rows, j * dw:j * dw + sw * (ow - 1) + 1:sw] += cols[:, i, j]
        xp.copyto(gx[n0:n1], acc[:, :, pt:pt + h, pl:pl + wd].transpose(1, 0, 2, 3))

    map_chunks(be, chunk, image_chunks(be, n, c * kh * kw * oh * ow * gy.dtype.itemsize))
    return gx
