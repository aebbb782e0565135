"""Engine reliability: errors that say what and where, anomaly detection, freed graphs, and a
hypothesis state machine that builds random graphs and checks every leaf gradient against PyTorch."""
import gc
import tracemalloc
import weakref

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import tinygrad_hw as hw
from tinygrad_hw import Tensor
from tinygrad_hw.autograd import Function


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------
@given(data=st.data())
def test_binary_ops_on_incompatible_shapes_raise_a_named_value_error(data):
    a_shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=2, max_side=4))
    b_shape = list(a_shape)
    i = data.draw(st.integers(0, len(a_shape) - 1))
    b_shape[i] = a_shape[i] + data.draw(st.integers(1, 3))  # neither equal nor 1: never broadcastable
    a, b = hw.zeros(a_shape), hw.zeros(tuple(b_shape))
    op, name = data.draw(st.sampled_from([(lambda x, y: x + y, "Add"), (lambda x, y: x - y, "Sub"),
                                          (lambda x, y: x * y, "Mul"), (lambda x, y: x / y, "Div"),
                                          (lambda x, y: x.maximum(y), "Maximum"),
                                          (lambda x, y: hw.where(x > 0, x, y), "where")]))
    with pytest.raises(ValueError, match=rf"{name}: shapes .*{tuple(a_shape)}.* cannot be broadcast"):
        op(a, b)


def test_matmul_inner_dimension_mismatch_names_the_shapes():
    with pytest.raises(ValueError, match=r"matmul: inner dimensions differ: \(2, 3\) @ \(4, 5\)"):
        hw.zeros(2, 3) @ hw.zeros(4, 5)


def test_reshape_to_wrong_size_names_shapes():
    with pytest.raises(ValueError, match=r"reshape: cannot reshape a tensor of shape \(2, 3\).*\(4, 2\)"):
        hw.zeros(2, 3).reshape(4, 2)


# --------------------------------------------------------------------------------------------------
# anomaly detection
# --------------------------------------------------------------------------------------------------
def test_detect_anomaly_names_the_forward_op_and_the_user_line():
    x = Tensor([1.0, 0.0], requires_grad=True)
    with hw.detect_anomaly(), np.errstate(divide="ignore"):
        with pytest.raises(hw.AnomalyError, match=r"Log \(created at .*test_reliability.py:\d+ .*\) produced Inf"):
            x.log()
    with np.errstate(divide="ignore"):
        assert not np.isfinite(x.log().numpy()).all()  # outside the context no check is made


def test_detect_anomaly_names_the_op_whose_backward_produced_nan():
    x = Tensor([4.0, 0.0], requires_grad=True)
    with hw.detect_anomaly(), np.errstate(divide="ignore", invalid="ignore"):
        y = x.sqrt().sum()  # finite forward, infinite gradient at 0
        with pytest.raises(hw.AnomalyError, match=r"in the backward of Sqrt \(created at .*test_reliability.py"):
            y.backward()


