"""Compiled CPU kernels (numba) of the memory-bound layers around the convolutions: ReLU forward
and backward, batch normalisation's training forward and backward, and the per-channel sums of
a convolution's bias gradient.

The NumPy code of the ops (:class:`~tinygrad_hw.ops.elementwise.Relu`,
:func:`~tinygrad_hw.nn.functional.batch_norm`, :class:`~tinygrad_hw.ops.nn.BatchNormTrain`,
:class:`~tinygrad_hw.ops.conv.Conv2d`) is the reference; it dispatches here when
:func:`~tinygrad_hw.kernels.compiled.active` says so. Why: the NumPy versions make one pass over
memory per operation (ReLU's backward: a bool mask, then a product; batch norm: a mean, the
centred copy, its square, a mean, the product by invstd, the affine map...), all in the calling
thread. Each kernel here does its job in one or two passes and the work is split over the
library's worker threads (:mod:`.parallel`): by flat ranges for ReLU, by channels for the
per-channel reductions. The kernels are serial, like those of :mod:`.compiled` (see there).

Two numba details decide the speed of these loops: signed indices get negative-index
wraparound, which blocks vectorisation, so computed offsets are ``uint64`` throughout (every
term: ``uint64 + int64`` is float64 in numba); and a floating-point sum only vectorises when
it may be reassociated, so the run sums (and nothing else) are compiled with
``fastmath={"reassoc"}`` (4x on a sum; NaN and infinity keep their meaning, only the order of the
additions changes, the same on every call).

The layout: an (N, C, S...) array is read as N images of C runs of ``S = prod(S...)`` contiguous
values; a chunk of channels [c0, c1) visits, image by image, its runs in memory order.
"""
from __future__ import annotations

import time

import numpy

from . import parallel
from .compiled import AVAILABLE, _jit, active
from .parallel import map_chunks, split_ranges

if AVAILABLE:
    import numba
    from numba import uint64
    # the run sums only: reassociation lets the additions vectorise
    _jit_sum = numba.njit(nogil=True, cache=True, fastmath={"reassoc"}, boundscheck=False)
else:  # pragma: no cover - without numba the kernels are never called (active() is False)
    uint64 = int

    def _jit_sum(fn):
        return fn

__all__ = ["active", "warm_up", "relu_forward", "relu_backward", "batch_norm_forward",
           "batch_norm_backward_sums", "batch_norm_backward_input", "channel_sums"]


# --------------------------------------------------------------------------------------------------
# ReLU
# --------------------------------------------------------------------------------------------------
@_jit
def _relu_forward(x, y):
    """y = max(x, 0) over flat arrays: NaN stays NaN, -0.0 becomes +0.0 (np.maximum's result)."""
    for i in range(x.size):
        v = x[i]
        if v <= 0:
            y[i] = 0
        else:  # v > 0, or NaN
            y[i] = v


@_jit
def _relu_backward(g, y, gx):
    """gx = g * (y > 0) over flat arrays: the reference's product by the bool mask, so an infinite
    or NaN ``g`` where the mask is 0 gives NaN there as in the NumPy path."""
    for i in range(g.size):
        gx[i] = g[i] * (y[i] > 0)


def _flat_chunks(be, arrays, kernel):
    """Run ``kernel(*flat parts)`` over the worker threads, one flat range of every array each."""
    nbytes = sum([a.nbytes for a in arrays])
    if nbytes < parallel.SPLIT_BYTES:
        # below split_ranges' threshold there is one range, the whole arrays: call the kernel
        # on them directly (the closure, the ranges and map_chunks cost ~5 us a call, as much
        # as ReLU itself on a small batch's activations)
        kernel(*[a.reshape(-1) for a in arrays])
        return
    flats = [a.reshape(-1) for a in arrays]

    def chunk(span):
        i0, i1 = span
        kernel(*[f[i0:i1] for f in flats])

    map_chunks(be, chunk, split_ranges(be, flats[0].size, nbytes))


def relu_forward(be, x):
    """max(x, 0) of a C-contiguous float array, into a fresh array."""
    y = be.xp.empty_like(x)
    _flat_chunks(be, (x, y), _relu_forward)
    return y


def relu_backward(be, g, y):
    """ReLU's input gradient from the output gradient ``g`` and the saved output ``y`` (same
    shape and dtype, C-contiguous): ``g`` where ``y > 0``, else 0, in one pass."""
    gx = be.xp.empty_like(g)
    _flat_chunks(be, (g, y, gx), _relu_backward)
    return gx


