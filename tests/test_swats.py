"""SWATS (Keskar & Socher 2017) and the switch-on-plateau helper.

The reference below is Algorithm 1 of the paper written out in plain NumPy, one parameter group
per vector; our optimizer must follow it step for step, switch at the same step with the same
learning rate, and afterwards make exactly SGD-with-momentum updates.
"""
import numpy as np
import pytest
import torch

import tinygrad_hw as hw
from tinygrad_hw import optim
from tinygrad_hw.testing import rel_err


def swats_reference(xs, grad_fn, steps, lr=1e-3, b1=0.9, b2=0.999, eps=1e-9, tol=1e-9, rtol=None):
    """Algorithm 1 of arXiv:1712.07628, per group; returns the trajectory, switch steps, rates."""
    xs = [x.copy() for x in xs]
    n = len(xs)
    m, a, v = [np.zeros_like(x) for x in xs], [np.zeros_like(x) for x in xs], [None] * n
    lam, phase, rate, switched_at = [0.0] * n, ["adam"] * n, [None] * n, [None] * n
    trajectory = []
    for k in range(1, steps + 1):
        gs = grad_fn(xs)
        for j, g in enumerate(gs):
            if phase[j] == "sgd":
                v[j] = b1 * v[j] + g
                xs[j] = xs[j] - ((1 - b1) * rate[j]) * v[j]
                continue
            m[j] = b1 * m[j] + (1 - b1) * g
            a[j] = b2 * a[j] + (1 - b2) * g * g
            p = -lr * np.sqrt(1 - b2 ** k) / (1 - b1 ** k) * m[j] / (np.sqrt(a[j]) + eps)
            xs[j] = xs[j] + p
            if p @ g != 0:
                gamma = (p @ p) / -(p @ g)
                lam[j] = b2 * lam[j] + (1 - b2) * gamma
                gap = abs(lam[j] / (1 - b2 ** k) - gamma)
                if k > 1 and (gap < tol or (rtol is not None and gap < rtol * abs(gamma))):
                    phase[j], v[j] = "sgd", np.zeros_like(g)
                    rate[j], switched_at[j] = lam[j] / (1 - b2 ** k), k
        trajectory.append([x.copy() for x in xs])
    return trajectory, switched_at, rate


