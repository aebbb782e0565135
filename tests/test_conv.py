"""Convolution and pooling against torch.nn.functional: values, gradients, second order, errors."""
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tinygrad_hw as hw
from tinygrad_hw.kernels import conv as cv
from tinygrad_hw.kernels import compiled, geometry, parallel, scratch, winograd
import tinygrad_hw.nn.functional as hwF
from tinygrad_hw.backend import get_backend

from tinygrad_hw.testing import assert_close, compare_with_torch

from helpers import second_order_against_torch

DTYPES = [np.float64, np.float32]
TOL = {np.float64: 1e-9, np.float32: 1e-4}


def _rng(seed):
    return np.random.default_rng(seed)


@pytest.fixture(params=["whole", "by_image", "chunked", "winograd"])
def conv_path(request, monkeypatch):
    """Run a test through each code path of the NumPy kernels: the whole batch in one chunk;
    one image per chunk (CHUNK_BYTES=1, chunks shared by worker threads; DEVICE_CHUNK_BYTES=1 on
    CuPy, chunks in turn); and Winograd for every
    3x3 / stride-1 convolution whatever its channel count. im2col runs one product per image in
    "by_image" (the whole batch in one chunk) and "chunked", else one product for the whole
    chunk (BY_IMAGE_MIN_POSITIONS)."""
    monkeypatch.setattr(cv, "BY_IMAGE_MIN_POSITIONS", 1 if request.param in ("by_image", "chunked") else 10**9)
    if request.param in ("chunked", "winograd"):
        monkeypatch.setattr(scratch, "CHUNK_BYTES", 1)
        monkeypatch.setattr(scratch, "DEVICE_CHUNK_BYTES", 1)  # the same on the device backend
    if request.param == "winograd":
        monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
        monkeypatch.setattr(winograd, "MIN_SIZE", 1)
    else:
        monkeypatch.setattr(winograd, "ENABLED", False)
    return request.param


# --------------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------------
@st.composite
def conv_cases(draw, transposed=False):
    groups = draw(st.integers(1, 3))
    cin, cout = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    # smallest input the (dilated) kernel fits in after padding; 1x1 maps included
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 9))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 9))
    case = dict(n=draw(st.integers(1, 3)), cin=cin, cout=cout, groups=groups, h=h, w=w,
                kernel=(kh, kw), stride=(sh, sw), dilation=(dh, dw), padding=(ph, pw),
                bias=draw(st.booleans()), dtype=draw(st.sampled_from(DTYPES)), seed=draw(st.integers(0, 2**16)))
    if transposed:
        # output_padding must be below stride or dilation; the output must not be empty
        case["output_padding"] = (draw(st.integers(0, max(sh, dh) - 1)), draw(st.integers(0, max(sw, dw) - 1)))
        out_h = (h - 1) * sh - 2 * ph + dh * (kh - 1) + case["output_padding"][0] + 1
        out_w = (w - 1) * sw - 2 * pw + dw * (kw - 1) + case["output_padding"][1] + 1
        if out_h < 1 or out_w < 1:
            case["padding"] = (0, 0)
    return case


@st.composite
def winograd_cases(draw):
    """3x3, stride 1, no dilation, one group: the Winograd path (padding 3 exercises the input
    gradient's fallback to col2im)."""
    pads = tuple(draw(st.integers(0, 3)) for _ in range(2))
    h = draw(st.integers(max(1, 3 - 2 * pads[0]), 9))
    w = draw(st.integers(max(1, 3 - 2 * pads[1]), 9))
    return dict(n=draw(st.integers(1, 3)), cin=draw(st.integers(1, 4)), cout=draw(st.integers(1, 4)),
                groups=1, h=h, w=w, kernel=(3, 3), stride=(1, 1), dilation=(1, 1), padding=pads,
                bias=draw(st.booleans()), dtype=draw(st.sampled_from(DTYPES)), seed=draw(st.integers(0, 2**16)))


