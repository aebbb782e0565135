"""Winograd F(2x2, 3x3) convolution on NumPy: 2.25 times fewer multiplications than im2col.

For 3x3 / stride-1 / undilated / ungrouped convolutions with at least ``MIN_CHANNELS`` channels
each way and outputs of at least ``MIN_SIZE`` on each side: 16 products of (O, C) by (C, tiles)
matrices, for the forward pass, the input gradient (through the flipped kernel, by
:func:`~tinygrad_hw.kernels.conv.conv2d_input_grad`) and the weight gradient.

With numba installed (:mod:`~tinygrad_hw.kernels.compiled`) the tile transforms are single
compiled passes per chunk, on tiles without the filler column that the NumPy transforms below
(the reference) need, and only the products stay in NumPy (BLAS); that path also runs
F(4x4, 3x3) (36 products, 4x fewer multiplications than im2col) on outputs of ``FOUR_FROM`` and
up, and takes smaller layers (``COMPILED_MIN_CHANNELS``, ``COMPILED_MIN_SIZE``). From
``compiled.CHANNELS_LAST_MIN`` channels its input transform writes V channels-last (tiles by
channels, every sum one vectorised loop over the channels) and the products read it transposed.
"""
from __future__ import annotations

import functools

import numpy

from . import compiled
from .geometry import valid_range
from .parallel import map_chunks, map_sum, single_threaded_blas
from .scratch import bordered_workspace, image_chunks, workspace

__all__ = ["ENABLED", "MIN_CHANNELS", "MIN_SIZE", "COMPILED_MIN_CHANNELS", "COMPILED_MIN_SIZE", "FOUR_FROM", "FOUR_MIN_CHANNELS",
           "TRANSFORMS", "tile_size", "applies", "forward", "weight_grad"]

# Below these sizes the tile transforms cost more than the fewer multiplications save.
# ENABLED = False always uses im2col.
ENABLED = True
MIN_CHANNELS = 32
MIN_SIZE = 8


# With the compiled transforms Winograd pays from far smaller layers (benchmarks/bench_conv.py
# --algorithms: F(2x2) beat im2col 1.6x on 128 channels at 4x4 and 1.9x on 6 -> 12 channels at
# 16x16; im2col still won on 3 input channels). The smaller of each pair of limits applies.
COMPILED_MIN_CHANNELS = 4
COMPILED_MIN_SIZE = 4


def applies(be, c, o, kernel_hw, stride, dilation, groups, dtype, out_hw):
    """Whether a convolution of this shape runs by Winograd (else im2col)."""
    if not (ENABLED and be.name == "numpy" and tuple(kernel_hw) == (3, 3) and tuple(stride) == (1, 1)
            and tuple(dilation) == (1, 1) and groups == 1 and dtype.kind == "f" and dtype.itemsize >= 4):
        return False
    min_channels, min_size = MIN_CHANNELS, MIN_SIZE
    if compiled.active(be) and dtype in (numpy.float32, numpy.float64):
        min_channels, min_size = min(min_channels, COMPILED_MIN_CHANNELS), min(min_size, COMPILED_MIN_SIZE)
    return min(c, o) >= min_channels and min(out_hw) >= min_size


