"""SGD, Adam and AdamW against torch.optim: same parameters and gradients, same trajectory."""
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_hw as hw
from tinygrad_hw import optim
from tinygrad_hw.testing import rel_err

STEPS = 20
SHAPES = [(3, 4), (5,), ()]


def make_problem(seed, dtype=np.float64, shapes=SHAPES):
    """Initial parameters and a gradient sequence (one list of arrays per step)."""
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(STEPS)]
    return init, grads


def ours_params(init, backend=None):
    return [hw.Tensor(a.copy(), requires_grad=True, backend=backend) for a in init]


def torch_params(init):
    return [torch.tensor(a.copy(), requires_grad=True) for a in init]


def run_side_by_side(make_ours, make_theirs, seed, dtype=np.float64, tol=1e-12, skip=None,
                     backend=None):
    """Step both optimizers on the same gradients; compare the parameters after every step.

    ``skip(step, i)`` says that parameter i has no gradient at that step."""
    init, grads = make_problem(seed, dtype)
    ps, ts = ours_params(init, backend), torch_params(init)
    opt, topt = make_ours(ps), make_theirs(ts)
    for step, gs in enumerate(grads):
        for i, (p, t, g) in enumerate(zip(ps, ts, gs)):
            if skip is not None and skip(step, i):
                p.grad, t.grad = None, None
            else:
                p.grad = hw.Tensor(g.copy(), backend=backend)
                t.grad = torch.tensor(g.copy())
        opt.step()
        topt.step()
        for i, (p, t) in enumerate(zip(ps, ts)):
            assert p.dtype == t.detach().numpy().dtype
            err = rel_err(p.numpy(), t.detach().numpy())
            assert err <= tol, f"step {step + 1}, param {i}: relative error {err:.3g}"
    return opt, ps


# -- SGD ------------------------------------------------------------------------------------------
sgd_options = st.fixed_dictionaries(dict(
    lr=st.sampled_from([0.1, 0.01, 0.37]),
    momentum=st.sampled_from([0.0, 0.5, 0.9]),
    dampening=st.sampled_from([0.0, 0.1, 0.6]),
    weight_decay=st.sampled_from([0.0, 1e-2, 0.3]),
    nesterov=st.booleans(),
    maximize=st.booleans(),
))


@settings(max_examples=40, deadline=None)
@given(options=sgd_options, seed=st.integers(0, 2**16))
def test_sgd_matches_torch(options, seed):
    if options["nesterov"] and (options["momentum"] == 0 or options["dampening"] != 0):
        with pytest.raises(ValueError):
            optim.SGD(ours_params([np.zeros(2)]), **options)
        options = dict(options, dampening=0.0, momentum=options["momentum"] or 0.9)
    run_side_by_side(lambda ps: optim.SGD(ps, **options),
                     lambda ts: torch.optim.SGD(ts, **options, foreach=False), seed)


def test_sgd_every_option_combination():
    """The whole grid once, beyond hypothesis' draws."""
    grid = itertools.product([0.0, 0.9], [0.0, 0.3], [0.0, 0.05], [False, True], [False, True])
    for momentum, dampening, weight_decay, nesterov, maximize in grid:
        if nesterov and (momentum == 0 or dampening != 0):
            continue
        options = dict(lr=0.05, momentum=momentum, dampening=dampening,
                       weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        run_side_by_side(lambda ps: optim.SGD(ps, **options),
                         lambda ts: torch.optim.SGD(ts, **options, foreach=False), seed=7)


def test_sgd_default_lr_matches_torch():
    init, _ = make_problem(0)
    assert optim.SGD(ours_params(init)).defaults["lr"] == \
        torch.optim.SGD(torch_params(init)).defaults["lr"]


# -- Adam / AdamW -----------------------------------------------------------------------------------
@pytest.mark.parametrize("amsgrad,weight_decay,maximize",
                         list(itertools.product([False, True], [0.0, 0.1], [False, True])))
def test_adam_matches_torch(amsgrad, weight_decay, maximize, backend):
    options = dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=weight_decay,
                   amsgrad=amsgrad, maximize=maximize)
    run_side_by_side(lambda ps: optim.Adam(ps, **options),
                     lambda ts: torch.optim.Adam(ts, **options, foreach=False), seed=3,
                     backend=backend)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), lr=st.sampled_from([1e-3, 0.1, 0.5]),
       beta1=st.sampled_from([0.0, 0.5, 0.9]), beta2=st.sampled_from([0.9, 0.999]),
       eps=st.sampled_from([1e-8, 1e-3]), amsgrad=st.booleans())
