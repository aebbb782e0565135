"""The compiled (numba) kernels against the NumPy reference kernels and PyTorch, on every drawn
shape: convolution by im2col/col2im (strides, padding, dilation, groups), Winograd, max pooling
(ties to the first maximum, NaN, padding). Skipped where numba is not installed."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_hw as hw
import tinygrad_hw.nn.functional as hwF
from tinygrad_hw.backend import get_backend
from tinygrad_hw.kernels import compiled, parallel, scratch, winograd
from tinygrad_hw.kernels import conv as cv
from tinygrad_hw.kernels import pool as pl
from tinygrad_hw.testing import assert_close

from test_conv import DTYPES, TOL, conv_cases, pool_cases, winograd_cases, _pool_input

pytestmark = pytest.mark.skipif(not compiled.AVAILABLE, reason="numba is not installed")


def _both(monkeypatch, fn):
    """``fn()`` with the compiled kernels, then with the NumPy reference kernels."""
    monkeypatch.setattr(compiled, "ENABLED", True)
    fast = fn()
    monkeypatch.setattr(compiled, "ENABLED", False)
    ref = fn()
    monkeypatch.setattr(compiled, "ENABLED", True)
    return fast, ref


def _chunking(monkeypatch, seed):
    # odd seeds: one image per chunk, chunks shared by two worker threads; seeds 0, 1 mod 4: the
    # Winograd input transform's channels-last layout at any channel count, else channel-major
    monkeypatch.setattr(parallel, "WORKERS", 2)
    monkeypatch.setattr(compiled, "CHANNELS_LAST_MIN", 1 if seed % 4 < 2 else 10**9)
    if seed % 2:
        monkeypatch.setattr(scratch, "CHUNK_BYTES", 1)
        monkeypatch.setattr(parallel, "SPLIT_BYTES", 1)


def _conv_arrays(case):
    rng = np.random.default_rng(case["seed"])
    kh, kw = case["kernel"]
    x = rng.standard_normal((case["n"], case["cin"], case["h"], case["w"])).astype(case["dtype"])
    w = rng.standard_normal((case["cout"], case["cin"] // case["groups"], kh, kw)).astype(case["dtype"])
    b = rng.standard_normal(case["cout"]).astype(case["dtype"])
    return x, w, b


def _check_conv_kernels(monkeypatch, case):
    """Forward (with bias), input gradient and weight gradient of the kernel entry points:
    compiled == reference (to rounding) and both == PyTorch."""
    x, w, b = _conv_arrays(case)
    be = get_backend("numpy")
    ph, pw = case["padding"]
    geom = dict(stride=case["stride"], padding=(ph, ph, pw, pw), dilation=case["dilation"],
                groups=case["groups"])
    xt, wt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    yt = F.conv2d(xt, wt, torch.from_numpy(b) if case["bias"] else None, stride=case["stride"],
                  padding=case["padding"], dilation=case["dilation"], groups=case["groups"])
    g = np.random.default_rng(case["seed"] + 1).standard_normal(yt.shape).astype(x.dtype)
    yt.backward(torch.from_numpy(g))

    def run():
        y = cv.conv2d_forward(be, x, w, bias=b if case["bias"] else None, **geom)
        gx = cv.conv2d_input_grad(be, g, w, x.shape[2:], **geom)
        gw = cv.conv2d_weight_grad(be, x, g, case["kernel"], **geom)
        return y, gx, gw

    fast, ref = _both(monkeypatch, run)
    tol = TOL[case["dtype"]]
    for name, a, r, t in zip(("forward", "input grad", "weight grad"), fast, ref,
                             (yt.detach(), xt.grad, wt.grad)):
        assert a.dtype == r.dtype == x.dtype, name
        assert a.shape == r.shape, name
        assert_close(a, r, tol, f"{name}: compiled vs reference")
        assert_close(a, t.numpy(), tol, f"{name}: compiled vs torch")


@settings(max_examples=40, deadline=None)
@given(case=conv_cases())
def test_im2col_kernels_match_reference_and_torch(monkeypatch, case):
    monkeypatch.setattr(winograd, "ENABLED", False)
    _chunking(monkeypatch, case["seed"])
    _check_conv_kernels(monkeypatch, case)


@pytest.mark.parametrize("tiles", [2, 4])
@settings(max_examples=40, deadline=None)
@given(case=winograd_cases())
def test_winograd_kernels_match_reference_and_torch(monkeypatch, tiles, case):
    """F(2x2, 3x3) and F(4x4, 3x3) (compiled) against the NumPy F(2x2) and PyTorch."""
    monkeypatch.setattr(winograd, "FOUR_FROM", 1 if tiles == 4 else 10**9)
    monkeypatch.setattr(winograd, "FOUR_MIN_CHANNELS", 1)
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    monkeypatch.setattr(winograd, "MIN_SIZE", 1)
    _chunking(monkeypatch, case["seed"])
    _check_conv_kernels(monkeypatch, case)


@pytest.mark.parametrize("tiles", [2, 4])
def test_winograd_compiled_on_a_network_layer_shape(monkeypatch, tiles):
    """A real layer (32 channels at 16x13, float32, several chunks): compiled == reference, and
    both within float32 rounding of PyTorch."""
    monkeypatch.setattr(winograd, "FOUR_FROM", 1 if tiles == 4 else 10**9)
    case = dict(n=5, cin=32, cout=48, groups=1, h=16, w=13, kernel=(3, 3), stride=(1, 1),
                dilation=(1, 1), padding=(1, 1), bias=True, dtype=np.float32, seed=3)
    monkeypatch.setattr(scratch, "CHUNK_BYTES", 1 << 16)
    assert winograd.applies(get_backend("numpy"), 32, 48, (3, 3), (1, 1), (1, 1), 1,
                            np.dtype(np.float32), (16, 13))
    _check_conv_kernels(monkeypatch, case)


@settings(max_examples=60, deadline=None)
@given(case=pool_cases())
def test_max_pool_kernels_match_reference_and_torch(monkeypatch, case):
    _chunking(monkeypatch, case["seed"])
    be = get_backend("numpy")
    x = _pool_input(case)
    kernel = case["kernel"]
    stride = case["stride"] or kernel
    args = (kernel, stride, case["padding"], case["dilation"])

    def run():
        y, argmax = pl.max_pool2d_forward(be, x, *args, ceil_mode=case["ceil_mode"])
        route = pl.MaxPoolRoute(be, argmax, x.shape, *args)
        gy = np.random.default_rng(case["seed"]).standard_normal(y.shape).astype(x.dtype)
        return y, argmax, route.scatter(gy)

    (y, argmax, gx), (y_ref, argmax_ref, gx_ref) = _both(monkeypatch, run)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(argmax, argmax_ref)
    assert argmax.dtype == argmax_ref.dtype
    # the scatter adds in another order where windows overlap: equal to rounding
    assert_close(gx, gx_ref, TOL[case["dtype"]], "scatter")
    # PyTorch: the same maxima, the same (first) positions, the same gradient
    xt = torch.from_numpy(x).requires_grad_()
    yt, idx_t = F.max_pool2d(xt, kernel, stride=stride, padding=case["padding"], dilation=case["dilation"],
                             ceil_mode=case["ceil_mode"], return_indices=True)
    yt.backward(torch.from_numpy(np.random.default_rng(case["seed"]).standard_normal(y.shape).astype(x.dtype)))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    flat = pl.max_pool2d_flat_indices(be, argmax, x.shape, *args, plane=True)
    np.testing.assert_array_equal(flat, idx_t.numpy())
    assert_close(gx, xt.grad.numpy(), TOL[case["dtype"]], "scatter vs torch")


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_compiled_nan_and_ties(monkeypatch, dtype):
    """A NaN wins its window at its first position; a constant window's first cell wins."""
    be = get_backend("numpy")
    x = np.zeros((1, 1, 4, 4), dtype)
    x[0, 0, 1, 0] = np.nan
    x[0, 0, 1, 1] = np.nan
    (y, am), (y_ref, am_ref) = _both(monkeypatch, lambda: pl.max_pool2d_forward(be, x, (2, 2), (2, 2)))
    np.testing.assert_array_equal(np.isnan(y), [[[[True, False], [False, False]]]])
    np.testing.assert_array_equal(am, am_ref)
    assert am[0, 0, 0, 0] == 2  # (1, 0): the first NaN in row-major window order
    np.testing.assert_array_equal(am[0, 0].ravel()[1:], [0, 0, 0])  # ties: the first cell


