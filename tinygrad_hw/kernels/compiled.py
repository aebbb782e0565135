"""Compiled CPU kernels (numba) for the NumPy backend: each does a whole chunk's work in one call.

The NumPy kernels beside this module (:mod:`.conv`, :mod:`.winograd`, :mod:`.pool`) are the
reference; they dispatch here when :func:`active` says so, and the tests compare the two (and
PyTorch) on every shape they draw. Why compile at all: a NumPy call hands the GIL over on entry
and exit, several microseconds on a virtual machine, so worker threads running many small NumPy
calls (the ~30 calls of a Winograd chunk's tile transforms, the kh*kw slices of col2im, the
passes of max-pooling's argmax) get little from the second core. A compiled kernel does the same
work in one pass over memory and releases the GIL once.

Every kernel here is serial (``nogil=True``, no ``prange``): the chunks run in the worker threads
of :mod:`.parallel`, the one thread pool of the library, so numba's own pool never competes with
it (or with OpenBLAS) for the cores. ``cache=True`` keeps the machine code on disk beside this
file (or in numba's user cache where that is not writable): the first calls in a fresh
environment compile every kernel and dtype (5-16 s in all on the 2-core VM; ``warm_up()`` does them
all and returns how long it took), later processes load them in 0.2-0.3 s.

Falls back to the NumPy kernels (``active`` is False) when numba is not installed, when the
environment sets ``TINYGRAD_HW_NUMBA=0``, or when ``ENABLED`` is set to False at run time.
"""
from __future__ import annotations

import os
import time

import numpy

try:  # numba is optional (the data, test and bench extras install it)
    import numba
except ImportError:  # pragma: no cover - exercised on machines without numba
    numba = None

__all__ = ["AVAILABLE", "ENABLED", "active", "warm_up", "col2im", "wino_input", "wino_input_generic", "wino_output", "wino_output_generic",
           "wino_grad_output", "wino_grad_output_generic", "max_pool_forward", "max_pool_backward", "max_pool_2x2_forward",
           "max_pool_2x2_backward"]

AVAILABLE = numba is not None
# Switch for the compiled kernels: TINYGRAD_HW_NUMBA=0 in the environment, or False at run time.
ENABLED = os.environ.get("TINYGRAD_HW_NUMBA", "1").strip().lower() not in ("0", "false", "no", "off")

_FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


def active(be, *arrays) -> bool:
    """Whether the compiled kernels serve these arrays: numba present and enabled, the NumPy
    backend, float32 or float64 arrays."""
    return (ENABLED and AVAILABLE and be.name == "numpy"
            and all(a.dtype in _FLOATS for a in arrays))


if AVAILABLE:
    _jit = numba.njit(nogil=True, cache=True, fastmath=False, boundscheck=False)
else:
    def _jit(fn):
        return fn


# --------------------------------------------------------------------------------------------------
# col2im
# --------------------------------------------------------------------------------------------------
@_jit
def _valid(out_len, in_len, stride, pad, offset):
    """Outputs [lo, hi) whose window cell at ``offset`` lies inside the input (geometry.valid_range)."""
    lo = 0
    if pad - offset > 0:
        lo = (pad - offset + stride - 1) // stride
    hi = (in_len - 1 + pad - offset) // stride + 1
    if hi > out_len:
        hi = out_len
    if hi < lo:
        hi = lo
    return lo, hi


