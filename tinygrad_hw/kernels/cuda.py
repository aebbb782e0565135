"""CUDA kernels of the CuPy backend: fused optimizer updates (SGD with momentum, Nesterov and
weight decay; Adam/AdamW, amsgrad), max-pooling forward and backward, BatchNorm's and
cross-entropy's backward element-wise passes: one launch each where the generic code
(:mod:`tinygrad_hw.optim`, :mod:`tinygrad_hw.kernels.pool`, :mod:`tinygrad_hw.ops.nn`) takes 3-140.

The generic ``xp`` code is the reference: each kernel does the same IEEE operations in the same
order (compiled with ``--fmad=false``, so no multiply-add is contracted), so it should agree
with it bit for bit; the max-pool backward gathers instead of scattering (no atomics: it is
deterministic, summing in ``numpy.add.at``'s order). UNPROVEN until a GPU runs the suite with
``TINYGRAD_HW_CUDA_KERNELS=1`` (``benchmarks/gpu_check.sh`` does): they are off by default.

Only the backend imports CuPy; this module gets it as ``be.xp``. The launch arithmetic
(:func:`launch_shape`) and the index arithmetic of the max-pool backward
(:func:`pool_rows_reaching`) are plain Python, tested on the CPU.
"""
from __future__ import annotations

import functools
import math
import os

import numpy

__all__ = ["launch_shape", "pool_rows_reaching", "CudaKernels", "enabled", "for_backend"]

BLOCK = 256
MAX_BLOCKS = 65535  # grid-stride loops cover any size with at most this many blocks

_CTYPES = {numpy.dtype(numpy.float32): "float", numpy.dtype(numpy.float64): "double"}


