"""What the recorded graph keeps alive: the edges point to ops, not tensors, each op keeps only what
its backward reads, and backward frees it op by op (unless retain_graph=True)."""
import gc
import tracemalloc
import weakref

import numpy as np
import pytest

import tinygrad_hw as hw
from tinygrad_hw import Tensor, nn
from tinygrad_hw.autograd import Function
from tinygrad_hw.nn import functional as F
from tinygrad_hw.testing import compare_second_order


def _alive(ref):
    gc.collect()
    return ref() is not None


def test_an_intermediate_tensor_is_not_kept_alive_by_the_graph():
    x = Tensor(np.ones(4), requires_grad=True)
    y = (x * 2) + 1
    ref = weakref.ref(y)
    z = y.sum()
    del y
    assert not _alive(ref)  # the Sum op points to the Add op, not to its output tensor
    z.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2, 2, 2, 2])


def _kept(make, *, inputs, output):
    """Run ``make()`` -> (inputs, out) and say which arrays the graph keeps once the caller drops
    its references: a list of booleans per input, and one for the output."""
    ins, out = make()
    in_refs = [weakref.ref(t.data) for t in ins]
    out_ref = weakref.ref(out.data)
    loss = out.sum()
    del ins, out
    kept = [_alive(r) for r in in_refs], _alive(out_ref)
    assert kept == (inputs, output)
    loss.backward()  # frees what was kept
    assert not any(_alive(r) for r in in_refs) and not _alive(out_ref)


def _nonleaf(*shape, seed=0):
    w = Tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), requires_grad=True)
    return w, w * 1.0  # the leaf stays alive (the caller's); its copy is what we watch


@pytest.fixture
def keep():
    leaves = []

    def make(*shape, seed=0):
        leaf, t = _nonleaf(*shape, seed=seed)
        leaves.append(leaf)
        return t
    return make


def test_add_saves_nothing(keep):
    _kept(lambda: ((a := keep(3, 4)), (b := keep(3, 4))) and ([a, b], a + b), inputs=[False, False], output=False)


def test_mul_saves_each_factor_for_the_other(keep):
    _kept(lambda: ((a := keep(3)), (b := keep(3))) and ([a, b], a * b), inputs=[True, True], output=False)
    c = Tensor(np.ones(3, dtype=np.float32))  # a constant factor: only it is needed
    _kept(lambda: ((a := keep(3)),) and ([a], a * c), inputs=[False], output=False)


def test_relu_saves_its_output_only(keep):
    _kept(lambda: ((a := keep(2, 5)),) and ([a], a.relu()), inputs=[False], output=True)


def test_exp_and_tanh_save_their_output_log_its_input(keep):
    _kept(lambda: ((a := keep(4)),) and ([a], a.exp()), inputs=[False], output=True)
    _kept(lambda: ((a := keep(4)),) and ([a], a.tanh()), inputs=[False], output=True)
    _kept(lambda: ((a := keep(4) + 3),) and ([a], a.log()), inputs=[True], output=False)


def test_conv2d_saves_input_and_weight_not_its_output(keep):
    _kept(lambda: ((x := keep(2, 3, 6, 6)), (w := keep(4, 3, 3, 3, seed=1)))
          and ([x, w], F.conv2d(x, w, padding=1)), inputs=[True, True], output=False)


def test_max_pool_saves_neither_input_nor_output(keep):
    _kept(lambda: ((x := keep(2, 3, 6, 6)),) and ([x], F.max_pool2d(x, 2)), inputs=[False], output=False)


def test_linear_saves_input_and_weight(keep):
    _kept(lambda: ((x := keep(5, 4)), (w := keep(3, 4, seed=1)))
          and ([x, w], F.linear(x, w)), inputs=[True, True], output=False)


def test_batch_norm_saves_its_input_not_the_normalised_output(keep):
    bn = nn.BatchNorm2d(3)
    _kept(lambda: ((x := keep(4, 3, 5, 5)),) and ([x], bn(x)), inputs=[True], output=False)


class _Probe(Function):
    """Identity whose backward records the bytes traced when it runs (it is the last op to run)."""
    saves = ()

    def forward(self, a):
        return a.copy()

    def backward(self, g):
        self.seen.append(tracemalloc.get_traced_memory()[0])
        return (g,)


@pytest.mark.parametrize("retain", [False, True])
def test_memory_falls_as_backward_proceeds(retain):
    n, depth = 250_000, 8  # 2 MB per float64 array, 8 saved outputs
    x = Tensor(np.linspace(-1, 1, n), requires_grad=True)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        seen = []
        h = _Probe.apply(x, seen=seen)
        for _ in range(depth):
            h = h.tanh()  # each keeps its output for backward
        loss = h.sum()
        del h
        held = tracemalloc.get_traced_memory()[0] - base
        loss.backward(retain_graph=retain)
        at_probe = seen[0] - base
    finally:
        tracemalloc.stop()
    array = n * 8
    assert held >= depth * array  # the graph holds the saved outputs
    if retain:
        assert at_probe >= depth * array
    else:
        # every tanh node was freed once its backward ran: only a few gradients are alive
        assert at_probe < 4 * array


def test_a_freed_graph_gives_a_clear_error_and_retain_graph_keeps_it():
    x = Tensor(np.array([0.5, 1.5]), requires_grad=True)
    y = (x.tanh() * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    t = np.tanh([0.5, 1.5])
    np.testing.assert_allclose(x.grad.numpy(), 2 * ((1 - t * t) * [0.5, 1.5] + t), rtol=1e-12)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "exp", "relu", "softmax", "log_softmax", "sqrt"])
def test_second_order_through_saved_outputs_matches_pytorch(name, backend):
    fn = (lambda t: getattr(t, name)(1)) if "softmax" in name else (lambda t: getattr(t, name)() * t)
    arrays = [np.abs(np.random.default_rng(3).standard_normal((3, 4))) + 0.1]
    compare_second_order(fn, fn, arrays, backend=backend)


def test_gradient_of_a_dropped_intermediate_with_hw_grad():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = x * 3
    out = (h.exp() * 2).sum()
    (gh,) = hw.grad(out, h, retain_graph=True)
    np.testing.assert_allclose(gh.numpy(), 2 * np.exp([3.0, 6.0]))
    (gx,) = hw.grad(out, x)
    np.testing.assert_allclose(gx.numpy(), 6 * np.exp([3.0, 6.0]))
