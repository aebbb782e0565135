"""Every Tensor operation against PyTorch: value, gradient, dtype (float64, rel. error < 1e-10),
numerical gradients (hw.gradcheck) and second-order gradients (create_graph=True)."""
import operator

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_hw as hw
from tinygrad_hw.testing import compare_second_order, compare_with_torch

shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=5)


def floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=64)


def arrays(shape, lo=-5.0, hi=5.0, unique=False):
    return hnp.arrays(np.float64, shape, elements=floats(lo, hi), unique=unique)


@st.composite
def array_and_axis(draw, lo=-5.0, hi=5.0, min_dims=0, unique=False):
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=4, min_side=1, max_side=5))
    x = draw(arrays(shape, lo, hi, unique))
    ndim = len(shape)
    axis = draw(st.one_of(st.none(), st.integers(-ndim, ndim - 1) if ndim else st.none(),
                          st.lists(st.integers(0, max(ndim - 1, 0)), min_size=1, max_size=ndim, unique=True)
                          .map(tuple) if ndim else st.none()))
    return x, axis, draw(st.booleans())


# --------------------------------------------------------------------------------------------------
# unary elementwise
# --------------------------------------------------------------------------------------------------
UNARY = {
    # name: (ours, torch's, value range)
    "neg": (lambda x: -x, lambda x: -x, (-5, 5)),
    "exp": (lambda x: x.exp(), torch.exp, (-5, 5)),
    "log": (lambda x: x.log(), torch.log, (0.05, 10)),
    "sqrt": (lambda x: x.sqrt(), torch.sqrt, (0.05, 10)),
    "abs": (lambda x: x.abs(), torch.abs, (-5, 5)),
    "tanh": (lambda x: x.tanh(), torch.tanh, (-5, 5)),
    "sigmoid": (lambda x: x.sigmoid(), torch.sigmoid, (-30, 30)),
    "relu": (lambda x: x.relu(), torch.relu, (-5, 5)),
    "leaky_relu": (lambda x: x.leaky_relu(0.1), lambda x: torch.nn.functional.leaky_relu(x, 0.1), (-5, 5)),
    "clamp": (lambda x: x.clamp(-1.0, 2.0), lambda x: x.clamp(-1.0, 2.0), (-5, 5)),
    "clamp_min": (lambda x: x.clamp(min=0.5), lambda x: x.clamp(min=0.5), (-5, 5)),
    "square": (lambda x: x.square(), torch.square, (-5, 5)),
    "pow_scalar": (lambda x: x ** 3, lambda x: x ** 3, (-3, 3)),
    "pow_frac": (lambda x: x ** 0.5, lambda x: x ** 0.5, (0.05, 5)),
    "rpow": (lambda x: 2.0 ** x, lambda x: 2.0 ** x, (-3, 3)),
    "scalar_arith": (lambda x: (3 - x) / 2 + 1 * x, lambda x: (3 - x) / 2 + 1 * x, (-5, 5)),
    "rdiv": (lambda x: 1 / x, lambda x: 1 / x, (0.1, 5)),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data())
def test_unary_matches_torch(backend, name, data):
    ours, theirs, (lo, hi) = UNARY[name]
    x = data.draw(arrays(data.draw(shapes), lo, hi))
    compare_with_torch(ours, theirs, [x], backend)


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_second_order(backend, name):
    ours, theirs, (lo, hi) = UNARY[name]
    x = np.random.default_rng(0).uniform(lo, hi, (3, 4))
    if name in ("abs", "relu", "leaky_relu", "clamp", "clamp_min"):
        x[np.abs(x) < 0.1] = 0.3  # keep away from the kinks, where the derivative jumps
    compare_second_order(ours, theirs, [x], backend)


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "tanh", "sigmoid", "pow_scalar", "rdiv"])
def test_unary_gradcheck(backend, name):
    ours, _, (lo, hi) = UNARY[name]
    x = hw.Tensor(np.random.default_rng(1).uniform(lo, hi, (2, 3)), requires_grad=True)
    assert hw.gradcheck(ours, [x])
    assert hw.gradgradcheck(ours, [x])