def test_anomaly_mode_off_by_default_and_finite_graphs_pass():
    x = Tensor([1.0, 2.0], requires_grad=True)
    with hw.detect_anomaly():
        (x.exp() * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.exp([1, 2]) * (np.array([1, 2]) + 1), rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------------------
def test_memory_stays_flat_over_500_steps_and_no_graph_under_no_grad():
    rng = np.random.default_rng(0)
    w1 = Tensor(rng.standard_normal((32, 64)).astype(np.float32) * 0.1, requires_grad=True)
    w2 = Tensor(rng.standard_normal((64, 10)).astype(np.float32) * 0.1, requires_grad=True)
    x = Tensor(rng.standard_normal((16, 32)).astype(np.float32))
    nodes = []

    def step():
        h = (x @ w1).relu()
        loss = (h @ w2).log_softmax(1)[np.arange(16), np.arange(16) % 10].mean() * -1
        nodes.append(weakref.ref(loss._ctx))
        loss.backward()
        for w in (w1, w2):
            w.data -= 0.01 * w.grad.data
            w.grad = None

    for _ in range(20):  # warm up allocator and caches
        step()
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for _ in range(500):
        step()
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert grown < 200_000, f"memory grew by {grown} bytes over 500 steps"
    assert sum(r() is not None for r in nodes) == 0, "graph nodes outlived their backward pass"
    with hw.no_grad():
        out = (x @ w1).relu() @ w2
    assert out._ctx is None and not out.requires_grad


# --------------------------------------------------------------------------------------------------
# random graphs against PyTorch
# --------------------------------------------------------------------------------------------------
UNARY = {
    "exp": (lambda t: (t * 0.3).exp(), lambda t: (t * 0.3).exp()),
    "tanh": (lambda t: t.tanh(), lambda t: t.tanh()),
    "sigmoid": (lambda t: t.sigmoid(), lambda t: t.sigmoid()),
    "square": (lambda t: t * t, lambda t: t * t),
    "softplus_log": (lambda t: (t * t + 1).log(), lambda t: (t * t + 1).log()),
    "sum_keep": (lambda t: t.sum(-1, keepdims=True), lambda t: t.sum(-1, keepdim=True)),
    "mean_all": (lambda t: t.mean(), lambda t: t.mean()),
    "softmax": (lambda t: t.softmax(-1), lambda t: t.softmax(-1)),
    "transpose": (lambda t: t.transpose(0, -1), lambda t: t.transpose(0, -1)),
    "flip_slice": (lambda t: t[::-1], lambda t: t.flip(0)),
}
BINARY = {
    "add": (lambda a, b: a + b, lambda a, b: a + b),
    "mul": (lambda a, b: a * b, lambda a, b: a * b),
    "sub": (lambda a, b: a - b, lambda a, b: a - b),
    "div": (lambda a, b: a / (b * b + 1), lambda a, b: a / (b * b + 1)),
    "maximum": (lambda a, b: a.maximum(b), torch.maximum),
}


class RandomGraphs(RuleBasedStateMachine):
    """Grows a graph op by op (reusing nodes, broadcasting, detach, no_grad), then backpropagates
    and compares every leaf's gradient with PyTorch doing the same."""

    @initialize(shape=st.sampled_from([(3,), (2, 3), (2, 1, 3)]), data=st.data())
    def leaves(self, shape, data):
        rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
        self.pairs = []
        self.leaf_pairs = []
        for s in (shape, shape[-1:], (1,) * len(shape)):
            a = rng.standard_normal(s)
            ours, theirs = Tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
            self.pairs.append((ours, theirs))
            self.leaf_pairs.append((ours, theirs))

    # Ops and operands are picked by a drawn seed rather than sampled_from: hypothesis biases
    # sampled_from towards the first items, and uniform picks cover every op in few examples.
    @rule(seed=st.integers(0, 2 ** 32 - 1))
    def unary(self, seed):
        rng = np.random.default_rng(seed)
        name = sorted(UNARY)[rng.integers(len(UNARY))]
        ours, theirs = self.pairs[rng.integers(len(self.pairs))]
        if ours.ndim == 0 and name == "flip_slice":
            return  # neither library slices a 0-d tensor
        f, g = UNARY[name]
        self.pairs.append((f(ours), g(theirs)))

    @rule(seed=st.integers(0, 2 ** 32 - 1))
    def binary(self, seed):
        rng = np.random.default_rng(seed)
        name = sorted(BINARY)[rng.integers(len(BINARY))]
        (a, ta), (b, tb) = (self.pairs[i] for i in rng.integers(len(self.pairs), size=2))
        try:
            np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            return
        f, g = BINARY[name]
        self.pairs.append((f(a, b), g(ta, tb)))

    @rule(seed=st.integers(0, 2 ** 32 - 1))
    def detach_one(self, seed):
        ours, theirs = self.pairs[np.random.default_rng(seed).integers(len(self.pairs))]
        self.pairs.append((ours.detach() * 2, theirs.detach() * 2))

    @rule(seed=st.integers(0, 2 ** 32 - 1))
    def under_no_grad(self, seed):
        ours, theirs = self.pairs[np.random.default_rng(seed).integers(len(self.pairs))]
        with hw.no_grad():
            a = ours * 3
        with torch.no_grad():
            b = theirs * 3
        assert not a.requires_grad
        self.pairs.append((a, b))

    @invariant()
    def values_agree(self):
        ours, theirs = self.pairs[-1]
        np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-12, atol=1e-12)

    @precondition(lambda self: len(self.pairs) > 3)
    @rule(seed=st.integers(0, 2 ** 16))
    def backward_and_compare(self, seed):
        """Backpropagate a random weighting of every node, so every recorded op is exercised."""
        rng = np.random.default_rng(seed)
        ours, theirs = Tensor(np.zeros(())), torch.zeros((), dtype=torch.float64)
        for a, b in self.pairs:
            assert a.requires_grad == b.requires_grad
            if b.requires_grad:
                w = rng.standard_normal(a.shape)
                ours = ours + (a * Tensor(w)).sum()
                theirs = theirs + (b * torch.from_numpy(w)).sum()
        for a, b in self.leaf_pairs:
            a.grad = b.grad = None
        ours.backward(retain_graph=True)
        theirs.backward(retain_graph=True)
        for i, (a, b) in enumerate(self.leaf_pairs):
            np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-10, atol=1e-12,
                                       err_msg=f"leaf {i}")