def test_max_pool_compiled_large_kernel_index_dtype(monkeypatch):
    """Kernels of more than 127 positions keep their positions in int16."""
    be = get_backend("numpy")
    x = np.random.default_rng(0).standard_normal((2, 3, 13, 12)).astype(np.float32)
    (y, am), (y_ref, am_ref) = _both(monkeypatch, lambda: pl.max_pool2d_forward(be, x, (12, 11), (1, 1)))
    assert am.dtype == np.int16
    np.testing.assert_array_equal(am, am_ref)
    np.testing.assert_array_equal(y, y_ref)


@pytest.mark.parametrize("net", ["small_cnn", "vgg_style"])
def test_network_gradients_compiled_equal_reference(monkeypatch, net):
    """A whole network's float64 loss and parameter gradients: compiled kernels against the
    NumPy reference (every kernel of the step goes through one of the two)."""
    from tinygrad_hw import models
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32))
    labels = np.array([1, 4, 7])

    def run():
        hw.manual_seed(0)
        model = models.build(net).double()
        model.eval()
        loss = hwF.cross_entropy(model(hw.Tensor(x)), hw.tensor(labels))
        loss.backward()
        return [loss.numpy()] + [p.grad.numpy() for p in model.parameters()]

    fast, ref = _both(monkeypatch, run)
    for a, r in zip(fast, ref):
        assert_close(a, r, 1e-10, "network")