# y = A^T [(G w G^T) * (B^T d B)] A for every 4x4 input tile d (tiles overlap by 2) giving a 2x2
# output tile: 16 products of (O, C) by (C, tiles) matrices instead of 36 multiplications per
# output per channel pair in 9 products. B^T and A^T hold only 0 and +-1, so the tile transforms
# are additions of shifted slices; G holds 0, +-1/2 and 1.
_G = numpy.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def _winograd_filter(be, w):
    """U (16, O, C): G w G^T for every (o, c), the 4x4 result flattened."""
    o, c = w.shape[:2]
    gg = be.asarray(numpy.kron(_G, _G).astype(w.dtype))  # (16, 9)
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
    phase = bordered_workspace(be, "wino_phase", (2, 2, c, n, th + 1, r), x.dtype, (h, w, pad_top, pad_left))
    for a in range(2):
        i0, i1, h0 = valid_range(th + 1, h, 2, pad_top, a)
        for e in range(2):
            j0, j1, w0 = valid_range(r, w, 2, pad_left, e)
            if i1 > i0 and j1 > j0:
                src = x[:, :, h0:h0 + 2 * (i1 - i0 - 1) + 1:2, w0:w0 + 2 * (j1 - j0 - 1) + 1:2]
                xp.copyto(phase[a, e, :, :, i0:i1, j0:j1], src.transpose(1, 0, 2, 3))
    flat = phase.reshape(2, 2, c, n, (th + 1) * r)
    rows = th * r
    # B^T along rows: tile row 0..3 = even[i], odd[i], even[i+1], odd[i+1] (both column phases at once)
    even_lo, even_hi = flat[0, :, :, :, :rows], flat[0, :, :, :, r:]
    odd_lo, odd_hi = flat[1, :, :, :, :rows], flat[1, :, :, :, r:]
    q = workspace(be, "wino_q", (4, 2, c, n, rows), x.dtype)
    xp.subtract(even_lo, even_hi, out=q[0])
    xp.add(odd_lo, even_hi, out=q[1])
    xp.subtract(even_hi, odd_lo, out=q[2])
    xp.subtract(odd_lo, odd_hi, out=q[3])
    # B along columns, on flat arrays: neighbours k and k+1 straddle a row end only in the filler
    size = c * n * rows
    q = q.reshape(4, 2, size)
    even, odd = q[:, 0], q[:, 1]
    v = workspace(be, "wino_v", (4, 4, size), x.dtype)
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
    s = workspace(be, "wino_s", (2, 4, o * n * th * r), y.dtype)
    # A^T along rows, all four columns at once: (m0 + m1 + m2, m1 - m2 - m3)
    xp.add(m[0], m[1], out=s[0])
    s[0] += m[2]
    xp.subtract(m[1], m[2], out=s[1])
    s[1] -= m[3]
    z = workspace(be, "wino_z", (2, 2, o, n, th, r), y.dtype)
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


def forward(be, x, w, padding, y, bias=None, relu=False):
    """y = conv2d(x, w) (+ bias) for a 3x3 kernel, stride 1, no dilation, one group, by Winograd;
    ``relu``: max(y, 0) (applied as the compiled output transforms write y)."""
    xp = be.xp
    n, c = x.shape[:2]
    o, oh, ow = y.shape[1:]
    tiles = (-(-oh // 2), -(-ow // 2))
    if compiled.active(be, x, w):
        _compiled_forward(be, x, w, padding, y, bias, relu)
        return
    u = _winograd_filter(be, w)

    def chunk(span):
        n0, n1 = span
        v = _winograd_input(be, x[n0:n1], padding[0], padding[2], tiles)
        m = workspace(be, "gemm", (16, o, v.shape[2]), x.dtype)
        xp.matmul(u, v, out=m)
        _winograd_output(be, m, y[n0:n1], tiles)
        if bias is not None:
            y[n0:n1] += bias.reshape(o, 1, 1)
        if relu:
            xp.maximum(y[n0:n1], 0, out=y[n0:n1])

    map_chunks(be, chunk, image_chunks(be, n, 16 * c * tiles[0] * (tiles[1] + 1) * x.dtype.itemsize))


# Winograd F(m x m, 3x3) for the compiled kernels: (B^T, G, A^T) of F(2x2, 3x3) and F(4x4, 3x3)
# (interpolation points 0, +-1 [, +-2] and infinity; Lavin and Gray's matrices). F(4x4) does 36
# products per 4x4 output tile where F(2x2) does 16 per 2x2 (1.8x fewer multiplications, and
# 2.25 instead of 4 transformed values per input value), at a larger float32 rounding error
# (about 1e-5 relative, against 1e-6).
TRANSFORMS = {
    2: (numpy.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=float),
        _G,
        numpy.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=float)),
    4: (numpy.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                     [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=float),
        numpy.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                     [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
        numpy.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                     [0, 1, -1, 8, -8, 1]], dtype=float)),
}
# Output tile size of the compiled path, by the smaller side of the output: F(4x4) from
# FOUR_FROM on (benchmarks/bench_conv.py --algorithms: F(4x4) won on every layer at 16x16 and
# 32x32, by 1.2-1.3x; with the channels-last input transform and the vectorised output
# transform it also wins at 8x8, paired fwd+bwd runs F(4x4)/F(2x2) 0.91-0.94 on the 8x8
# layers of vgg_style and fast_cnn, and ties at 4x4, 1.00, where F(2x2) stays).
# F(4x4)'s float32 rounding error is ~10x im2col's. With 32 here (an earlier tree, on the AMD
# VM) the network check against PyTorch (tests/test_reference_gradients.py) found no batch of
# the fast_cnn net whose max-pooling routes agreed with the float64 pass once its 16 -> 32 layer
# at 32x32 ran F(4x4); with this tree's kernels it finds one, with the OpenBLAS variables set and
# unset, so F(4x4) runs from 16 channels each way (that layer at batch 256: 48 against 62 ms
# fwd+bwd; the fast_cnn step 181 -> 171 ms). Below 16 F(2x2) stays (and measured faster on
# small_cnn's 6 -> 12 layer).
FOUR_FROM = 8
FOUR_MIN_CHANNELS = 16


