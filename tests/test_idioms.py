"""The PyTorch idioms a new user tries first, each against PyTorch: max/min with a dim and their
torch.* function forms, clone, norm, sort, topk, cumsum, repeat, chunk, split, masked_fill,
gather, flip, roll, floor division, conversions, devices and dtype aliases, nn.utils."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_hw as hw
from tinygrad_hw import Tensor, nn
from tinygrad_hw.testing import compare_second_order, compare_with_torch


def arrays(shape, lo=-5.0, hi=5.0, unique=False):
    return hnp.arrays(np.float64, shape, elements=st.floats(lo, hi, allow_nan=False, width=64), unique=unique)


@st.composite
def array_and_dim(draw, unique=False, min_side=1):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=min_side, max_side=5))
    x = draw(arrays(shape, unique=unique))
    return x, draw(st.integers(-len(shape), len(shape) - 1))


# -- max / min with a dim: PyTorch's (values, indices) ----------------------------------------
@pytest.mark.parametrize("name", ["max", "min"])
@given(data=st.data())
def test_max_min_dim_give_values_and_indices_like_torch(backend, name, data):
    x, dim = data.draw(array_and_dim())
    x = np.round(x)  # ties: PyTorch returns the first index and sends the gradient there only
    keep = data.draw(st.booleans())
    ours = getattr(Tensor(x, backend=backend), name)(dim, keepdim=keep)
    theirs = getattr(torch.from_numpy(x), name)(dim, keepdim=keep)
    assert type(ours).__name__ == name and ours._fields == ("values", "indices")
    np.testing.assert_array_equal(ours.indices.numpy(), theirs.indices.numpy())
    assert ours.indices.dtype == np.int64
    compare_with_torch(lambda t: getattr(t, name)(dim, keep).values,
                       lambda t: getattr(t, name)(dim, keep).values, [x], backend)
    # the function form and the keyword form agree
    values, indices = getattr(hw, name)(Tensor(x, backend=backend), dim=dim, keepdim=keep)
    np.testing.assert_array_equal(values.numpy(), theirs.values.numpy())
    np.testing.assert_array_equal(indices.numpy(), theirs.indices.numpy())


def test_tutorial_predicted_idiom_for_every_batch_size():
    # PyTorch's CIFAR-10 tutorial: `_, predicted = torch.max(outputs, 1)`, batch sizes 1..5 and 2
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 4, 10):
        logits = rng.standard_normal((n, 10))
        _, predicted = hw.max(Tensor(logits), 1)
        _, expected = torch.max(torch.from_numpy(logits), 1)
        np.testing.assert_array_equal(predicted.numpy(), expected.numpy())


def test_max_min_other_forms_match_torch(backend):
    x = np.array([[1.0, 3.0, 3.0], [-2.0, 0.5, -2.0]])
    y = np.array([[0.0, 4.0, 3.0], [1.0, -1.0, -2.0]])
    # the full reduction: ties share the gradient, as in PyTorch
    compare_with_torch(lambda t: t.max(), lambda t: t.max(), [x], backend)
    compare_with_torch(lambda t: hw.min(t), lambda t: torch.min(t), [x], backend)
    # elementwise with another tensor
    compare_with_torch(lambda a, b: hw.max(a, b), lambda a, b: torch.max(a, b), [x + 0.25, y], backend)
    compare_with_torch(lambda a, b: a.min(b), lambda a, b: a.min(b), [x + 0.25, y], backend)
    compare_with_torch(lambda t: hw.amax(t, (0, 1)), lambda t: torch.amax(t, (0, 1)), [x], backend)
    for fn in ("argmax", "argmin"):
        np.testing.assert_array_equal(getattr(hw, fn)(Tensor(x), dim=1).numpy(),
                                      getattr(torch, fn)(torch.from_numpy(x), dim=1).numpy())
    with pytest.raises(TypeError, match="amax"):
        Tensor(x).max((0, 1))
    with pytest.raises(IndexError, match="no elements"):
        Tensor(np.zeros((2, 0))).max(1)


def test_max_dim_second_order_matches_torch(backend):
    x = np.random.default_rng(3).standard_normal((3, 4))
    compare_second_order(lambda t: (t * t).max(1).values, lambda t: (t * t).max(1).values, [x], backend)


# -- sort, argsort, topk -----------------------------------------------------------------------
@given(data=st.data())
def test_sort_argsort_topk_match_torch(backend, data):
    x, dim = data.draw(array_and_dim(unique=True))  # distinct values: PyTorch's order of ties is unspecified
    descending = data.draw(st.booleans())
    ours = Tensor(x, backend=backend).sort(dim, descending=descending)
    theirs = torch.from_numpy(x).sort(dim, descending=descending)
    np.testing.assert_array_equal(ours.indices.numpy(), theirs.indices.numpy())
    np.testing.assert_array_equal(hw.argsort(Tensor(x), dim, descending=descending).numpy(),
                                  torch.argsort(torch.from_numpy(x), dim, descending=descending).numpy())
    compare_with_torch(lambda t: t.sort(dim, descending=descending)[0],
                       lambda t: t.sort(dim, descending=descending)[0], [x], backend)
    k = data.draw(st.integers(0, x.shape[dim]))
    largest = data.draw(st.booleans())
    compare_with_torch(lambda t: hw.topk(t, k, dim, largest=largest).values,
                       lambda t: torch.topk(t, k, dim, largest=largest).values, [x], backend)
    np.testing.assert_array_equal(Tensor(x).topk(k, dim, largest).indices.numpy(),
                                  torch.from_numpy(x).topk(k, dim, largest).indices.numpy())


def test_stable_sort_keeps_the_order_of_ties_like_torch():
    x = np.array([2.0, 1.0, 2.0, 1.0, 3.0, 2.0])
    for descending in (False, True):
        ours = Tensor(x).sort(descending=descending, stable=True)
        theirs = torch.from_numpy(x).sort(descending=descending, stable=True)
        np.testing.assert_array_equal(ours.indices.numpy(), theirs.indices.numpy())
    with pytest.raises(IndexError, match="out of range"):
        Tensor(x).topk(7)


# -- cumsum, norm, clone -----------------------------------------------------------------------
@given(data=st.data())
def test_cumsum_matches_torch(backend, data):
    x, dim = data.draw(array_and_dim())
    compare_with_torch(lambda t: t.cumsum(dim), lambda t: t.cumsum(dim), [x], backend)
    ints = np.round(x).astype(np.int32)
    np.testing.assert_array_equal(hw.cumsum(Tensor(ints), dim).numpy(), torch.cumsum(torch.from_numpy(ints), dim).numpy())
    assert hw.cumsum(Tensor(ints), dim).dtype == np.int64  # as torch.cumsum of int32


def test_cumsum_second_order(backend):
    x = np.random.default_rng(0).standard_normal((3, 4))
    compare_second_order(lambda t: (t * t).cumsum(1), lambda t: (t * t).cumsum(1), [x], backend)


@pytest.mark.parametrize("p", ["fro", 2, 1, 3, 0.5, math.inf, -math.inf])
@given(data=st.data())
def test_norm_matches_torch(backend, p, data):
    x, dim = data.draw(array_and_dim())
    x = x + np.sign(x) * 0.5 + (x == 0)  # away from 0, where |x| has a kink
    keep = data.draw(st.booleans())
    dim = data.draw(st.sampled_from([None, dim]))
    compare_with_torch(lambda t: t.norm(p, dim, keep), lambda t: torch.norm(t, p, dim, keep), [x], backend)


def test_norm_gradient_at_zero_is_zero_like_torch(backend):
    compare_with_torch(lambda t: t.norm(), lambda t: t.norm(), [np.zeros(3)], backend)
    for p in (3, 1.5):
        compare_with_torch(lambda t: t.norm(p, 1), lambda t: t.norm(p, 1),
                           [np.array([[0.0, 0.0, 0.0], [1.0, 0.0, -2.0]])], backend)
        compare_second_order(lambda t: t.norm(p, 1), lambda t: t.norm(p, 1),
                             [np.array([[0.5, -1.0, 2.0], [1.0, 0.3, -2.0]])], backend)
    compare_with_torch(lambda t: hw.norm(t, dim=1), lambda t: torch.norm(t, dim=1),
                       [np.array([[0.0, 0.0], [3.0, 4.0]])], backend)
    compare_second_order(lambda t: t.norm(dim=1), lambda t: t.norm(dim=1),
                         [np.array([[1.0, -2.0], [3.0, 4.0]])], backend)
    with pytest.raises(NotImplementedError, match="nuc"):
        Tensor(np.ones((2, 2))).norm("nuc")


def test_clone_is_a_differentiable_copy(backend):
    x = np.arange(6.0).reshape(2, 3)
    out, _ = compare_with_torch(lambda t: t.clone() * 2, lambda t: t.clone() * 2, [x], backend)
    t = Tensor(x, backend=backend)
    c = hw.clone(t)
    c.data[0, 0] = 100.0
    assert t.data[0, 0] == 0.0  # its own memory


# -- repeat, chunk, split, unbind, narrow, gather ----------------------------------------------
@given(data=st.data())
def test_repeat_matches_torch(backend, data):
    x, _ = data.draw(array_and_dim())
    extra = data.draw(st.integers(0, 2))
    sizes = tuple(data.draw(st.lists(st.integers(0, 3), min_size=x.ndim + extra, max_size=x.ndim + extra)))
    compare_with_torch(lambda t: t.repeat(*sizes), lambda t: t.repeat(*sizes), [x], backend)
    compare_with_torch(lambda t: t.tile(sizes), lambda t: t.tile(sizes), [x], backend)


@given(data=st.data())
def test_chunk_split_match_torch(backend, data):
    x, dim = data.draw(array_and_dim())
    n = x.shape[dim]
    chunks = data.draw(st.integers(1, 6))
    size = data.draw(st.integers(1, 6))
    sections = data.draw(st.lists(st.integers(0, n), min_size=1, max_size=3).filter(lambda s: sum(s) <= n))
    sections = sections + [n - sum(sections)]
    for ours_fn, theirs_fn in [(lambda t: t.chunk(chunks, dim), lambda t: t.chunk(chunks, dim)),
                               (lambda t: hw.split(t, size, dim), lambda t: torch.split(t, size, dim)),
                               (lambda t: t.split(sections, dim), lambda t: t.split(sections, dim)),
                               (lambda t: t.unbind(dim), lambda t: t.unbind(dim))]:
        ours, theirs = ours_fn(Tensor(x)), theirs_fn(torch.from_numpy(x))
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    # gradients flow back through the pieces
    weights = [float(i + 1) for i in range(len(Tensor(x).chunk(chunks, dim)))]
    compare_with_torch(lambda t: hw.cat([c * w for c, w in zip(t.chunk(chunks, dim), weights)], dim),
                       lambda t: torch.cat([c * w for c, w in zip(t.chunk(chunks, dim), weights)], dim), [x], backend)
    with pytest.raises(ValueError, match="add up"):
        Tensor(x).split([n + 1], dim)


def test_narrow_matches_torch(backend):
    x = np.arange(20.0).reshape(4, 5)
    compare_with_torch(lambda t: t.narrow(1, 1, 3), lambda t: t.narrow(1, 1, 3), [x], backend)
    compare_with_torch(lambda t: t.narrow(0, -2, 2), lambda t: t.narrow(0, -2, 2), [x], backend)


@given(data=st.data())
def test_gather_matches_torch(backend, data):
    x, dim = data.draw(array_and_dim())
    shape = list(x.shape)
    shape = [data.draw(st.integers(1, s)) for s in shape]
    shape[dim] = data.draw(st.integers(1, 6))  # repeated indices: their gradients add up
    index = data.draw(hnp.arrays(np.int64, shape, elements=st.integers(0, x.shape[dim] - 1)))
    compare_with_torch(lambda t: t.gather(dim, Tensor(index, backend=backend)),
                       lambda t: torch.gather(t, dim, torch.from_numpy(index)), [x], backend)


# -- masked_fill, where, flip, roll, any/all ---------------------------------------------------
@given(data=st.data())
def test_masked_fill_matches_torch(backend, data):
    x, _ = data.draw(array_and_dim())
    mask_shape = data.draw(st.sampled_from([x.shape, x.shape[1:], (1,) * x.ndim]))
    mask = data.draw(hnp.arrays(np.bool_, mask_shape))
    value = data.draw(st.floats(-3, 3, allow_nan=False))
    compare_with_torch(lambda t: t.masked_fill(Tensor(mask, backend=backend), value),
                       lambda t: t.masked_fill(torch.from_numpy(mask), value), [x], backend)
    ints = np.round(x).astype(np.int64)
    ours = hw.masked_fill(Tensor(ints), Tensor(mask), 2.7)
    theirs = torch.from_numpy(ints).masked_fill(torch.from_numpy(mask), 2.7)
    assert ours.dtype == np.int64
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    with pytest.raises(TypeError, match="bool"):
        Tensor(x).masked_fill(Tensor(ints), 0.0)


@given(data=st.data())
def test_flip_roll_match_torch(backend, data):
    x, dim = data.draw(array_and_dim())
    dims = tuple(sorted(set(data.draw(st.lists(st.integers(0, x.ndim - 1), min_size=1, max_size=x.ndim)))))
    shift = data.draw(st.integers(-7, 7))
    compare_with_torch(lambda t: t.flip(dims), lambda t: t.flip(dims), [x], backend)
    compare_with_torch(lambda t: t.roll(shift, dim), lambda t: t.roll(shift, dim), [x], backend)
    compare_with_torch(lambda t: hw.roll(t, shift), lambda t: torch.roll(t, shift), [x], backend)
    shifts = tuple(shift + i for i in range(len(dims)))
    compare_with_torch(lambda t: t.roll(shifts, dims), lambda t: t.roll(shifts, dims), [x], backend)


def test_any_all_sin_cos_new_match_torch(backend):
    x = np.array([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]])
    for fn in ("any", "all"):
        for dim in (None, 0, 1):
            ours = getattr(Tensor(x), fn)() if dim is None else getattr(Tensor(x), fn)(dim)
            theirs = getattr(torch.from_numpy(x), fn)() if dim is None else getattr(torch.from_numpy(x), fn)(dim)
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    compare_with_torch(lambda t: t.sin(), lambda t: t.sin(), [x + 0.3], backend)
    compare_with_torch(lambda t: hw.cos(t), lambda t: torch.cos(t), [x + 0.3], backend)
    compare_second_order(lambda t: t.sin() * t.cos(), lambda t: t.sin() * t.cos(), [x + 0.3], backend)
    t = Tensor(x.astype(np.float32))
    assert t.new_zeros(2, 1).dtype == np.float32 and t.new_ones((3,)).shape == (3,)
    assert t.new_full((2,), 7).tolist() == [7.0, 7.0]
    assert t.movedim(0, 1).shape == (3, 2) and t.is_floating_point()


# -- floor division and remainder ----------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.int64])
@given(data=st.data())
def test_floor_division_and_remainder_match_torch(dtype, data):
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))
    a = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-20, 20, allow_nan=False))).astype(dtype)
    b = data.draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([-3.0, -1.5, 2.0, 0.75, 7.0])))
    b = np.where(b == 0, 1, np.round(b) if dtype == np.int64 else b).astype(dtype)
    b[b == 0] = 1
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    for ours, theirs in [(Tensor(a) // Tensor(b), ta // tb), (Tensor(a) // 2, ta // 2), (7 // Tensor(b), 7 // tb),
                         (Tensor(a) % Tensor(b), ta % tb), (hw.floor_divide(Tensor(a), Tensor(b)), torch.floor_divide(ta, tb))]:
        assert ours.dtype == np.dtype(str(theirs.dtype).replace("torch.", ""))
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12, atol=1e-12)


def test_remainder_gradient_matches_torch(backend):
    a, b = np.array([5.5, -7.25, 3.0]), np.array([2.0, 3.0, -1.25])
    compare_with_torch(lambda x, y: x % y, lambda x, y: x % y, [a, b], backend)
    assert not (Tensor(a, requires_grad=True) // 2).requires_grad  # no gradient (documented)
    with pytest.raises(ZeroDivisionError):
        Tensor(np.array([1, 2])) // 0


# -- conversions, device, dtypes ---------------------------------------------------------------
def test_python_number_conversions_like_torch():
    assert float(Tensor([2.5])) == float(torch.tensor([2.5])) == 2.5
    assert int(Tensor([[3.7]])) == int(torch.tensor([[3.7]])) == 3
    assert [10, 20, 30][Tensor(1)] == 20  # an int tensor is an index (__index__)
    assert math.isclose(float(hw.tensor(1.0) / 3), 1 / 3, rel_tol=1e-7)
    for bad in (Tensor([1.0, 2.0]), Tensor(np.zeros((0,)))):
        with pytest.raises(TypeError, match="one element"):
            float(bad)
    with pytest.raises(TypeError, match="integer"):
        [1, 2][Tensor(1.0)]


def test_device_and_to_like_torch():
    t = Tensor(np.arange(3.0), requires_grad=True, backend="numpy")  # PyTorch's CPU tensor
    assert t.device == "cpu" and str(t.device) == str(torch.ones(1).device) == "cpu"
    assert t.device.type == "cpu" and not t.is_cuda and t.device == hw.device("cpu")
    assert hw.device("cuda:1").index == 1 and hw.device("cuda").type == "cuda"
    with pytest.raises(ValueError, match="cpu"):
        hw.device("tpu")
    assert t.to("cpu") is t and t.to(hw.device("cpu")) is t and t.to(device="cpu") is t
    assert t.to("cpu", copy=True) is not t
    for dtype in (np.float32, "float32", hw.float32, hw.float):
        assert t.to(dtype).dtype == np.float32
    assert t.to("cpu", hw.float16).dtype == np.float16
    assert t.to(Tensor(np.zeros(1, np.int32))).dtype == np.int32
    assert t.to(dtype=hw.double) is t
    # a change of dtype stays differentiable, as in PyTorch
    compare_with_torch(lambda x: x.to(hw.float32) * 2, lambda x: x.to(torch.float32) * 2, [np.arange(3.0)],
                       rtol=1e-6)


def test_dtype_aliases_are_torch_names():
    for name in ("float16", "half", "float32", "float", "float64", "double", "uint8", "int8", "int16",
                 "short", "int32", "int", "int64", "long", "bool"):
        ours, theirs = getattr(hw, name), getattr(torch, name)
        assert str(ours) == str(theirs).replace("torch.", ""), name
        assert hw.zeros(2, dtype=ours).dtype == ours
    assert hw.tensor([1, 2], dtype=hw.long).dtype == np.int64
    assert hw.is_tensor(Tensor(1.0)) and not hw.is_tensor(1.0)


# -- nn.utils ------------------------------------------------------------------------------------
def _twin_grads(seed):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s) * 3 for s in [(4, 3), (4,), (2, 2)]]
    ours = [nn.Parameter(Tensor(np.zeros_like(a))) for a in arrays]
    theirs = [torch.nn.Parameter(torch.zeros(a.shape, dtype=torch.float64)) for a in arrays]
    for p, q, a in zip(ours, theirs, arrays):
        p.grad, q.grad = Tensor(a.copy()), torch.from_numpy(a.copy())
    return ours, theirs


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    ours, theirs = _twin_grads(0)
    total = nn.utils.clip_grad_norm_(ours, max_norm, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    np.testing.assert_allclose(total.item(), expected.item(), rtol=1e-12)
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-12)
    # one tensor instead of a list, and no gradients at all
    w = nn.Parameter(Tensor(np.zeros(2)))
    assert float(nn.utils.clip_grad_norm_(w, 1.0)) == 0.0


def test_clip_grad_norm_nonfinite_and_value_like_torch():
    ours, theirs = _twin_grads(1)
    ours[0].grad.data[0, 0] = np.nan
    theirs[0].grad[0, 0] = float("nan")
    with pytest.raises(RuntimeError, match="non-finite"):
        nn.utils.clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError, match="non-finite"):
        torch.nn.utils.clip_grad_norm_(theirs, 1.0, error_if_nonfinite=True)
    ours, theirs = _twin_grads(2)
    nn.utils.clip_grad_value_(ours, 0.7)
    torch.nn.utils.clip_grad_value_(theirs, 0.7)
    for p, q in zip(ours, theirs):
        np.testing.assert_array_equal(p.grad.numpy(), q.grad.numpy())


def test_clip_grad_norm_in_a_training_step(backend):
    model = nn.Linear(3, 2)
    opt = hw.optim.SGD(model.parameters(), lr=0.1)
    model(hw.randn(5, 3) * 100).sum().backward()
    grads = [p.grad for p in model.parameters()]
    total = nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    assert float(total) > 1.0
    assert [p.grad for p in model.parameters()] == grads  # the same .grad tensors, scaled
    np.testing.assert_allclose(float(nn.utils.get_total_norm(grads)), 1.0, rtol=1e-5)
    opt.step()


def test_parameters_to_vector_round_trip_like_torch():
    model = nn.Linear(3, 2)
    vec = nn.utils.parameters_to_vector(model.parameters())
    twin = torch.nn.Linear(3, 2)
    torch.nn.utils.vector_to_parameters(torch.from_numpy(vec.numpy()), twin.parameters())
    np.testing.assert_array_equal(twin.weight.detach().numpy(), model.weight.numpy())
    nn.utils.vector_to_parameters(vec * 2, model.parameters())
    np.testing.assert_allclose(nn.utils.parameters_to_vector(model.parameters()).numpy(), vec.numpy() * 2)
    with pytest.raises(ValueError, match="elements"):
        nn.utils.vector_to_parameters(vec[:3], model.parameters())


# -- more of what PyTorch code calls ---------------------------------------------------------
MORE = {
    # name: (ours, torch's, inputs)
    "view_as": (lambda a: a.view_as(Tensor(np.zeros((4, 3)))), lambda a: a.view_as(torch.zeros(4, 3)), [(3, 4)]),
    "reshape_as": (lambda a: a.reshape_as(Tensor(np.zeros((3, 4)))), lambda a: a.reshape_as(torch.zeros(3, 4)), [(2, 6)]),
    "unflatten": (lambda a: a.unflatten(1, (2, 3)), lambda a: a.unflatten(1, (2, 3)), [(4, 6)]),
    "t": (lambda a: hw.t(a), lambda a: torch.t(a), [(3, 5)]),
    "add_alpha": (lambda a, b: a.add(b, alpha=2.5), lambda a, b: a.add(b, alpha=2.5), [(3, 4), (4,)]),
    "sub_alpha": (lambda a, b: a.sub(b, alpha=-0.5), lambda a, b: a.sub(b, alpha=-0.5), [(3, 4), (3, 4)]),
    "clamp_min": (lambda a: a.clamp_min(0.1), lambda a: a.clamp_min(0.1), [(3, 4)]),
    "clamp_max": (lambda a: a.clamp_max(-0.2), lambda a: a.clamp_max(-0.2), [(3, 4)]),
    "log2": (lambda a: (a.abs() + 0.5).log2(), lambda a: (a.abs() + 0.5).log2(), [(3, 4)]),
    "log10": (lambda a: hw.log10(a.abs() + 0.5), lambda a: torch.log10(a.abs() + 0.5), [(3, 4)]),
    "exp2": (lambda a: a.exp2(), lambda a: a.exp2(), [(3, 4)]),
    "mm": (lambda a, b: hw.mm(a, b), lambda a, b: torch.mm(a, b), [(3, 4), (4, 2)]),
    "bmm": (lambda a, b: a.bmm(b), lambda a, b: a.bmm(b), [(2, 3, 4), (2, 4, 5)]),
    "outer": (lambda a, b: hw.outer(a, b), lambda a, b: torch.outer(a, b), [(3,), (4,)]),
    "tril": (lambda a: a.tril(), lambda a: a.tril(), [(2, 4, 5)]),
    "triu": (lambda a: hw.triu(a, 1), lambda a: torch.triu(a, 1), [(4, 3)]),
    "tril_neg": (lambda a: hw.tril(a, -1), lambda a: torch.tril(a, -1), [(4, 4)]),
    "index_select": (lambda a: a.index_select(1, Tensor([3, 0, 0])), lambda a: a.index_select(1, torch.tensor([3, 0, 0])), [(3, 4)]),
    "masked_select": (lambda a: a.masked_select(a > 0), lambda a: a.masked_select(a > 0), [(3, 4)]),
    "repeat_interleave": (lambda a: a.repeat_interleave(3, 1), lambda a: a.repeat_interleave(3, 1), [(2, 3)]),
    "repeat_interleave_flat": (lambda a: hw.repeat_interleave(a, 2), lambda a: torch.repeat_interleave(a, 2), [(2, 3)]),
}


@pytest.mark.parametrize("name", sorted(MORE))
def test_more_pytorch_methods_match_torch(name):
    ours, theirs, shapes = MORE[name]
    rng = np.random.default_rng(len(name))
    arrays = [rng.standard_normal(s) for s in shapes]
    compare_with_torch(ours, theirs, arrays)


def test_predicates_and_logic_match_torch():
    x = np.array([[1.0, np.nan, -np.inf], [0.0, 2.0, np.inf]])
    t, tt = Tensor(x), torch.from_numpy(x)
    for fn in ("isnan", "isinf", "isfinite", "logical_not", "nonzero", "count_nonzero"):
        np.testing.assert_array_equal(getattr(t, fn)().numpy(), getattr(tt, fn)().numpy(), err_msg=fn)
    np.testing.assert_array_equal(hw.logical_and(t > 0, t < 3).numpy(), torch.logical_and(tt > 0, tt < 3).numpy())
    np.testing.assert_array_equal((t > 0).logical_or(t < 0).numpy(), (tt > 0).logical_or(tt < 0).numpy())
    assert hw.nonzero(Tensor([0, 3, 0, 4])).tolist() == torch.nonzero(torch.tensor([0, 3, 0, 4])).tolist()
    y = np.array([1.0, 2.0, 3.0])
    assert hw.allclose(Tensor(y), Tensor(y + 1e-9)) == torch.allclose(torch.from_numpy(y), torch.from_numpy(y + 1e-9))
    assert Tensor(y).allclose(Tensor(y + 1e-3)) == torch.from_numpy(y).allclose(torch.from_numpy(y + 1e-3))
    assert hw.equal(Tensor(y), Tensor(y)) and not hw.equal(Tensor(y), Tensor(y[:2]))
    t = Tensor(np.zeros((2, 3), np.float32))
    assert (t.nelement(), t.ndimension(), t.element_size(), t.is_contiguous()) == (6, 2, 4, True)
    for bad in (lambda: Tensor(np.zeros((2, 2, 2))).t(), lambda: hw.mm(Tensor(np.zeros(3)), Tensor(np.zeros((3, 2)))),
                lambda: hw.bmm(Tensor(np.zeros((2, 3, 4))), Tensor(np.zeros((3, 4, 5))))):
        with pytest.raises(ValueError):
            bad()


def test_factories_take_devices_and_match_torch():
    assert hw.zeros(2, 3, device="cpu").shape == (2, 3) and hw.ones(2, device=hw.device("cpu")).backend == "numpy"
    assert hw.tensor([1.0], device="cpu").dtype == np.float32 and hw.randn(2, device="cpu").shape == (2,)
    with pytest.raises(TypeError, match="not both"):
        hw.zeros(2, device="cpu", backend="numpy")
    x = hw.randn(3, 2, dtype=hw.float64)
    for ours, theirs in [(hw.full_like(x, 7), torch.full_like(torch.zeros(3, 2, dtype=torch.float64), 7)),
                         (hw.linspace(0, 1, 5), torch.linspace(0, 1, 5)), (hw.eye(3), torch.eye(3)),
                         (hw.eye(2, 3), torch.eye(2, 3)), (hw.empty(2, 3), torch.zeros(2, 3)),
                         (hw.arange(5, dtype=hw.float32), torch.arange(5, dtype=torch.float32))]:
        assert ours.dtype == np.dtype(str(theirs.dtype).replace("torch.", ""))
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-7)
    assert hw.randn_like(x).shape == (3, 2) and hw.rand_like(x).dtype == np.float64
    hw.manual_seed(0)
    ints = hw.randint(2, 5, (1000,))
    assert ints.dtype == np.int64 and set(ints.tolist()) == {2, 3, 4}
    assert hw.randint(3, (4,)).shape == (4,)
    perm = hw.randperm(10)
    assert sorted(perm.tolist()) == list(range(10)) and perm.dtype == np.int64
    a = np.arange(3.0)
    shared = hw.from_numpy(a)
    a[0] = 5.0
    assert shared.tolist() == [5.0, 1.0, 2.0]  # shares memory, like torch.from_numpy
    assert hw.as_tensor(shared) is shared and hw.as_tensor([1, 2]).dtype == np.int64
    assert hw.arange(3.0, requires_grad=True).requires_grad


@given(data=st.data())
def test_prod_matches_torch_with_zeros(backend, data):
    x, dim = data.draw(array_and_dim())
    x = np.where(np.abs(x) < 1.5, 0.0, x / 3)  # zeros: none, one or several per slice
    dim = data.draw(st.sampled_from([None, dim]))
    keep = data.draw(st.booleans())
    if dim is None:
        compare_with_torch(lambda t: t.prod(), lambda t: t.prod(), [x], backend)
    else:
        compare_with_torch(lambda t: hw.prod(t, dim, keepdim=keep), lambda t: torch.prod(t, dim, keepdim=keep), [x], backend)
    ints = np.round(x).astype(np.int32)
    assert Tensor(ints).prod().dtype == np.int64 == torch.from_numpy(ints).prod().numpy().dtype


def test_prod_second_order_matches_torch(backend):
    x = np.array([[1.5, -2.0, 0.5], [0.7, 1.2, -0.9]])
    compare_second_order(lambda t: t.prod(1), lambda t: t.prod(1), [x], backend)
    # at a zero the second derivative is not exact (documented in ops.Prod): not compared there


@pytest.mark.parametrize("p,dim", [(2.0, 1), (1.0, 0), (2.0, -1), (3.0, 1)])
def test_functional_normalize_matches_torch(backend, p, dim):
    x = np.random.default_rng(0).standard_normal((4, 3))
    x[1] = 0.0  # a zero row: divided by eps, gradient finite as in PyTorch
    compare_with_torch(lambda t: nn.functional.normalize(t, p, dim), lambda t: torch.nn.functional.normalize(t, p, dim),
                       [x if dim != 0 else x.T.copy()], backend)


# -- a few more layers PyTorch code reaches for -------------------------------------------------
@pytest.mark.parametrize("shape,normalized", [((4, 6), 6), ((2, 3, 4), (3, 4)), ((5, 3), [3])])
def test_layer_norm_matches_torch(backend, shape, normalized):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    ns = (normalized,) if isinstance(normalized, int) else tuple(normalized)
    w, b = rng.standard_normal(ns), rng.standard_normal(ns)
    compare_with_torch(lambda t, tw, tb: nn.functional.layer_norm(t, normalized, tw, tb),
                       lambda t, tw, tb: torch.nn.functional.layer_norm(t, ns, tw, tb), [x, w, b], backend)
    compare_second_order(lambda t: nn.functional.layer_norm(t, normalized),
                         lambda t: torch.nn.functional.layer_norm(t, ns), [x], backend)
    layer, twin = nn.LayerNorm(normalized), torch.nn.LayerNorm(normalized)
    assert [n for n, _ in layer.named_parameters()] == [n for n, _ in twin.named_parameters()]
    np.testing.assert_allclose(layer(Tensor(x.astype(np.float32))).numpy(),
                               twin(torch.from_numpy(x.astype(np.float32))).detach().numpy(), rtol=1e-5, atol=1e-6)
    assert nn.LayerNorm(4, elementwise_affine=False).weight is None
    with pytest.raises(ValueError, match="does not end with"):
        nn.functional.layer_norm(Tensor(x), (7,))


def test_embedding_matches_torch():
    ours, theirs = nn.Embedding(6, 3, padding_idx=2), torch.nn.Embedding(6, 3, padding_idx=2)
    assert float(ours.weight[2].abs().sum()) == 0.0  # the padding row starts at zero, as in PyTorch
    w = np.random.default_rng(1).standard_normal((6, 3)).astype(np.float32)
    ours.weight.data[...] = w
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(w))
    idx = np.array([[0, 2, 5], [5, 5, 1]])
    out, ref = ours(Tensor(idx)), theirs(torch.from_numpy(idx))
    np.testing.assert_array_equal(out.numpy(), ref.detach().numpy())
    g = np.random.default_rng(2).standard_normal(out.shape).astype(np.float32)
    out.backward(Tensor(g))
    ref.backward(torch.from_numpy(g))
    np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), rtol=1e-6)  # repeats add, row 2 none
    with pytest.raises(IndexError, match="out of range"):
        ours(Tensor([6]))
    with pytest.raises(TypeError, match="integers"):
        ours(Tensor([1.0]))


def test_unflatten_hardtanh_relu6_match_torch(backend):
    x = np.random.default_rng(3).standard_normal((3, 4)) * 4
    compare_with_torch(nn.Unflatten(1, (2, 2)), torch.nn.Unflatten(1, (2, 2)), [x], backend)
    compare_with_torch(nn.ReLU6(), torch.nn.ReLU6(), [x + 3], backend)
    compare_with_torch(nn.Hardtanh(-2.0, 1.5), torch.nn.Hardtanh(-2.0, 1.5), [x], backend)
    compare_with_torch(lambda t: nn.functional.relu6(t), lambda t: torch.nn.functional.relu6(t), [x], backend)