@_jit
def col2im(cols, gx, sh, sw, pt, pl, dh, dw):
    """col2im: ``gx`` (n, C, H, W) = the sum of every window cell of ``cols``
    (C, kh, kw, n, OH, OW) that falls inside the image (cells in the padding are dropped), in one
    pass instead of kh*kw strided NumPy adds. Both C-contiguous, read as flat arrays with running
    offsets. (A compiled im2col was measured too and dropped: NumPy's one strided copy of the
    padded input was as fast or faster, 3.6 against 3.7 ms for 64 images of 3 channels at 32x32,
    and 26 against 43 ms for the flipped convolution of an input gradient 16 -> 3 at batch 256.)"""
    n, c, h, w = gx.shape
    kh, kw, oh, ow = cols.shape[1], cols.shape[2], cols.shape[4], cols.shape[5]
    gf = gx.reshape(-1)
    cf = cols.reshape(-1)
    for k in range(gf.size):
        gf[k] = 0
    for b in range(n):
        for ch in range(c):
            plane = (b * c + ch) * h * w
            for i in range(kh):
                r0, r1 = _valid(oh, h, sh, pt, i * dh)
                for j in range(kw):
                    q0, q1 = _valid(ow, w, sw, pl, j * dw)
                    for r in range(r0, r1):
                        src = ((((ch * kh + i) * kw + j) * n + b) * oh + r) * ow
                        dst = plane + (r * sh - pt + i * dh) * w - pl + j * dw
                        if sw == 1:
                            for q in range(q0, q1):
                                gf[dst + q] += cf[src + q]
                        else:
                            for q in range(q0, q1):
                                gf[dst + q * sw] += cf[src + q]


# --------------------------------------------------------------------------------------------------
# Winograd F(m x m, 3x3) tile transforms, m = 2 or 4 (the products between them stay in BLAS)
# --------------------------------------------------------------------------------------------------
# Layout: a chunk's tiles are columns, tile (b, ti, tj) is column (b*th + ti)*tw + tj; V, M and U
# hold the alpha x alpha transformed values (alpha = m + 2) as alpha*alpha planes (row-major in
# the tile), V (alpha^2, C, tiles), M (alpha^2, O, tiles). Every transform works on one channel
# at a time and loops over all of its tiles in the innermost loop (long, contiguous, vectorised),
# and writes each output plane in one sequential run: 16 or 36 interleaved store streams a
# multiple of 4 KiB apart would alias in the cache.
@_jit
def _apply_left(mat, src, dst):
    """dst[a, e, :] = sum_l mat[a, l] * src[l, e, :] (zeros of ``mat`` skipped)."""
    rows, inner = mat.shape
    cols, nt = src.shape[1], src.shape[2]
    for a in range(rows):
        for e in range(cols):
            out = dst[a, e]
            first = True
            for l in range(inner):
                coef = mat[a, l]
                if coef == 0:
                    continue
                row = src[l, e]
                if first:
                    for i in range(nt):
                        out[i] = coef * row[i]
                    first = False
                else:
                    for i in range(nt):
                        out[i] += coef * row[i]
            if first:
                out[:] = 0


@_jit
def _apply_right(mat, src, dst, plane0, ch):
    """dst[plane0 + a*R + e, ch, :] = sum_l src[a, l, :] * mat[e, l], R = mat.shape[0]."""
    rows_out, inner = mat.shape
    nt = src.shape[2]
    for a in range(src.shape[0]):
        for e in range(rows_out):
            out = dst[plane0 + a * rows_out + e, ch]
            first = True
            for l in range(inner):
                coef = mat[e, l]
                if coef == 0:
                    continue
                row = src[a, l]
                if first:
                    for i in range(nt):
                        out[i] = coef * row[i]
                    first = False
                else:
                    for i in range(nt):
                        out[i] += coef * row[i]
            if first:
                out[:] = 0


