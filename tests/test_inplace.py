"""In-place operations against PyTorch: values, gradients (first and second order), version
counters, and the errors (a leaf that requires grad, a saved tensor modified in place, a result
that does not fit)."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_hw as hw
from tinygrad_hw import Tensor, nn
from tinygrad_hw.testing import compare_second_order, compare_with_torch

RNG = np.random.default_rng(0)


def _a(*shape):
    return RNG.standard_normal(shape)


def _setitem(index, value_of):
    def fn(x, v):
        y = x * 1
        y[index] = value_of(v)
        return y
    return fn


# (name, function of (x, other) used for both libraries, arrays)
CASES = [
    ("add_", lambda x, o: (x * 1).add_(o), [_a(3, 4), _a(3, 4)]),
    ("add_ alpha broadcast", lambda x, o: (x * 1).add_(o, alpha=-2.5), [_a(3, 4), _a(4)]),
    ("add_ scalar", lambda x, o: (x * 1).add_(2.0) * o, [_a(3), _a(3)]),
    ("sub_", lambda x, o: (x * 1).sub_(o), [_a(2, 3), _a(2, 3)]),
    ("sub_ alpha", lambda x, o: (x * 1).sub_(o, alpha=3), [_a(2, 3), _a(1, 3)]),
    ("mul_", lambda x, o: (x * 1).mul_(o), [_a(3, 4), _a(3, 4)]),
    ("mul_ saved old value", lambda x, o: (x * 2).mul_(o).mul_(x), [_a(5), _a(5)]),
    ("div_", lambda x, o: (x * 1).div_(o), [_a(3, 4), np.abs(_a(3, 4)) + 0.5]),
    ("pow_ scalar", lambda x, o: (x * 1).pow_(3) * o, [_a(4), _a(4)]),
    ("pow_ tensor", lambda x, o: (x * 1).pow_(o), [np.abs(_a(4)) + 0.5, _a(4)]),
    ("neg_", lambda x, o: (x * o).neg_(), [_a(3), _a(3)]),
    ("clamp_", lambda x, o: (x * o).clamp_(-0.3, 0.4), [_a(6), _a(6)]),
    ("zero_", lambda x, o: (x * 1).zero_() + o, [_a(3), _a(3)]),
    ("fill_ number", lambda x, o: (x * o).fill_(1.5), [_a(3), _a(3)]),
    ("fill_ 0-d tensor", lambda x, o: (x * 1).fill_(o.sum()), [_a(2, 2), _a(3)]),
    ("copy_ broadcast", lambda x, o: (x * 1).copy_(o), [_a(3, 4), _a(4)]),
    ("masked_fill_", lambda x, o: (x * o).masked_fill_(x > 0, -1.0), [_a(4, 3), _a(4, 3)]),
    ("setitem slice", _setitem((slice(1, 3),), lambda v: v), [_a(4, 3), _a(2, 3)]),
    ("setitem broadcast value", _setitem((slice(None), 1), lambda v: v), [_a(4, 3), _a(4)]),
    ("setitem int array", _setitem(([0, 2],), lambda v: v * 2), [_a(4, 3), _a(2, 3)]),
    ("setitem number", lambda x, o: _setitem((0,), lambda v: 7.0)(x, o) * o, [_a(2, 3), _a(3)]),
    ("iadd", lambda x, o: _iop(x, o, "add"), [_a(3), _a(3)]),
    ("isub", lambda x, o: _iop(x, o, "sub"), [_a(3), _a(3)]),
    ("imul", lambda x, o: _iop(x, o, "mul"), [_a(3), _a(3)]),
    ("itruediv", lambda x, o: _iop(x, o, "div"), [_a(3), np.abs(_a(3)) + 1]),
]


def _iop(x, o, kind):
    y = x * 1
    before = y
    if kind == "add":
        y += o
    elif kind == "sub":
        y -= o
    elif kind == "mul":
        y *= o
    else:
        y /= o
    assert y is before  # in place, not rebound
    return y


@pytest.mark.parametrize("name,fn,arrays", CASES, ids=[c[0] for c in CASES])
def test_inplace_op_on_a_non_leaf_matches_pytorch(name, fn, arrays, backend):
    compare_with_torch(fn, fn, arrays, backend=backend)


@pytest.mark.parametrize("name,fn,arrays", [c for c in CASES if c[0] in
                                            ("mul_", "mul_ saved old value", "pow_ tensor", "setitem int array",
                                             "masked_fill_", "copy_ broadcast")],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_inplace_op_second_order_matches_pytorch(name, fn, arrays, backend):
    compare_second_order(fn, fn, arrays, backend=backend)


@given(st.lists(st.integers(1, 4), min_size=1, max_size=3), st.integers(0, 3), st.sampled_from(["add_", "mul_", "sub_"]))
def test_inplace_broadcasting_other_matches_pytorch(shape, drop, op):
    shape = tuple(shape)
    other_shape = shape[min(drop, len(shape) - 1):]
    rng = np.random.default_rng(len(shape) + drop)
    arrays = [rng.standard_normal(shape), rng.standard_normal(other_shape)]
    compare_with_torch(lambda x, o: getattr(x * 1, op)(o), lambda x, o: getattr(x * 1, op)(o), arrays)


def test_inplace_writes_the_same_memory_and_views_see_it(backend):
    x = hw.zeros(2, 3, backend=backend)
    alias = x.detach()
    out = x.add_(1).mul_(3)
    assert out is x
    np.testing.assert_array_equal(alias.numpy(), np.full((2, 3), 3.0))
    x[0, 1] = 5
    assert alias.numpy()[0, 1] == 5


def test_version_counter_counts_like_pytorch():
    ours, theirs = hw.zeros(3), torch.zeros(3)
    versions = []
    for t in (ours, theirs):
        seen = [t._version]
        t.add_(1)
        seen.append(t._version)
        t.mul_(2)
        t[0] = 3.0
        seen.append(t._version)
        t += 1
        t.zero_()
        seen.append(t._version)
        t.detach().fill_(2)  # detach() shares the counter
        seen.append(t._version)
        _ = t + 1  # out of place: no change
        seen.append(t._version)
        versions.append(seen)
    assert versions[0] == versions[1] == [0, 1, 3, 5, 6, 6]


def _both_raise(fn, match):
    with pytest.raises(RuntimeError, match=match):
        fn(hw)
    with pytest.raises(RuntimeError, match=match):
        fn(torch)


def test_inplace_on_a_leaf_that_requires_grad_is_an_error_like_pytorch():
    def fn(lib):
        x = lib.ones(3, requires_grad=True)
        x.add_(1)
    _both_raise(fn, r"^a leaf Variable that requires grad is being used in an in-place operation\.$")

    def setitem(lib):
        x = lib.ones(3, requires_grad=True)
        x[0] = 2.0
    _both_raise(setitem, "a leaf Variable that requires grad is being used in an in-place operation")


@pytest.mark.parametrize("op,saver", [("add_", "Exp"), ("mul_", "Sigmoid"), ("zero_", "Tanh")])
def test_modifying_a_saved_output_fails_at_backward_like_pytorch(op, saver):
    def fn(lib):
        x = lib.ones(3, requires_grad=True)
        y = getattr(x, saver.lower())()
        getattr(y, op)(*([2.0] if op != "zero_" else []))
        y.sum().backward()
    _both_raise(fn, "one of the variables needed for gradient computation has been modified by an "
                    "inplace operation")
    with pytest.raises(RuntimeError, match=rf"saved by {saver} was modified by {op}; it is at version 1, "
                                           r"expected version 0"):
        fn(hw)


def test_modifying_a_saved_input_fails_and_names_the_ops():
    def fn(lib):
        x = lib.ones(3, requires_grad=True)
        w = lib.ones(3, requires_grad=True)
        y = x * 2
        z = y * w  # Mul saves y for the gradient of w
        y.pow_(2)
        z.sum().backward()
    _both_raise(fn, "modified by an inplace operation")
    with pytest.raises(RuntimeError, match="saved by Mul was modified by pow_"):
        fn(hw)


def test_modification_through_a_detached_alias_is_caught_like_pytorch():
    def fn(lib):
        x = lib.ones(3, requires_grad=True)
        y = x.exp()
        y.detach().mul_(2)
        y.sum().backward()
    _both_raise(fn, "modified by an inplace operation")


def test_modifying_an_unsaved_tensor_is_fine_like_pytorch():
    results = []
    for lib in (hw, torch):
        x = lib.ones(3, requires_grad=True)
        y = x * 3
        z = y + 1  # Add saves nothing
        y.mul_(2)
        (z * 1).sum().backward()
        results.append(np.asarray(x.grad.detach().numpy() if lib is torch else x.grad.numpy()))
    np.testing.assert_array_equal(results[0], results[1])


def test_result_that_does_not_fit_is_an_error_like_pytorch():
    def dtype(lib):
        x = lib.ones(3, dtype=lib.int64 if lib is torch else "int64")
        x.add_(1.5)
    _both_raise(dtype, r"result type Float can't be cast to the desired output type Long")

    def shape(lib):
        x = lib.ones(3, 1)
        x.add_(lib.ones(3, 4))
    _both_raise(shape, r"output with shape \[3, 1\] doesn't match the broadcast shape \[3, 4\]")


def test_float64_other_into_float32_is_cast_like_pytorch():
    ours = hw.ones(3)
    ours.add_(Tensor(np.array([0.5, 1.5, 2.5])))
    theirs = torch.ones(3)
    theirs.add_(torch.tensor([0.5, 1.5, 2.5], dtype=torch.float64))
    assert str(ours.dtype) == "float32"
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_inplace_under_no_grad_updates_a_leaf_and_keeps_it_a_leaf():
    rng = np.random.default_rng(1)
    w0, x0 = rng.standard_normal((4, 3)), rng.standard_normal((5, 4))
    sides = []
    for lib in (hw, torch):
        w = lib.tensor(w0, requires_grad=True)
        x = lib.tensor(x0)
        for _ in range(3):
            loss = ((x @ w) ** 2).sum()
            loss.backward()
            with lib.no_grad():
                w -= 0.01 * w.grad
                w.grad.zero_()
        assert w.requires_grad and w.is_leaf
        sides.append(w.detach().numpy())
    np.testing.assert_allclose(sides[0], sides[1], rtol=1e-12)


def test_manual_update_of_a_module_parameter_updates_the_parameter_itself():
    model = nn.Linear(3, 2)
    twin = torch.nn.Linear(3, 2)
    with torch.no_grad():
        twin.weight.copy_(torch.from_numpy(model.weight.numpy()))
        twin.bias.copy_(torch.from_numpy(model.bias.numpy()))
    x = np.random.default_rng(2).standard_normal((4, 3)).astype(np.float32)
    weight = model.weight
    for _ in range(2):
        model(hw.tensor(x)).sum().backward()
        twin(torch.from_numpy(x)).sum().backward()
        with hw.no_grad():
            model.weight -= 0.1 * model.weight.grad
            model.bias -= 0.1 * model.bias.grad
        with torch.no_grad():
            twin.weight -= 0.1 * twin.weight.grad
            twin.bias -= 0.1 * twin.bias.grad
        model.zero_grad()
        twin.zero_grad()
    assert model.weight is weight and isinstance(model.weight, nn.Parameter)
    assert [p is q for p, q in zip(model.parameters(), [weight, model.bias])] == [True, True]
    np.testing.assert_allclose(model.weight.numpy(), twin.weight.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(model.bias.numpy(), twin.bias.detach().numpy(), rtol=1e-6)


def test_writing_a_tensor_that_requires_grad_into_a_constant_records_it_like_pytorch():
    def fn(lib, v):
        x = lib.zeros(4, 3, dtype=v.dtype)
        x[1:3] = v * 2
        return x
    compare_with_torch(lambda v: fn(hw, v), lambda v: fn(torch, v), [_a(2, 3)])


def test_retain_grad_follows_the_tensor_through_an_inplace_op_like_pytorch():
    grads = []
    for lib in (hw, torch):
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        y = x * 2
        y.retain_grad()
        y.mul_(3)
        (y * y).sum().backward()
        grads.append((y.grad.detach().numpy() if lib is torch else y.grad.numpy(),
                      x.grad.detach().numpy() if lib is torch else x.grad.numpy()))
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b)


def test_inplace_on_an_expanded_tensor_is_an_error():
    x = hw.ones(3).expand(2, 3)
    with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
        x.add_(1)


def test_inplace_on_a_reduced_scalar_works():
    s = hw.ones(3).sum()
    s.add_(1)
    assert s.item() == 4.0 and s._version == 1


def test_views_share_the_version_counter_like_pytorch():
    def fn(lib):
        x = lib.ones(2, 3, requires_grad=True)
        y = x.tanh()
        with lib.no_grad():
            y.reshape(6).mul_(2)  # through a view: y's memory changed
        y.sum().backward()
    _both_raise(fn, "modified by an inplace operation")
    for lib in (hw, torch):
        base = lib.zeros(2, 3)
        view = base[0]
        view.add_(1)
        base.T.mul_(2)
        assert base._version == view._version == 2
        np.testing.assert_array_equal(np.asarray(base.numpy()), [[2, 2, 2], [0, 0, 0]])


def test_differentiable_inplace_on_a_view_is_a_clear_error():
    w = Tensor(np.ones(3), requires_grad=True)
    buffer = hw.zeros(2, 3, dtype="float64")
    with pytest.raises(RuntimeError, match="in-place operation on a view .* not supported"):
        buffer[0].add_(w)
    buffer[0] = w * 2  # the supported form: index assignment on the base
    buffer.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [2, 2, 2])
    with hw.no_grad():  # nothing recorded: a view may be changed in place
        buffer[1].add_(w)
    np.testing.assert_array_equal(buffer.numpy()[1], [1, 1, 1])


def test_hw_tensor_copies_so_inplace_ops_leave_the_source_array_alone_like_pytorch():
    source = np.arange(3.0)
    for lib in (hw, torch):
        t = lib.tensor(source)
        t.add_(1)
        np.testing.assert_array_equal(np.asarray(t.numpy()), [1, 2, 3])
    np.testing.assert_array_equal(source, [0, 1, 2])
    shared = Tensor(source, backend="numpy")  # the constructor wraps the array, as torch.from_numpy does
    shared.add_(1)
    np.testing.assert_array_equal(source, [1, 2, 3])