def test_compiled_policy_takes_smaller_layers(monkeypatch):
    """With the compiled kernels Winograd takes layers from 4 channels and 4x4 outputs, F(4x4)
    from 8x8 outputs and 16 channels; without them the NumPy policy (32 channels, 8x8) holds."""
    monkeypatch.setattr(compiled, "ENABLED", True)
    be = get_backend("numpy")
    f32 = np.dtype(np.float32)
    geom = ((3, 3), (1, 1), (1, 1), 1, f32)
    assert winograd.applies(be, 6, 12, *geom, (16, 16))
    assert winograd.applies(be, 128, 128, *geom, (4, 4))
    assert not winograd.applies(be, 3, 32, *geom, (32, 32))
    assert winograd.tile_size((16, 16), 32) == 4 and winograd.tile_size((8, 8), 64) == 4
    assert winograd.tile_size((4, 4), 128) == 2
    assert winograd.tile_size((32, 32), 16) == 4  # F(4x4) from FOUR_MIN_CHANNELS = 16 channels
    assert winograd.tile_size((32, 32), 12) == 2
    monkeypatch.setattr(compiled, "ENABLED", False)
    assert not winograd.applies(be, 6, 12, *geom, (16, 16))
    assert not winograd.applies(be, 128, 128, *geom, (4, 4))
    assert winograd.applies(be, 32, 32, *geom, (8, 8))


def test_switch_off_by_environment():
    """TINYGRAD_HW_NUMBA=0 selects the NumPy kernels in a fresh process."""
    code = ("from tinygrad_hw.kernels import compiled; from tinygrad_hw.backend import get_backend; "
            "import numpy as np; print(compiled.ENABLED, compiled.active(get_backend('numpy'), np.zeros(1)))")
    env = dict(os.environ, TINYGRAD_HW_NUMBA="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    env["TINYGRAD_HW_NUMBA"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_active_only_for_float_numpy_arrays(monkeypatch):
    monkeypatch.setattr(compiled, "ENABLED", True)
    be = get_backend("numpy")
    assert compiled.active(be, np.zeros(2, np.float32), np.zeros(2, np.float64))
    assert not compiled.active(be, np.zeros(2, np.int64))
    assert not compiled.active(be, np.zeros(2, np.float16))


def test_warm_up_compiles_every_kernel():
    assert compiled.warm_up() >= 0.0
    for kernel in (compiled.col2im, compiled.wino_input, compiled.wino_output, compiled.wino_output_cl,
                   compiled.wino_grad_output, compiled.wino_grad_output_cl, compiled.max_pool_forward, compiled.max_pool_backward,
                   compiled.max_pool_2x2_forward, compiled.max_pool_2x2_backward):
        assert len(kernel.signatures) >= 2, kernel  # float32 and float64


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(2, 9), w=st.integers(2, 9),
       values=st.sampled_from(["normal", "ties", "nan"]), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**16))