@_jit
def _wino_input_f2(x, v, pt, pl, th, tw):
    """wino_input for F(2x2, 3x3) unrolled: the 16 values of a tile in registers
    (B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]), an image's tiles into a
    small buffer, then copied into V's 16 planes one run each (0.21 against 0.36 ms for 3 images
    of 32 channels at 32x32, the generic loop)."""
    n, c, h, w = x.shape
    hp, wp = 2 * th + 2, 2 * tw + 2
    plane = numpy.zeros((hp, wp), dtype=x.dtype)
    r0, r1 = max(pt, 0), min(pt + h, hp)
    c0, c1 = max(pl, 0), min(pl + w, wp)
    tiles = th * tw
    buf = numpy.empty((16, tiles + 16), dtype=x.dtype)  # padded rows: off the same cache sets
    for ch in range(c):
        for b in range(n):
            for r in range(r0, r1):
                for q in range(c0, c1):
                    plane[r, q] = x[b, ch, r - pt, q - pl]
            for ti in range(th):
                p0, p1, p2, p3 = plane[2 * ti], plane[2 * ti + 1], plane[2 * ti + 2], plane[2 * ti + 3]
                for tj in range(tw):
                    q = 2 * tj
                    col = ti * tw + tj
                    # B^T along rows (d0 - d2, d1 + d2, d2 - d1, d1 - d3), column by column
                    t00, t01, t02, t03 = p0[q] - p2[q], p0[q + 1] - p2[q + 1], p0[q + 2] - p2[q + 2], p0[q + 3] - p2[q + 3]
                    t10, t11, t12, t13 = p1[q] + p2[q], p1[q + 1] + p2[q + 1], p1[q + 2] + p2[q + 2], p1[q + 3] + p2[q + 3]
                    t20, t21, t22, t23 = p2[q] - p1[q], p2[q + 1] - p1[q + 1], p2[q + 2] - p1[q + 2], p2[q + 3] - p1[q + 3]
                    t30, t31, t32, t33 = p1[q] - p3[q], p1[q + 1] - p3[q + 1], p1[q + 2] - p3[q + 2], p1[q + 3] - p3[q + 3]
                    # B along columns
                    buf[0, col], buf[1, col], buf[2, col], buf[3, col] = t00 - t02, t01 + t02, t02 - t01, t01 - t03
                    buf[4, col], buf[5, col], buf[6, col], buf[7, col] = t10 - t12, t11 + t12, t12 - t11, t11 - t13
                    buf[8, col], buf[9, col], buf[10, col], buf[11, col] = t20 - t22, t21 + t22, t22 - t21, t21 - t23
                    buf[12, col], buf[13, col], buf[14, col], buf[15, col] = t30 - t32, t31 + t32, t32 - t31, t31 - t33
            start = b * tiles
            for k in range(16):
                dst = v[k, ch]
                for i in range(tiles):
                    dst[start + i] = buf[k, i]


@_jit
def _wino_input_f4(x, v, bt, pt, pl, th, tw):
    """wino_input for F(4x4, 3x3) unrolled: the tile gather fused into the row transform (each
    of a tile's six columns read from the bordered plane straight into B^T's six sums), the 36
    values in registers, an image's tiles into a small buffer, then copied into V's 36 planes one
    run each. The sums are the generic loop's (_apply_left then _apply_right: coefficient times
    value, added in the order of B^T's columns, zeros skipped), so V is bit for bit the same."""
    n, c, h, w = x.shape
    hp, wp = 4 * th + 2, 4 * tw + 2
    plane = numpy.zeros((hp, wp), dtype=x.dtype)
    r0, r1 = max(pt, 0), min(pt + h, hp)
    c0, c1 = max(pl, 0), min(pl + w, wp)
    tiles = th * tw
    buf = numpy.empty((36, tiles + 16), dtype=x.dtype)  # padded rows: off the same cache sets
    t = numpy.empty((6, 6), dtype=x.dtype)
    f4, f5, f2 = bt[0, 0], -bt[0, 2], bt[3, 3]  # 4, 5, 2 in x's dtype (no float64 promotion)
    for ch in range(c):
        for b in range(n):
            for r in range(r0, r1):
                for q in range(c0, c1):
                    plane[r, q] = x[b, ch, r - pt, q - pl]
            for ti in range(th):
                p0, p1, p2 = plane[4 * ti], plane[4 * ti + 1], plane[4 * ti + 2]
                p3, p4, p5 = plane[4 * ti + 3], plane[4 * ti + 4], plane[4 * ti + 5]
                for tj in range(tw):
                    col = ti * tw + tj
                    for e in range(6):
                        q = 4 * tj + e
                        d0, d1, d2, d3, d4, d5 = p0[q], p1[q], p2[q], p3[q], p4[q], p5[q]
                        # B^T along rows: [4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                        # [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]
                        t[0, e] = f4 * d0 + (-f5) * d2 + d4
                        t[1, e] = (-f4) * d1 + (-f4) * d2 + d3 + d4
                        t[2, e] = f4 * d1 + (-f4) * d2 + (-d3) + d4
                        t[3, e] = (-f2) * d1 + (-d2) + f2 * d3 + d4
                        t[4, e] = f2 * d1 + (-d2) + (-f2) * d3 + d4
                        t[5, e] = f4 * d1 + (-f5) * d3 + d5
                    for a in range(6):  # B along columns
                        s0, s1, s2, s3, s4, s5 = t[a, 0], t[a, 1], t[a, 2], t[a, 3], t[a, 4], t[a, 5]
                        k = 6 * a
                        buf[k, col] = f4 * s0 + (-f5) * s2 + s4
                        buf[k + 1, col] = (-f4) * s1 + (-f4) * s2 + s3 + s4
                        buf[k + 2, col] = f4 * s1 + (-f4) * s2 + (-s3) + s4
                        buf[k + 3, col] = (-f2) * s1 + (-s2) + f2 * s3 + s4
                        buf[k + 4, col] = f2 * s1 + (-s2) + (-f2) * s3 + s4
                        buf[k + 5, col] = f4 * s1 + (-f5) * s3 + s5
            start = b * tiles
            for k in range(36):
                dst = v[k, ch]
                for i in range(tiles):
                    dst[start + i] = buf[k, i]


