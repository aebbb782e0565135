"""The CPU-testable parts of tinygrad_hw/kernels/cuda.py (the kernels themselves need a GPU:
benchmarks/gpu_check.sh runs the suite with TINYGRAD_HW_CUDA_KERNELS=1): launch shapes, the
max-pool backward's index arithmetic, and Python transcriptions of the max-pool kernels' loops
(line for line the CUDA code) against the generic NumPy kernels they replace; the kernel
sources' shape; the switch that routes the optimizers and max-pooling to them."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

import tinygrad_hw as hw
from helpers import on_cupy_standin
from tinygrad_hw.backend import get_backend
from tinygrad_hw.kernels import compiled, cuda, pool
from tinygrad_hw.kernels.geometry import pool_output_size


def test_launch_shape_covers_every_element_with_bounded_blocks():
    assert cuda.launch_shape(0) == ((1,), (256,))
    assert cuda.launch_shape(1) == ((1,), (256,))
    assert cuda.launch_shape(256) == ((1,), (256,))
    assert cuda.launch_shape(257) == ((2,), (256,))
    assert cuda.launch_shape(10**12) == ((cuda.MAX_BLOCKS,), (256,))  # the grid-stride loop does the rest
    assert cuda.launch_shape(1000, block=128) == ((8,), (128,))


@given(i=st.integers(0, 40), pad=st.integers(0, 3), stride=st.integers(1, 4),
       kernel=st.integers(1, 5), dilation=st.integers(1, 3), out_len=st.integers(1, 20))
def test_pool_rows_reaching_is_every_row_whose_window_can_hold_the_cell(i, pad, stride, kernel,
                                                                         dilation, out_len):
    lo, hi = cuda.pool_rows_reaching(i, pad, stride, kernel, dilation, out_len)
    brute = [o for o in range(out_len) if 0 <= i + pad - o * stride <= (kernel - 1) * dilation]
    assert list(range(lo, hi + 1)) == brute


def _forward_like_the_kernel(x, out_hw, kernel, stride, padding, dilation):
    """max_pool_forward's loops, transcribed."""
    n, c, h, w = x.shape
    oh, ow = out_hw
    y = np.empty((n, c, oh, ow), x.dtype)
    argmax = np.empty((n, c, oh, ow), np.int64)
    for plane, orow, oc in itertools.product(range(n * c), range(oh), range(ow)):
        xs = x.reshape(n * c, h, w)[plane]
        best, best_t, found = -math.inf, 0, False
        for i in range(kernel[0]):
            r = orow * stride[0] - padding[0] + i * dilation[0]
            if r < 0 or r >= h:
                continue
            for j in range(kernel[1]):
                col = oc * stride[1] - padding[1] + j * dilation[1]
                if col < 0 or col >= w:
                    continue
                v = xs[r, col]
                if not found or (not np.isnan(best) and (np.isnan(v) or v > best)):
                    best, best_t, found = v, i * kernel[1] + j, True
        y.reshape(n * c, oh, ow)[plane, orow, oc] = best
        argmax.reshape(n * c, oh, ow)[plane, orow, oc] = best_t
    return y, argmax


