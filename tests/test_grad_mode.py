"""Grad mode and anomaly mode are per thread (as in PyTorch), and the ways to set grad mode:
``no_grad`` / ``enable_grad`` as context managers and decorators (with or without parentheses),
``set_grad_enabled`` as a call, a context manager and a decorator."""
import threading

import numpy as np
import pytest
import torch

import tinygrad_hw as hw
from tinygrad_hw import Tensor, nn
from tinygrad_hw.autograd import Function

TIMEOUT = 30  # seconds a thread may wait for the other; only reached if the test is broken


def _run(*targets):
    """Run each target in its own thread; re-raise the first exception a thread raised."""
    errors = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                errors.append(exc)
        return run
    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


def test_no_grad_in_another_thread_does_not_stop_recording_here():
    inside, done = threading.Event(), threading.Event()
    seen = {}

    def other():
        with hw.no_grad():
            inside.set()
            assert done.wait(TIMEOUT)
            seen["other"] = hw.is_grad_enabled()

    def main():
        assert inside.wait(TIMEOUT)
        x = Tensor([1.0, 2.0], requires_grad=True)
        seen["main"] = (hw.is_grad_enabled(), (x * 2).requires_grad)
        done.set()
    _run(other, main)
    assert seen == {"other": False, "main": (True, True)}


def test_interleaved_no_grad_in_two_threads_leaves_every_thread_recording():
    # enter A, enter B, exit A, exit B: with one global flag this order leaves recording off
    steps = [threading.Event() for _ in range(4)]

    def a():
        with hw.no_grad():
            steps[0].set()
            assert steps[1].wait(TIMEOUT)
        steps[2].set()

    def b():
        assert steps[0].wait(TIMEOUT)
        with hw.no_grad():
            steps[1].set()
            assert steps[2].wait(TIMEOUT)
        steps[3].set()
    _run(a, b)
    assert hw.is_grad_enabled()
    assert (Tensor([1.0], requires_grad=True) * 2).requires_grad


class _Pause(Function):
    """Identity whose backward waits for an event (so another thread runs during it)."""
    saves = ()

    def forward(self, a):
        return a.copy()

    def backward(self, g):
        self.started.set()
        assert self.resume.wait(TIMEOUT)
        return (g,)


def test_forward_in_one_thread_records_while_another_runs_backward():
    # backward() turns recording off for its own walk; the other thread must not see that
    started, resume = threading.Event(), threading.Event()
    result = {}

    def backward_thread():
        x = Tensor(np.ones(3), requires_grad=True)
        _Pause.apply(x, started=started, resume=resume).sum().backward()
        result["grad"] = x.grad.numpy()

    def forward_thread():
        assert started.wait(TIMEOUT)
        try:
            w = Tensor(np.ones(3), requires_grad=True)
            loss = (w * 3).sum()
            result["recorded"] = loss.requires_grad
            loss.backward()
            result["w_grad"] = w.grad.numpy()
        finally:
            resume.set()
    _run(backward_thread, forward_thread)
    assert result["recorded"]
    np.testing.assert_array_equal(result["w_grad"], [3, 3, 3])
    np.testing.assert_array_equal(result["grad"], [1, 1, 1])


def test_two_threads_train_their_own_models_concurrently():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 5)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    barrier = threading.Barrier(2, timeout=TIMEOUT)

    def build():
        hw.manual_seed(0)
        return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    models = {"a": build(), "b": build()}  # built here: the RNG is shared by threads
    results = {}

    def train(key):
        model = models[key]
        opt = hw.optim.SGD(model.parameters(), lr=0.1)
        losses = []
        for _ in range(20):
            barrier.wait()  # the two threads step in lockstep
            loss = nn.functional.cross_entropy(model(hw.tensor(x)), hw.tensor(y))
            loss.backward()
            opt.step()
            opt.zero_grad()
            with hw.no_grad():  # an evaluation inside each step, as a training loop may do
                losses.append(float(nn.functional.cross_entropy(model(hw.tensor(x)), hw.tensor(y)).item()))
        results[key] = losses

    _run(lambda: train("a"), lambda: train("b"))
    assert len(results["a"]) == len(results["b"]) == 20
    assert results["a"][-1] < results["a"][0]
    np.testing.assert_allclose(results["a"], results["b"], rtol=1e-5)  # the same net, the same steps
    assert hw.is_grad_enabled()