def test_sigmoid_saturates_without_overflow(backend):
    x = hw.Tensor(np.array([-1e4, -50.0, 0.0, 50.0, 1e4]), requires_grad=True)
    with np.errstate(over="raise", invalid="raise"):  # underflow to 0 is the right answer
        y = x.sigmoid()
    np.testing.assert_allclose(y.numpy(), torch.sigmoid(torch.tensor(x.numpy())).numpy(), rtol=1e-15)


# --------------------------------------------------------------------------------------------------
# binary elementwise with broadcasting
# --------------------------------------------------------------------------------------------------
BINARY = {
    "add": (lambda a, b: a + b, lambda a, b: a + b, (-5, 5), (-5, 5)),
    "sub": (lambda a, b: a - b, lambda a, b: a - b, (-5, 5), (-5, 5)),
    "mul": (lambda a, b: a * b, lambda a, b: a * b, (-5, 5), (-5, 5)),
    "div": (lambda a, b: a / b, lambda a, b: a / b, (-5, 5), (0.2, 5)),
    "pow": (lambda a, b: a ** b, lambda a, b: a ** b, (0.1, 3), (-2, 2)),
    "maximum": (lambda a, b: a.maximum(b), torch.maximum, (-2, 2), (-2, 2)),
    "minimum": (lambda a, b: a.minimum(b), torch.minimum, (-2, 2), (-2, 2)),
    "where": (lambda a, b: hw.where(a > 0, a, b), lambda a, b: torch.where(a > 0, a, b), (-5, 5), (-5, 5)),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@given(data=st.data())
def test_binary_matches_torch_with_broadcasting(backend, name, data):
    ours, theirs, ra, rb = BINARY[name]
    sa, sb = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4,
                                                          min_side=1, max_side=4)).input_shapes
    a, b = data.draw(arrays(sa, *ra)), data.draw(arrays(sb, *rb))
    compare_with_torch(ours, theirs, [a, b], backend)


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_second_order(backend, name):
    ours, theirs, ra, rb = BINARY[name]
    rng = np.random.default_rng(2)
    a, b = rng.uniform(*ra, (3, 4)), rng.uniform(*rb, (4,))
    compare_second_order(ours, theirs, [a, b], backend)


def test_ties_split_the_gradient_like_torch(backend):
    a, b = np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 3.0])
    compare_with_torch(lambda x, y: x.maximum(y), torch.maximum, [a, b], backend)
    compare_with_torch(lambda x, y: x.minimum(y), torch.minimum, [a, b], backend)


@pytest.mark.parametrize("op", [operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge])
def test_comparisons_are_bool_and_carry_no_graph(backend, op):
    a = hw.Tensor([1.0, 2.0, 3.0], requires_grad=True)
    out = op(a, 2.0)
    assert out.dtype == np.bool_ and not out.requires_grad
    np.testing.assert_array_equal(out.numpy(), op(np.array([1.0, 2.0, 3.0]), 2.0))


def test_dtype_promotion_follows_torch(backend):
    f32 = hw.Tensor([1.0, 2.0])
    f64 = hw.Tensor(np.array([1.0, 2.0]))
    i64 = hw.Tensor([1, 2])
    assert (f32 + 1.5).dtype == np.float32
    assert (f32 + 1).dtype == np.float32
    assert (f32 + f64).dtype == np.float64
    assert (i64 + 1).dtype == np.int64
    assert (i64 + 1.5).dtype == np.float32
    assert (i64 / 2).dtype == np.float32
    assert (i64 + f32).dtype == np.float32
    assert (f32 * np.float64(2.0)).dtype == np.float32


# --------------------------------------------------------------------------------------------------
# reductions
# --------------------------------------------------------------------------------------------------
def _torch_axis(axis, x):
    return tuple(range(x.ndim)) if axis is None else axis


