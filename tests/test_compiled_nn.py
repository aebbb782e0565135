"""The compiled kernels of the layers around convolutions (kernels/compiled_nn.py: ReLU, BatchNorm
in training, a convolution's bias gradient) against the NumPy reference path of the same ops and
against PyTorch, on drawn shapes (odd sizes, 2-D to 4-D BatchNorm inputs, affine or not, float32
and float64, NaN for ReLU), with the channels or ranges split over two worker threads on odd
seeds. Skipped where numba is not installed."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tinygrad_hw as hw
import tinygrad_hw.nn.functional as hwF
from tinygrad_hw.autograd import grad
from tinygrad_hw.backend import get_backend
from tinygrad_hw.kernels import compiled, compiled_nn, parallel
from tinygrad_hw.testing import assert_close

pytestmark = pytest.mark.skipif(not compiled.AVAILABLE, reason="numba is not installed")

DTYPES = [np.float64, np.float32]
TOL = {np.float64: 1e-10, np.float32: 1e-4}


@pytest.fixture(autouse=True)
def _numpy_backend():
    previous = hw.get_backend().name
    hw.set_backend("numpy")
    yield
    hw.set_backend(previous)


def _calls(monkeypatch):
    """Count the calls of compiled_nn's entry points (the ops reach them through the module)."""
    counts = {}
    for name in ("relu_forward", "relu_backward", "batch_norm_forward", "batch_norm_backward_sums",
                 "batch_norm_backward_input", "channel_sums"):
        real = getattr(compiled_nn, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            counts[_name] = counts.get(_name, 0) + 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(compiled_nn, name, spy)
    return counts


def _both(monkeypatch, fn):
    """``fn()`` with the compiled kernels (which must have been called), then with the NumPy
    reference path (which must not call them); returns both results and the compiled calls."""
    counts = _calls(monkeypatch)
    monkeypatch.setattr(compiled, "ENABLED", True)
    fast = fn()
    used = dict(counts)
    counts.clear()
    monkeypatch.setattr(compiled, "ENABLED", False)
    ref = fn()
    assert not counts, counts
    monkeypatch.setattr(compiled, "ENABLED", True)
    return fast, ref, used


def _chunking(monkeypatch, seed):
    # two workers; odd seeds: split from one byte on, so even tiny inputs take several chunks
    monkeypatch.setattr(parallel, "WORKERS", 2)
    if seed % 2:
        monkeypatch.setattr(parallel, "SPLIT_BYTES", 1)


def _relu_values(rng, shape, dtype, kind):
    x = rng.standard_normal(shape).astype(dtype)
    if kind == "special" and x.size:
        flat = x.reshape(-1)
        picks = rng.integers(0, flat.size, size=max(1, flat.size // 3))
        flat[picks] = rng.choice(np.array([0.0, -0.0, np.nan, np.inf, -np.inf], dtype), size=picks.size)
    return x


# --------------------------------------------------------------------------------------------------
# ReLU
# --------------------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=4), dtype=st.sampled_from(DTYPES),
       kind=st.sampled_from(["normal", "special"]), seed=st.integers(0, 2**16))
def test_relu_compiled_equals_reference_and_torch(monkeypatch, shape, dtype, kind, seed):
    """Forward and first-order gradient bit for bit the reference's (relu(NaN) = NaN, gradient 0
    at 0 and at NaN); PyTorch's values, and its gradient wherever the input is not NaN (PyTorch
    passes the gradient through at NaN)."""
    _chunking(monkeypatch, seed)
    rng = np.random.default_rng(seed)
    x = _relu_values(rng, tuple(shape), dtype, kind)
    g = rng.standard_normal(x.shape).astype(dtype)

    def run():
        xt = hw.Tensor(x, requires_grad=True)
        y = hw.relu(xt)
        y.backward(hw.Tensor(g))
        return y.numpy(), xt.grad.numpy()

    (y, gx), (y_ref, gx_ref), used = _both(monkeypatch, run)
    assert used == {"relu_forward": 1, "relu_backward": 1}
    assert y.dtype == gx.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(y, y_ref)  # NaN where NaN
    np.testing.assert_array_equal(gx, gx_ref)
    assert not np.signbit(y[y == 0]).any()  # +0.0, as np.maximum makes it
    xt = torch.from_numpy(x.copy()).requires_grad_()
    yt = torch.relu(xt)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    keep = ~np.isnan(x)
    np.testing.assert_array_equal(gx[keep], xt.grad.numpy()[keep])
    assert (gx[np.isnan(x) | (x == 0)] == 0).all()


def test_relu_backward_multiplies_by_the_mask_like_the_reference():
    """An infinite or NaN incoming gradient where the output is 0: the reference's g * mask is NaN
    there, and so is the kernel's (it is that product, not a select)."""
    be = get_backend("numpy")
    y = np.array([0.0, 0.0, 2.0, 0.0, 3.0], np.float32)
    g = np.array([np.inf, np.nan, np.inf, -1.5, 2.0], np.float32)
    gx = compiled_nn.relu_backward(be, g, y)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(gx, g * (y > 0))


def test_relu_non_contiguous_input_takes_the_reference_path(monkeypatch):
    counts = _calls(monkeypatch)
    x = np.random.default_rng(0).standard_normal((5, 6, 7)).transpose(2, 0, 1)
    xt = hw.Tensor(x, requires_grad=True)
    y = hw.relu(xt)
    y.sum().backward()  # a broadcast (zero-stride) incoming gradient: made contiguous
    np.testing.assert_array_equal(y.numpy(), np.maximum(x, 0))
    np.testing.assert_array_equal(xt.grad.numpy(), (x > 0).astype(x.dtype))
    assert "relu_forward" not in counts


def test_relu_broadcast_gradient_on_the_compiled_path(monkeypatch):
    counts = _calls(monkeypatch)
    x = np.random.default_rng(1).standard_normal((4, 3, 5))
    xt = hw.Tensor(x, requires_grad=True)
    hw.relu(xt).sum().backward()
    np.testing.assert_array_equal(xt.grad.numpy(), (x > 0).astype(x.dtype))
    assert counts == {"relu_forward": 1, "relu_backward": 1}


def test_relu_double_backward_keeps_the_graph_in_g(monkeypatch):
    """create_graph: the backward is recorded (the Tensor-level Mul by the mask), so the gradient
    of the input gradient in the incoming gradient exists, with or without the kernels."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 5))
    g0 = rng.standard_normal(x.shape)
    v = rng.standard_normal(x.shape)

    def run():
        xt = hw.Tensor(x, requires_grad=True)
        gt = hw.Tensor(g0, requires_grad=True)
        (gx,) = grad(hw.relu(xt), xt, gt, create_graph=True)
        (gx * hw.Tensor(v)).sum().backward()
        return gx.detach().numpy(), gt.grad.numpy()

    fast, ref, used = _both(monkeypatch, run)
    assert "relu_backward" not in used  # the recorded backward keeps the Tensor code
    for a, r in zip(fast, ref):
        np.testing.assert_array_equal(a, r)
    np.testing.assert_array_equal(fast[1], v * (x > 0))


# --------------------------------------------------------------------------------------------------
# BatchNorm in training
# --------------------------------------------------------------------------------------------------
@st.composite
def bn_cases(draw):
    ndim = draw(st.sampled_from([2, 3, 4]))
    shape = (draw(st.integers(1, 6)), draw(st.integers(1, 7))) + tuple(draw(st.integers(1, 7)) for _ in range(ndim - 2))
    assume(int(np.prod(shape)) // shape[1] > 1)
    affine = draw(st.booleans())
    # without affine parameters the input must need a gradient, or nothing would
    input_grad = draw(st.sampled_from([True, True, False])) or not affine
    return dict(shape=shape, dtype=draw(st.sampled_from(DTYPES)), affine=affine, input_grad=input_grad,
                offset=draw(st.sampled_from([0.0, 3.0, 1e3])), seed=draw(st.integers(0, 2**16)))


def _bn_run(case, x, w, b, g):
    dtype = case["dtype"]
    c = case["shape"][1]
    rm, rv = hw.Tensor(np.full(c, 0.5, dtype)), hw.Tensor(np.full(c, 2.0, dtype))
    xt = hw.Tensor(x, requires_grad=case["input_grad"])
    wt = hw.Tensor(w, requires_grad=True) if case["affine"] else None
    bt = hw.Tensor(b, requires_grad=True) if case["affine"] else None
    y = hwF.batch_norm(xt, rm, rv, wt, bt, training=True, momentum=0.3, eps=1e-3)
    y.backward(hw.Tensor(g))
    out = [y.numpy(), rm.numpy(), rv.numpy()]
    if case["input_grad"]:
        out.append(xt.grad.numpy())
    if case["affine"]:
        out += [wt.grad.numpy(), bt.grad.numpy()]
    return out


@settings(max_examples=60, deadline=None)
@given(case=bn_cases())
def test_batch_norm_compiled_equals_reference_and_torch(monkeypatch, case):
    """Output, running statistics and the input / weight / bias gradients of a training step:
    compiled == reference (to rounding) and both == PyTorch."""
    _chunking(monkeypatch, case["seed"])
    rng = np.random.default_rng(case["seed"])
    dtype, shape = case["dtype"], case["shape"]
    x = (rng.standard_normal(shape) * 2 + case["offset"]).astype(dtype)
    w = rng.standard_normal(shape[1]).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    fast, ref, used = _both(monkeypatch, lambda: _bn_run(case, x, w, b, g))
    assert used["batch_norm_forward"] == 1 and used["batch_norm_backward_sums"] == 1
    assert used.get("batch_norm_backward_input", 0) == int(case["input_grad"])
    xt = torch.from_numpy(x.copy()).requires_grad_(case["input_grad"])
    wt = torch.from_numpy(w.copy()).requires_grad_() if case["affine"] else None
    bt = torch.from_numpy(b.copy()).requires_grad_() if case["affine"] else None
    rm, rv = torch.full((shape[1],), 0.5, dtype=xt.dtype), torch.full((shape[1],), 2.0, dtype=xt.dtype)
    yt = F.batch_norm(xt, rm, rv, wt, bt, training=True, momentum=0.3, eps=1e-3)
    yt.backward(torch.from_numpy(g))
    theirs = [yt, rm, rv] + ([xt.grad] if case["input_grad"] else []) + ([wt.grad, bt.grad] if case["affine"] else [])
    # the input gradient loses digits to cancellation when the output is nearly constant
    # (x offset far from its spread): tolerances relative to the largest term
    tol = TOL[dtype] * (1e3 if case["offset"] == 1e3 and dtype == np.float32 else 1)
    names = ["output", "running_mean", "running_var", "input grad", "weight grad", "bias grad"]
    names = names[:3] + (names[3:4] if case["input_grad"] else []) + (names[4:] if case["affine"] else [])
    for name, a, r, t in zip(names, fast, ref, theirs):
        assert a.dtype == r.dtype == np.dtype(dtype), name
        assert_close(a, r, tol, f"compiled vs reference {name}")
        assert_close(a, t, tol, f"compiled vs torch {name}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_statistics_of_a_large_offset(dtype):
    """Mean and variance of data far from zero (1e4 + N(0, 1), and one outlier first): the
    pairwise per-run combination keeps the variance's digits, as a two-pass would."""
    be = get_backend("numpy")
    rng = np.random.default_rng(3)
    x = 1e4 + rng.standard_normal((7, 3, 5, 6))
    x[0, :, 0, 0] += 50.0
    x = x.astype(dtype)
    x64 = x.astype(np.float64)
    _, mean, var, invstd = compiled_nn.batch_norm_forward(be, x, None, None, 1e-5)
    true_mean = x64.mean((0, 2, 3))
    true_var = ((x64 - true_mean[None, :, None, None]) ** 2).mean((0, 2, 3))
    tol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(mean, true_mean, rtol=tol)
    np.testing.assert_allclose(var, true_var, rtol=tol * 10)
    np.testing.assert_allclose(invstd, 1 / np.sqrt(true_var + 1e-5), rtol=tol * 10)


def test_batch_norm_module_steps_compiled_equal_reference(monkeypatch):
    """BatchNorm2d in a conv net over three training steps (running statistics carried along,
    the first layer's input needs no gradient): the same losses, parameters and buffers."""
    from tinygrad_hw import nn, optim
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((6, 3, 8, 8)) for _ in range(3)]

    def run():
        hw.manual_seed(0)
        model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(),
                              nn.Flatten(), nn.Linear(5 * 64, 4)).double()
        opt = optim.SGD(model.parameters(), lr=0.1)
        losses = []
        for x in xs:
            opt.zero_grad()
            loss = (model(hw.Tensor(x)) ** 2).mean()
            loss.backward()
            opt.step()
            losses.append(loss.numpy())
        return losses + [t.numpy() for t in model.state_dict().values()]

    fast, ref, used = _both(monkeypatch, run)
    assert used["batch_norm_forward"] == 6 and used["channel_sums"] == 3
    for a, r in zip(fast, ref):
        assert_close(a, r, 1e-10, "module step")