def test_adam_defaults_and_draws_match_torch(seed, lr, beta1, beta2, eps, amsgrad):
    run_side_by_side(lambda ps: optim.Adam(ps, lr=lr, betas=(beta1, beta2), eps=eps, amsgrad=amsgrad),
                     lambda ts: torch.optim.Adam(ts, lr=lr, betas=(beta1, beta2), eps=eps,
                                                 amsgrad=amsgrad, foreach=False), seed)


@pytest.mark.parametrize("amsgrad,maximize", list(itertools.product([False, True], [False, True])))
def test_adamw_matches_torch(amsgrad, maximize, backend):
    run_side_by_side(lambda ps: optim.AdamW(ps, lr=0.02, amsgrad=amsgrad, maximize=maximize),
                     lambda ts: torch.optim.AdamW(ts, lr=0.02, amsgrad=amsgrad, maximize=maximize,
                                                  foreach=False), seed=11, backend=backend)
    init, _ = make_problem(0)
    assert optim.AdamW(ours_params(init)).defaults["weight_decay"] == 1e-2


def test_adam_float32_matches_torch():
    run_side_by_side(lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.01),
                     lambda ts: torch.optim.Adam(ts, lr=0.01, weight_decay=0.01, foreach=False),
                     seed=5, dtype=np.float32, tol=1e-5)


# -- groups, skipped parameters, zero_grad ----------------------------------------------------------
def test_param_groups_with_own_hyperparameters_and_skipped_params():
    def groups(ps):
        return [{"params": ps[:2], "lr": 0.03, "momentum": 0.5},
                {"params": ps[2:], "weight_decay": 0.2}]
    # parameter 1 has no gradient at every third step, parameter 2 never before step 5
    skip = lambda step, i: (i == 1 and step % 3 == 0) or (i == 2 and step < 5)  # noqa: E731
    opt, ps = run_side_by_side(
        lambda ps: optim.SGD(groups(ps), lr=0.1, momentum=0.9),
        lambda ts: torch.optim.SGD(groups(ts), lr=0.1, momentum=0.9, foreach=False), 13, skip=skip)
    assert [g["lr"] for g in opt.param_groups] == [0.03, 0.1]
    assert [g["momentum"] for g in opt.param_groups] == [0.5, 0.9]
    run_side_by_side(lambda ps: optim.Adam(groups(ps), lr=0.01),
                     lambda ts: torch.optim.Adam(groups(ts), lr=0.01, foreach=False), 17, skip=skip)


def test_parameter_without_gradient_is_untouched():
    p, q = ours_params([np.ones(3), np.ones(2)])
    opt = optim.Adam([p, q], lr=0.1, weight_decay=0.1)
    p.grad = hw.Tensor(np.ones(3))
    opt.step()
    np.testing.assert_array_equal(q.numpy(), np.ones(2))
    assert q not in opt.state and p in opt.state


def test_add_param_group_mid_training_matches_torch():
    init, grads = make_problem(21)
    ps, ts = ours_params(init), torch_params(init)
    opt = optim.Adam(ps[:2], lr=0.01)
    topt = torch.optim.Adam(ts[:2], lr=0.01, foreach=False)
    for step, gs in enumerate(grads):
        if step == 8:
            opt.add_param_group({"params": [ps[2]], "lr": 0.05, "amsgrad": True})
            topt.add_param_group({"params": [ts[2]], "lr": 0.05, "amsgrad": True})
        for p, t, g in zip(ps, ts, gs):
            p.grad, t.grad = hw.Tensor(g.copy()), torch.tensor(g.copy())
        opt.step()
        topt.step()
        for p, t in zip(ps, ts):
            assert rel_err(p.numpy(), t.detach().numpy()) <= 1e-12
    assert opt.param_groups[1]["betas"] == (0.9, 0.999)


def test_zero_grad():
    p, q = ours_params([np.ones(3), np.ones(2)])
    opt = optim.SGD([p, q], lr=0.1)
    p.grad = hw.Tensor(np.full(3, 2.0))
    held = p.grad
    opt.zero_grad(set_to_none=False)
    assert p.grad is held and q.grad is None
    np.testing.assert_array_equal(p.grad.numpy(), np.zeros(3))
    opt.zero_grad()
    assert p.grad is None