def tile_size(out_hw, channels=None) -> int:
    """m of the F(m x m, 3x3) that the compiled kernels use for an output of ``out_hw`` and
    ``channels`` = min(in, out) (None: any)."""
    wide = channels is None or channels >= FOUR_MIN_CHANNELS
    return 4 if min(out_hw) >= FOUR_FROM and wide else 2


@functools.lru_cache(maxsize=None)
def _compiled_matrices(m: int, dtype: str):
    """B^T, G, A^T of F(m x m, 3x3) in ``dtype`` and G (x) G (U = (G (x) G) w), made once: the
    Kronecker product and the casts cost ~12 us a call, several calls a step of a small net.
    Shared: never written to (left writeable, as numba compiles read-only arrays separately)."""
    bt, g, at = (mat.astype(dtype) for mat in TRANSFORMS[m])
    return bt, g, at, numpy.kron(g, g)


def _compiled_filter(be, w, gg, transposed=False):
    """U (alpha^2, O, C) = G w G^T for every (o, c), with ``gg`` = G (x) G; ``transposed``:
    U^T, (alpha^2, C, O)."""
    o, c = w.shape[:2]
    # one small product (einsum's own loop took ~1 ms a call here), on one BLAS thread: woken
    # BLAS threads would spin against the chunk workers that come next
    # gg (alpha^2, 9) @ w^T (9, O*C) comes out in U's layout: no transposing copy (the copy of
    # (w @ gg^T)^T took ~1 ms a call for 128 x 128 channels, 10 ms a step of vgg_style); for U^T
    # the weights are transposed first (9 / alpha^2 of U's size)
    rows = w.transpose(1, 0, 2, 3).reshape(c * o, 9) if transposed else w.reshape(o * c, 9)
    with single_threaded_blas(be, o * c * 9 * gg.shape[0]):
        u = gg @ rows.T
    return u.reshape((gg.shape[0], c, o) if transposed else (gg.shape[0], o, c))