@_jit
def wino_input(x, v, bt, m, pt, pl, th, tw):
    """V (alpha^2, C, n*th*tw) = B^T d B for the alpha x alpha tile d at rows m*ti - pt, columns
    m*tj - pl of every image of ``x`` (n, C, H, W), zero outside the image. Each image plane is
    first copied into a zero-bordered plane that stays in the cache (the same cells are written
    for every plane, so the border is zeroed once)."""
    n, c, h, w = x.shape
    alpha = bt.shape[0]
    if m == 2 and alpha == 4 and bt[0, 2] == -1:  # winograd.TRANSFORMS[2]'s B^T: the unrolled kernel
        _wino_input_f2(x, v, pt, pl, th, tw)
        return
    if m == 4 and alpha == 6 and bt[0, 0] == 4 and bt[0, 2] == -5 and bt[3, 3] == 2 and bt[5, 5] == 1:  # TRANSFORMS[4]'s B^T
        _wino_input_f4(x, v, bt, pt, pl, th, tw)
        return
    wino_input_generic(x, v, bt, m, pt, pl, th, tw)


@_jit
def wino_input_generic(x, v, bt, m, pt, pl, th, tw):
    """wino_input by the generic loops for any (B^T, m): the gather, then B^T and B applied as
    matrices (the unrolled kernels' reference in the tests)."""
    n, c, h, w = x.shape
    alpha = bt.shape[0]
    hp, wp = m * th + alpha - m, m * tw + alpha - m
    plane = numpy.zeros((hp, wp), dtype=x.dtype)
    r0, r1 = max(pt, 0), min(pt + h, hp)  # the plane's rows and columns that hold image cells
    c0, c1 = max(pl, 0), min(pl + w, wp)
    tiles = th * tw
    nt = n * tiles
    d = numpy.empty((alpha, alpha, nt), dtype=x.dtype)
    t = numpy.empty((alpha, alpha, nt), dtype=x.dtype)
    for ch in range(c):
        for b in range(n):
            for r in range(r0, r1):
                for q in range(c0, c1):
                    plane[r, q] = x[b, ch, r - pt, q - pl]
            for a in range(alpha):
                for e in range(alpha):
                    out = d[a, e]
                    for ti in range(th):
                        base = b * tiles + ti * tw
                        src = plane[m * ti + a]
                        for tj in range(tw):
                            out[base + tj] = src[m * tj + e]
        _apply_left(bt, d, t)  # B^T along the tile rows
        _apply_right(bt, t, v, 0, ch)  # B along the tile columns, into V's planes