def _window_misses_input(size, out, k, s, p, d):
    return any(not any(0 <= o * s - p + i * d < size for i in range(k)) for o in range(out))


@st.composite
def pool_cases(draw, with_dilation=True):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    sh, sw = stride or (kh, kw)
    dh, dw = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if with_dilation else (1, 1)
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    ceil_mode = draw(st.booleans())
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 9))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 9))
    oh = geometry.pool_output_size(h, kh, sh, ph, dh, ceil_mode)
    ow = geometry.pool_output_size(w, kw, sw, pw, dw, ceil_mode)
    # windows lying entirely in the padding are refused (tested separately)
    assume(not _window_misses_input(h, oh, kh, sh, ph, dh) and not _window_misses_input(w, ow, kw, sw, pw, dw))
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 3)), h=h, w=w, kernel=(kh, kw),
                stride=stride, padding=(ph, pw), dilation=(dh, dw), ceil_mode=ceil_mode,
                ties=draw(st.booleans()), dtype=draw(st.sampled_from(DTYPES)), seed=draw(st.integers(0, 2**16)))


def _pool_input(case):
    rng = _rng(case["seed"])
    shape = (case["n"], case["c"], case["h"], case["w"])
    if case["ties"]:  # few distinct values: many windows hold their maximum twice
        return rng.integers(-2, 3, shape).astype(case["dtype"])
    return rng.standard_normal(shape).astype(case["dtype"])