def test_batch_norm_double_backward_keeps_the_tensor_code(monkeypatch):
    """create_graph: the recorded backward is the Tensor-level formula (differentiable in x)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 2, 3))
    g0 = rng.standard_normal(x.shape)

    def run():
        xt = hw.Tensor(x, requires_grad=True)
        wt, bt = hw.Tensor(np.ones(3) * 1.5, requires_grad=True), hw.Tensor(np.zeros(3), requires_grad=True)
        y = hwF.batch_norm(xt, None, None, wt, bt, training=True)
        (gx,) = grad(y, xt, hw.Tensor(g0), create_graph=True)
        (gx ** 2).sum().backward()
        return gx.detach().numpy(), xt.grad.numpy(), wt.grad.numpy()

    fast, ref, used = _both(monkeypatch, run)
    assert "batch_norm_backward_sums" not in used
    for a, r in zip(fast, ref):
        assert_close(a, r, 1e-10, "double backward")


# --------------------------------------------------------------------------------------------------
# Convolution bias gradient
# --------------------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), cin=st.integers(1, 3), cout=st.integers(1, 6), h=st.integers(1, 9),
       w=st.integers(1, 9), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_conv_bias_gradient_compiled_equals_reference_and_torch(monkeypatch, n, cin, cout, h, w, dtype, seed):
    _chunking(monkeypatch, seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cin, h, w)).astype(dtype)
    k = rng.standard_normal((cout, cin, 1, 1)).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    g = rng.standard_normal((n, cout, h, w)).astype(dtype)

    def run():
        bt = hw.Tensor(b, requires_grad=True)
        hwF.conv2d(hw.Tensor(x), hw.Tensor(k), bt).backward(hw.Tensor(g))
        return bt.grad.numpy()

    fast, ref, used = _both(monkeypatch, run)
    assert used.get("channel_sums") == 1
    assert fast.dtype == ref.dtype == np.dtype(dtype)
    assert_close(fast, ref, TOL[dtype], "bias grad")
    bt = torch.from_numpy(b.copy()).requires_grad_()
    F.conv2d(torch.from_numpy(x), torch.from_numpy(k), bt).backward(torch.from_numpy(g))
    assert_close(fast, bt.grad, TOL[dtype], "bias grad vs torch")


def test_warm_up_compiles_every_nn_kernel():
    assert compiled.warm_up() >= 0.0
    for kernel in (compiled_nn._relu_forward, compiled_nn._relu_backward, compiled_nn._bn_stats, compiled_nn._bn_apply,
                   compiled_nn._bn_backward_sums, compiled_nn._bn_backward_input, compiled_nn._channel_sums):
        assert len(kernel.signatures) >= 2, kernel  # float32 and float64