def test_max_pool_2x2_kernels_match_reference_and_torch(monkeypatch, n, c, h, w, values, dtype, seed):
    """The special 2x2 / stride-2 kernels (the networks' pooling), odd sizes included: values and
    positions equal to the reference's, the scatter equal; PyTorch's values and indices."""
    _chunking(monkeypatch, seed)
    be = get_backend("numpy")
    rng = np.random.default_rng(seed)
    if values == "ties":
        x = rng.integers(-1, 2, (n, c, h, w)).astype(dtype)
    else:
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
    if values == "nan":
        x[rng.random(x.shape) < 0.2] = np.nan
    gy = rng.standard_normal((n, c, h // 2, w // 2)).astype(dtype)
    args = ((2, 2), (2, 2), (0, 0), (1, 1))

    def run():
        y, argmax = pl.max_pool2d_forward(be, x, *args)
        return y, argmax, pl.MaxPoolRoute(be, argmax, x.shape, *args).scatter(gy)

    (y, argmax, gx), (y_ref, argmax_ref, gx_ref) = _both(monkeypatch, run)
    np.testing.assert_array_equal(y, y_ref)  # NaN where the reference has NaN
    np.testing.assert_array_equal(argmax, argmax_ref)
    np.testing.assert_array_equal(gx, gx_ref)
    yt, idx_t = F.max_pool2d(torch.from_numpy(x), 2, return_indices=True)
    np.testing.assert_array_equal(y, yt.numpy())
    if values != "nan":  # (PyTorch's CPU kernel points at a window's last NaN)
        np.testing.assert_array_equal(pl.max_pool2d_flat_indices(be, argmax, x.shape, *args, plane=True),
                                      idx_t.numpy())


@settings(max_examples=40, deadline=None)
@given(m=st.sampled_from([2, 4]), n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(1, 13),
       w=st.integers(1, 13), pad=st.integers(0, 2), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_unrolled_winograd_input_equals_generic(m, n, c, h, w, pad, dtype, seed):
    """The unrolled F(2x2) and F(4x4) input transforms (the gather fused into the row transform)
    give V bit for bit as the generic loops (gather, then B^T and B as matrices), borders and
    partial last tiles included."""
    oh, ow = h + 2 * pad - 2, w + 2 * pad - 2
    if oh < 1 or ow < 1:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    bt = winograd.TRANSFORMS[m][0].astype(dtype)
    th, tw = -(-oh // m), -(-ow // m)
    alpha = m + 2
    v_ref = np.full((alpha * alpha, c, n * th * tw), np.nan, dtype)  # channels by tiles
    # another B^T (the matrix with its first two rows swapped) takes the generic loops
    swapped = bt[[1, 0, 2, 3]] if m == 2 else bt[[1, 0, 2, 3, 4, 5]]
    for matrix in (bt, swapped):
        compiled.wino_input_generic(x, v_ref, matrix, m, pad, pad, th, tw)
        v = np.full((alpha * alpha, n * th * tw, c), np.nan, dtype)  # tiles by channels
        compiled.wino_input(x, v, matrix, m, pad, pad, th, tw, True)
        np.testing.assert_array_equal(v, v_ref.transpose(0, 2, 1))
        v = np.full_like(v_ref, np.nan)
        compiled.wino_input(x, v, matrix, m, pad, pad, th, tw, False)
        np.testing.assert_array_equal(v, v_ref)


@settings(max_examples=40, deadline=None)
@given(m=st.sampled_from([2, 4]), n=st.integers(1, 3), o=st.integers(1, 3), oh=st.integers(1, 13),
       ow=st.integers(1, 13), has_bias=st.booleans(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_winograd_output_transform_equals_matrix_form(m, n, o, oh, ow, has_bias, dtype, seed):
    """The output transform gives y = A^T M A (+ bias) of every tile, placed and cropped, as the
    matrix products in float64 do, bias or none, partial last tiles included."""
    rng = np.random.default_rng(seed)
    at = winograd.TRANSFORMS[m][2].astype(dtype)
    th, tw = -(-oh // m), -(-ow // m)
    alpha = m + 2
    mm = rng.standard_normal((alpha * alpha, o, n * th * tw)).astype(dtype)
    bias = rng.standard_normal(o).astype(dtype) if has_bias else np.zeros(1, dtype)
    y = np.full((n, o, oh, ow), np.nan, dtype)
    compiled.wino_output(mm, y, at, bias, has_bias, th, tw)
    tiles = mm.astype(np.float64).reshape(alpha, alpha, o, n, th, tw)
    a64 = winograd.TRANSFORMS[m][2]
    z = np.einsum("al,lkonij,ek->noiaje", a64, tiles, a64)  # (n, o, th, m, tw, m)
    ref = z.reshape(n, o, th * m, tw * m)[:, :, :oh, :ow] + (bias.astype(np.float64).reshape(1, o, 1, 1) if has_bias else 0)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, ref, rtol=tol, atol=tol * 10 * (1 + np.abs(ref).max()))
    # from M channels-last (the forward's V U^T): the same sums, so bit for bit the same y, by the
    # unrolled kernels (standard A^T) and by the generic loops (A^T with its rows swapped)
    mt = np.ascontiguousarray(mm.transpose(0, 2, 1))
    for matrix in (at, np.ascontiguousarray(at[::-1])):
        y_ref, y_cl = np.full_like(y, np.nan), np.full_like(y, np.nan)
        compiled.wino_output(mm, y_ref, matrix, bias, has_bias, th, tw)
        compiled.wino_output_cl(mt, y_cl, matrix, bias, has_bias, th, tw)
        np.testing.assert_array_equal(y_cl, y_ref)


@settings(max_examples=40, deadline=None)
@given(m=st.sampled_from([2, 4]), n=st.integers(1, 3), o=st.integers(1, 3), oh=st.integers(1, 13),
       ow=st.integers(1, 13), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_unrolled_winograd_grad_output_equals_generic(m, n, o, oh, ow, dtype, seed):
    """The unrolled F(2x2) transform of the output gradient (the weight gradient's; F(4x4) runs
    the generic loops either way) gives M bit for bit as the generic loops, partial last tiles
    included."""
    rng = np.random.default_rng(seed)
    at = winograd.TRANSFORMS[m][2].astype(dtype)
    th, tw = -(-oh // m), -(-ow // m)
    alpha = m + 2
    gy = rng.standard_normal((n, o, oh, ow)).astype(dtype)
    mm = np.full((alpha * alpha, o, n * th * tw), np.nan, dtype)
    mm_ref = np.full_like(mm, np.nan)
    compiled.wino_grad_output_generic(gy, mm_ref, at, th, tw)
    compiled.wino_grad_output(gy, mm, at, th, tw)  # (the unrolled kernel up to 4 tiles a row)
    np.testing.assert_array_equal(mm, mm_ref)
    # into M channels-last, by the unrolled kernels (standard A^T) and the generic loops (A^T with
    # its rows swapped), bit for bit the same values
    for matrix in (at, np.ascontiguousarray(at[::-1])):
        ref = np.full_like(mm, np.nan)
        compiled.wino_grad_output_generic(gy, ref, matrix, th, tw)
        mt = np.full((alpha * alpha, n * th * tw, o), np.nan, dtype)
        compiled.wino_grad_output_cl(gy, mt, matrix, th, tw)
        np.testing.assert_array_equal(mt, ref.transpose(0, 2, 1))
    if m == 2:  # the unrolled kernel at every width
        mm[:] = np.nan
        compiled._wino_grad_output_f2(gy, mm, th, tw)
        np.testing.assert_array_equal(mm, mm_ref)