def test_zero_grad_with_backward():
    w = hw.Tensor(np.array([1.0, -2.0]), requires_grad=True)
    opt = optim.SGD([w], lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        (w * w).sum().backward()
        opt.step()
    # w <- w - 0.5 * 2w = 0 after the first step, and stays there
    np.testing.assert_array_equal(w.numpy(), np.zeros(2))


def test_step_with_closure_returns_loss():
    w = hw.Tensor(np.array([3.0]), requires_grad=True)
    opt = optim.SGD([w], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss

    with hw.no_grad():  # the closure still records its graph
        loss = opt.step(closure)
    assert loss.item() == 9.0
    assert w.numpy()[0] == 3.0 - 0.25 * 6.0


def test_updates_do_not_record_graph_nor_touch_gradients():
    p = ours_params([np.ones(4)])[0]
    g = np.arange(4.0)
    p.grad = hw.Tensor(g.copy())
    opt = optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1, maximize=True)
    opt.step()
    opt.step()
    assert p.is_leaf and p.requires_grad
    np.testing.assert_array_equal(p.grad.numpy(), g)


def test_constructor_errors():
    init, _ = make_problem(0)
    ps = ours_params(init)
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError):
        optim.SGD(ps[0], lr=0.1)
    with pytest.raises(ValueError, match="more than one"):
        optim.SGD([{"params": ps[:2]}, {"params": ps[1:]}], lr=0.1)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD(ps, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="learning rate"):
        optim.Adam(ps, lr=-1.0)
    with pytest.raises(ValueError, match="beta"):
        optim.Adam(ps, betas=(1.0, 0.9))
    non_leaf = ps[0] * 2
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([non_leaf], lr=0.1)
    named = optim.SGD([("w", ps[0]), ("b", ps[1])], lr=0.1)
    assert named.param_groups[0]["param_names"] == ["w", "b"]


# -- state_dict ---------------------------------------------------------------------------------------
def checkpoint(state_dict):
    """What saving and loading does: every array copied to the host, nothing shared."""
    def copy(value):
        if isinstance(value, dict):
            return {k: copy(v) for k, v in value.items()}
        if isinstance(value, list):
            return [copy(v) for v in value]
        if hasattr(value, "shape"):
            return hw.get_backend(None).to_numpy(value) if not isinstance(value, np.ndarray) \
                else value.copy()
        return value
    return copy(state_dict)


OPTIMIZERS = {
    "sgd": lambda ps: optim.SGD([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.02}], lr=0.05,
                                momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam_amsgrad": lambda ps: optim.Adam(ps, lr=0.01, amsgrad=True, weight_decay=0.01),
    "adamw": lambda ps: optim.AdamW(ps, lr=0.01),
    "swats": lambda ps: optim.SWATS(ps, lr=0.01, switch_rtol=1e-2),
    "rmsprop_centered": lambda ps: optim.RMSprop(ps, lr=0.01, momentum=0.5, centered=True),
    "adagrad": lambda ps: optim.Adagrad(ps, lr=0.05, lr_decay=0.01, initial_accumulator_value=0.1),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_dict_resume_is_bit_identical(name, backend):
    make = OPTIMIZERS[name]
    init, grads = make_problem(31)

    def train(ps, opt, steps):
        for gs in steps:
            for p, g in zip(ps, gs):
                p.grad = hw.Tensor(g.copy())
            opt.step()

    straight = ours_params(init)
    straight_opt = make(straight)
    train(straight, straight_opt, grads)

    first = ours_params(init)
    opt = make(first)
    train(first, opt, grads[:9])
    saved_params = [p.numpy() for p in first]
    saved = checkpoint(opt.state_dict())
    del opt, first
    resumed = ours_params(saved_params)
    opt = make(resumed)
    opt.load_state_dict(saved)
    be = hw.get_backend(backend)
    for state in opt.state.values():  # state restored onto the parameters' backend, as copies
        for value in state.values():
            if hasattr(value, "shape"):
                assert be.is_array(value)
    train(resumed, opt, grads[9:])
    for a, b in zip(resumed, straight):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    if name == "swats":
        assert opt.switch_info() == straight_opt.switch_info()


def test_state_dict_layout_matches_torch():
    init, grads = make_problem(2)
    ps, ts = ours_params(init), torch_params(init)
    opt = optim.Adam([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.1}], lr=0.01)
    topt = torch.optim.Adam([{"params": ts[:2]}, {"params": ts[2:], "lr": 0.1}], lr=0.01)
    for p, t, g in zip(ps, ts, grads[0]):
        p.grad, t.grad = hw.Tensor(g), torch.tensor(g)
    opt.step()
    topt.step()
    ours, theirs = opt.state_dict(), topt.state_dict()
    assert sorted(ours["state"]) == sorted(theirs["state"])
    for index in theirs["state"]:
        assert set(ours["state"][index]) == set(theirs["state"][index])
        assert ours["state"][index]["step"] == theirs["state"][index]["step"].item()
        exp_avg = hw.get_backend().to_numpy(ours["state"][index]["exp_avg"])  # the parameters' backend
        np.testing.assert_allclose(exp_avg, theirs["state"][index]["exp_avg"].numpy(), rtol=1e-15)
    for og, tg in zip(ours["param_groups"], theirs["param_groups"]):
        assert og["params"] == tg["params"]
        for key in ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"):
            assert og[key] == tg[key]


