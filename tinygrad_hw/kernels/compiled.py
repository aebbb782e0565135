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
file (or in numba's user cache where that is not writable): the first call of each kernel and
dtype in a fresh environment compiles for a second or two (``warm_up()`` does them all and returns
how long it took), later processes load it in milliseconds.

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

__all__ = ["AVAILABLE", "ENABLED", "active", "warm_up", "im2col", "col2im", "wino_input", "wino_output",
           "wino_grad_output", "max_pool_forward", "max_pool_backward"]

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
# im2col / col2im
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
def im2col(x, cols, sh, sw, pt, pl, dh, dw):
    """Fill ``cols`` (C, kh, kw, n, OH, OW) with the windows of ``x`` (n, C, H, W), zero where a
    window cell falls in the padding: padding and column copy in one pass."""
    n, c, h, w = x.shape
    kh, kw, oh, ow = cols.shape[1], cols.shape[2], cols.shape[4], cols.shape[5]
    for ch in range(c):
        for i in range(kh):
            r0, r1 = _valid(oh, h, sh, pt, i * dh)
            for j in range(kw):
                q0, q1 = _valid(ow, w, sw, pl, j * dw)
                for b in range(n):
                    for r in range(oh):
                        if r < r0 or r >= r1:
                            for q in range(ow):
                                cols[ch, i, j, b, r, q] = 0
                            continue
                        hi = r * sh - pt + i * dh
                        for q in range(q0):
                            cols[ch, i, j, b, r, q] = 0
                        for q in range(q0, q1):
                            cols[ch, i, j, b, r, q] = x[b, ch, hi, q * sw - pl + j * dw]
                        for q in range(q1, ow):
                            cols[ch, i, j, b, r, q] = 0


@_jit
def col2im(cols, gx, sh, sw, pt, pl, dh, dw):
    """The adjoint of im2col: ``gx`` (n, C, H, W) = the sum of every window cell of ``cols``
    (C, kh, kw, n, OH, OW) that falls inside the image (cells in the padding are dropped)."""
    n, c, h, w = gx.shape
    kh, kw, oh, ow = cols.shape[1], cols.shape[2], cols.shape[4], cols.shape[5]
    for b in range(n):
        for ch in range(c):
            for y in range(h):
                for x in range(w):
                    gx[b, ch, y, x] = 0
            for i in range(kh):
                r0, r1 = _valid(oh, h, sh, pt, i * dh)
                for j in range(kw):
                    q0, q1 = _valid(ow, w, sw, pl, j * dw)
                    for r in range(r0, r1):
                        hi = r * sh - pt + i * dh
                        for q in range(q0, q1):
                            gx[b, ch, hi, q * sw - pl + j * dw] += cols[ch, i, j, b, r, q]


# --------------------------------------------------------------------------------------------------
# Winograd F(2x2, 3x3) tile transforms (the products between them stay in BLAS)
# --------------------------------------------------------------------------------------------------
@_jit
def wino_input(x, v, pt, pl, th, tw):
    """V (16, C, n*th*tw) = B^T d B for the 4x4 tile d at rows 2*ti - pt, columns 2*tj - pl of
    every image of ``x`` (n, C, H, W), zero outside the image; tile (b, ti, tj) is column
    (b*th + ti)*tw + tj. With B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]."""
    n, c, h, w = x.shape
    d = numpy.zeros((4, 4), dtype=x.dtype)
    t = numpy.empty((4, 4), dtype=x.dtype)
    for ch in range(c):
        for b in range(n):
            for ti in range(th):
                y0 = 2 * ti - pt
                for tj in range(tw):
                    x0 = 2 * tj - pl
                    if y0 >= 0 and y0 + 4 <= h and x0 >= 0 and x0 + 4 <= w:
                        for a in range(4):
                            for e in range(4):
                                d[a, e] = x[b, ch, y0 + a, x0 + e]
                    else:
                        for a in range(4):
                            for e in range(4):
                                yy, xx = y0 + a, x0 + e
                                if 0 <= yy < h and 0 <= xx < w:
                                    d[a, e] = x[b, ch, yy, xx]
                                else:
                                    d[a, e] = 0
                    for e in range(4):  # B^T along rows
                        t[0, e] = d[0, e] - d[2, e]
                        t[1, e] = d[1, e] + d[2, e]
                        t[2, e] = d[2, e] - d[1, e]
                        t[3, e] = d[1, e] - d[3, e]
                    col = (b * th + ti) * tw + tj
                    for a in range(4):  # B along columns
                        v[4 * a + 0, ch, col] = t[a, 0] - t[a, 2]
                        v[4 * a + 1, ch, col] = t[a, 1] + t[a, 2]
                        v[4 * a + 2, ch, col] = t[a, 2] - t[a, 1]
                        v[4 * a + 3, ch, col] = t[a, 1] - t[a, 3]


@_jit
def wino_output(m, y, bias, has_bias, th, tw):
    """y (n, O, OH, OW) = A^T M A (+ bias[o]) of every tile of M (16, O, n*th*tw), with
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]; the odd last row/column of an odd-sized map is dropped."""
    n, o, oh, ow = y.shape
    s = numpy.empty((2, 4), dtype=y.dtype)
    for oc in range(o):
        add = bias[oc] if has_bias else 0
        for b in range(n):
            for ti in range(th):
                for tj in range(tw):
                    col = (b * th + ti) * tw + tj
                    for e in range(4):  # A^T along rows
                        m0, m1 = m[e, oc, col], m[4 + e, oc, col]
                        m2, m3 = m[8 + e, oc, col], m[12 + e, oc, col]
                        s[0, e] = m0 + m1 + m2
                        s[1, e] = m1 - m2 - m3
                    for a in range(2):
                        r = 2 * ti + a
                        if r < oh:
                            c0 = 2 * tj
                            y[b, oc, r, c0] = s[a, 0] + s[a, 1] + s[a, 2] + add
                            if c0 + 1 < ow:
                                y[b, oc, r, c0 + 1] = s[a, 1] - s[a, 2] - s[a, 3] + add


@_jit
def wino_grad_output(gy, m, th, tw):
    """M (16, O, n*th*tw) = A g A^T for every 2x2 tile g of the output gradient ``gy``
    (n, O, OH, OW) (zero past the edge), A = [[1, 0], [1, 1], [1, -1], [0, -1]]: the adjoint of
    the output transform, for the weight gradient."""
    n, o, oh, ow = gy.shape
    g = numpy.zeros((2, 2), dtype=gy.dtype)
    t = numpy.empty((4, 2), dtype=gy.dtype)
    for oc in range(o):
        for b in range(n):
            for ti in range(th):
                for tj in range(tw):
                    for a in range(2):
                        for e in range(2):
                            r, c = 2 * ti + a, 2 * tj + e
                            g[a, e] = gy[b, oc, r, c] if r < oh and c < ow else 0
                    for e in range(2):  # A along rows
                        t[0, e] = g[0, e]
                        t[1, e] = g[0, e] + g[1, e]
                        t[2, e] = g[0, e] - g[1, e]
                        t[3, e] = -g[1, e]
                    col = (b * th + ti) * tw + tj
                    for a in range(4):  # A^T along columns
                        m[4 * a + 0, oc, col] = t[a, 0]
                        m[4 * a + 1, oc, col] = t[a, 0] + t[a, 1]
                        m[4 * a + 2, oc, col] = t[a, 0] - t[a, 1]
                        m[4 * a + 3, oc, col] = -t[a, 1]


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


def warm_up() -> float:
    """Compile (or load from numba's cache) every kernel for float32 and float64 on tiny inputs;
    returns the seconds it took. Not needed before use (a kernel compiles on its first call),
    but it keeps that cost out of whatever is timed next."""
    if not AVAILABLE:
        return 0.0
    start = time.perf_counter()
    for dtype in _FLOATS:
        x = numpy.zeros((1, 1, 4, 4), dtype)
        cols = numpy.empty((1, 3, 3, 1, 4, 4), dtype)
        im2col(x, cols, 1, 1, 1, 1, 1, 1)
        col2im(cols, x, 1, 1, 1, 1, 1, 1)
        v = numpy.empty((16, 1, 4), dtype)
        wino_input(x, v, 1, 1, 2, 2)
        wino_output(v, x, numpy.zeros(1, dtype), False, 2, 2)
        wino_grad_output(x, v, 2, 2)
        y = numpy.empty((1, 1, 2, 2), dtype)
        am = numpy.empty((1, 1, 2, 2), numpy.int8)
        max_pool_forward(x, y, am, 2, 2, 2, 2, 0, 0, 1, 1)
        max_pool_backward(y, am, x, 2, 2, 2, 0, 0, 1, 1)
    return time.perf_counter() - start
