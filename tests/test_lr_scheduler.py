"""Learning-rate schedulers against torch.optim.lr_scheduler: the same rates, bit for bit."""
import math
import warnings

import numpy as np
import pytest
import torch

import tinygrad_hw as hw
from tinygrad_hw import optim
from tinygrad_hw.optim import lr_scheduler

STEPS = 100
GROUP_LRS = (0.1, 0.025)


def optimizers(kind):
    """Ours and torch's optimizer of one kind, over two groups with their own rates."""
    ours = [hw.Tensor(np.ones(2), requires_grad=True) for _ in GROUP_LRS]
    theirs = [torch.ones(2, dtype=torch.float64, requires_grad=True) for _ in GROUP_LRS]
    if kind == "sgd":
        make = lambda lib, ps: lib.SGD([{"params": [p], "lr": lr} for p, lr in zip(ps, GROUP_LRS)],  # noqa: E731
                                       lr=0.1, momentum=0.9)
    else:
        make = lambda lib, ps: lib.Adam([{"params": [p], "lr": lr} for p, lr in zip(ps, GROUP_LRS)],  # noqa: E731
                                        lr=0.1)
    return make(optim, ours), make(torch.optim, theirs)


def momenta(opt):
    if "betas" in opt.defaults:
        return [g["betas"] for g in opt.param_groups]
    return [g["momentum"] for g in opt.param_groups]


def assert_same_sequence(make_scheduler, kind="sgd", steps=STEPS, metrics=None):
    opt, topt = optimizers(kind)
    ours, theirs = make_scheduler(lr_scheduler, opt), make_scheduler(torch.optim.lr_scheduler, topt)
    for step in range(steps):
        assert ours.get_last_lr() == theirs.get_last_lr(), f"step {step}"
        assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in topt.param_groups]
        assert momenta(opt) == momenta(topt), f"momentum at step {step}"
        opt.step()
        topt.step()
        if metrics is None:
            ours.step()
            theirs.step()
        else:
            ours.step(metrics[step])
            theirs.step(metrics[step])
    assert ours.get_last_lr() == theirs.get_last_lr()
    return ours, opt


SCHEDULERS = {
    "step": lambda m, o: m.StepLR(o, step_size=7, gamma=0.5),
    "step_default_gamma": lambda m, o: m.StepLR(o, step_size=30),
    "multistep": lambda m, o: m.MultiStepLR(o, milestones=[10, 30, 30, 75], gamma=0.3),
    "cosine": lambda m, o: m.CosineAnnealingLR(o, T_max=30, eta_min=1e-4),
    "exponential": lambda m, o: m.ExponentialLR(o, gamma=0.93),
    "lambda": lambda m, o: m.LambdaLR(o, lambda epoch: 1.0 / (1 + epoch) ** 0.5),
    "lambda_per_group": lambda m, o: m.LambdaLR(o, [lambda e: 0.95 ** e, lambda e: 1.0 + 0.01 * e]),
    "cosine_long": lambda m, o: m.CosineAnnealingLR(o, T_max=100),
    "linear": lambda m, o: m.LinearLR(o, start_factor=0.25, end_factor=0.9, total_iters=40),
    "linear_default": lambda m, o: m.LinearLR(o),
    "onecycle": lambda m, o: m.OneCycleLR(o, max_lr=0.5, total_steps=STEPS),
    "onecycle_groups_linear": lambda m, o: m.OneCycleLR(
        o, max_lr=[0.5, 0.2], epochs=10, steps_per_epoch=10, pct_start=0.25,
        anneal_strategy="linear", div_factor=10.0, final_div_factor=100.0,
        base_momentum=[0.8, 0.7], max_momentum=0.9),
    "onecycle_three_phase": lambda m, o: m.OneCycleLR(o, max_lr=0.3, total_steps=STEPS,
                                                      three_phase=True, pct_start=0.4),
    "onecycle_no_momentum": lambda m, o: m.OneCycleLR(o, max_lr=0.3, total_steps=STEPS,
                                                      cycle_momentum=False),
}


@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_scheduler_sequence_matches_torch(name, kind):
    # OneCycleLR may be stepped total_steps - 1 times after its initial step: 100 rates in all
    steps = STEPS - 1 if name.startswith("onecycle") else STEPS
    assert_same_sequence(SCHEDULERS[name], kind, steps)


def test_onecycle_sets_initial_rate_and_momentum():
    opt, _ = optimizers("sgd")
    sched = lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10)
    assert all(math.isclose(lr, 1.0 / 25.0, rel_tol=1e-14) for lr in sched.get_last_lr())
    assert opt.param_groups[0]["momentum"] == 0.95
    for _ in range(9):
        sched.step()
    assert math.isclose(sched.get_last_lr()[0], 1.0 / 25.0 / 1e4)
    with pytest.raises(ValueError, match="Tried to step"):
        sched.step()
        sched.step()


PLATEAU_METRICS = list(np.round(np.concatenate([
    np.linspace(1.0, 0.5, 20), np.full(15, 0.5), 0.5 - 1e-5 * np.arange(15),  # below rel threshold
    np.linspace(0.45, 0.3, 10), np.full(40, 0.31)]), 12))


@pytest.mark.parametrize("options", [
    dict(),
    dict(patience=3, factor=0.5),
    dict(patience=2, factor=0.5, threshold=0.01, threshold_mode="abs", cooldown=4),
    dict(mode="max", patience=4, factor=0.3, cooldown=1),
    dict(mode="max", patience=1, threshold_mode="abs", threshold=0.0),
    dict(patience=0, factor=0.5, min_lr=[0.01, 0.001]),
    dict(patience=1, factor=0.9, min_lr=0.05, eps=1e-3),
])
def test_reduce_on_plateau_matches_torch(options):
    metrics = PLATEAU_METRICS
    if options.get("mode") == "max":
        metrics = [-m for m in metrics]
    sched, opt = assert_same_sequence(lambda m, o: m.ReduceLROnPlateau(o, **options),
                                      metrics=metrics)
    assert sched.get_last_lr()[0] < GROUP_LRS[0]  # the sequence did reduce the rate