REDUCTIONS = {
    "sum": (lambda x, a, k: x.sum(a, k), lambda x, a, k: x.sum(_torch_axis(a, x), keepdim=k)),
    "mean": (lambda x, a, k: x.mean(axis=a, keepdims=k), lambda x, a, k: x.mean(_torch_axis(a, x), keepdim=k)),
    "amax": (lambda x, a, k: x.amax(a, k), lambda x, a, k: torch.amax(x, _torch_axis(a, x), keepdim=k)),
    "amin": (lambda x, a, k: x.amin(dim=a, keepdim=k), lambda x, a, k: torch.amin(x, _torch_axis(a, x), keepdim=k)),
    "logsumexp": (lambda x, a, k: x.logsumexp(a, k), lambda x, a, k: torch.logsumexp(x, _torch_axis(a, x), keepdim=k)),
}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@given(data=st.data())
def test_reductions_match_torch(backend, name, data):
    ours, theirs = REDUCTIONS[name]
    x, axis, keep = data.draw(array_and_axis())
    if name in ("amax", "amin"):  # draw from a small set so that ties happen
        x = np.round(x)
    compare_with_torch(lambda t: ours(t, axis, keep), lambda t: theirs(t, axis, keep), [x], backend)


@pytest.mark.parametrize("name", ["var", "std"])
@given(data=st.data())
def test_var_std_match_torch(backend, name, data):
    x, axis, keep = data.draw(array_and_axis(min_dims=1))
    x = x + 0.1 * np.arange(x.size).reshape(x.shape)  # spread the values: std's gradient is infinite at 0
    count = x.size if axis is None else int(np.prod([x.shape[a] for a in np.atleast_1d(axis)]))
    if count < 2:
        x = np.stack([x, x + 1.0])
        axis = 0
    correction = data.draw(st.sampled_from([0, 1]))
    ours = lambda t: getattr(t, name)(axis, keep, correction=correction)
    theirs = lambda t: getattr(torch, name)(t, _torch_axis(axis, t), keepdim=keep, correction=correction)
    compare_with_torch(ours, theirs, [x], backend)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(data=st.data())
def test_softmax_family_matches_torch(backend, name, data):
    x = data.draw(arrays(data.draw(hnp.array_shapes(min_dims=1, max_dims=4, max_side=5)), -20, 20))
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    compare_with_torch(lambda t: getattr(t, name)(axis), lambda t: getattr(torch, name)(t, axis), [x], backend)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_softmax_family_is_stable_for_huge_logits(backend, name):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4 + 1, -1e4 + 2]])
    ours = {"softmax": lambda t: t.softmax(-1), "log_softmax": lambda t: t.log_softmax(-1),
            "logsumexp": lambda t: t.logsumexp(-1)}[name]
    theirs = {"softmax": lambda t: t.softmax(-1), "log_softmax": lambda t: t.log_softmax(-1),
              "logsumexp": lambda t: t.logsumexp(-1)}[name]
    with np.errstate(over="raise", invalid="raise"):
        compare_with_torch(ours, theirs, [x], backend)


@pytest.mark.parametrize("name", ["sum", "mean", "max", "logsumexp", "var", "softmax", "log_softmax"])
def test_reduction_second_order(backend, name):
    x = np.random.default_rng(3).standard_normal((3, 4))
    ours = {"sum": lambda t: (t * t).sum(1), "mean": lambda t: (t * t).mean(0), "max": lambda t: (t * t).amax(1),
            "logsumexp": lambda t: t.logsumexp(1), "var": lambda t: t.var(1), "softmax": lambda t: t.softmax(1),
            "log_softmax": lambda t: t.log_softmax(0)}[name]
    theirs = {"sum": lambda t: (t * t).sum(1), "mean": lambda t: (t * t).mean(0), "max": lambda t: (t * t).amax(1),
              "logsumexp": lambda t: t.logsumexp(1), "var": lambda t: t.var(1), "softmax": lambda t: t.softmax(1),
              "log_softmax": lambda t: t.log_softmax(0)}[name]
    compare_second_order(ours, theirs, [x], backend)