@_jit
def _wino_output_f2(mm, y, bias, has_bias, th, tw):
    """wino_output for F(2x2, 3x3) unrolled (A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]): a tile's 16
    values read from M's planes into registers, the four outputs written straight into y. The
    sums are the generic loops' (A^T along the tile rows, then along the columns, in the order
    of A^T's columns), so y is bit for bit the same."""
    n, o, oh, ow = y.shape
    tiles = th * tw
    for oc in range(o):
        add = bias[oc] if has_bias else 0  # (typed as the generic loops type it)
        m0, m1, m2, m3 = mm[0, oc], mm[1, oc], mm[2, oc], mm[3, oc]
        m4, m5, m6, m7 = mm[4, oc], mm[5, oc], mm[6, oc], mm[7, oc]
        m8, m9, m10, m11 = mm[8, oc], mm[9, oc], mm[10, oc], mm[11, oc]
        m12, m13, m14, m15 = mm[12, oc], mm[13, oc], mm[14, oc], mm[15, oc]
        for b in range(n):
            for ti in range(th):
                r = 2 * ti
                two_rows = r + 1 < oh
                out0 = y[b, oc, r]
                out1 = y[b, oc, r + 1] if two_rows else out0
                base = b * tiles + ti * tw
                for tj in range(tw):
                    i = base + tj
                    # A^T along the tile rows, for each of the four columns
                    s00 = m0[i] + m4[i] + m8[i]
                    s01 = m1[i] + m5[i] + m9[i]
                    s02 = m2[i] + m6[i] + m10[i]
                    s03 = m3[i] + m7[i] + m11[i]
                    s10 = m4[i] + (-m8[i]) + (-m12[i])
                    s11 = m5[i] + (-m9[i]) + (-m13[i])
                    s12 = m6[i] + (-m10[i]) + (-m14[i])
                    s13 = m7[i] + (-m11[i]) + (-m15[i])
                    q = 2 * tj
                    out0[q] = s00 + s01 + s02 + add
                    if q + 1 < ow:
                        out0[q + 1] = s01 + (-s02) + (-s03) + add
                    if two_rows:
                        out1[q] = s10 + s11 + s12 + add
                        if q + 1 < ow:
                            out1[q + 1] = s11 + (-s12) + (-s13) + add


@_jit
def wino_output(mm, y, at, bias, has_bias, th, tw):
    """y (n, O, OH, OW) = A^T M A (+ bias[o]) of every tile of M (alpha^2, O, n*th*tw); the
    rows/columns of the last tiles past OH x OW are dropped. F(2x2) (winograd.TRANSFORMS[2]) runs
    an unrolled kernel (0.42 against 0.52 ms for 8 images of 32 channels at 32x32, 0.02 against
    0.09 ms for 8 of 128 at 4x4); other A^T the generic loops (an unrolled F(4x4), reading 36
    planes per tile, lost to them at 32x32: 0.33 against 0.25 ms for 4 images of 32 channels)."""
    mo, alpha = at.shape
    if mo == 2 and alpha == 4 and at[0, 3] == 0 and at[1, 3] == -1:
        _wino_output_f2(mm, y, bias, has_bias, th, tw)
        return
    wino_output_generic(mm, y, at, bias, has_bias, th, tw)