# --------------------------------------------------------------------------------------------------
# convolution
# --------------------------------------------------------------------------------------------------
def _check_conv2d(backend, case):
    rng = _rng(case["seed"])
    kh, kw = case["kernel"]
    x = rng.standard_normal((case["n"], case["cin"], case["h"], case["w"])).astype(case["dtype"])
    w = rng.standard_normal((case["cout"], case["cin"] // case["groups"], kh, kw)).astype(case["dtype"])
    b = rng.standard_normal(case["cout"]).astype(case["dtype"])
    geom = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"], groups=case["groups"])
    arrays = [x, w, b] if case["bias"] else [x, w]
    compare_with_torch(lambda *t: hwF.conv2d(*t, **geom), lambda *t: F.conv2d(*t, **geom), arrays,
                       backend=backend, rtol=TOL[case["dtype"]], seed=case["seed"])


@settings(max_examples=40, deadline=None)
@given(case=conv_cases())
def test_conv2d_matches_torch(backend, conv_path, case):
    _check_conv2d(backend, case)


@settings(max_examples=40, deadline=None)
@given(case=winograd_cases())
def test_conv2d_winograd_matches_torch(backend, monkeypatch, case):
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    monkeypatch.setattr(winograd, "MIN_SIZE", 1)
    monkeypatch.setattr(scratch, "CHUNK_BYTES", 1 if case["seed"] % 2 else scratch.CHUNK_BYTES)
    _check_conv2d(backend, case)


def test_winograd_is_used_for_wide_3x3_convolutions(monkeypatch):
    """The policy picks Winograd for 3x3 stride-1 convolutions with enough channels, and its
    float32 result agrees with im2col's. (The NumPy kernels' policy: the compiled one is in
    test_compiled_kernels.py.)"""
    monkeypatch.setattr(compiled, "ENABLED", False)
    be = get_backend("numpy")
    rng = _rng(5)
    x = rng.standard_normal((4, 32, 10, 9)).astype(np.float32)
    w = rng.standard_normal((40, 32, 3, 3)).astype(np.float32)
    assert winograd.applies(be, 32, 40, (3, 3), (1, 1), (1, 1), 1, x.dtype, (10, 9))
    assert not winograd.applies(be, 32, 40, (3, 3), (2, 2), (1, 1), 1, x.dtype, (10, 9))
    assert not winograd.applies(be, 16, 40, (3, 3), (1, 1), (1, 1), 1, x.dtype, (10, 9))
    assert not winograd.applies(be, 32, 40, (3, 3), (1, 1), (1, 1), 1, x.dtype, (4, 4))
    y = cv.conv2d_forward(be, x, w, (1, 1), (1, 1, 1, 1))
    monkeypatch.setattr(winograd, "ENABLED", False)
    ref = cv.conv2d_forward(be, x, w, (1, 1), (1, 1, 1, 1))
    assert y.dtype == np.float32
    assert_close(y, ref, 1e-5, "winograd vs im2col")


@settings(max_examples=30, deadline=None)
@given(case=conv_cases(transposed=True))
def test_conv_transpose2d_matches_torch(backend, conv_path, case):
    rng = _rng(case["seed"])
    kh, kw = case["kernel"]
    x = rng.standard_normal((case["n"], case["cin"], case["h"], case["w"])).astype(case["dtype"])
    w = rng.standard_normal((case["cin"], case["cout"] // case["groups"], kh, kw)).astype(case["dtype"])
    b = rng.standard_normal(case["cout"]).astype(case["dtype"])
    geom = dict(stride=case["stride"], padding=case["padding"], output_padding=case["output_padding"],
                dilation=case["dilation"], groups=case["groups"])
    arrays = [x, w, b] if case["bias"] else [x, w]
    compare_with_torch(lambda *t: hwF.conv_transpose2d(*t, **geom), lambda *t: F.conv_transpose2d(*t, **geom),
                       arrays, backend=backend, rtol=TOL[case["dtype"]], seed=case["seed"])


@settings(max_examples=12, deadline=None)
@given(case=st.one_of(conv_cases(), winograd_cases()))
def test_conv2dsecond_order_against_torch(backend, conv_path, case):
    rng = _rng(case["seed"])
    kh, kw = case["kernel"]
    x = rng.standard_normal((case["n"], case["cin"], case["h"], case["w"]))
    w = rng.standard_normal((case["cout"], case["cin"] // case["groups"], kh, kw))
    b = rng.standard_normal(case["cout"])
    geom = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"], groups=case["groups"])
    # tanh makes the second derivative in (x, w) non-trivial, not only the mixed terms
    second_order_against_torch(backend, lambda x, w, b: hwF.conv2d(x, w, b, **geom).tanh(),
                  lambda x, w, b: F.conv2d(x, w, b, **geom).tanh(), [x, w, b], case["seed"])


@settings(max_examples=8, deadline=None)
@given(case=conv_cases(transposed=True))
def test_conv_transpose2dsecond_order_against_torch(backend, case):
    rng = _rng(case["seed"])
    kh, kw = case["kernel"]
    x = rng.standard_normal((case["n"], case["cin"], case["h"], case["w"]))
    w = rng.standard_normal((case["cin"], case["cout"] // case["groups"], kh, kw))
    geom = dict(stride=case["stride"], padding=case["padding"], output_padding=case["output_padding"],
                dilation=case["dilation"], groups=case["groups"])
    second_order_against_torch(backend, lambda x, w: hwF.conv_transpose2d(x, w, **geom).tanh(),
                  lambda x, w: F.conv_transpose2d(x, w, **geom).tanh(), [x, w], case["seed"])


def test_conv2d_third_order(backend):
    """The closed family goes on: a third derivative through conv -> tanh."""
    rng = _rng(3)
    x0, w0 = rng.standard_normal((2, 2, 5, 4)), rng.standard_normal((3, 2, 3, 2))

    def third(conv, tensor, grad, x0, w0):
        x, w = tensor(x0), tensor(w0)
        y = conv(x, w, stride=(2, 1), padding=1).tanh().sum()
        gx, = grad(y, [x], create_graph=True)
        gxx, = grad((gx * gx).sum(), [w], create_graph=True)
        return grad((gxx * gxx).sum(), [x, w])

    ours = third(hwF.conv2d, lambda a: hw.Tensor(a, backend=backend, requires_grad=True),
                 lambda *a, **k: hw.grad(*a, **k), x0, w0)
    theirs = third(F.conv2d, lambda a: torch.from_numpy(a.copy()).requires_grad_(),
                   lambda *a, **k: torch.autograd.grad(*a, **k), x0, w0)
    for a, b in zip(ours, theirs):
        assert_close(a, b, 1e-9, "third-order gradient")


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("kernel,dilation", [((3, 3), 1), ((2, 4), 1), ((3, 2), 2)])
def test_conv2d_string_padding(backend, padding, kernel, dilation):
    rng = _rng(0)
    x, w = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3) + kernel)
    compare_with_torch(lambda x, w: hwF.conv2d(x, w, padding=padding, dilation=dilation),
                       lambda x, w: F.conv2d(x, w, padding=padding, dilation=dilation), [x, w], backend=backend)


def test_conv2d_unbatched_and_strided_input(backend):
    rng = _rng(1)
    x, w, b = rng.standard_normal((3, 6, 5)), rng.standard_normal((2, 3, 3, 3)), rng.standard_normal(2)
    compare_with_torch(lambda x, w, b: hwF.conv2d(x, w, b, padding=1),
                       lambda x, w, b: F.conv2d(x, w, b, padding=1), [x, w, b], backend=backend)
    # a non-contiguous input (a permuted view) and no padding: im2col reads the view's strides
    xs = rng.standard_normal((5, 3, 2, 6))
    compare_with_torch(lambda x, w: hwF.conv2d(x.permute(2, 1, 0, 3), w),
                       lambda x, w: F.conv2d(x.permute(2, 1, 0, 3), w), [xs, w], backend=backend)


def test_conv2d_empty_batch(backend):
    x = hw.Tensor(np.zeros((0, 2, 5, 5)), backend=backend, requires_grad=True)
    w = hw.Tensor(np.ones((3, 2, 3, 3)), backend=backend, requires_grad=True)
    y = hwF.conv2d(x, w)
    assert y.shape == (0, 3, 3, 3)
    y.sum().backward()
    assert x.grad.shape == (0, 2, 5, 5) and np.all(w.grad.numpy() == 0)


def test_conv2d_keeps_float32_on_the_array_level():
    """No float64 promotion inside the kernels (the Tensor-level dtype is checked by
    compare_with_torch)."""
    be = get_backend("numpy")
    x = np.ones((2, 3, 6, 6), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    y = cv.conv2d_forward(be, x, w, (1, 1), (1, 1, 1, 1))
    assert y.dtype == np.float32
    assert cv.conv2d_input_grad(be, y, w, (6, 6), (1, 1), (1, 1, 1, 1)).dtype == np.float32
    assert cv.conv2d_weight_grad(be, x, y, (3, 3), (1, 1), (1, 1, 1, 1)).dtype == np.float32


# --------------------------------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(case=pool_cases())
def test_max_pool2d_matches_torch(backend, monkeypatch, case):
    # odd seeds: every image range its own chunk (the worker-thread path of large inputs)
    monkeypatch.setattr(parallel, "SPLIT_BYTES", 1 if case["seed"] % 2 else parallel.SPLIT_BYTES)
    monkeypatch.setattr(parallel, "WORKERS", 2)
    x = _pool_input(case)
    args = dict(kernel_size=case["kernel"], stride=case["stride"], padding=case["padding"],
                dilation=case["dilation"], ceil_mode=case["ceil_mode"])
    compare_with_torch(lambda t: hwF.max_pool2d(t, **args), lambda t: F.max_pool2d(t, **args), [x],
                       backend=backend, rtol=TOL[case["dtype"]], seed=case["seed"])
    # ties go to the first maximum: the indices are PyTorch's exactly
    y, idx = hwF.max_pool2d(hw.Tensor(x, backend=backend), return_indices=True, **args)
    y_t, idx_t = F.max_pool2d(torch.from_numpy(x), return_indices=True, **args)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx.numpy(), idx_t.numpy())
    np.testing.assert_array_equal(y.numpy(), y_t.numpy())


@settings(max_examples=15, deadline=None)
@given(case=pool_cases())
def test_max_pool2dsecond_order_against_torch(backend, monkeypatch, case):
    monkeypatch.setattr(parallel, "SPLIT_BYTES", 1 if case["seed"] % 2 else parallel.SPLIT_BYTES)
    case["dtype"] = np.float64
    x = _pool_input(case)
    args = dict(kernel_size=case["kernel"], stride=case["stride"], padding=case["padding"],
                dilation=case["dilation"], ceil_mode=case["ceil_mode"])
    second_order_against_torch(backend, lambda t: hwF.max_pool2d(t, **args) ** 2, lambda t: F.max_pool2d(t, **args) ** 2,
                  [x], case["seed"])


def test_max_pool2d_ties_first_maximum(backend):
    # a constant input: every window is one big tie and its first cell wins
    x = np.zeros((1, 1, 4, 5))
    _, idx = hwF.max_pool2d(hw.Tensor(x, backend=backend), 2, stride=1, return_indices=True)
    _, idx_t = F.max_pool2d(torch.from_numpy(x), 2, stride=1, return_indices=True)
    np.testing.assert_array_equal(idx.numpy(), idx_t.numpy())
    np.testing.assert_array_equal(idx.numpy()[0, 0, 0], [0, 1, 2, 3])
    # overlapping windows that share a maximum accumulate its gradient
    x = np.array([[[[0., 1., 0.], [0., 5., 0.], [0., 0., 0.]]]])
    xt = hw.Tensor(x, backend=backend, requires_grad=True)
    hwF.max_pool2d(xt, 2, stride=1).sum().backward()
    assert xt.grad.numpy()[0, 0, 1, 1] == 4


def test_max_pool2d_padding_never_wins(backend):
    """All -inf inputs: the maximum is -inf and its index still points inside the input."""
    x = np.full((1, 2, 3, 3), -np.inf)
    x[0, 1, 2, 2] = 1.0
    args = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    y, idx = hwF.max_pool2d(hw.Tensor(x, backend=backend), return_indices=True, **args)
    y_t, idx_t = F.max_pool2d(torch.from_numpy(x), return_indices=True, **args)
    np.testing.assert_array_equal(y.numpy(), y_t.numpy())
    np.testing.assert_array_equal(idx.numpy(), idx_t.numpy())


def test_max_pool2d_nan_propagates(backend):
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 1, 0] = np.nan
    y = hwF.max_pool2d(hw.Tensor(x, backend=backend), 2)
    np.testing.assert_array_equal(np.isnan(y.numpy()), np.isnan(F.max_pool2d(torch.from_numpy(x), 2).numpy()))
    _, idx = hwF.max_pool2d(hw.Tensor(x, backend=backend), 2, return_indices=True)
    assert idx.numpy()[0, 0, 0, 0] == 4  # the NaN's position


@settings(max_examples=40, deadline=None)
@given(case=pool_cases(with_dilation=False), count_include_pad=st.booleans())
def test_avg_pool2d_matches_torch(backend, case, count_include_pad):
    x = _pool_input(case)
    args = dict(kernel_size=case["kernel"], stride=case["stride"], padding=case["padding"],
                ceil_mode=case["ceil_mode"], count_include_pad=count_include_pad)
    compare_with_torch(lambda t: hwF.avg_pool2d(t, **args), lambda t: F.avg_pool2d(t, **args), [x],
                       backend=backend, rtol=TOL[case["dtype"]], seed=case["seed"])


@settings(max_examples=8, deadline=None)
@given(case=pool_cases(with_dilation=False))
def test_avg_pool2dsecond_order_against_torch(backend, case):
    case["dtype"] = np.float64
    x = _pool_input(case)
    args = dict(kernel_size=case["kernel"], stride=case["stride"], padding=case["padding"],
                ceil_mode=case["ceil_mode"])
    second_order_against_torch(backend, lambda t: hwF.avg_pool2d(t, **args) ** 2, lambda t: F.avg_pool2d(t, **args) ** 2,
                  [x], case["seed"])


@pytest.mark.parametrize("output_size", [1, (1, 1), 2, (3, 2), (6, 4), (4, 3), (None, 2), 5])
@pytest.mark.parametrize("dtype", DTYPES)
def test_adaptive_avg_pool2d(backend, output_size, dtype):
    x = _rng(4).standard_normal((2, 3, 6, 4)).astype(dtype)
    compare_with_torch(lambda t: hwF.adaptive_avg_pool2d(t, output_size),
                       lambda t: F.adaptive_avg_pool2d(t, output_size), [x], backend=backend, rtol=TOL[dtype])


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------
def _t(shape, dtype=np.float32):
    return hw.Tensor(np.zeros(shape, dtype=dtype))


@pytest.mark.parametrize("call,error,words", [
    (lambda: hwF.conv2d(_t((2, 3, 4)).reshape(2, 12), _t((1, 3, 1, 1))), ValueError, ["conv2d", "4-D", "(2, 12)"]),
    (lambda: hwF.conv2d(_t((1, 1, 2, 3, 4)), _t((1, 1, 1, 1))), ValueError, ["conv2d", "(1, 1, 2, 3, 4)"]),
    (lambda: hwF.conv2d(_t((1, 4, 5, 5)), _t((2, 3, 3, 3))), ValueError, ["conv2d", "(1, 4, 5, 5)", "4 channels", "expects (N, 3, H, W)"]),
    (lambda: hwF.conv2d(_t((1, 4, 5, 5)), _t((3, 2, 3, 3)), groups=2), ValueError, ["not divisible by groups=2"]),
    (lambda: hwF.conv2d(_t((1, 1, 2, 2)), _t((1, 1, 3, 3))), ValueError, ["conv2d", "larger than the padded input 2x2"]),
    (lambda: hwF.conv2d(_t((1, 1, 4, 4), np.int64), _t((1, 1, 3, 3), np.int64)), TypeError,
     ["conv2d", "floating", "int64"]),
    (lambda: hwF.conv2d(_t((1, 1, 4, 4)), _t((1, 1, 3, 3), np.float64)), TypeError, ["float32", "float64"]),
    (lambda: hwF.conv2d(np.zeros((1, 1, 4, 4)), _t((1, 1, 3, 3))), TypeError, ["conv2d", "Tensor", "ndarray"]),
    (lambda: hwF.conv2d(_t((1, 1, 4, 4)), _t((1, 1, 3, 3)), stride=2, padding="same"), ValueError, ["same", "strided"]),
    (lambda: hwF.conv2d(_t((1, 1, 4, 4)), _t((1, 1, 3, 3)), stride=0), ValueError, ["stride", ">= 1"]),
    (lambda: hwF.conv2d(_t((1, 1, 4, 4)), _t((1, 1, 3, 3)), padding=1.5), TypeError, ["padding"]),
    (lambda: hwF.conv2d(_t((1, 1, 4, 4)), _t((2, 1, 3, 3)), _t((3,))), ValueError, ["bias", "(2,)"]),
    (lambda: hwF.conv_transpose2d(_t((1, 2, 4, 4)), _t((3, 1, 3, 3))), ValueError, ["conv_transpose2d", "2 channels"]),
    (lambda: hwF.conv_transpose2d(_t((1, 2, 4, 4)), _t((2, 1, 3, 3)), stride=2, output_padding=2), ValueError,
     ["output_padding"]),
    (lambda: hwF.max_pool2d(_t((1, 1, 4, 4)), 2, padding=2), ValueError, ["max_pool2d", "half of the kernel"]),
    (lambda: hwF.max_pool2d(_t((1, 1, 2, 2)), 3), ValueError, ["max_pool2d", "larger than the padded input"]),
    (lambda: hwF.max_pool2d(_t((1, 1, 1, 1)), 2, padding=1, dilation=2), ValueError, ["entirely in the padding"]),
    (lambda: hwF.max_pool2d(_t((4, 4)), 2), ValueError, ["max_pool2d", "(4, 4)"]),
    (lambda: hwF.avg_pool2d(_t((1, 1, 4, 4), np.int64), 2), TypeError, ["avg_pool2d", "int64"]),
    (lambda: hwF.adaptive_avg_pool2d(_t((1, 1, 4, 4)), (1, 2, 3)), ValueError, ["adaptive_avg_pool2d"]),
])
def test_errors_name_op_and_shapes(call, error, words):
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word in str(info.value), f"{word!r} not in {info.value}"


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_chunk_workers_survive_fork(monkeypatch):
    """A forked child has none of the parent's worker threads; its convolutions must still run."""
    import os
    monkeypatch.setattr(scratch, "CHUNK_BYTES", 1)
    be = get_backend("numpy")
    rng = _rng(6)
    x, w = rng.standard_normal((4, 3, 6, 6)), rng.standard_normal((2, 3, 3, 3))
    y = cv.conv2d_forward(be, x, w, (1, 1), (1, 1, 1, 1))  # starts the pool in the parent
    pid = os.fork()
    if pid == 0:  # child: exit status says whether the result matched
        os._exit(0 if np.array_equal(cv.conv2d_forward(be, x, w, (1, 1), (1, 1, 1, 1)), y) else 1)
    _, status = os.waitpid(pid, 0)
    assert status == 0


@pytest.mark.parametrize("kernel,shape,ceil_mode", [(2, (2, 3, 8, 8), False), (2, (1, 2, 7, 9), False),
                                                    (3, (2, 2, 9, 7), True), ((2, 3), (1, 2, 6, 9), False)])
def test_max_pool2d_tiling_windows(backend, kernel, shape, ceil_mode):
    """Windows that tile (a crop of) the input take the strided-view path: ties (a coarse grid of
    values), a NaN, gradients and second order all as in PyTorch."""
    x = np.random.default_rng(7).integers(-2, 3, shape).astype(np.float64)
    args = dict(kernel_size=kernel, ceil_mode=ceil_mode)
    compare_with_torch(lambda t: hwF.max_pool2d(t, **args), lambda t: F.max_pool2d(t, **args), [x], backend=backend)
    second_order_against_torch(backend, lambda t: hwF.max_pool2d(t, **args) ** 2, lambda t: F.max_pool2d(t, **args) ** 2, [x], 3)
    x[0, 0, 1, 1] = np.nan
    y = hwF.max_pool2d(hw.Tensor(x, backend=backend), **args).numpy()
    np.testing.assert_array_equal(y, F.max_pool2d(torch.from_numpy(x), **args).numpy())


@pytest.mark.parametrize("n,bytes_per_image", [(512, 64 * 9 * 32 * 32 * 4), (512, 3 * 9 * 32 * 32 * 4),
                                               (7, 300 << 20), (1, 1)])
def test_device_chunks_bound_the_column_buffer(n, bytes_per_image):
    """Off NumPy a batch is cut only where one column buffer would pass DEVICE_CHUNK_BYTES (the
    vgg preset's 64-channel layers at batch 512: 1.2 GB whole), into even chunks covering it."""
    device = types.SimpleNamespace(name="cupy")  # image_chunks reads only the backend's name
    chunks = scratch.image_chunks(device, n, bytes_per_image)
    assert chunks[0][0] == 0 and chunks[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
    sizes = [stop - start for start, stop in chunks]
    assert max(sizes) - min(sizes) <= 1 or len(chunks) == 1 or sizes[-1] < sizes[0]
    if n * bytes_per_image <= scratch.DEVICE_CHUNK_BYTES:
        assert chunks == [(0, n)]
    else:
        assert all(size == 1 or size * bytes_per_image <= scratch.DEVICE_CHUNK_BYTES for size in sizes)
        assert len(chunks) == -(-n // max(1, scratch.DEVICE_CHUNK_BYTES // bytes_per_image))