@given(data=st.data())
def test_argmax_argmin_match_torch(backend, data):
    x = np.round(data.draw(arrays(data.draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=5)))))
    axis = data.draw(st.one_of(st.none(), st.integers(-x.ndim, x.ndim - 1)))
    t = torch.from_numpy(x)
    for ours, theirs in ((hw.Tensor(x).argmax(axis), t.argmax(axis)), (hw.Tensor(x).argmin(dim=axis), t.argmin(axis))):
        assert ours.dtype == np.int64
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


# --------------------------------------------------------------------------------------------------
# shape ops, indexing, pad, cat, stack
# --------------------------------------------------------------------------------------------------
@given(data=st.data())
def test_shape_ops_match_torch(backend, data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4))
    x = data.draw(arrays(shape))
    nd = len(shape)
    perm = data.draw(st.permutations(range(nd)))
    d0, d1 = data.draw(st.integers(-nd, nd - 1)), data.draw(st.integers(-nd, nd - 1))
    u = data.draw(st.integers(-nd - 1, nd))
    start = data.draw(st.integers(0, nd - 1))
    cases = [
        (lambda t: t.reshape(-1), lambda t: t.reshape(-1)),
        (lambda t: t.reshape(tuple(reversed(shape))), lambda t: t.reshape(tuple(reversed(shape)))),
        (lambda t: t.view(1, *shape, 1), lambda t: t.view(1, *shape, 1)),
        (lambda t: t.permute(*perm), lambda t: t.permute(*perm)),
        (lambda t: t.transpose(d0, d1), lambda t: t.transpose(d0, d1)),
        (lambda t: t.T, lambda t: t.permute(*reversed(range(t.ndim)))),
        (lambda t: t.flatten(start), lambda t: t.flatten(start)),
        (lambda t: t.unsqueeze(u), lambda t: t.unsqueeze(u)),
        (lambda t: t.unsqueeze(0).squeeze(), lambda t: t.unsqueeze(0).squeeze()),
        (lambda t: t.unsqueeze(0).expand(3, *shape), lambda t: t.unsqueeze(0).expand(3, *shape)),
        (lambda t: t.unsqueeze(1).expand(-1, 2, *shape[1:]), lambda t: t.unsqueeze(1).expand(-1, 2, *shape[1:])),
    ]
    for ours, theirs in cases:
        compare_with_torch(ours, theirs, [x], backend)


@st.composite
def basic_index(draw, shape):
    index = []
    for n in shape:
        kind = draw(st.sampled_from(["int", "slice", "full", "none"]))
        if kind == "int":
            index.append(draw(st.integers(-n, n - 1)))
        elif kind == "slice":
            start = draw(st.one_of(st.none(), st.integers(-n, n)))
            stop = draw(st.one_of(st.none(), st.integers(-n, n)))
            index.append(slice(start, stop, draw(st.sampled_from([None, 1, 2, 3]))))
        elif kind == "none":
            index.extend([None, slice(None)])
        else:
            index.append(slice(None))
    if draw(st.booleans()) and len(index) > 1:
        index = [Ellipsis] + index[draw(st.integers(1, len(index) - 1)):]
    return tuple(index)


@given(data=st.data())
def test_basic_indexing_matches_torch(backend, data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5))
    x = data.draw(arrays(shape))
    idx = data.draw(basic_index(shape))
    compare_with_torch(lambda t: t[idx], lambda t: t[idx], [x], backend)