# --------------------------------------------------------------------------------------------------
# Batch normalisation, training; channel sums
# --------------------------------------------------------------------------------------------------
@_jit_sum
def _bn_stats(xf, n, c, s, c0, c1, eps, mean, var, invstd):
    """Channels [c0, c1) of an (n, c, s) input: the mean, biased variance and 1 / sqrt(var + eps)
    of each channel. Every image's run is summed twice while in cache (its mean, then its sum of
    squared deviations), then combined with the runs before it by Chan et al.'s pairwise update,
    all in float64: as accurate as a two-pass over the channel, with one read of it from memory."""
    k = c1 - c0
    mu = numpy.zeros(k)
    m2 = numpy.zeros(k)
    su = uint64(s)
    for b in range(n):
        shrink = 1.0 / (b + 1)  # the runs so far are b of b + 1 equal parts
        keep = b * shrink * s
        for j in range(k):
            o = uint64((b * c + c0 + j) * s)
            t = 0.0
            for i in range(su):
                t += xf[i + o]
            rm = t / s
            q = 0.0
            for i in range(su):
                d = xf[i + o] - rm
                q += d * d
            delta = rm - mu[j]
            mu[j] += delta * shrink
            m2[j] += q + delta * delta * keep
    for j in range(k):
        v = m2[j] / (n * s)
        mean[c0 + j] = mu[j]
        var[c0 + j] = v
        invstd[c0 + j] = 1.0 / numpy.sqrt(v + eps)


@_jit
def _bn_apply(xf, yf, n, c, s, c0, c1, mean, invstd, weight, bias):
    """Channels [c0, c1): y = (x - mean) * invstd * w + b in x's dtype, the order of the NumPy
    reference (not reassociated: this kernel is compiled without fastmath)."""
    su = uint64(s)
    for b in range(n):
        for ch in range(c0, c1):
            m, inv, w, sh = mean[ch], invstd[ch], weight[ch], bias[ch]
            o = uint64((b * c + ch) * s)
            for i in range(su):
                yf[i + o] = (xf[i + o] - m) * inv * w + sh


@_jit_sum
def _bn_backward_sums(gf, xf, n, c, s, c0, c1, mean, invstd, g_sum, gxhat_sum):
    """Channels [c0, c1): g_sum = sum(g), gxhat_sum = sum(g * xhat) = invstd * sum(g * (x - mean)),
    in float64, without making xhat. Image by image, so the runs are read in memory order."""
    k = c1 - c0
    sg = numpy.zeros(k)
    sgx = numpy.zeros(k)
    su = uint64(s)
    for b in range(n):
        for j in range(k):
            m = numpy.float64(mean[c0 + j])
            o = uint64((b * c + c0 + j) * s)
            t = 0.0
            u = 0.0
            for i in range(su):
                gv = numpy.float64(gf[i + o])
                t += gv
                u += gv * (xf[i + o] - m)
            sg[j] += t
            sgx[j] += u
    for j in range(k):
        g_sum[c0 + j] = sg[j]
        gxhat_sum[c0 + j] = sgx[j] * invstd[c0 + j]


@_jit
def _bn_backward_input(gf, xf, dxf, n, c, s, c0, c1, mean, invstd, scale, neg_a, shift):
    """Channels [c0, c1): dx = (x - mean) * invstd * neg_a + g * scale - shift, one pass, the
    order of the NumPy reference (neg_a = -scale * mean(g * xhat), shift = scale * mean(g))."""
    su = uint64(s)
    for b in range(n):
        for ch in range(c0, c1):
            m, inv, sc, na, sh = mean[ch], invstd[ch], scale[ch], neg_a[ch], shift[ch]
            o = uint64((b * c + ch) * s)
            for i in range(su):
                dxf[i + o] = (xf[i + o] - m) * inv * na + gf[i + o] * sc - sh


@_jit_sum
def _channel_sums(gf, n, c, s, c0, c1, out):
    """out[ch] = sum over images and positions of channel ch, for ch in [c0, c1), in float64."""
    k = c1 - c0
    acc = numpy.zeros(k)
    su = uint64(s)
    for b in range(n):
        for j in range(k):
            o = uint64((b * c + c0 + j) * s)
            t = 0.0
            for i in range(su):
                t += gf[i + o]
            acc[j] += t
    for j in range(k):
        out[c0 + j] = acc[j]