@pytest.mark.parametrize("name", ["step", "multistep", "cosine", "linear", "onecycle_three_phase"])
def test_scheduler_state_dict_resume(name):
    make = SCHEDULERS[name]
    opt, _ = optimizers("sgd")
    straight = make(lr_scheduler, opt)
    rates = []
    for _ in range(STEPS - 1):
        straight.step()
        rates.append(straight.get_last_lr())

    opt, _ = optimizers("sgd")
    first = make(lr_scheduler, opt)
    for _ in range(37):
        first.step()
    saved_sched, saved_opt = first.state_dict(), opt.state_dict()
    assert "optimizer" not in saved_sched
    opt2, _ = optimizers("sgd")
    resumed = make(lr_scheduler, opt2)  # as in PyTorch: make the scheduler, then load both
    opt2.load_state_dict(saved_opt)
    resumed.load_state_dict(saved_sched)
    resumed_rates = rates[:37]
    for _ in range(37, STEPS - 1):
        resumed.step()
        resumed_rates.append(resumed.get_last_lr())
    assert resumed_rates == rates


def test_reduce_on_plateau_state_dict_resume():
    opt, _ = optimizers("sgd")
    straight = lr_scheduler.ReduceLROnPlateau(opt, patience=2, cooldown=3, factor=0.5)
    rates = []
    for m in PLATEAU_METRICS:
        straight.step(m)
        rates.append(straight.get_last_lr())
    opt, _ = optimizers("sgd")
    first = lr_scheduler.ReduceLROnPlateau(opt, patience=2, cooldown=3, factor=0.5)
    for m in PLATEAU_METRICS[:40]:
        first.step(m)
    opt2, _ = optimizers("sgd")
    opt2.load_state_dict(opt.state_dict())
    resumed = lr_scheduler.ReduceLROnPlateau(opt2)
    resumed.load_state_dict(first.state_dict())
    out = rates[:40]
    for m in PLATEAU_METRICS[40:]:
        resumed.step(m)
        out.append(resumed.get_last_lr())
    assert out == rates


@pytest.mark.parametrize("name", ["step", "multistep", "cosine", "linear"])
def test_step_with_epoch_uses_closed_form_like_torch(name):
    opt, topt = optimizers("sgd")
    ours, theirs = SCHEDULERS[name](lr_scheduler, opt), SCHEDULERS[name](torch.optim.lr_scheduler, topt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in [3, 17, 4, 60, 31, 99]:
            ours.step(epoch)
            theirs.step(epoch)
            assert ours.get_last_lr() == theirs.get_last_lr()


def test_cosine_resumed_with_last_epoch_matches_torch():
    opt, topt = optimizers("sgd")
    for o in (opt, topt):
        for g in o.param_groups:
            g["initial_lr"] = g["lr"]
    ours = lr_scheduler.CosineAnnealingLR(opt, T_max=20, last_epoch=12)
    theirs = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=20, last_epoch=12)
    for _ in range(30):
        assert ours.get_last_lr() == theirs.get_last_lr()
        opt.step()
        topt.step()
        ours.step()
        theirs.step()


def test_scheduler_drives_training_like_torch():
    """Rates set by a scheduler are the ones the optimizer steps with."""
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal(5)
    p = hw.Tensor(x0.copy(), requires_grad=True)
    t = torch.tensor(x0.copy(), requires_grad=True)
    opt, topt = optim.SGD([p], lr=0.1, momentum=0.9), torch.optim.SGD([t], lr=0.1, momentum=0.9)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=30)
    tsched = torch.optim.lr_scheduler.OneCycleLR(topt, max_lr=0.2, total_steps=30)
    for _ in range(29):
        g = rng.standard_normal(5)
        p.grad, t.grad = hw.Tensor(g), torch.tensor(g)
        opt.step()
        topt.step()
        sched.step()
        tsched.step()
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_scheduler_errors():
    opt, _ = optimizers("sgd")
    with pytest.raises(TypeError):
        lr_scheduler.StepLR(object(), step_size=1)
    with pytest.raises(KeyError):
        lr_scheduler.StepLR(opt, step_size=1, last_epoch=3)
    with pytest.raises(ValueError):
        lr_scheduler.LinearLR(opt, start_factor=0.0)
    with pytest.raises(ValueError):
        lr_scheduler.OneCycleLR(opt, max_lr=0.1)
    with pytest.raises(ValueError):
        lr_scheduler.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError):
        lr_scheduler.OneCycleLR(optim.SWATS([hw.Tensor(np.ones(1), requires_grad=True)]),
                                max_lr=0.1, total_steps=10, pct_start=1)


def test_lambda_lr_state_dict_leaves_functions_out_like_torch(tmp_path):
    opt, _ = optimizers("sgd")
    sched = lr_scheduler.LambdaLR(opt, lambda e: 0.5 ** e)
    sched.step()
    state = sched.state_dict()
    assert state["lr_lambdas"] == [None, None] and state["last_epoch"] == 1
    hw.save(state, tmp_path / "sched.ckpt")  # a plain function would not save
    state = hw.load(tmp_path / "sched.ckpt")
    again = lr_scheduler.LambdaLR(optimizers("sgd")[0], lambda e: 0.5 ** e)
    again.load_state_dict(state)
    assert again.last_epoch == 1 and callable(again.lr_lambdas[0])