@given(data=st.data())
def test_integer_array_indexing_scatter_adds(backend, data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5))
    x = data.draw(arrays(shape))
    idx = np.array(data.draw(st.lists(st.integers(-shape[0], shape[0] - 1), min_size=1, max_size=8)))
    compare_with_torch(lambda t: t[idx], lambda t: t[torch.from_numpy(idx)], [x], backend)
    if len(shape) >= 2:
        idx2 = np.array(data.draw(st.lists(st.integers(0, shape[1] - 1), min_size=len(idx), max_size=len(idx))))
        compare_with_torch(lambda t: t[idx, idx2], lambda t: t[torch.from_numpy(idx), torch.from_numpy(idx2)],
                           [x], backend)
        compare_with_torch(lambda t: t[:, idx2], lambda t: t[:, torch.from_numpy(idx2)], [x], backend)


def test_boolean_mask_indexing(backend):
    x = np.random.default_rng(4).standard_normal((4, 3))
    compare_with_torch(lambda t: t[t > 0], lambda t: t[t > 0], [x], backend)


@given(data=st.data())
def test_pad_cat_stack_match_torch(backend, data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4))
    nd = len(shape)
    x, y = data.draw(arrays(shape)), data.draw(arrays(shape))
    pad = tuple(data.draw(st.lists(st.integers(0, 3), min_size=2, max_size=2 * nd).filter(lambda p: len(p) % 2 == 0)))
    value = data.draw(st.sampled_from([0.0, -1.5]))
    compare_with_torch(lambda t: t.pad(pad, value=value),
                       lambda t: torch.nn.functional.pad(t, pad, value=value), [x], backend)
    dim = data.draw(st.integers(-nd, nd - 1))
    z = data.draw(arrays(shape[:dim % nd] + (2,) + shape[dim % nd + 1:]))
    compare_with_torch(lambda a, b, c: hw.cat([a, b, c], dim=dim), lambda a, b, c: torch.cat([a, b, c], dim),
                       [x, y, z], backend)
    sdim = data.draw(st.integers(-nd - 1, nd))
    compare_with_torch(lambda a, b: hw.stack([a, b], sdim), lambda a, b: torch.stack([a, b], sdim), [x, y], backend)


def test_shape_ops_second_order(backend):
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((3, 4)), rng.standard_normal((3, 2))
    idx = np.array([0, 2, 2, 1])
    compare_second_order(lambda a, b: hw.cat([a * a, b.exp()], 1)[idx].pad((1, 2)).permute(1, 0).reshape(-1) ** 2,
                         lambda a, b: torch.nn.functional.pad(torch.cat([a * a, b.exp()], 1)[torch.from_numpy(idx)],
                                                              (1, 2)).permute(1, 0).reshape(-1) ** 2,
                         [x, y], backend)


# --------------------------------------------------------------------------------------------------
# matmul
# --------------------------------------------------------------------------------------------------
@st.composite
def matmul_shapes(draw):
    n, k, m = (draw(st.integers(1, 5)) for _ in range(3))
    batch_a, batch_b = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3)).input_shapes
    kind = draw(st.sampled_from(["vv", "vm", "mv", "mm"]))
    a = (k,) if kind[0] == "v" else batch_a + (n, k)
    b = (k,) if kind[1] == "v" else batch_b + (k, m)
    return a, b


@given(data=st.data())
def test_matmul_matches_torch(backend, data):
    sa, sb = data.draw(matmul_shapes())
    a, b = data.draw(arrays(sa)), data.draw(arrays(sb))
    compare_with_torch(lambda x, y: x @ y, torch.matmul, [a, b], backend)


def test_matmul_second_order(backend):
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5))
    compare_second_order(lambda x, y: (x @ y).tanh(), lambda x, y: (x @ y).tanh(), [a, b], backend)


def test_float32_ops_stay_float32(backend):
    rng = np.random.default_rng(7)
    a = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal((4, 2)).astype(np.float32)
    fn = lambda x, y: ((x @ y).sigmoid() * 2.0 + x.sum(1, keepdims=True).exp()[:, :1]).log_softmax(1)
    out, _ = compare_with_torch(fn, fn, [a, b], backend, rtol=1e-5)
    assert out.dtype == np.float32