def _backward_like_the_kernel(gy, argmax, input_shape, kernel, stride, padding, dilation):
    """max_pool_backward's loops, transcribed (a gather, in numpy.add.at's order)."""
    n, c, h, w = input_shape
    oh, ow = gy.shape[2:]
    gx = np.empty(input_shape, gy.dtype)
    kh, kw = kernel
    for plane, r, col in itertools.product(range(n * c), range(h), range(w)):
        r_lo, r_hi = cuda.pool_rows_reaching(r, padding[0], stride[0], kh, dilation[0], oh)
        c_lo, c_hi = cuda.pool_rows_reaching(col, padding[1], stride[1], kw, dilation[1], ow)
        total = gy.dtype.type(0)
        for o in range(r_lo, r_hi + 1):
            di = r + padding[0] - o * stride[0]
            if di % dilation[0]:
                continue
            for q in range(c_lo, c_hi + 1):
                dj = col + padding[1] - q * stride[1]
                if dj % dilation[1]:
                    continue
                flat = (plane, o, q)
                if argmax.reshape(n * c, oh, ow)[flat] == (di // dilation[0]) * kw + dj // dilation[1]:
                    total = total + gy.reshape(n * c, oh, ow)[flat]
        gx.reshape(n * c, h, w)[plane, r, col] = total
    return gx


@pytest.mark.parametrize("kernel,stride,padding,dilation,ceil_mode", [
    ((2, 2), (2, 2), (0, 0), (1, 1), False), ((3, 3), (1, 1), (1, 1), (1, 1), False),
    ((3, 2), (2, 1), (1, 0), (1, 2), True), ((4, 4), (4, 4), (0, 0), (1, 1), False),
    ((3, 3), (2, 2), (1, 1), (2, 1), True)])
def test_max_pool_kernels_transcribed_agree_with_the_generic_kernels(kernel, stride, padding,
                                                                     dilation, ceil_mode):
    """Ties (rounded inputs), a NaN and -inf included; overlapping and tiling windows."""
    be = get_backend("numpy")
    rng = np.random.default_rng(sum(kernel) + 10 * sum(stride))
    x = np.round(rng.standard_normal((2, 2, 9, 8)), 1).astype(np.float32)
    x[0, 0, 2, 3] = np.nan
    x[1, 1, 4, 4] = -np.inf
    y, argmax = pool.max_pool2d_forward(be, x, kernel, stride, padding, dilation, ceil_mode)
    out_hw = y.shape[2:]
    assert out_hw == tuple(pool_output_size(s, k, st_, p, d, ceil_mode) for s, k, st_, p, d in
                           zip(x.shape[2:], kernel, stride, padding, dilation))
    y_k, argmax_k = _forward_like_the_kernel(x, out_hw, kernel, stride, padding, dilation)
    np.testing.assert_array_equal(y_k, y)
    np.testing.assert_array_equal(argmax_k, argmax)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    route = pool.MaxPoolRoute(be, argmax, x.shape, kernel, stride, padding, dilation)
    expected = route.scatter(gy)
    np.testing.assert_array_equal(_backward_like_the_kernel(gy, argmax, x.shape, kernel, stride,
                                                            padding, dilation), expected)


def test_kernel_sources_instantiate_for_each_dtype():
    """What _kernel hands to RawKernel: the dtype's C type, no template braces left, one
    extern "C" entry point named as requested (a GPU compiles it)."""
    made = []

    class FakeXp:
        @staticmethod
        def RawKernel(code, name, options=()):
            made.append((code, name, options))
            return name
    kernels = cuda.CudaKernels(FakeXp)
    for dtype in (np.float32, np.float64):
        for source, name, index in ((cuda._SGD, "sgd_step", None), (cuda._ADAM, "adam_step", None),
                                    (cuda._MAX_POOL_FORWARD, "max_pool_forward", np.int8),
                                    (cuda._MAX_POOL_BACKWARD, "max_pool_backward", np.int16)):
            kernels._kernel(source, name, np.dtype(dtype), None if index is None else np.dtype(index))
    assert len(made) == 8
    for code, name, options in made:
        assert "{T}" not in code and "{I}" not in code and "{{" not in code and "}}" not in code
        assert code.count("{") == code.count("}")
        assert code.count('extern "C" __global__ void') == 1 and f"void {name}(" in code
        assert options == ("--fmad=false",)
        assert ("double" in code) == name.startswith(tuple(f"{k}_double" for k in (
            "sgd_step", "adam_step", "max_pool_forward", "max_pool_backward")))


def _elementwise_like_the_kernel(spec, *args):
    """The element-wise kernels' operations, transcribed into NumPy (products and sums as
    separate roundings, as the _rn intrinsics keep them on the GPU)."""
    name = spec[-1]
    if name == "batch_norm_backward":
        g, xhat, scale, a, b = args
        return (g * scale - xhat * a) - b
    probs, labels, row_scale = args
    p = probs.copy()
    p[np.arange(len(p)), labels] -= 1
    return p * row_scale[:, None]


def test_elementwise_kernels_match_the_generic_backward_passes(monkeypatch):
    """BatchNorm's and cross-entropy's backward passes (ops/nn.py, NumPy) against the kernels'
    operations in the kernels' order, bit for bit; and the specs are well formed. On the NumPy
    reference path: the numba kernels (float64 sums) are held to it in test_compiled_nn.py."""
    monkeypatch.setattr(compiled, "ENABLED", False)
    rng = np.random.default_rng(0)
    x = hw.Tensor(rng.standard_normal((4, 3, 2, 2)).astype(np.float32), backend="numpy", requires_grad=True)
    w = hw.Tensor(rng.standard_normal(3).astype(np.float32), backend="numpy", requires_grad=True)
    up = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    b = hw.Tensor(rng.standard_normal(3).astype(np.float32), backend="numpy", requires_grad=True)
    y = hw.nn.functional.batch_norm(x, None, None, weight=w, bias=b, training=True)
    node = y._ctx  # the BatchNormTrain node keeps the mean and invstd (until its backward)
    xhat = (x.data - node.mean) * node.invstd.reshape(1, 3, 1, 1)  # as its backward rebuilds it
    scale = node.invstd.reshape(1, 3, 1, 1) * w.data.reshape(1, 3, 1, 1)
    y.backward(hw.Tensor(up, backend="numpy"))
    g_sum = np.einsum("abcd->b", up).reshape(1, 3, 1, 1)
    gx_hat_sum = np.einsum("abcd,abcd->b", up, xhat).reshape(1, 3, 1, 1)
    n = 16
    ours = _elementwise_like_the_kernel(cuda._BATCH_NORM_BACKWARD, up, xhat, scale,
                                        scale * gx_hat_sum / n, scale * g_sum / n)
    np.testing.assert_array_equal(ours, x.grad.numpy())
    logits = hw.Tensor(rng.standard_normal((5, 4)).astype(np.float32), backend="numpy", requires_grad=True)
    labels = np.array([0, 3, 1, 1, 2])
    loss = hw.nn.functional.cross_entropy(logits, hw.Tensor(labels, backend="numpy"))
    probs = loss._ctx.probs.copy()
    loss.backward()
    row_scale = (np.ones(5, np.float32) / np.float32(5)) * np.float32(1)
    np.testing.assert_array_equal(_elementwise_like_the_kernel(
        cuda._CROSS_ENTROPY_BACKWARD, probs, labels, row_scale), logits.grad.numpy())
    for spec in (cuda._BATCH_NORM_BACKWARD, cuda._CROSS_ENTROPY_BACKWARD):
        in_params, out_params, operation, name = spec
        assert operation.count("(") == operation.count(")") and name.isidentifier()
        assert all(len(p.split()) in (2, 3) for p in (in_params + ", " + out_params).split(", "))


def test_kernels_are_off_unless_switched_on(monkeypatch):
    monkeypatch.delenv("TINYGRAD_HW_CUDA_KERNELS", raising=False)
    assert cuda.for_backend(get_backend("numpy")) is None
    monkeypatch.setenv("TINYGRAD_HW_CUDA_KERNELS", "1")
    assert cuda.for_backend(get_backend("numpy")) is None  # NumPy keeps its own kernels


@pytest.mark.skipif(not on_cupy_standin(), reason="needs the CPU stand-in for CuPy on PYTHONPATH")
def test_switched_on_the_optimizers_and_max_pooling_launch_the_kernels(monkeypatch):
    """On the stand-in (which cannot run CUDA) the switch routes each call to its kernel."""
    monkeypatch.setenv("TINYGRAD_HW_CUDA_KERNELS", "1")
    be = get_backend("cupy")
    p = hw.nn.Parameter(hw.ones(4, backend="cupy"))
    p.grad = hw.ones(4, backend="cupy")
    for opt, name in ((hw.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True), "sgd_step_float"),
                      (hw.optim.AdamW([p]), "adam_step_float")):
        with pytest.raises(NotImplementedError, match=name):
            opt.step()
    with pytest.raises(NotImplementedError, match="max_pool_forward_float_int8"):
        hw.nn.functional.max_pool2d(hw.ones(1, 1, 4, 4, backend="cupy"), 2)
    x = hw.randn(4, 3, 2, 2, backend="cupy", requires_grad=True)
    with pytest.raises(NotImplementedError, match="batch_norm_backward"):
        # a contiguous upstream gradient (a broadcast one takes the generic path)
        hw.nn.functional.batch_norm(x, None, None, training=True).backward(hw.randn(4, 3, 2, 2, backend="cupy"))
    logits = hw.randn(4, 3, backend="cupy", requires_grad=True)
    with pytest.raises(NotImplementedError, match="cross_entropy_backward"):
        hw.nn.functional.cross_entropy(logits, hw.tensor([0, 1, 2, 1], backend="cupy")).backward()
    assert cuda.for_backend(be) is cuda.for_backend(be)