def test_anomaly_mode_is_per_thread():
    inside, done = threading.Event(), threading.Event()
    seen = {}

    def other():
        with hw.detect_anomaly():
            inside.set()
            assert done.wait(TIMEOUT)

    def main():
        assert inside.wait(TIMEOUT)
        try:
            seen["anomaly"] = hw.is_anomaly_enabled()
            x = Tensor([0.0], requires_grad=True)
            with np.errstate(invalid="ignore"):
                (x / x).sum()  # a NaN: fine outside detect_anomaly
        finally:
            done.set()
    _run(other, main)
    assert seen == {"anomaly": False}
    x = Tensor([0.0], requires_grad=True)
    with hw.detect_anomaly(), pytest.raises(hw.AnomalyError), np.errstate(invalid="ignore"):
        (x / x).sum()


def test_no_grad_and_enable_grad_as_decorators_with_and_without_parentheses():
    x = Tensor([1.0], requires_grad=True)

    @hw.no_grad
    def bare(t):
        return t * 2

    @hw.no_grad()
    def called(t):
        return t * 2

    @hw.enable_grad
    def enabled(t):
        return t * 2

    assert bare.__name__ == "bare"
    assert not bare(x).requires_grad and not called(x).requires_grad
    with hw.no_grad():
        assert enabled(x).requires_grad
    assert hw.is_grad_enabled()
    # PyTorch accepts the same forms
    assert not torch.no_grad(lambda: torch.ones(1, requires_grad=True) * 2)().requires_grad


def test_set_grad_enabled_like_pytorch():
    for lib in (hw, torch):
        lib.set_grad_enabled(False)
        assert not lib.is_grad_enabled()
        lib.set_grad_enabled(True)
        assert lib.is_grad_enabled()
        with lib.set_grad_enabled(False):
            assert not lib.is_grad_enabled()
            with lib.set_grad_enabled(True):
                assert lib.is_grad_enabled()
            assert not lib.is_grad_enabled()
        assert lib.is_grad_enabled()

        @lib.set_grad_enabled(False)
        def f():
            return lib.is_grad_enabled()
        assert lib.is_grad_enabled() and f() is False and lib.is_grad_enabled()


def test_a_new_thread_starts_with_grad_mode_on_whatever_this_one_has():
    seen = []
    with hw.no_grad():
        _run(lambda: seen.append(hw.is_grad_enabled()))
    assert seen == [True]


def test_mode_counts_follow_every_thread_and_return_to_zero():
    """apply() skips the thread-local reads while no thread has grad mode off or anomaly mode on:
    the counts it reads must say exactly that, through nesting, decorators and other threads."""
    from tinygrad_hw.autograd import grad_mode
    assert (grad_mode.grad_off, grad_mode.anomaly_on) == (0, 0)
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    inside, release = threading.Event(), threading.Event()

    def other():
        with hw.no_grad(), hw.detect_anomaly():
            inside.set()
            release.wait(10)

    th = threading.Thread(target=other)
    th.start()
    inside.wait(10)
    assert (grad_mode.grad_off, grad_mode.anomaly_on) == (1, 1)
    assert (x * 2).requires_grad  # this thread still records, though a count is not 0
    with hw.no_grad():
        with hw.no_grad():
            assert grad_mode.grad_off == 2
            assert not (x * 2).requires_grad
            with hw.enable_grad():
                assert grad_mode.grad_off == 1 and (x * 2).requires_grad
        hw.set_grad_enabled(True)
        assert (x * 2).requires_grad
        hw.set_grad_enabled(False)
    assert grad_mode.grad_off == 1 and (x * 2).requires_grad
    release.set()
    th.join(10)
    assert (grad_mode.grad_off, grad_mode.anomaly_on) == (0, 0)
    (x * 2).sum().backward()  # backward() switches grad mode off while it runs, and back
    assert (grad_mode.grad_off, grad_mode.anomaly_on) == (0, 0)
    with pytest.raises(hw.AnomalyError):
        with hw.detect_anomaly():
            (x * float("nan")).sum()
    assert (grad_mode.grad_off, grad_mode.anomaly_on) == (0, 0)
