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
    from numba import uint64 as U
except ImportError:  # pragma: no cover - exercised on machines without numba
    numba = None
    U = int

__all__ = ["AVAILABLE", "ENABLED", "CHANNELS_LAST_MIN", "active", "warm_up", "col2im", "wino_input", "wino_input_generic", "wino_output", "wino_output_cl",
           "wino_grad_output", "wino_grad_output_cl", "wino_grad_output_generic", "max_pool_forward", "max_pool_backward", "max_pool_2x2_forward",
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
def _channels_last_plane(x, b, plane, pt, pl, wp, r0, r1, c0, c1):
    """plane[(r*wp + q)*C + ch] = x[b, ch, r - pt, q - pl] for the rows [r0, r1) and columns
    [c0, c1) of the zero-padded image that hold image cells; the other cells are not written (the
    caller's zeros stay). Indices are unsigned: numba checks signed indices for wrap-around,
    which costs about 1 ns an element and keeps loops from vectorising."""
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    xf = x.reshape(-1)
    uc = U(c)
    if h * w <= 64:  # small images: read across the channels, write the plane in order
        hw = U(h * w)  # (paired runs: 0.32x the time of the other order at 8x8, 1.4-2.7x at 16x16 and up)
        img = U(b * c * h * w)
        for r in range(r0, r1):
            s_row = img + U((r - pt) * w - pl)
            for q in range(c0, c1):
                d = (U(r) * U(wp) + U(q)) * uc
                s = s_row + U(q)
                for ch in range(uc):
                    plane[d + ch] = xf[s + ch * hw]
        return
    # row by row of the plane (wp * C values, in L1), each channel's image row read in order and
    # written to every C-th cell of it; channel by channel over the whole plane (148 KB at 32
    # channels of 32x32) went to L2 for every write: 0.084 against 0.320 ms for 8 such images,
    # 0.084 against 0.425 for 16 of 64 channels at 16x16 (one thread, best of 30)
    img = U(b * c * h * w)
    hw = U(h * w)
    for r in range(r0, r1):
        s_row = img + U((r - pt) * w + (c0 - pl))
        d_row = (U(r) * U(wp) + U(c0)) * uc
        for ch in range(uc):
            s = s_row + ch * hw
            d = d_row + ch
            for q in range(U(c1 - c0)):
                plane[d + q * uc] = xf[s + q]


@_jit
def _wino_input_cl_f2(x, v, pt, pl, th, tw):
    """wino_input for F(2x2, 3x3) (B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0],
    [0, 1, 0, -1]]): each image copied channels-last into a zero-bordered plane, then every sum
    of a tile is one loop over all channels (contiguous in the plane and in V^T: vectorised)."""
    n, c, h, w = x.shape
    hp, wp = 2 * th + 2, 2 * tw + 2
    plane = numpy.zeros(hp * wp * c, dtype=x.dtype)
    r0, r1 = max(pt, 0), min(pt + h, hp)
    c0, c1 = max(pl, 0), min(pl + w, wp)
    tiles = th * tw
    uc = U(c)
    t = numpy.empty(16 * c, dtype=x.dtype)
    vf = v.reshape(-1)
    rs = U(wp) * uc  # one row of the plane
    ps = U(n * tiles) * uc  # one plane of V^T
    for b in range(n):
        _channels_last_plane(x, b, plane, pt, pl, wp, r0, r1, c0, c1)
        for ti in range(th):
            for tj in range(tw):
                col = U(b * tiles + ti * tw + tj)
                for e in range(4):  # B^T along the tile rows, column e of the tile
                    base = (U(2 * ti) * U(wp) + U(2 * tj + e)) * uc
                    to = U(e) * uc
                    for ch in range(uc):
                        i = base + ch
                        p0, p1, p2, p3 = plane[i], plane[i + rs], plane[i + U(2) * rs], plane[i + U(3) * rs]
                        k = to + ch
                        t[k] = p0 - p2
                        t[k + U(4) * uc] = p1 + p2
                        t[k + U(8) * uc] = p2 - p1
                        t[k + U(12) * uc] = p1 - p3
                for a in range(4):  # B along the tile columns, row a: V^T's planes 4a .. 4a+3
                    so = U(4 * a) * uc
                    vo = U(4 * a) * ps + col * uc
                    for ch in range(uc):
                        k = so + ch
                        t0, t1, t2, t3 = t[k], t[k + uc], t[k + U(2) * uc], t[k + U(3) * uc]
                        o = vo + ch
                        vf[o] = t0 - t2
                        vf[o + ps] = t1 + t2
                        vf[o + U(2) * ps] = t2 - t1
                        vf[o + U(3) * ps] = t1 - t3


@_jit
def _wino_input_cl_f4(x, v, bt, pt, pl, th, tw):
    """wino_input for F(4x4, 3x3), as _wino_input_cl_f2: the sums are the generic loops' (coefficient
    times value, added in the order of B^T's columns, zeros skipped), so V is bit for bit the same."""
    n, c, h, w = x.shape
    hp, wp = 4 * th + 2, 4 * tw + 2
    plane = numpy.zeros(hp * wp * c, dtype=x.dtype)
    r0, r1 = max(pt, 0), min(pt + h, hp)
    c0, c1 = max(pl, 0), min(pl + w, wp)
    tiles = th * tw
    uc = U(c)
    t = numpy.empty(36 * c, dtype=x.dtype)
    vf = v.reshape(-1)
    f4, f5, f2 = bt[0, 0], -bt[0, 2], bt[3, 3]  # 4, 5, 2 in x's dtype (no float64 promotion)
    rs = U(wp) * uc
    ps = U(n * tiles) * uc
    for b in range(n):
        _channels_last_plane(x, b, plane, pt, pl, wp, r0, r1, c0, c1)
        for ti in range(th):
            for tj in range(tw):
                col = U(b * tiles + ti * tw + tj)
                for e in range(6):
                    # B^T along rows: [4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                    # [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]
                    base = (U(4 * ti) * U(wp) + U(4 * tj + e)) * uc
                    to = U(e) * uc
                    for ch in range(uc):
                        i = base + ch
                        d0, d1, d2 = plane[i], plane[i + rs], plane[i + U(2) * rs]
                        d3, d4, d5 = plane[i + U(3) * rs], plane[i + U(4) * rs], plane[i + U(5) * rs]
                        k = to + ch
                        t[k] = f4 * d0 + (-f5) * d2 + d4
                        t[k + U(6) * uc] = (-f4) * d1 + (-f4) * d2 + d3 + d4
                        t[k + U(12) * uc] = f4 * d1 + (-f4) * d2 + (-d3) + d4
                        t[k + U(18) * uc] = (-f2) * d1 + (-d2) + f2 * d3 + d4
                        t[k + U(24) * uc] = f2 * d1 + (-d2) + (-f2) * d3 + d4
                        t[k + U(30) * uc] = f4 * d1 + (-f5) * d3 + d5
                for a in range(6):  # B along columns
                    so = U(6 * a) * uc
                    vo = U(6 * a) * ps + col * uc
                    for ch in range(uc):
                        k = so + ch
                        s0, s1, s2 = t[k], t[k + uc], t[k + U(2) * uc]
                        s3, s4, s5 = t[k + U(3) * uc], t[k + U(4) * uc], t[k + U(5) * uc]
                        o = vo + ch
                        vf[o] = f4 * s0 + (-f5) * s2 + s4
                        vf[o + ps] = (-f4) * s1 + (-f4) * s2 + s3 + s4
                        vf[o + U(2) * ps] = f4 * s1 + (-f4) * s2 + (-s3) + s4
                        vf[o + U(3) * ps] = (-f2) * s1 + (-s2) + f2 * s3 + s4
                        vf[o + U(4) * ps] = f2 * s1 + (-s2) + (-f2) * s3 + s4
                        vf[o + U(5) * ps] = f4 * s1 + (-f5) * s3 + s5


@_jit
def _wino_input_tiles_f2(x, v, pt, pl, th, tw):
    """wino_input for F(2x2, 3x3), channel-major V (few channels), unrolled: the 16 values of a tile in registers
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
def _wino_input_tiles_f4(x, v, bt, pt, pl, th, tw):
    """wino_input for F(4x4, 3x3), channel-major V (few channels), unrolled: the tile gather fused into the row transform (each
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


# Channels from which wino_input writes V channels-last (tiles by channels): its sums run over
# the channels, which pays from about 16 of them (paired runs against the tile-by-tile
# kernels: 0.33-0.51 of the time at 32-64 channels, but 1.2-1.8x at 6-12).
CHANNELS_LAST_MIN = 16


@_jit
def wino_input(x, v, bt, m, pt, pl, th, tw, channels_last):
    """B^T d B for the alpha x alpha tile d at rows m*ti - pt, columns m*tj - pl of every image
    of ``x`` (n, C, H, W), zero outside the image, into V: channels-last, (alpha^2, n*th*tw, C)
    (every sum of the transform one vectorised loop over the channels; the products read it
    transposed, BLAS takes either order), or channel-major, (alpha^2, C, n*th*tw) (a tile of
    one channel at a time in registers: better for few channels, see CHANNELS_LAST_MIN).
    F(2x2) and F(4x4) (winograd.TRANSFORMS) run unrolled kernels, other B^T the generic loops;
    all give V bit for bit the same."""
    n, c, h, w = x.shape
    alpha = bt.shape[0]
    f2 = m == 2 and alpha == 4 and bt[0, 2] == -1  # winograd.TRANSFORMS[2]'s B^T
    f4 = m == 4 and alpha == 6 and bt[0, 0] == 4 and bt[0, 2] == -5 and bt[3, 3] == 2 and bt[5, 5] == 1  # TRANSFORMS[4]'s
    if channels_last:
        if f2:
            _wino_input_cl_f2(x, v, pt, pl, th, tw)
        elif f4:
            _wino_input_cl_f4(x, v, bt, pt, pl, th, tw)
        else:
            ref = numpy.empty((alpha * alpha, c, v.shape[1]), dtype=x.dtype)
            wino_input_generic(x, ref, bt, m, pt, pl, th, tw)
            for k in range(alpha * alpha):
                for ch in range(c):
                    for i in range(v.shape[1]):
                        v[k, i, ch] = ref[k, ch, i]
    elif f2:
        _wino_input_tiles_f2(x, v, pt, pl, th, tw)
    elif f4:
        _wino_input_tiles_f4(x, v, bt, pt, pl, th, tw)
    else:
        wino_input_generic(x, v, bt, m, pt, pl, th, tw)


@_jit
def wino_input_generic(x, v, bt, m, pt, pl, th, tw):
    """wino_input by the generic loops for any (B^T, m), channel-major: V (alpha^2, C, n*th*tw)
    by the gather, then B^T and B applied as matrices (the unrolled kernels' reference in the
    tests)."""
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
def wino_output(mm, y, at, bias, has_bias, th, tw, relu=False):
    """y (n, O, OH, OW) = A^T M A (+ bias[o]) of every tile of M (alpha^2, O, n*th*tw); the
    rows/columns of the last tiles past OH x OW are dropped. For any A^T: A^T along the tile
    rows straight from M's planes, then along the columns, each a loop over all tiles of one
    output channel (unsigned indices, so it vectorises), then every value to its place in y.
    (This replaced an unrolled F(2x2) kernel, tile by tile, that it beats 1.25-3x: 0.20 against
    0.57 ms for 16 images of 32 channels at 16x16, 0.50 against 0.87 for 16 of 128 at 8x8.)
    ``relu``: max(y, 0) as it is written (compiled_nn's ReLU: NaN stays, -0.0 becomes +0.0), for
    a fused conv -> ReLU."""
    n, o, oh, ow = y.shape
    mo, alpha = at.shape
    tiles = th * tw
    nt = n * tiles
    un = U(nt)
    mmf = mm.reshape(-1)
    s = numpy.empty(mo * alpha * nt, dtype=y.dtype)  # [a, e', tile]
    z = numpy.empty(mo * mo * nt, dtype=y.dtype)  # [a, e, tile]
    yf = y.reshape(-1)
    plane = U(o) * un  # one of M's alpha^2 planes
    for oc in range(o):
        m0 = U(oc) * un
        for a in range(mo):  # A^T along the tile rows: s[a, e'] = sum_l at[a, l] M[l*alpha + e']
            for e in range(alpha):
                d = U(a * alpha + e) * un
                first = True
                for l in range(alpha):
                    coef = at[a, l]
                    if coef == 0:
                        continue
                    src = m0 + U(l * alpha + e) * plane
                    if first:
                        for i in range(un):
                            s[d + i] = coef * mmf[src + i]
                        first = False
                    else:
                        for i in range(un):
                            s[d + i] += coef * mmf[src + i]
        for a in range(mo):  # A along the tile columns: z[a, e] = sum_l at[e, l] s[a, l]
            for e in range(mo):
                d = U(a * mo + e) * un
                first = True
                for l in range(alpha):
                    coef = at[e, l]
                    if coef == 0:
                        continue
                    src = U(a * alpha + l) * un
                    if first:
                        for i in range(un):
                            z[d + i] = coef * s[src + i]
                        first = False
                    else:
                        for i in range(un):
                            z[d + i] += coef * s[src + i]
        add = bias[oc] if has_bias else 0
        for a in range(mo):
            for e in range(mo):
                vals = U(a * mo + e) * un
                qs = (ow - e + mo - 1) // mo  # tile columns whose column e is inside y
                if qs <= 0:
                    continue
                for b in range(n):
                    for ti in range(th):
                        r = mo * ti + a
                        if r >= oh:
                            break
                        src = vals + U(b * tiles + ti * tw)
                        dst = U(((b * o + oc) * oh + r) * ow + e)
                        if relu:  # max(v, 0) as compiled_nn's ReLU: NaN stays, -0.0 -> +0.0
                            for tj in range(U(qs)):
                                v = z[src + tj] + add
                                yf[dst + U(mo) * tj] = 0 if v <= 0 else v
                        else:
                            for tj in range(U(qs)):
                                yf[dst + U(mo) * tj] = z[src + tj] + add


@_jit
def _equals_flat(mat, ref):
    """Whether every entry of ``mat`` equals ``ref``'s, row-major."""
    flat = mat.reshape(-1) if mat.flags.c_contiguous else mat.copy().reshape(-1)
    for i in range(flat.size):
        if flat[i] != ref[i]:
            return False
    return True


@_jit
def _standard_at(at):
    """Which unrolled output kernel ``at`` fits: 2 or 4 for winograd.TRANSFORMS' A^T of F(2x2) or
    F(4x4), entry for entry, else 0 (the generic loops)."""
    mo, alpha = at.shape
    if mo == 2 and alpha == 4 and _equals_flat(at, (1, 1, 1, 0, 0, 1, -1, -1)):
        return 2
    if mo == 4 and alpha == 6 and _equals_flat(at, (1, 1, 1, 1, 1, 0, 0, 1, -1, 2, -2, 0,
                                                     0, 1, 1, 4, 4, 0, 0, 1, -1, 8, -8, 1)):
        return 4
    return 0


@_jit
def _wino_output_cl_f2(mf, z, s, at, b, th, tw, ps, uo):
    """wino_output_cl's tiles of image ``b`` for F(2x2, 3x3), unrolled: A^T along the tile rows
    into ``s`` (2 x 4 rows of O), then along the columns into ``z``; the generic loops' sums
    in their order (bit for bit). Two stages of few loads and stores each vectorise (one
    loop with all 16 loads and 4 stores did not)."""
    wz = U(tw * 2) * uo
    for ti in range(th):
        for tj in range(tw):
            col = U((b * th + ti) * tw + tj) * uo
            for e in range(4):  # s[a, e] = sum_l at[a, l] M[l*4 + e]
                src = col + U(e) * ps
                dst = U(e) * uo
                for k in range(uo):
                    i = src + k
                    d0 = mf[i]
                    d1 = mf[i + U(4) * ps]
                    d2 = mf[i + U(8) * ps]
                    d3 = mf[i + U(12) * ps]
                    j = dst + k
                    s[j] = d0 + d1 + d2
                    s[j + U(4) * uo] = d1 - d2 - d3
            for a in range(2):  # z[a, e] = sum_l at[e, l] s[a, l]
                src = U(a * 4) * uo
                dst = (U(ti * 2) + U(a)) * wz + U(tj * 2) * uo
                for k in range(uo):
                    i = src + k
                    t0 = s[i]
                    t1 = s[i + U(1) * uo]
                    t2 = s[i + U(2) * uo]
                    t3 = s[i + U(3) * uo]
                    j = dst + k
                    z[j] = t0 + t1 + t2
                    z[j + U(1) * uo] = t1 - t2 - t3


@_jit
def _wino_output_cl_f4(mf, z, s, at, b, th, tw, ps, uo):
    """wino_output_cl's tiles of image ``b`` for F(4x4, 3x3), unrolled: A^T along the tile rows
    into ``s`` (4 x 6 rows of O), then along the columns into ``z``; the generic loops' sums
    in their order (bit for bit). Two stages of few loads and stores each vectorise (one
    loop with all 36 loads and 16 stores did not)."""
    c2, c4, c8 = at[1, 3], at[2, 3], at[3, 3]  # 2, 4, 8 in y's dtype (no float64 promotion)
    wz = U(tw * 4) * uo
    for ti in range(th):
        for tj in range(tw):
            col = U((b * th + ti) * tw + tj) * uo
            for e in range(6):  # s[a, e] = sum_l at[a, l] M[l*6 + e]
                src = col + U(e) * ps
                dst = U(e) * uo
                for k in range(uo):
                    i = src + k
                    d0 = mf[i]
                    d1 = mf[i + U(6) * ps]
                    d2 = mf[i + U(12) * ps]
                    d3 = mf[i + U(18) * ps]
                    d4 = mf[i + U(24) * ps]
                    d5 = mf[i + U(30) * ps]
                    j = dst + k
                    s[j] = d0 + d1 + d2 + d3 + d4
                    s[j + U(6) * uo] = d1 - d2 + c2 * d3 - c2 * d4
                    s[j + U(12) * uo] = d1 + d2 + c4 * d3 + c4 * d4
                    s[j + U(18) * uo] = d1 - d2 + c8 * d3 - c8 * d4 + d5
            for a in range(4):  # z[a, e] = sum_l at[e, l] s[a, l]
                src = U(a * 6) * uo
                dst = (U(ti * 4) + U(a)) * wz + U(tj * 4) * uo
                for k in range(uo):
                    i = src + k
                    t0 = s[i]
                    t1 = s[i + U(1) * uo]
                    t2 = s[i + U(2) * uo]
                    t3 = s[i + U(3) * uo]
                    t4 = s[i + U(4) * uo]
                    t5 = s[i + U(5) * uo]
                    j = dst + k
                    z[j] = t0 + t1 + t2 + t3 + t4
                    z[j + U(1) * uo] = t1 - t2 + c2 * t3 - c2 * t4
                    z[j + U(2) * uo] = t1 + t2 + c4 * t3 + c4 * t4
                    z[j + U(3) * uo] = t1 - t2 + c8 * t3 - c8 * t4 + t5


@_jit
def _wino_output_cl_generic(mf, z, s, at, b, th, tw, ps, uo):
    """wino_output_cl's tiles of image ``b`` for any A^T: every sum a loop over the output
    channels (the unrolled kernels' reference in the tests)."""
    mo, alpha = at.shape
    tiles = th * tw
    wz = U(tw * mo)  # the image buffer's row: whole tiles
    for ti in range(th):
        for tj in range(tw):
            col = U(b * tiles + ti * tw + tj) * uo
            for a in range(mo):  # s[a, e'] = sum_l at[a, l] M[l*alpha + e']
                for e in range(alpha):
                    d = U(a * alpha + e) * uo
                    first = True
                    for l in range(alpha):
                        coef = at[a, l]
                        if coef == 0:
                            continue
                        src = U(l * alpha + e) * ps + col
                        if first:
                            for k in range(uo):
                                s[d + k] = coef * mf[src + k]
                            first = False
                        else:
                            for k in range(uo):
                                s[d + k] += coef * mf[src + k]
            for a in range(mo):  # z[a, e] = sum_l at[e, l] s[a, l]
                for e in range(mo):
                    d = (U(ti * mo + a) * wz + U(tj * mo + e)) * uo
                    first = True
                    for l in range(alpha):
                        coef = at[e, l]
                        if coef == 0:
                            continue
                        src = U(a * alpha + l) * uo
                        if first:
                            for k in range(uo):
                                z[d + k] = coef * s[src + k]
                            first = False
                        else:
                            for k in range(uo):
                                z[d + k] += coef * s[src + k]


@_jit
def wino_output_cl(mt, y, at, bias, has_bias, th, tw, relu=False):
    """wino_output from M channels-last, (alpha^2, n*th*tw, O): the product V U^T, which BLAS
    runs 1.3-2.4x faster than U V^T at 32-64 channels (K = C is small; 166 against 69 GFLOP/s for
    36 planes of 32 x 32 by 512 tiles, one thread). Tile by tile, every sum of A^T M A one loop
    over the output channels (contiguous: vectorised) into an image buffer, rows of (OW', O)
    in L1, then each output row transposed into y's NCHW. The sums are wino_output's (coefficient
    times value in the order of A^T's columns, zeros skipped, then + bias), so y is bit for bit
    the same. ``relu``: max(y, 0) as it is written (as wino_output's), for a fused conv -> ReLU."""
    n, o, oh, ow = y.shape
    mo, alpha = at.shape
    tiles = th * tw
    uo = U(o)
    mf = mt.reshape(-1)
    yf = y.reshape(-1)
    ps = U(n * tiles) * uo  # one of M's alpha^2 planes
    s = numpy.empty(mo * alpha * o, dtype=y.dtype)  # [a, l, o]: A^T along the tile rows
    wz = U(tw * mo)  # the image buffer's row: whole tiles
    z = numpy.empty(th * mo * tw * mo * o, dtype=y.dtype)  # [row, column, o]
    unrolled = _standard_at(at)
    for b in range(n):
        if unrolled == 2:
            _wino_output_cl_f2(mf, z, s, at, b, th, tw, ps, uo)
        elif unrolled == 4:
            _wino_output_cl_f4(mf, z, s, at, b, th, tw, ps, uo)
        else:
            _wino_output_cl_generic(mf, z, s, at, b, th, tw, ps, uo)
        for r in range(oh):  # + bias, each row transposed into NCHW (reads within one row of z)
            zr = U(r) * wz * uo
            for oc in range(uo):
                dst = ((U(b) * uo + oc) * U(oh) + U(r)) * U(ow)
                src = zr + oc
                if has_bias:
                    add = bias[oc]
                    if relu:  # max(v, 0) as compiled_nn's ReLU: NaN stays, -0.0 -> +0.0
                        for q in range(U(ow)):
                            v = z[src + q * uo] + add
                            yf[dst + q] = 0 if v <= 0 else v
                    else:
                        for q in range(U(ow)):
                            yf[dst + q] = z[src + q * uo] + add
                elif relu:
                    for q in range(U(ow)):
                        v = z[src + q * uo] + 0
                        yf[dst + q] = 0 if v <= 0 else v
                else:  # + 0 as wino_output (a -0.0 comes out +0.0)
                    for q in range(U(ow)):
                        yf[dst + q] = z[src + q * uo] + 0


@_jit
def _wino_grad_output_f2(gy, mm, th, tw):
    """wino_grad_output for F(2x2, 3x3) unrolled (A = [[1, 0], [1, 1], [1, -1], [0, -1]]): a
    tile's four gradients in registers, its 16 values into a small buffer per image, then copied
    into M's planes one run each. The generic loops' sums (bit for bit)."""
    n, o, oh, ow = gy.shape
    tiles = th * tw
    buf = numpy.empty((16, tiles + 16), dtype=gy.dtype)  # padded rows: off the same cache sets
    zero = numpy.zeros(1, dtype=gy.dtype)[0]  # past the edge (as the generic loops: +0)
    uow = U(ow)
    for oc in range(o):
        for b in range(n):
            for ti in range(th):
                r = 2 * ti
                row0 = gy[b, oc, r]
                two_rows = r + 1 < oh
                row1 = gy[b, oc, r + 1] if two_rows else row0
                for tj in range(U(tw)):  # unsigned indices: no wrap-around checks
                    q = U(2) * tj
                    two_cols = q + U(1) < uow
                    g00 = row0[q]
                    g01 = row0[q + U(1)] if two_cols else zero
                    g10 = row1[q] if two_rows else zero
                    g11 = row1[q + U(1)] if two_rows and two_cols else zero
                    # A along the tile rows: (g0, g0 + g1, g0 - g1, -g1), each column
                    t00, t01 = g00, g01
                    t10, t11 = g00 + g10, g01 + g11
                    t20, t21 = g00 + (-g10), g01 + (-g11)
                    t30, t31 = -g10, -g11
                    col = U(ti * tw) + tj
                    buf[0, col], buf[1, col], buf[2, col], buf[3, col] = t00, t00 + t01, t00 + (-t01), -t01
                    buf[4, col], buf[5, col], buf[6, col], buf[7, col] = t10, t10 + t11, t10 + (-t11), -t11
                    buf[8, col], buf[9, col], buf[10, col], buf[11, col] = t20, t20 + t21, t20 + (-t21), -t21
                    buf[12, col], buf[13, col], buf[14, col], buf[15, col] = t30, t30 + t31, t30 + (-t31), -t31
            start = U(b * tiles)
            for k in range(16):
                dst = mm[k, oc]
                for i in range(U(tiles)):
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
def _wino_grad_output_cl_f2(plane, mf, t, at, b, th, tw, ps, uo):
    """wino_grad_output_cl's tiles of image ``b`` (channels-last in ``plane``) for F(2x2, 3x3),
    unrolled: A along the tile rows into ``t`` (4 x 2 rows of O), then A^T along the columns
    into M's 16 planes; the generic loops' sums in their order (bit for bit)."""
    rs = U(tw * 2) * uo  # one row of the plane
    for ti in range(th):
        for tj in range(tw):
            col = U((b * th + ti) * tw + tj) * uo
            for e in range(2):  # t[a, e] = sum_l A[a, l] g[l, e]
                src = U(ti * 2) * rs + U(tj * 2 + e) * uo
                dst = U(e) * uo
                for k in range(uo):
                    i = src + k
                    g0 = plane[i]
                    g1 = plane[i + U(1) * rs]
                    j = dst + k
                    t[j] = g0
                    t[j + U(2) * uo] = g0 + g1
                    t[j + U(4) * uo] = g0 - g1
                    t[j + U(6) * uo] = -g1
            for a in range(4):  # M[a*4 + e] = sum_l A[e, l] t[a, l]
                src = U(a * 2) * uo
                dst = U(a * 4) * ps + col
                for k in range(uo):
                    i = src + k
                    s0 = t[i]
                    s1 = t[i + U(1) * uo]
                    j = dst + k
                    mf[j] = s0
                    mf[j + U(1) * ps] = s0 + s1
                    mf[j + U(2) * ps] = s0 - s1
                    mf[j + U(3) * ps] = -s1


@_jit
def _wino_grad_output_cl_f4(plane, mf, t, at, b, th, tw, ps, uo):
    """wino_grad_output_cl's tiles of image ``b`` (channels-last in ``plane``) for F(4x4, 3x3),
    unrolled: A along the tile rows into ``t`` (6 x 4 rows of O), then A^T along the columns
    into M's 36 planes; the generic loops' sums in their order (bit for bit)."""
    c2, c4, c8 = at[1, 3], at[2, 3], at[3, 3]  # 2, 4, 8 in gy's dtype (no float64 promotion)
    rs = U(tw * 4) * uo  # one row of the plane
    for ti in range(th):
        for tj in range(tw):
            col = U((b * th + ti) * tw + tj) * uo
            for e in range(4):  # t[a, e] = sum_l A[a, l] g[l, e]
                src = U(ti * 4) * rs + U(tj * 4 + e) * uo
                dst = U(e) * uo
                for k in range(uo):
                    i = src + k
                    g0 = plane[i]
                    g1 = plane[i + U(1) * rs]
                    g2 = plane[i + U(2) * rs]
                    g3 = plane[i + U(3) * rs]
                    j = dst + k
                    t[j] = g0
                    t[j + U(4) * uo] = g0 + g1 + g2 + g3
                    t[j + U(8) * uo] = g0 - g1 + g2 - g3
                    t[j + U(12) * uo] = g0 + c2 * g1 + c4 * g2 + c8 * g3
                    t[j + U(16) * uo] = g0 - c2 * g1 + c4 * g2 - c8 * g3
                    t[j + U(20) * uo] = g3
            for a in range(6):  # M[a*6 + e] = sum_l A[e, l] t[a, l]
                src = U(a * 4) * uo
                dst = U(a * 6) * ps + col
                for k in range(uo):
                    i = src + k
                    s0 = t[i]
                    s1 = t[i + U(1) * uo]
                    s2 = t[i + U(2) * uo]
                    s3 = t[i + U(3) * uo]
                    j = dst + k
                    mf[j] = s0
                    mf[j + U(1) * ps] = s0 + s1 + s2 + s3
                    mf[j + U(2) * ps] = s0 - s1 + s2 - s3
                    mf[j + U(3) * ps] = s0 + c2 * s1 + c4 * s2 + c8 * s3
                    mf[j + U(4) * ps] = s0 - c2 * s1 + c4 * s2 - c8 * s3
                    mf[j + U(5) * ps] = s3


@_jit
def wino_grad_output_cl(gy, mt, at, th, tw):
    """wino_grad_output into M channels-last, (alpha^2, n*th*tw, O), for the weight gradient's
    product M^T V: each image of ``gy`` copied channels-last into a plane of whole tiles (zero
    past the edge), then every sum of a tile one loop over the output channels (vectorised).
    F(2x2) and F(4x4) run unrolled kernels, other A^T the generic loops; all give M bit for bit
    as wino_grad_output (F(4x4), one thread: 0.26 against 0.30 ms for 7 images of 32 channels
    at 32x32, 0.24 against 0.46 for 16 of 64 at 16x16, 0.11 against 0.41 for 16 of 128 at 8x8)."""
    n, o, oh, ow = gy.shape
    mo, alpha = at.shape
    kind = _standard_at(at)
    if kind == 0:
        ref = numpy.empty((alpha * alpha, o, mt.shape[1]), dtype=gy.dtype)
        wino_grad_output_generic(gy, ref, at, th, tw)
        for k in range(alpha * alpha):
            for oc in range(o):
                for i in range(mt.shape[1]):
                    mt[k, i, oc] = ref[k, oc, i]
        return
    uo = U(o)
    wp = tw * mo
    plane = numpy.zeros(th * mo * wp * o, dtype=gy.dtype)  # cells past the edge stay zero
    t = numpy.empty(alpha * mo * o, dtype=gy.dtype)
    mf = mt.reshape(-1)
    ps = U(n * th * tw) * uo
    for b in range(n):
        _channels_last_plane(gy, b, plane, 0, 0, wp, 0, oh, 0, ow)
        if kind == 2:
            _wino_grad_output_cl_f2(plane, mf, t, at, b, th, tw, ps, uo)
        else:
            _wino_grad_output_cl_f4(plane, mf, t, at, b, th, tw, ps, uo)


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
    gf, gyf = g.reshape(-1), gy.reshape(-1)
    umo, unt = U(mo), U(nt)
    for oc in range(o):
        for a in range(mo):  # the gather, with unsigned indices (no wrap-around checks)
            for e in range(mo):
                qs = max(0, min(tw, (ow - e + mo - 1) // mo))  # tile columns with column e inside
                out = U(a * mo + e) * unt
                for b in range(n):
                    for ti in range(th):
                        r = mo * ti + a
                        base = out + U(b * tiles + ti * tw)
                        if r >= oh:
                            for tj in range(U(tw)):
                                gf[base + tj] = 0
                            continue
                        src = U(((b * o + oc) * oh + r) * ow + e)
                        for tj in range(U(qs)):
                            gf[base + tj] = gyf[src + umo * tj]
                        for tj in range(U(qs), U(tw)):
                            gf[base + tj] = 0
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
            v = numpy.empty((alpha * alpha, 4, 1), dtype)  # 4 tiles by 1 channel (either layout)
            wino_input(x, v, bt, m, 1, 1, 2, 2, True)
            wino_input(x, v, bt, m, 1, 1, 2, 2, False)
            mm = numpy.empty((alpha * alpha, 1, 4), dtype)  # 1 channel by 4 tiles
            out = numpy.empty((1, 1, 2 * m, 2 * m), dtype)
            # relu passed as the callers pass it: a bool argument compiles apart from an omitted one
            wino_output(mm, out, at, numpy.zeros(1, dtype), False, 2, 2, False)
            wino_output_cl(numpy.empty((alpha * alpha, 4, 1), dtype), out, at, numpy.zeros(1, dtype), False, 2, 2,
                           False)
            wino_grad_output(out, mm, at, 2, 2)
            wino_grad_output_cl(out, numpy.empty((alpha * alpha, 4, 1), dtype), at, 2, 2)
        y = numpy.empty((1, 1, 2, 2), dtype)
        am = numpy.empty((1, 1, 2, 2), numpy.int8)
        max_pool_forward(x, y, am, 2, 2, 2, 2, 0, 0, 1, 1)
        max_pool_backward(y, am, x, 2, 2, 2, 0, 0, 1, 1)
        max_pool_2x2_forward(x, y, am)
        max_pool_2x2_backward(y, am, x)
    from . import compiled_nn  # the kernels of the layers around convolutions (imports this module)
    compiled_nn.warm_up()
    return time.perf_counter() - start
