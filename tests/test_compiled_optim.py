"""The compiled SGD update (kernels/compiled_optim.py) against the NumPy path it replaces (bit for
bit) and against torch.optim.SGD, on drawn shapes, dtypes and hyper-parameters. Skipped where numba
is not installed."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_hw as hw
from tinygrad_hw import optim
from tinygrad_hw.kernels import compiled, compiled_optim
from tinygrad_hw.testing import rel_err

pytestmark = pytest.mark.skipif(not compiled.AVAILABLE, reason="numba is not installed")

STEPS = 6


def _run(init, grads, options, enabled, layout=lambda a: a):
    """Parameters and momentum buffers after SGD steps on the NumPy backend, and how many
    parameter updates the compiled kernel did."""
    saved_enabled, saved_step = compiled.ENABLED, compiled_optim.sgd_step
    calls = []

    def counting(*args):
        calls.append(1)
        return saved_step(*args)

    compiled.ENABLED = enabled
    compiled_optim.sgd_step = counting
    try:
        ps = [hw.Tensor(a.copy(), requires_grad=True, backend="numpy") for a in init]
        opt = optim.SGD(ps, **options)
        for gs in grads:
            for p, g in zip(ps, gs):
                p.grad = hw.Tensor(layout(g.copy()), backend="numpy")
            opt.step()
    finally:
        compiled.ENABLED, compiled_optim.sgd_step = saved_enabled, saved_step
    bufs = [opt.state[p].get("momentum_buffer") for p in ps]
    return [p.numpy() for p in ps], bufs, len(calls)


def _torch(init, grads, options):
    ts = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    opt = torch.optim.SGD(ts, **options, foreach=False)
    for gs in grads:
        for t, g in zip(ts, gs):
            t.grad = torch.tensor(g.copy())
        opt.step()
    return [t.detach().numpy() for t in ts]


sgd_options = st.fixed_dictionaries(dict(
    lr=st.floats(1e-4, 1.0),
    momentum=st.sampled_from([0.0, 0.5, 0.9, 0.99]),
    dampening=st.sampled_from([0.0, 0.1, 0.6]),
    weight_decay=st.sampled_from([0.0, 1e-4, 0.3]),
    nesterov=st.booleans(),
    maximize=st.booleans(),
))
shapes = st.lists(st.lists(st.integers(1, 6), max_size=4).map(tuple), min_size=1, max_size=3)


@settings(max_examples=60, deadline=None)
@given(options=sgd_options, shapes=shapes, dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**16))
def test_compiled_sgd_is_the_numpy_update_bit_for_bit_and_matches_torch(options, shapes, dtype, seed):
    if options["nesterov"]:
        options = dict(options, dampening=0.0, momentum=options["momentum"] or 0.9)
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(STEPS)]
    fast, fast_bufs, calls = _run(init, grads, options, True)
    ref, ref_bufs, ref_calls = _run(init, grads, options, False)
    assert calls == STEPS * len(shapes) and ref_calls == 0
    for a, b in zip(fast, ref):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_array_equal(a, b)
    for a, b in zip(fast_bufs, ref_bufs):
        assert (a is None) == (b is None) == (options["momentum"] == 0)
        if a is not None:
            np.testing.assert_array_equal(a, b)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for a, t in zip(fast, _torch(init, grads, options)):
        assert rel_err(a, t) <= tol


def test_non_contiguous_gradients_and_other_dtypes_take_the_numpy_path():
    rng = np.random.default_rng(3)
    options = dict(lr=0.1, momentum=0.9, weight_decay=0.01)
    init = [rng.standard_normal((4, 3))]
    grads = [[rng.standard_normal((3, 4))] for _ in range(3)]
    fast, _, calls = _run(init, grads, options, True, layout=lambda g: g.T)  # a transposed view
    ref, _, _ = _run(init, grads, options, False, layout=lambda g: g.T)
    assert calls == 0
    np.testing.assert_array_equal(fast[0], ref[0])
    scalar = hw.Tensor(np.float64(0.5), requires_grad=True, backend="numpy")
    scalar.grad = hw.Tensor(np.ones((), np.float64), backend="numpy")
    scalar.grad.data = np.float64(2.0)  # a NumPy scalar, as some backward passes leave
    optim.SGD([scalar], lr=0.25, momentum=0.9).step()
    assert scalar.item() == 0.0
    half = [a.astype(np.float16) for a in init]
    _, _, calls = _run(half, [[g.T.astype(np.float16).copy()] for [g] in grads], options, True)
    assert calls == 0


def test_compiled_step_keeps_the_version_bump_and_a_loaded_buffer():
    """The parameter's version still moves (a pending backward through it then raises), and a
    momentum buffer from load_state_dict continues exactly as on the NumPy path."""
    w = hw.Tensor(np.ones(3, np.float32), requires_grad=True, backend="numpy")
    opt = optim.SGD([w], lr=0.1, momentum=0.9)
    y = (w * w).sum()
    w.grad = hw.Tensor(np.ones(3, np.float32), backend="numpy")
    version = w._vc[0]
    opt.step()
    assert w._vc[0] == version + 1
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()
    rng = np.random.default_rng(4)
    init = [rng.standard_normal((2, 5)).astype(np.float32)]
    grads = [[rng.standard_normal((2, 5)).astype(np.float32)] for _ in range(4)]
    results = []
    for enabled in (True, False):
        saved = compiled.ENABLED
        compiled.ENABLED = enabled
        try:
            p = hw.Tensor(init[0].copy(), requires_grad=True, backend="numpy")
            opt = optim.SGD([p], lr=0.05, momentum=0.9, nesterov=True)
            opt.load_state_dict({"state": {0: {"momentum_buffer": np.asfortranarray(
                np.full((2, 5), 0.5, np.float64))}}, "param_groups": opt.state_dict()["param_groups"]})
            for [g] in grads:
                p.grad = hw.Tensor(g.copy(), backend="numpy")
                opt.step()
            results.append((p.numpy(), opt.state[p]["momentum_buffer"]))
        finally:
            compiled.ENABLED = saved
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    assert results[0][1].dtype == np.float32


def test_warm_up_compiles_the_optimizer_kernels():
    compiled_optim.warm_up()
    assert len(compiled_optim._sgd_kernel.signatures) >= 2