def test_load_state_dict_casts_to_param_dtype_and_rejects_mismatch():
    p64 = ours_params([np.ones(3)])[0]
    opt = optim.SGD([p64], lr=0.1, momentum=0.9)
    p64.grad = hw.Tensor(np.ones(3))
    opt.step()
    saved = checkpoint(opt.state_dict())
    p32 = hw.Tensor(np.ones(3, np.float32), requires_grad=True)
    opt32 = optim.SGD([p32], lr=0.5, momentum=0.9)
    opt32.load_state_dict(saved)
    assert opt32.state[p32]["momentum_buffer"].dtype == np.float32
    assert opt32.param_groups[0]["lr"] == 0.1
    with pytest.raises(ValueError):
        optim.SGD(ours_params([np.ones(3), np.ones(2)]), lr=0.1).load_state_dict(saved)


def test_state_follows_parameter_dtype_change():
    """State made for a float64 parameter is recast when the parameter's array changes dtype."""
    p = ours_params([np.ones(3)])[0]
    opt = optim.Adam([p], lr=0.1)
    p.grad = hw.Tensor(np.ones(3))
    opt.step()
    p.data = p.data.astype(np.float32)
    p.grad = hw.Tensor(np.ones(3, np.float32))
    opt.step()
    assert opt.state[p]["exp_avg"].dtype == np.float32 and p.dtype == np.float32


def test_state_moves_with_parameters_between_backends():
    """A parameter moved to the GPU in place takes its optimizer state along (needs CuPy)."""
    try:
        gpu = hw.get_backend("cupy")
    except RuntimeError:
        pytest.skip("needs CuPy and an NVIDIA GPU")
    init, grads = make_problem(41)
    cpu_params = ours_params(init)
    cpu_opt = optim.Adam(cpu_params, lr=0.01, amsgrad=True)
    moved = ours_params(init)
    opt = optim.Adam(moved, lr=0.01, amsgrad=True)
    for step, gs in enumerate(grads):
        if step == 5:  # move in place, as Module.to would
            for p in moved:
                p.data, p._be = gpu.asarray(p.data), gpu
        for p, q, g in zip(moved, cpu_params, gs):
            p.grad = hw.Tensor(g.copy(), backend=p.backend)
            q.grad = hw.Tensor(g.copy())
        opt.step()
        cpu_opt.step()
    for p, q in zip(moved, cpu_params):
        assert all(gpu.is_array(v) for v in opt.state[p].values() if hasattr(v, "shape"))
        assert rel_err(p.numpy(), q.numpy()) <= 1e-12
    # and a CPU checkpoint loads onto GPU parameters
    gpu_params = [hw.Tensor(q.numpy(), requires_grad=True, backend="cupy") for q in cpu_params]
    gpu_opt = optim.Adam(gpu_params, lr=0.01, amsgrad=True)
    gpu_opt.load_state_dict(checkpoint(cpu_opt.state_dict()))
    assert all(gpu.is_array(v) for s in gpu_opt.state.values() for v in s.values()
               if hasattr(v, "shape"))


def test_load_state_dict_refuses_a_state_that_does_not_fit():
    model = hw.nn.Linear(3, 2)
    adam = optim.Adam(model.parameters(), lr=1e-3)
    model(hw.randn(4, 3)).sum().backward()
    adam.step()
    sgd = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = sgd.state_dict()
    with pytest.raises(ValueError, match="not from a SGD"):
        sgd.load_state_dict(adam.state_dict())  # PyTorch accepts it and fails at step()
    assert sgd.state_dict()["param_groups"] == before["param_groups"]  # nothing changed
    with pytest.raises(ValueError, match="not from a Adam"):
        optim.Adam(model.parameters()).load_state_dict(optim.SGD(model.parameters(), lr=0.1).state_dict())
    other = hw.nn.Linear(5, 2)  # same number of parameters, other shapes
    with pytest.raises(ValueError, match=r"shape \(2, 3\).*shape \(2, 5\)"):
        optim.Adam(other.parameters()).load_state_dict(adam.state_dict())
    # a state that fits still loads and steps
    again = optim.Adam(model.parameters(), lr=1e-3)
    again.load_state_dict(adam.state_dict())
    again.step()