def quadratic(scales=(10.0, 30.0), split=6, n=10):
    """f(x) = x.H.x / 2 with H positive definite; x0 far from the minimum, so Adam's steps
    barely change the gradient and the SGD rate SWATS estimates settles."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((n, n))
    H = A @ A.T / n + 0.1 * np.eye(n)
    x0 = rng.standard_normal(n)
    x0[:split] *= scales[0]
    x0[split:] *= scales[1]
    blocks = [x0[:split], x0[split:]]

    def grads(xs):
        g = H @ np.concatenate(xs)
        return [g[:split], g[split:]]
    return blocks, grads


def set_grads(params, grad_fn):
    gs = grad_fn([p.numpy() for p in params])
    for p, g in zip(params, gs):
        p.grad = hw.Tensor(g)
    return gs


def test_layerwise_switch_matches_the_paper():
    blocks, grad_fn = quadratic()
    steps = 80
    trajectory, switched_at, rates = swats_reference(blocks, grad_fn, steps)
    assert switched_at == [40, 2]  # both groups switch, at different steps

    params = [hw.Tensor(b.copy(), requires_grad=True) for b in blocks]
    opt = optim.SWATS([{"params": [params[0]]}, {"params": [params[1]]}], lr=1e-3)
    beta1 = 0.9
    velocity = [None, None]
    gammas = [[], []]
    for k in range(1, steps + 1):
        before = [p.numpy() for p in params]
        gs = set_grads(params, grad_fn)
        phases = [g["phase"] for g in opt.param_groups]
        opt.step()
        for j, (p, x_ref) in enumerate(zip(params, trajectory[k - 1])):
            assert rel_err(p.numpy(), x_ref[...]) < 1e-12, f"step {k} group {j}"
            if phases[j] == "sgd":  # exactly SGD with momentum beta1, rate (1 - beta1) * Lambda
                velocity[j] = beta1 * velocity[j] + gs[j]
                coef = (1 - beta1) * opt.param_groups[j]["sgd_lr"]
                np.testing.assert_array_equal(p.numpy(), before[j] - coef * velocity[j])
            else:
                step = p.numpy() - before[j]
                gammas[j].append((step @ step) / -(step @ gs[j]))
                if opt.param_groups[j]["phase"] == "sgd":
                    velocity[j] = np.zeros_like(gs[j])
    info = opt.switch_info()
    assert [i["step"] for i in info] == switched_at
    assert all(i["switched"] for i in info)
    for j in range(2):
        assert abs(info[j]["lr"] - rates[j]) <= 1e-12 * rates[j]
        # the paper's Lambda in closed form: the bias-corrected average of the gammas seen
        k, beta2 = switched_at[j], 0.999
        weights = (1 - beta2) * beta2 ** np.arange(k - 1, -1, -1)
        closed = weights @ np.array(gammas[j]) / (1 - beta2 ** k)
        assert abs(info[j]["lr"] - closed) <= 1e-8 * closed
        assert len(gammas[j]) == k


def test_post_switch_updates_equal_torch_sgd_momentum():
    blocks, grad_fn = quadratic(scales=(10.0, 10.0))
    params = [hw.Tensor(np.concatenate(blocks), requires_grad=True)]
    whole = lambda xs: [np.concatenate(grad_fn([xs[0][:6], xs[0][6:]]))]  # noqa: E731
    opt = optim.SWATS(params, lr=1e-3)
    k = 0
    while opt.param_groups[0]["phase"] == "adam":
        set_grads(params, whole)
        opt.step()
        k += 1
        assert k < 200, "no switch"
    assert opt.switch_info()[0]["step"] == k == 44
    rate = opt.switch_info()[0]["lr"]
    reference = torch.tensor(params[0].numpy(), requires_grad=True)
    sgd = torch.optim.SGD([reference], lr=(1 - 0.9) * rate, momentum=0.9, foreach=False)
    for _ in range(40):
        gs = set_grads(params, whole)
        reference.grad = torch.tensor(gs[0])
        opt.step()
        sgd.step()
        assert rel_err(params[0].numpy(), reference.detach().numpy()) < 1e-13


def test_relative_tolerance_option_matches_reference():
    blocks, grad_fn = quadratic(scales=(1.0, 1.0))
    trajectory, switched_at, rates = swats_reference(blocks, grad_fn, 60, tol=0.0, rtol=1e-3)
    assert switched_at == [26, 2]
    params = [hw.Tensor(b.copy(), requires_grad=True) for b in blocks]
    opt = optim.SWATS([{"params": [params[0]]}, {"params": [params[1]]}], switch_tol=0.0,
                      switch_rtol=1e-3)
    for k in range(60):
        set_grads(params, grad_fn)
        opt.step()
        for p, x_ref in zip(params, trajectory[k]):
            assert rel_err(p.numpy(), x_ref) < 1e-12
    assert [i["step"] for i in opt.switch_info()] == switched_at
    # with the paper's absolute tolerance this well-scaled problem does not switch so early
    assert swats_reference(blocks, grad_fn, 60)[1] == [None, None]


def test_state_dict_keeps_switch_record_and_resumes_exactly():
    blocks, grad_fn = quadratic()

    def train(params, opt, steps):
        for _ in range(steps):
            set_grads(params, grad_fn)
            opt.step()

    def fresh(arrays):
        params = [hw.Tensor(a.copy(), requires_grad=True) for a in arrays]
        return params, optim.SWATS([{"params": [params[0]]}, {"params": [params[1]]}])

    straight, straight_opt = fresh(blocks)
    train(straight, straight_opt, 70)
    for stop in (20, 50):  # group 1 switched, group 0 not yet; then both switched
        params, opt = fresh(blocks)
        train(params, opt, stop)
        saved = opt.state_dict()
        saved = {"state": {i: {k: (v.copy() if hasattr(v, "copy") else v) for k, v in s.items()}
                           for i, s in saved["state"].items()},
                 "param_groups": [dict(g) for g in saved["param_groups"]]}
        info = opt.switch_info()
        resumed, opt2 = fresh([p.numpy() for p in params])
        opt2.load_state_dict(saved)
        assert opt2.switch_info() == info
        train(resumed, opt2, 70 - stop)
        for a, b in zip(resumed, straight):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        assert opt2.switch_info() == straight_opt.switch_info()
    assert [g["switch_step"] for g in saved["param_groups"]] == [40, 2]


def test_swats_with_backward_on_a_linear_model():
    """Gradients from autograd; after the switch each update is v = b1 v + g, w -= (1-b1) L v."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 8))
    y = X @ (30 * rng.standard_normal(8)) + 30
    w = hw.Tensor(np.zeros(8), requires_grad=True)
    b = hw.Tensor(np.zeros(1), requires_grad=True)
    opt = optim.SWATS([{"params": [w]}, {"params": [b]}])
    Xt, yt = hw.Tensor(X), hw.Tensor(y)
    velocity = {}
    losses = []
    for _ in range(30):
        loss = ((Xt @ w + b - yt) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        losses.append(loss.item())
        phases = [g["phase"] for g in opt.param_groups]
        before = [w.numpy(), b.numpy()]
        opt.step()
        for j, p in enumerate((w, b)):
            if phases[j] == "sgd":
                g = p.grad.numpy()
                velocity[j] = 0.9 * velocity.get(j, 0.0) + g
                expected = before[j] - ((1 - 0.9) * opt.param_groups[j]["sgd_lr"]) * velocity[j]
                np.testing.assert_array_equal(p.numpy(), expected)
    assert all(i["switched"] for i in opt.switch_info())
    assert losses[-1] < losses[0]


# -- SwitchOnPlateau ------------------------------------------------------------------------------
def adam_then_sgd(params, **kwargs):
    return optim.SwitchOnPlateau(
        params, first=lambda ps: optim.Adam(ps, lr=1e-3),
        then=lambda groups, lr: optim.SGD(groups, lr=lr, momentum=0.9), **kwargs)


def test_switch_on_plateau_with_given_lr():
    blocks, grad_fn = quadratic()
    params = [hw.Tensor(b.copy(), requires_grad=True) for b in blocks]
    helper = adam_then_sgd(params, patience=3, sgd_lr=0.01)
    assert isinstance(helper.optimizer, optim.Adam)
    losses = [5.0, 4.0, 3.0, 3.5, 3.2, 3.1]
    switched = []
    for loss in losses:
        set_grads(params, grad_fn)
        helper.step()
        switched.append(helper.epoch_end(loss))
    assert switched == [False] * 5 + [True]  # 3 epochs without improvement after 3.0
    assert helper.switched and helper.switch_epoch == 6
    sgd = helper.optimizer
    assert isinstance(sgd, optim.SGD) and sgd.param_groups[0]["lr"] == 0.01
    assert sgd.param_groups[0]["params"][0] is params[0]
    before = params[0].numpy()
    gs = set_grads(params, grad_fn)
    helper.step()  # the first SGD step: the momentum buffer starts as the gradient
    np.testing.assert_array_equal(params[0].numpy(), before - 0.01 * gs[0])
    assert helper.epoch_end(2.0) is False and helper.switch_epoch == 6


@pytest.mark.parametrize("layerwise", [False, True])
def test_switch_on_plateau_estimates_lr_as_swats(layerwise):
    blocks, grad_fn = quadratic()
    params = [hw.Tensor(b.copy(), requires_grad=True) for b in blocks]
    helper = optim.SwitchOnPlateau(
        params, first=optim.Adam([{"params": [params[0]]}, {"params": [params[1]]}], lr=1e-3),
        then=lambda groups, lr: optim.SGD(groups, lr=lr), patience=2, layerwise=layerwise)
    steps = []  # (p_k, g_k) per group
    for _ in range(30):
        before = [p.numpy() for p in params]
        gs = set_grads(params, grad_fn)
        helper.step()
        steps.append([(p.numpy() - x, g) for p, x, g in zip(params, before, gs)])
    for loss in (1.0, 1.0, 1.0):
        helper.epoch_end(loss)
    assert helper.switched

    def estimate(pairs):
        lam = 0.0
        for p, g in pairs:
            lam = 0.999 * lam + 0.001 * (p @ p) / -(p @ g)
        return lam / (1 - 0.999 ** len(pairs))
    overall = estimate([(np.concatenate([s[0][0], s[1][0]]), np.concatenate([s[0][1], s[1][1]]))
                        for s in steps])
    assert abs(helper.sgd_lr - overall) <= 1e-12 * overall
    lrs = [g["lr"] for g in helper.optimizer.param_groups]
    if layerwise:
        per_group = [estimate([s[j] for s in steps]) for j in range(2)]
        assert all(abs(a - b) <= 1e-12 * b for a, b in zip(lrs, per_group))
        assert lrs[0] != lrs[1]
    else:
        assert lrs == [helper.sgd_lr, helper.sgd_lr]


def test_switch_on_plateau_state_dict_across_the_switch():
    blocks, grad_fn = quadratic()
    losses = [3.0, 2.0, 2.5, 2.4, 2.3, 2.2, 2.1, 2.05]

    def run(helper, params, epochs):
        for loss in epochs:
            for _ in range(3):
                set_grads(params, grad_fn)
                helper.step()
            helper.epoch_end(loss)

    straight = [hw.Tensor(b.copy(), requires_grad=True) for b in blocks]
    straight_helper = adam_then_sgd(straight, patience=2)
    run(straight_helper, straight, losses)
    assert straight_helper.switch_epoch == 4

    params = [hw.Tensor(b.copy(), requires_grad=True) for b in blocks]
    helper = adam_then_sgd(params, patience=2)
    run(helper, params, losses[:5])
    saved = helper.state_dict()
    resumed = [hw.Tensor(p.numpy(), requires_grad=True) for p in params]
    helper2 = adam_then_sgd(resumed, patience=2)
    helper2.load_state_dict(saved)
    assert helper2.switched and helper2.sgd_lr == helper.sgd_lr
    run(helper2, resumed, losses[5:])
    for a, b in zip(resumed, straight):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