def _compiled_forward(be, x, w, padding, y, bias, relu=False):
    """The forward pass with compiled tile transforms (bias added in the output transform)."""
    xp = be.xp
    n, c = x.shape[:2]
    o, oh, ow = y.shape[1:]
    m = tile_size((oh, ow), min(c, o))
    bt, _, at, gg = _compiled_matrices(m, x.dtype.str)
    last = c >= compiled.CHANNELS_LAST_MIN  # V's layout (see compiled.wino_input)
    # channels-last V: M^T = V U^T, channels-last too (BLAS runs it 1.3-2.4x faster than U V^T
    # when C is small, see compiled.wino_output_cl); channel-major V: M = U V
    u = _compiled_filter(be, w.astype(x.dtype, copy=False), gg, transposed=last)
    th, tw = -(-oh // m), -(-ow // m)
    planes = u.shape[0]
    x = xp.ascontiguousarray(x)
    has_bias = bias is not None
    bias = xp.ascontiguousarray(bias, dtype=x.dtype) if has_bias else xp.zeros(1, x.dtype)

    def chunk(span):
        n0, n1 = span
        cols = (n1 - n0) * th * tw
        v = workspace(be, "wino_v", (planes, cols, c) if last else (planes, c, cols), x.dtype)
        compiled.wino_input(x[n0:n1], v, bt, m, padding[0], padding[2], th, tw, last)
        if last:
            prod = workspace(be, "gemm", (planes, cols, o), x.dtype)
            xp.matmul(v, u, out=prod)
            compiled.wino_output_cl(prod, y[n0:n1], at, bias, has_bias, th, tw, relu)
        else:
            prod = workspace(be, "gemm", (planes, o, cols), x.dtype)
            xp.matmul(u, v, out=prod)
            compiled.wino_output(prod, y[n0:n1], at, bias, has_bias, th, tw, relu)

    map_chunks(be, chunk, image_chunks(be, n, planes * (c + o) * th * tw * x.dtype.itemsize))


def _compiled_weight_grad(be, x, gy, padding):
    """G^T [sum over tiles (A gy A^T) * V] G with compiled transforms."""
    xp = be.xp
    n, c = x.shape[:2]
    o, oh, ow = gy.shape[1:]
    m = tile_size((oh, ow), min(c, o))
    bt, _, at, gg = _compiled_matrices(m, x.dtype.str)
    th, tw = -(-oh // m), -(-ow // m)
    planes = bt.shape[0] ** 2
    last = c >= compiled.CHANNELS_LAST_MIN  # V's layout (see compiled.wino_input)
    # M's layout: channels-last (compiled.wino_grad_output_cl) where it measured faster, whole
    # weight gradients 0.73-0.93x the time at batch 64 / 256 (F(4x4) at 8x8-32x32, F(2x2) at
    # 4x4); F(2x2) on wide outputs keeps the channel-major kernel (16 -> 32 at 32x32: 1.09x)
    grads_last = last and o >= compiled.CHANNELS_LAST_MIN and (m == 4 or tw <= 8)
    x, gy = xp.ascontiguousarray(x), xp.ascontiguousarray(gy)

    def chunk(span):
        n0, n1 = span
        cols = (n1 - n0) * th * tw
        v = workspace(be, "wino_v", (planes, cols, c) if last else (planes, c, cols), x.dtype)
        compiled.wino_input(x[n0:n1], v, bt, m, padding[0], padding[2], th, tw, last)
        if grads_last:  # M^T channels-last too: its sums vectorise over the output channels
            mt = workspace(be, "wino_m", (planes, cols, o), gy.dtype)
            compiled.wino_grad_output_cl(gy[n0:n1], mt, at, th, tw)
            return xp.matmul(mt.transpose(0, 2, 1), v)  # (alpha^2, O, C), fresh
        prod = workspace(be, "wino_m", (planes, o, cols), gy.dtype)
        compiled.wino_grad_output(gy[n0:n1], prod, at, th, tw)
        return xp.matmul(prod, v if last else v.transpose(0, 2, 1))  # (alpha^2, O, C), fresh

    du = map_sum(be, chunk, image_chunks(be, n, planes * (c + o) * th * tw * x.dtype.itemsize))
    # U = gg w, so dw = gg^T dU
    with single_threaded_blas(be, o * c * planes * 9):
        return (du.reshape(planes, o * c).T @ gg).reshape(o, c, 3, 3)


def weight_grad(be, x, gy, padding):
    """Weight gradient of a Winograd convolution: G^T [sum over tiles (A gy A^T) * V] G."""
    xp = be.xp
    n, c = x.shape[:2]
    o, oh, ow = gy.shape[1:]
    th, tw = tiles = (-(-oh // 2), -(-ow // 2))
    r = tw + 1
    if compiled.active(be, x, gy):  # A gy A^T exactly: no signs to fold into G
        return _compiled_weight_grad(be, x, gy, padding)

    def chunk(span):
        n0, n1 = span
        b = n1 - n0
        v = _winograd_input(be, x[n0:n1], padding[0], padding[2], tiles)
        # M = A gy A^T for every 2x2 tile of gy, with A = [[1, 0], [1, 1], [1, -1], [0, -1]] (the
        # two minus signs of the last row and column are folded into the final filter transform).
        # gy's phases go straight to the corners M[3a, 3e], zero in the filler column and past
        # the edge (the odd phase of an odd-sized map is one row or column short)
        m = workspace(be, "wino_m", (4, 4, o, b, th, r), gy.dtype)
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

    du = map_sum(be, chunk, image_chunks(be, n, 16 * c * th * r * x.dtype.itemsize))
    sign = numpy.ones((4, 4))
    sign[3, :] *= -1
    sign[:, 3] *= -1
    gg = be.asarray((numpy.kron(_G, _G) * sign.reshape(16, 1)).astype(x.dtype))
    return be.xp.einsum("in,ij->nj", du.reshape(16, o * c), gg).reshape(o, c, 3, 3)