def test_step_names_a_gradient_of_the_wrong_shape_on_a_plain_tensor():
    w = hw.randn(3, 2, requires_grad=True)  # a plain leaf, as in PyTorch's tutorials
    opt = optim.SGD([w], lr=0.1, momentum=0.9)
    w.grad = hw.ones(2)  # a Parameter refuses this at assignment (tests/test_nn.py)
    with pytest.raises(ValueError, match=r"shape \(3, 2\) has shape \(2,\)"):
        opt.step()


@pytest.mark.parametrize("momentum,centered,weight_decay,maximize",
                         list(itertools.product([0.0, 0.9], [False, True], [0.0, 0.1], [False, True])))
def test_rmsprop_matches_torch(momentum, centered, weight_decay, maximize, backend):
    options = dict(lr=0.01, alpha=0.9, eps=1e-6, momentum=momentum, centered=centered,
                   weight_decay=weight_decay, maximize=maximize)
    run_side_by_side(lambda ps: optim.RMSprop(ps, **options),
                     lambda ts: torch.optim.RMSprop(ts, **options, foreach=False), seed=5,
                     backend=backend, tol=1e-11)
    assert optim.RMSprop([hw.zeros(1, requires_grad=True)]).defaults["lr"] == \
        torch.optim.RMSprop([torch.zeros(1, requires_grad=True)]).defaults["lr"]


@pytest.mark.parametrize("lr_decay,weight_decay,initial,maximize",
                         list(itertools.product([0.0, 0.05], [0.0, 0.1], [0.0, 0.3], [False, True])))
def test_adagrad_matches_torch(lr_decay, weight_decay, initial, maximize, backend):
    options = dict(lr=0.05, lr_decay=lr_decay, weight_decay=weight_decay, initial_accumulator_value=initial,
                   eps=1e-10, maximize=maximize)
    run_side_by_side(lambda ps: optim.Adagrad(ps, **options),
                     lambda ts: torch.optim.Adagrad(ts, **options, foreach=False), seed=6,
                     backend=backend, tol=1e-11)


# -- optimizer steps and version counters -------------------------------------------------------
VERSIONED = {
    "sgd": lambda lib, ps: lib.optim.SGD(ps, lr=0.1),
    "sgd_momentum": lambda lib, ps: lib.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
    "adam": lambda lib, ps: lib.optim.Adam(ps, lr=0.1, amsgrad=True),
    "adamw": lambda lib, ps: lib.optim.AdamW(ps, lr=0.1),
    "rmsprop": lambda lib, ps: lib.optim.RMSprop(ps, lr=0.1, momentum=0.5, centered=True),
    "adagrad": lambda lib, ps: lib.optim.Adagrad(ps, lr=0.1),
}


def _forward_step_backward(lib, make, backend=None):
    """PyTorch's failure: a step between a forward pass and its backward changes a weight the
    graph saved (here w, saved by w * w)."""
    w = (hw.Tensor(np.ones(3, np.float32), backend=backend) if lib is hw else torch.ones(3))
    w.requires_grad_(True)
    opt = make(lib, [w])
    (w * w).sum().backward()
    loss = (w * w).sum()  # saves w at its current version
    before = w._version
    opt.step()
    assert w._version > before
    loss.backward()


@pytest.mark.parametrize("name", sorted(VERSIONED))
def test_optimizer_step_bumps_the_version_and_a_later_backward_fails_like_pytorch(name, backend):
    make = VERSIONED[name]
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        _forward_step_backward(torch, make)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        _forward_step_backward(hw, make, backend)
    with pytest.raises(RuntimeError, match=f"modified by {type(make(hw, [hw.Tensor(np.ones(1), requires_grad=True)])).__name__}.step"):
        _forward_step_backward(hw, make, backend)


@pytest.mark.parametrize("make", [
    lambda ps: optim.SWATS(ps, lr=0.1),
    lambda ps: optim.SwitchOnPlateau(ps, lambda q: optim.Adam(q, lr=0.1), lambda q: optim.SGD(q, lr=0.1)),
], ids=["swats", "switch"])
def test_our_own_optimizers_bump_the_version_too(make, backend):
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        _forward_step_backward(hw, lambda lib, ps: make(ps), backend)


def test_a_parameter_without_gradient_keeps_its_version_like_pytorch():
    for lib in (hw, torch):
        a = lib.ones(2, requires_grad=True)
        b = lib.ones(2, requires_grad=True)
        opt = lib.optim.SGD([a, b], lr=0.1)
        (a * 2).sum().backward()
        va, vb = a._version, b._version
        opt.step()
        assert a._version > va and b._version == vb, lib.__name__