@_jit
def wino_output_generic(mm, y, at, bias, has_bias, th, tw):
    """wino_output by the generic loops for any A^T (the unrolled kernels' reference in the tests)."""
    n, o, oh, ow = y.shape
    mo, alpha = at.shape
    tiles = th * tw
    nt = n * tiles
    src = numpy.empty((alpha, alpha, nt), dtype=y.dtype)
    s = numpy.empty((mo, alpha, nt), dtype=y.dtype)
    z = numpy.empty((mo, mo, 1, nt), dtype=y.dtype)
    for oc in range(o):
        for k in range(alpha * alpha):  # (a view would do, but M's planes are O*tiles apart)
            row = mm[k, oc]
            dst = src[k // alpha, k % alpha]
            for i in range(nt):
                dst[i] = row[i]
        _apply_left(at, src, s)  # A^T along the tile rows
        _apply_right(at, s, z.reshape(mo * mo, 1, nt), 0, 0)  # A along the tile columns
        add = bias[oc] if has_bias else 0
        for a in range(mo):
            for e in range(mo):
                vals = z[a, e, 0]
                for b in range(n):
                    for ti in range(th):
                        r = mo * ti + a
                        if r >= oh:
                            continue
                        base = b * tiles + ti * tw
                        out = y[b, oc, r]
                        for tj in range(tw):
                            q = mo * tj + e
                            if q < ow:
                                out[q] = vals[base + tj] + add


@_jit
def _wino_grad_output_f2(gy, mm, th, tw):
    """wino_grad_output for F(2x2, 3x3) unrolled (A = [[1, 0], [1, 1], [1, -1], [0, -1]]): a
    tile's four gradients in registers, its 16 values into a small buffer per image, then copied
    into M's planes one run each. The generic loops' sums (bit for bit)."""
    n, o, oh, ow = gy.shape
    tiles = th * tw
    buf = numpy.empty((16, tiles + 16), dtype=gy.dtype)  # padded rows: off the same cache sets
    zero = numpy.zeros(1, dtype=gy.dtype)[0]  # past the edge (as the generic loops: +0)
    for oc in range(o):
        for b in range(n):
            for ti in range(th):
                r = 2 * ti
                row0 = gy[b, oc, r]
                two_rows = r + 1 < oh
                row1 = gy[b, oc, r + 1] if two_rows else row0
                for tj in range(tw):
                    q = 2 * tj
                    two_cols = q + 1 < ow
                    g00 = row0[q]
                    g01 = row0[q + 1] if two_cols else zero
                    g10 = row1[q] if two_rows else zero
                    g11 = row1[q + 1] if two_rows and two_cols else zero
                    # A along the tile rows: (g0, g0 + g1, g0 - g1, -g1), each column
                    t00, t01 = g00, g01
                    t10, t11 = g00 + g10, g01 + g11
                    t20, t21 = g00 + (-g10), g01 + (-g11)
                    t30, t31 = -g10, -g11
                    col = ti * tw + tj
                    buf[0, col], buf[1, col], buf[2, col], buf[3, col] = t00, t00 + t01, t00 + (-t01), -t01
                    buf[4, col], buf[5, col], buf[6, col], buf[7, col] = t10, t10 + t11, t10 + (-t11), -t11
                    buf[8, col], buf[9, col], buf[10, col], buf[11, col] = t20, t20 + t21, t20 + (-t21), -t21
                    buf[12, col], buf[13, col], buf[14, col], buf[15, col] = t30, t30 + t31, t30 + (-t31), -t31
            start = b * tiles
            for k in range(16):
                dst = mm[k, oc]
                for i in range(tiles):
                    dst[start + i] = buf[k, i]


@_jit
def wino_grad_output(gy, mm, at, th, tw):
    """M (alpha^2, O, n*th*tw) = A g A^T for every m x m tile g of the output gradient ``gy``
    (n, O, OH, OW), zero past the edge: the adjoint of the output transform, for the weight
    gradient. F(2x2) (winograd.TRANSFORMS[2]) on narrow outputs (at most 4 tiles a row) runs an
    unrolled kernel (0.032 against 0.045 ms for 4 images of 64 channels at 8x8, 0.072 against
    0.084 for 8 of 128 at 4x4); wider ones, where it lost (0.11 against 0.094 ms at 16x16, 0.50
    against 0.42 at 32x32, 8 images of 32 channels), and other A^T the generic loops."""
    mo, alpha = at.shape
    if mo == 2 and alpha == 4 and at[0, 3] == 0 and at[1, 3] == -1 and tw <= 4:
        _wino_grad_output_f2(gy, mm, th, tw)
        return
    wino_grad_output_generic(gy, mm, at, th, tw)


@_jit
def wino_grad_output_generic(gy, mm, at, th, tw):
    """wino_grad_output by the generic loops for any A^T (the unrolled kernel's reference in the
    tests)."""
    n, o, oh, ow = gy.shape
    mo, alpha = at.shape
    a_mat = numpy.ascontiguousarray(at.T)  # A (alpha, m)
    tiles = th * tw
    nt = n * tiles
    g = numpy.empty((mo, mo, nt), dtype=gy.dtype)
    t = numpy.empty((alpha, mo, nt), dtype=gy.dtype)
    for oc in range(o):
        for a in range(mo):
            for e in range(mo):
                out = g[a, e]
                for b in range(n):
                    for ti in range(th):
                        r = mo * ti + a
                        base = b * tiles + ti * tw
                        if r >= oh:
                            for tj in range(tw):
                                out[base + tj] = 0
                            continue
                        src = gy[b, oc, r]
                        for tj in range(tw):
                            q = mo * tj + e
                            out[base + tj] = src[q] if q < ow else 0
        _apply_left(a_mat, g, t)  # A along the tile rows
        _apply_right(a_mat, t, mm, 0, oc)  # A^T along the tile columns, into M's planes


# --------------------------------------------------------------------------------------------------
# max pooling: values and first-maximum positions in one pass, and the scatter back
# --------------------------------------------------------------------------------------------------
@_jit
def max_pool_forward(x, y, argmax, kh, kw, sh, sw, ph, pw, dh, dw):
    """y = the maximum of every window of ``x`` (n, C, H, W), ``argmax`` its kernel position
    i*kw + j. Cells in the padding are no candidates; ties go to the first maximum in row-major
    window order; a NaN wins, the first NaN of the window (as the NumPy kernel)."""
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    for b in range(n):
        for ch in range(c):
            for r in range(oh):
                for q in range(ow):
                    best = -numpy.inf
                    pos = 0
                    found = False
                    for i in range(kh):
                        hi = r * sh - ph + i * dh
                        if hi < 0 or hi >= h:
                            continue
                        for j in range(kw):
                            wi = q * sw - pw + j * dw
                            if wi < 0 or wi >= w:
                                continue
                            val = x[b, ch, hi, wi]
                            if not found or val > best:
                                best, pos, found = val, i * kw + j, True
                            if val != val:  # NaN: the window's output is NaN, at its first NaN
                                best, pos = val, i * kw + j
                                break
                        if best != best:
                            break
                    y[b, ch, r, q] = best
                    argmax[b, ch, r, q] = pos


@_jit
def max_pool_backward(gy, argmax, gx, kw, sh, sw, ph, pw, dh, dw):
    """gx (n, C, H, W) = zeros plus every output gradient of ``gy`` added at its window's maximum
    (``argmax`` from max_pool_forward)."""
    n, c, h, w = gx.shape
    oh, ow = gy.shape[2], gy.shape[3]
    for b in range(n):
        for ch in range(c):
            for y in range(h):
                for x in range(w):
                    gx[b, ch, y, x] = 0
            for r in range(oh):
                for q in range(ow):
                    t = argmax[b, ch, r, q]
                    hi, wi = r * sh - ph + (t // kw) * dh, q * sw - pw + (t % kw) * dw
                    if 0 <= hi < h and 0 <= wi < w:  # (a window wholly in the padding has none)
                        gx[b, ch, hi, wi] += gy[b, ch, r, q]


@_jit
def _first_nan(a, b, c, d):
    """Position of the first NaN of a 2x2 window in row-major order."""
    if a != a:
        return 0
    if b != b:
        return 1
    if c != c:
        return 2
    return 3


@_jit
def max_pool_2x2_forward(x, y, argmax):
    """max_pool_forward for 2x2 windows at stride 2 with no padding or dilation (the networks'
    pooling): the four cells in registers, no bounds checks (every window is inside the input;
    an odd last row or column is not read). The rules are max_pool_forward's."""
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    xf = x.reshape(n * c, h, w)
    yf = y.reshape(n * c, oh, ow)
    af = argmax.reshape(n * c, oh, ow)
    for p in range(n * c):
        for r in range(oh):
            for q in range(ow):
                v0, v1 = xf[p, 2 * r, 2 * q], xf[p, 2 * r, 2 * q + 1]
                v2, v3 = xf[p, 2 * r + 1, 2 * q], xf[p, 2 * r + 1, 2 * q + 1]
                best, pos = v0, 0
                if v1 > best:
                    best, pos = v1, 1
                if v2 > best:
                    best, pos = v2, 2
                if v3 > best:
                    best, pos = v3, 3
                if v0 != v0 or v1 != v1 or v2 != v2 or v3 != v3:  # a NaN wins, the first one
                    pos = _first_nan(v0, v1, v2, v3)
                    best = v0 if pos == 0 else (v1 if pos == 1 else (v2 if pos == 2 else v3))
                yf[p, r, q] = best
                af[p, r, q] = pos


@_jit
def max_pool_2x2_backward(gy, argmax, gx):
    """max_pool_backward for max_pool_2x2_forward: every input cell written once (its window's
    gradient where it holds the maximum, else zero), no separate zeroing pass."""
    n, c, h, w = gx.shape
    oh, ow = gy.shape[2], gy.shape[3]
    gf = gy.reshape(n * c, oh, ow)
    af = argmax.reshape(n * c, oh, ow)
    xf = gx.reshape(n * c, h, w)
    for p in range(n * c):
        for r in range(oh):
            for q in range(ow):
                g, t = gf[p, r, q], af[p, r, q]
                xf[p, 2 * r, 2 * q] = g if t == 0 else 0
                xf[p, 2 * r, 2 * q + 1] = g if t == 1 else 0
                xf[p, 2 * r + 1, 2 * q] = g if t == 2 else 0
                xf[p, 2 * r + 1, 2 * q + 1] = g if t == 3 else 0
            if w > 2 * ow:  # the odd last column: in no window
                xf[p, 2 * r, w - 1] = 0
                xf[p, 2 * r + 1, w - 1] = 0
        if h > 2 * oh:  # the odd last row
            for q in range(w):
                xf[p, h - 1, q] = 0


def warm_up() -> float:
    """Compile (or load from numba's cache) every kernel, those of :mod:`.compiled_nn` too, for
    float32 and float64 on tiny inputs; returns the seconds it took. Not needed before use (a kernel compiles on its first call),
    but it keeps that cost out of whatever is timed next."""
    if not AVAILABLE:
        return 0.0
    from .winograd import TRANSFORMS
    start = time.perf_counter()
    for dtype in _FLOATS:
        x = numpy.zeros((1, 1, 4, 4), dtype)
        cols = numpy.zeros((1, 3, 3, 1, 4, 4), dtype)
        col2im(cols, x, 1, 1, 1, 1, 1, 1)
        for bt, _, at in TRANSFORMS.values():
            bt, at = bt.astype(dtype), at.astype(dtype)
            alpha, m = bt.shape[0], at.shape[0]
            v = numpy.empty((alpha * alpha, 1, 4), dtype)
            wino_input(x, v, bt, m, 1, 1, 2, 2)
            out = numpy.empty((1, 1, 2 * m, 2 * m), dtype)
            wino_output(v, out, at, numpy.zeros(1, dtype), False, 2, 2)
            wino_grad_output(out, v, at, 2, 2)
        y = numpy.empty((1, 1, 2, 2), dtype)
        am = numpy.empty((1, 1, 2, 2), numpy.int8)
        max_pool_forward(x, y, am, 2, 2, 2, 2, 0, 0, 1, 1)
        max_pool_backward(y, am, x, 2, 2, 2, 0, 0, 1, 1)
        max_pool_2x2_forward(x, y, am)
        max_pool_2x2_backward(y, am, x)
    from . import compiled_nn  # the kernels of the layers around convolutions (imports this module)
    compiled_nn.warm_up()
    return time.perf_counter() - start