def launch_shape(n: int, block: int = BLOCK, max_blocks: int = MAX_BLOCKS):
    """``(grid, block)`` for a grid-stride loop over ``n`` elements: enough blocks for one
    element per thread up to ``max_blocks`` (at least one block, so that n = 0 launches validly)."""
    return (max(1, min(max_blocks, -(-int(n) // block))),), (block,)


def pool_rows_reaching(i: int, pad: int, stride: int, kernel: int, dilation: int, out_len: int):
    """The output rows ``[lo, hi]`` (inclusive; empty where lo > hi) whose window can contain input
    row ``i``: ``o * stride - pad + t * dilation == i`` for some ``t`` in ``[0, kernel)``. The
    same integer arithmetic as the CUDA backward below (C's ``/`` truncates, so only
    non-negative numerators are divided)."""
    top = i + pad  # >= 0
    low = top - (kernel - 1) * dilation
    lo = 0 if low <= 0 else (low + stride - 1) // stride
    hi = min(out_len - 1, top // stride)
    return lo, hi


_SGD = r"""
extern "C" __global__ void sgd_step_{T}({T}* x, const {T}* g, {T}* buf, long long n,
        {T} lr, {T} momentum, {T} one_minus_dampening, {T} weight_decay,
        int use_momentum, int first, int dampened, int nesterov, int maximize) {{
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n;
         k += (long long)gridDim.x * blockDim.x) {{
        {T} d = g[k];
        if (weight_decay != ({T})0) {{
            {T} w = x[k] * weight_decay;
            d = maximize ? w - d : w + d;
        }} else if (maximize) {{
            d = -d;
        }}
        if (use_momentum) {{
            {T} b;
            if (first) {{
                b = d;
            }} else {{
                b = buf[k] * momentum;
                b = dampened ? b + d * one_minus_dampening : b + d;
            }}
            buf[k] = b;
            d = nesterov ? d + b * momentum : b;
        }}
        x[k] = x[k] - d * lr;
    }}
}}
"""

_ADAM = r"""
extern "C" __global__ void adam_step_{T}({T}* x, const {T}* g, {T}* m, {T}* v, {T}* vmax,
        long long n, {T} weight_decay, {T} decay_factor, {T} lerp_weight, int lerp_low,
        {T} beta2, {T} one_minus_beta2, {T} bias_correction2_sqrt, {T} eps, {T} neg_step_size,
        int decoupled, int amsgrad, int maximize) {{
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n;
         k += (long long)gridDim.x * blockDim.x) {{
        {T} p = x[k];
        if (decoupled && weight_decay != ({T})0) p = p * decay_factor;
        {T} d = g[k];
        if (!decoupled && weight_decay != ({T})0) {{
            {T} w = p * weight_decay;
            d = maximize ? w - d : w + d;
        }} else if (maximize) {{
            d = -d;
        }}
        {T} diff = d - m[k];              /* lerp, rounded as torch.lerp */
        m[k] = lerp_low ? m[k] + diff * lerp_weight : d - diff * lerp_weight;
        {T} s = v[k] * beta2 + (d * d) * one_minus_beta2;
        v[k] = s;
        if (amsgrad) {{                   /* numpy.maximum: NaN wins */
            {T} a = vmax[k];
            s = (a != a) ? a : ((s != s) ? s : (a > s ? a : s));
            vmax[k] = s;
        }}
        {T} den = sqrt(s) / bias_correction2_sqrt + eps;
        x[k] = p + (m[k] / den) * neg_step_size;
    }}
}}
"""

_MAX_POOL_FORWARD = r"""
extern "C" __global__ void max_pool_forward_{T}(const {T}* x, {T}* y, {I}* argmax, long long total,
        int h, int w, int oh, int ow, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw) {{
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < total;
         k += (long long)gridDim.x * blockDim.x) {{
        int oc = (int)(k % ow);
        int orow = (int)((k / ow) % oh);
        long long plane = k / ((long long)ow * oh);          /* n * C + c */
        const {T}* xs = x + plane * h * w;
        {T} best = -INFINITY;
        int best_t = 0, found = 0;
        for (int i = 0; i < kh; ++i) {{
            int r = orow * sh - ph + i * dh;
            if (r < 0 || r >= h) continue;                    /* padding never wins */
            for (int j = 0; j < kw; ++j) {{
                int c = oc * sw - pw + j * dw;
                if (c < 0 || c >= w) continue;
                {T} v = xs[r * w + c];
                int nan_v = v != v, nan_best = best != best;
                /* the first maximum in row-major window order; the first NaN beats everything */
                if (!found || (!nan_best && (nan_v || v > best))) {{
                    best = v; best_t = i * kw + j; found = 1;
                }}
            }}
        }}
        y[k] = best;
        argmax[k] = ({I})best_t;
    }}
}}
"""

_MAX_POOL_BACKWARD = r"""
extern "C" __global__ void max_pool_backward_{T}(const {T}* gy, const {I}* argmax, {T}* gx,
        long long total, int h, int w, int oh, int ow, int kh, int kw, int sh, int sw, int ph,
        int pw, int dh, int dw) {{
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < total;
         k += (long long)gridDim.x * blockDim.x) {{
        int c = (int)(k % w);
        int r = (int)((k / w) % h);
        long long plane = k / ((long long)w * h);
        /* the output rows/columns whose windows may hold this cell: pool_rows_reaching() */
        int top = r + ph, low = top - (kh - 1) * dh;
        int r_lo = low <= 0 ? 0 : (low + sh - 1) / sh, r_hi = min(oh - 1, top / sh);
        int left = c + pw, lowc = left - (kw - 1) * dw;
        int c_lo = lowc <= 0 ? 0 : (lowc + sw - 1) / sw, c_hi = min(ow - 1, left / sw);
        {T} sum = 0;
        /* outputs in row-major order: numpy.add.at's order of the generic scatter */
        for (int o = r_lo; o <= r_hi; ++o) {{
            int di = top - o * sh;
            if (di % dh) continue;
            int i = di / dh;
            for (int q = c_lo; q <= c_hi; ++q) {{
                int dj = left - q * sw;
                if (dj % dw) continue;
                int j = dj / dw;
                long long out = (plane * oh + o) * ow + q;
                if ((int)argmax[out] == i * kw + j) sum = sum + gy[out];
            }}
        }}
        gx[k] = sum;
    }}
}}
"""

# Element-wise kernels (CuPy broadcasts their inputs). Products are written with the _rn
# intrinsics, which the compiler never contracts into a multiply-add with a neighbouring sum.
_RN_PREAMBLE = r"""
__device__ inline float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ inline double mul_rn(double a, double b) { return __dmul_rn(a, b); }
"""
# BatchNorm's input gradient from its per-channel terms a = scale * mean(g * xhat) and
# b = scale * mean(g): dx = g * scale - xhat * a - b (ops/nn.py's order)
_BATCH_NORM_BACKWARD = ("T g, T xhat, T scale, T a, T b", "T gx",
                        "gx = (mul_rn(g, scale) - mul_rn(xhat, a)) - b", "batch_norm_backward")
# Cross-entropy's logit gradient: (softmax - onehot(label)) * row scale, per row of C classes
_CROSS_ENTROPY_BACKWARD = ("T probs, raw I labels, raw T row_scale, int64 classes", "T grad",
                           "long long row = i / classes; T p = probs;"
                           " if (i - row * classes == (long long)labels[row]) p = p - (T)1;"
                           " grad = p * row_scale[row]", "cross_entropy_backward")

_INDEX_CTYPES = {numpy.dtype(numpy.int8): "signed char", numpy.dtype(numpy.int16): "short",
                 numpy.dtype(numpy.int32): "int"}
_OPTIONS = ("--fmad=false",)


class CudaKernels:
    """The kernels above for one CuPy module ``xp`` (compiled on first use, per dtype)."""

    def __init__(self, xp):
        self.xp = xp

    @functools.lru_cache(maxsize=None)
    def _kernel(self, source: str, name: str, dtype, index_dtype=None):
        ctype = _CTYPES[numpy.dtype(dtype)]
        code = source.replace("{T}", ctype).replace("{I}", _INDEX_CTYPES.get(
            numpy.dtype(index_dtype) if index_dtype is not None else None, "int"))
        code = code.replace("{{", "{").replace("}}", "}")
        suffix = ctype if index_dtype is None else f"{ctype}_{numpy.dtype(index_dtype).name}"
        code = code.replace(f"{name}_{ctype}(", f"{name}_{suffix}(")
        return self.xp.RawKernel(code, f"{name}_{suffix}", options=_OPTIONS)

    @staticmethod
    def supports(*arrays) -> bool:
        """Float32/float64 C-contiguous arrays of one dtype (anything else takes the generic path)."""
        dtype = arrays[0].dtype
        return dtype in _CTYPES and all(a.dtype == dtype and a.flags.c_contiguous for a in arrays)

    def sgd_step(self, x, g, buf, lr, momentum, dampening, weight_decay, nesterov, maximize, first):
        """One SGD update of ``x`` in place (and of ``buf``, the momentum buffer, when momentum)."""
        t = x.dtype.type
        kernel = self._kernel(_SGD, "sgd_step", x.dtype)
        grid, block = launch_shape(x.size)
        kernel(grid, block, (x, g, buf if buf is not None else x, numpy.int64(x.size), t(lr),
                             t(momentum), t(1 - dampening), t(weight_decay), numpy.int32(momentum != 0),
                             numpy.int32(first), numpy.int32(dampening != 0), numpy.int32(nesterov),
                             numpy.int32(maximize)))

    def adam_step(self, x, g, m, v, vmax, *, lr, beta1, beta2, eps, weight_decay, step,
                  decoupled, amsgrad, maximize):
        """One Adam/AdamW update of ``x``, ``m``, ``v`` (and ``vmax`` with amsgrad) in place."""
        t = x.dtype.type
        kernel = self._kernel(_ADAM, "adam_step", x.dtype)
        weight = 1 - beta1
        lerp_low = weight < 0.5
        grid, block = launch_shape(x.size)
        kernel(grid, block, (x, g, m, v, vmax if vmax is not None else v, numpy.int64(x.size),
                             t(weight_decay), t(1 - lr * weight_decay),
                             t(weight if lerp_low else 1 - weight), numpy.int32(lerp_low), t(beta2),
                             t(1 - beta2), t((1 - beta2 ** step) ** 0.5), t(eps),
                             t(-(lr / (1 - beta1 ** step))), numpy.int32(decoupled),
                             numpy.int32(amsgrad), numpy.int32(maximize)))

    @functools.lru_cache(maxsize=None)
    def _elementwise(self, spec):
        in_params, out_params, operation, name = spec
        return self.xp.ElementwiseKernel(in_params, out_params, operation, name, preamble=_RN_PREAMBLE)

    def batch_norm_backward(self, g, xhat, scale, a, b):
        """BatchNorm's input gradient in one pass (the per-channel terms broadcast)."""
        return self._elementwise(_BATCH_NORM_BACKWARD)(g, xhat, scale, a, b)

    def cross_entropy_backward(self, probs, labels, row_scale):
        """``(probs - onehot(labels)) * row_scale[:, None]`` for (N, C) ``probs`` in one pass."""
        return self._elementwise(_CROSS_ENTROPY_BACKWARD)(probs, labels, row_scale,
                                                          numpy.int64(probs.shape[1]))

    def max_pool2d_forward(self, x, out_hw, kernel, stride, padding, dilation, index_dtype):
        """``(y, argmax)`` as :func:`tinygrad_hw.kernels.pool.max_pool2d_forward` gives them."""
        xp = self.xp
        n, c, h, w = x.shape
        oh, ow = out_hw
        y = xp.empty((n, c, oh, ow), dtype=x.dtype)
        argmax = xp.empty((n, c, oh, ow), dtype=index_dtype)
        k = self._kernel(_MAX_POOL_FORWARD, "max_pool_forward", x.dtype, index_dtype)
        grid, block = launch_shape(y.size)
        k(grid, block, (x, y, argmax, numpy.int64(y.size), *map(numpy.int32, (
            h, w, oh, ow, kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1],
            dilation[0], dilation[1]))))
        return y, argmax

    def max_pool2d_backward(self, gy, argmax, input_shape, kernel, stride, padding, dilation):
        """The input gradient: each cell gathers the output gradients of the windows whose
        maximum it is (no atomics; deterministic)."""
        xp = self.xp
        n, c, h, w = input_shape
        oh, ow = gy.shape[2:]
        gx = xp.empty(input_shape, dtype=gy.dtype)
        k = self._kernel(_MAX_POOL_BACKWARD, "max_pool_backward", gy.dtype, argmax.dtype)
        grid, block = launch_shape(gx.size)
        k(grid, block, (gy, argmax, gx, numpy.int64(math.prod(input_shape)), *map(numpy.int32, (
            h, w, oh, ow, kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1],
            dilation[0], dilation[1]))))
        return gx


_instances: dict = {}


def enabled() -> bool:
    """Whether the kernels are switched on (``TINYGRAD_HW_CUDA_KERNELS=1``; off by default until
    a GPU run has proven them)."""
    return os.environ.get("TINYGRAD_HW_CUDA_KERNELS", "0").strip() == "1"


def for_backend(be):
    """The :class:`CudaKernels` of backend ``be`` where it is CuPy and they are enabled, else None
    (the caller then runs the generic code)."""
    if be.name != "cupy" or not enabled():
        return None
    kernels = _instances.get(id(be.xp))
    if kernels is None:
        kernels = _instances[id(be.xp)] = CudaKernels(be.xp)
    return kernels