def _ncs(x):
    """(n, c, s) of an (N, C, ...) array: images, channels, values per run."""
    n, c = x.shape[0], x.shape[1]
    return n, c, (x.size // (n * c) if n * c else 0)


def _channel_chunks(be, c, nbytes, kernel):
    """Run ``kernel(c0, c1)`` over the worker threads, one range of channels each."""
    if nbytes < parallel.SPLIT_BYTES:  # one range (split_ranges' rule): no chunking machinery
        kernel(0, c)
        return
    map_chunks(be, lambda span: kernel(*span), split_ranges(be, c, nbytes))


def batch_norm_forward(be, x, weight, bias, eps):
    """Batch norm on batch statistics of a C-contiguous (N, C, ...) float array, with the
    per-channel ``weight`` and ``bias`` in its dtype (or None: no affine map). Returns
    ``(y, mean, var, invstd)``: the output and the per-channel batch mean, biased variance and
    1 / sqrt(var + eps), each (C,) in x's dtype. One read of x for the statistics, one more for
    y, channels split over the workers."""
    xp = be.xp
    n, c, s = _ncs(x)
    if weight is None:
        weight, bias = xp.ones(c, x.dtype), xp.zeros(c, x.dtype)
    y = xp.empty_like(x)
    mean, var, invstd = (xp.empty(c, x.dtype) for _ in range(3))
    xf, yf = x.reshape(-1), y.reshape(-1)

    def chunk(c0, c1):
        _bn_stats(xf, n, c, s, c0, c1, float(eps), mean, var, invstd)
        _bn_apply(xf, yf, n, c, s, c0, c1, mean, invstd, weight, bias)

    _channel_chunks(be, c, 2 * x.nbytes, chunk)
    return y, mean, var, invstd


def batch_norm_backward_sums(be, g, x, mean, invstd):
    """The backward pass's per-channel sums (``sum(g)``, ``sum(g * xhat)``) of C-contiguous
    ``g`` and ``x`` (N, C, ...), as float64 (C,) arrays; xhat = (x - mean) * invstd is never made."""
    xp = be.xp
    n, c, s = _ncs(x)
    g_sum, gxhat_sum = xp.empty(c), xp.empty(c)
    gf, xf = g.reshape(-1), x.reshape(-1)
    _channel_chunks(be, c, 2 * x.nbytes, lambda c0, c1: _bn_backward_sums(
        gf, xf, n, c, s, c0, c1, mean, invstd, g_sum, gxhat_sum))
    return g_sum, gxhat_sum


def batch_norm_backward_input(be, g, x, mean, invstd, scale, g_sum, gxhat_sum, count):
    """dx = scale * (g - mean(g) - xhat * mean(g * xhat)) per channel, scale = invstd * weight,
    from the (possibly all-reduced) sums over ``count`` values per channel; one pass over g and x."""
    xp = be.xp
    n, c, s = _ncs(x)
    dt = x.dtype
    # the per-channel factors in x's dtype, as the NumPy reference makes them
    g_sum, gxhat_sum = g_sum.astype(dt), gxhat_sum.astype(dt)
    neg_a = -(scale * gxhat_sum / count)
    shift = scale * g_sum / count
    dx = xp.empty_like(x)
    gf, xf, dxf = g.reshape(-1), x.reshape(-1), dx.reshape(-1)
    _channel_chunks(be, c, 3 * x.nbytes, lambda c0, c1: _bn_backward_input(
        gf, xf, dxf, n, c, s, c0, c1, mean, invstd, scale, neg_a, shift))
    return dx


def channel_sums(be, g):
    """``g.sum((0, 2, 3, ...))`` of a C-contiguous (N, C, ...) float array (a convolution's bias
    gradient), accumulated in float64, returned in g's dtype."""
    xp = be.xp
    n, c, s = _ncs(g)
    out = xp.empty(c)
    gf = g.reshape(-1)
    _channel_chunks(be, c, g.nbytes, lambda c0, c1: _channel_sums(gf, n, c, s, c0, c1, out))
    return out.astype(g.dtype)


def warm_up() -> float:
    """Compile (or load from numba's cache) every kernel here for float32 and float64 on tiny
    inputs; returns the seconds it took (called by :func:`.compiled.warm_up`)."""
    if not AVAILABLE:
        return 0.0
    start = time.perf_counter()
    for dtype in (numpy.float32, numpy.float64):
        x = numpy.zeros((2, 1, 2, 2), dtype)
        y = numpy.empty_like(x)
        _relu_forward(x.reshape(-1), y.reshape(-1))
        _relu_backward(x.reshape(-1), y.reshape(-1), y.reshape(-1))
        c = numpy.ones(1, dtype)
        mean, var, invstd = c.copy(), c.copy(), c.copy()
        _bn_stats(x.reshape(-1), 2, 1, 4, 0, 1, 1e-5, mean, var, invstd)
        _bn_apply(x.reshape(-1), y.reshape(-1), 2, 1, 4, 0, 1, mean, invstd, c, c)
        s1, s2 = numpy.empty(1), numpy.empty(1)
        _bn_backward_sums(x.reshape(-1), x.reshape(-1), 2, 1, 4, 0, 1, mean, invstd, s1, s2)
        _bn_backward_input(x.reshape(-1), x.reshape(-1), y.reshape(-1), 2, 1, 4, 0, 1, mean, invstd,
                           c, c, c)
        _channel_sums(x.reshape(-1), 2, 1, 4, 0, 1, s1)
    return time.perf_counter() - start