TestRandomGraphs = RandomGraphs.TestCase
TestRandomGraphs.settings = settings(max_examples=40, stateful_step_count=20, deadline=None)


# --------------------------------------------------------------------------------------------------
# a user-defined op checks with gradcheck
# --------------------------------------------------------------------------------------------------
class Cube(Function):
    def forward(self, a):
        return a ** 3

    def backward(self, g):
        (a,) = self.inputs
        return (g * 3 * a * a,)


def test_users_own_op_passes_gradcheck_and_gradgradcheck():
    x = Tensor(np.array([0.3, -1.2, 2.0]), requires_grad=True)
    assert hw.gradcheck(lambda t: Cube.apply(t), [x])
    assert hw.gradgradcheck(lambda t: Cube.apply(t), [x])


def test_gradcheck_catches_a_wrong_backward():
    class WrongCube(Cube):
        def backward(self, g):
            (a,) = self.inputs
            return (g * 2 * a * a,)
    x = Tensor(np.array([0.3, -1.2]), requires_grad=True)
    with pytest.raises(AssertionError, match="gradcheck"):
        hw.gradcheck(lambda t: WrongCube.apply(t), [x])


# --------------------------------------------------------------------------------------------------
# layer errors name the layer by its place in the model
# --------------------------------------------------------------------------------------------------
def _features_model():
    from tinygrad_hw import nn
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.Flatten(), nn.Linear(16 * 4 * 4, 10))


def test_wrong_channel_count_names_the_conv_layer_and_shapes():
    model = _features_model()
    with pytest.raises(ValueError, match=r"^0 \(Conv2d\): .*\(2, 4, 8, 8\)"):
        model(hw.zeros(2, 4, 8, 8))


def test_wrong_spatial_size_names_the_linear_layer():
    model = _features_model()
    with pytest.raises(ValueError, match=r"^5 \(Linear\): .*in_features=256"):
        model(hw.zeros(2, 3, 16, 16))


def test_nested_layer_names_use_dotted_paths():
    from tinygrad_hw import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = _features_model()
            self.features[0] = nn.Conv2d(3, 4, 3, padding=1)  # features.3 now gets 4 channels, not 8

        def forward(self, x):
            return self.features(x)
    with pytest.raises(ValueError, match=r"^features\.3 \(Conv2d\): "):
        Net()(hw.zeros(1, 3, 8, 8))
