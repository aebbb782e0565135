"""Every loss (module and functional) against torch.nn: value, input gradient, reductions, class
weights, label smoothing, ignore_index, and clear errors for bad labels and shapes."""
import contextlib

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import tinygrad_hw as hw
import tinygrad_hw.nn.functional as F
from tinygrad_hw.testing import assert_close, compare_second_order, compare_with_torch
from tinygrad_hw import nn

RTOL = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-4}
REDUCTIONS = st.sampled_from(["mean", "sum", "none"])
DTYPES = st.sampled_from([np.float64, np.float32])


def compare_loss(ours, theirs, logits, target, backend, dtype):
    """Loss modules on the same (float) input and target: value and input gradient."""
    target_t = torch.from_numpy(np.array(target))
    target_o = hw.Tensor(np.array(target), backend=backend)
    compare_with_torch(lambda x: ours(x, target_o), lambda x: theirs(x, target_t), [logits],
                       backend, rtol=RTOL[np.dtype(dtype)])


@st.composite
def classification(draw, spatial=True):
    batch = draw(st.integers(1, 5))
    classes = draw(st.integers(1, 6))
    extra = draw(st.sampled_from([(), (), (2,), (2, 3)])) if spatial else ()
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    dtype = draw(DTYPES)
    # Saturated softmax (large logits) only in float64: there the float32 gradient p - 1 is
    # cancellation, and PyTorch's own float32 result is off by more than 1e-4 of the largest entry.
    scale = draw(st.sampled_from([1.0, 5.0])) if dtype == np.float64 else 1.0
    logits = (rng.standard_normal((batch, classes) + extra) * scale).astype(dtype)
    labels = rng.integers(0, classes, size=(batch,) + extra)
    weight = rng.uniform(0.2, 2.0, classes).astype(dtype) if draw(st.booleans()) else None
    ignore = draw(st.sampled_from([None, -100, 0]))
    if ignore == -100 and labels.size > 1:
        labels.reshape(-1)[0] = -100
    return logits, labels, weight, ignore, dtype


@given(data=classification(), reduction=REDUCTIONS,
       smoothing=st.sampled_from([0.0, 0.0, 0.1, 0.35, 1.0]))
def test_cross_entropy_against_pytorch(backend, data, reduction, smoothing):
    logits, labels, weight, ignore, dtype = data
    kwargs = dict(reduction=reduction, label_smoothing=smoothing)
    if ignore is not None:
        kwargs["ignore_index"] = ignore
    if ignore is not None and reduction == "mean" and np.all(labels == ignore):
        return  # 0/0: both are nan, covered separately
    ours = nn.CrossEntropyLoss(weight=None if weight is None else hw.Tensor(weight, backend=backend), **kwargs)
    theirs = torch.nn.CrossEntropyLoss(weight=None if weight is None else torch.from_numpy(weight), **kwargs)
    compare_loss(ours, theirs, logits, labels, backend, dtype)


@given(data=classification(), reduction=REDUCTIONS, smoothing=st.sampled_from([0.0, 0.2]))
def test_cross_entropy_with_probability_targets(backend, data, reduction, smoothing):
    logits, _, weight, _, dtype = data
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(logits.shape[1]), size=logits.shape[0:1] + logits.shape[2:])
    probs = np.moveaxis(probs, -1, 1).astype(dtype)
    w_ours = None if weight is None else hw.Tensor(weight, backend=backend)
    w_theirs = None if weight is None else torch.from_numpy(weight)
    compare_loss(nn.CrossEntropyLoss(w_ours, reduction=reduction, label_smoothing=smoothing),
                 torch.nn.CrossEntropyLoss(w_theirs, reduction=reduction, label_smoothing=smoothing),
                 logits, probs, backend, dtype)


@given(data=classification(), reduction=REDUCTIONS)
def test_nll_loss_against_pytorch(backend, data, reduction):
    logits, labels, weight, ignore, dtype = data
    kwargs = {"reduction": reduction}
    if ignore is not None:
        kwargs["ignore_index"] = ignore
    if ignore is not None and reduction == "mean" and np.all(labels == ignore):
        return
    logp = torch.log_softmax(torch.from_numpy(logits), 1).numpy()
    ours = nn.NLLLoss(None if weight is None else hw.Tensor(weight, backend=backend), **kwargs)
    theirs = torch.nn.NLLLoss(None if weight is None else torch.from_numpy(weight), **kwargs)
    compare_loss(ours, theirs, logp, labels, backend, dtype)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # 0/0 when all are ignored
def test_cross_entropy_unbatched_all_ignored_and_second_order(backend):
    x = np.random.default_rng(0).standard_normal(5)
    compare_with_torch(lambda t: F.cross_entropy(t, hw.tensor(3, backend=backend)),
                       lambda t: torch.nn.functional.cross_entropy(t, torch.tensor(3)), [x], backend)
    logits = np.random.default_rng(1).standard_normal((3, 4))
    out = F.cross_entropy(hw.Tensor(logits, backend=backend), hw.tensor([-100, -100, -100], backend=backend))
    ref = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.tensor([-100, -100, -100]))
    assert np.isnan(out.item()) and torch.isnan(ref)
    labels = np.array([0, 3, 1])
    w = np.array([0.5, 1.0, 2.0, 1.5])
    compare_second_order(
        lambda t: F.cross_entropy(t, hw.Tensor(labels, backend=backend), weight=hw.Tensor(w, backend=backend),
                                  label_smoothing=0.2),
        lambda t: torch.nn.functional.cross_entropy(t, torch.from_numpy(labels), weight=torch.from_numpy(w),
                                                    label_smoothing=0.2),
        [logits], backend)


def _host_checks(backend):
    """Where the checks that read device values run: always on NumPy, under detect_anomaly()
    on a GPU backend (elsewhere there the loss becomes NaN: test_gpu_readiness.py)."""
    return contextlib.nullcontext() if backend == "numpy" else hw.detect_anomaly()


def test_cross_entropy_label_errors(backend):
    logits = hw.randn(3, 4, backend=backend)
    with pytest.raises(ValueError, match=r"cross_entropy: label 7 .* 4 classes"), _host_checks(backend):
        F.cross_entropy(logits, hw.tensor([0, 7, 1], backend=backend))
    with pytest.raises(ValueError, match=r"CrossEntropyLoss: label -2 .* 4 classes"), _host_checks(backend):
        nn.CrossEntropyLoss()(logits, hw.tensor([0, -2, 1], backend=backend))
    with pytest.raises(TypeError, match="integer class labels"):
        F.cross_entropy(logits, hw.tensor([True, False, True], backend=backend))
    with pytest.raises(ValueError, match="target of shape"):
        F.cross_entropy(logits, hw.tensor([0, 1], backend=backend))
    with pytest.raises(ValueError, match="weight of shape"):
        F.cross_entropy(logits, hw.tensor([0, 1, 2], backend=backend), weight=hw.ones(3, backend=backend))
    with pytest.raises(ValueError, match="reduction"):
        nn.CrossEntropyLoss(reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        nn.CrossEntropyLoss(label_smoothing=1.5)


def test_legacy_size_average_and_reduce_arguments():
    assert nn.MSELoss(size_average=False).reduction == "sum"
    assert nn.MSELoss(reduce=False).reduction == "none"
    assert nn.CrossEntropyLoss(None, True, -100, True).reduction == "mean"


@st.composite
def regression(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    dtype = draw(DTYPES)
    return rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype), dtype, rng


@given(data=regression(), reduction=REDUCTIONS)
def test_mse_and_l1_against_pytorch(backend, data, reduction):
    x, y, dtype, _ = data
    compare_loss(nn.MSELoss(reduction=reduction), torch.nn.MSELoss(reduction=reduction), x, y, backend, dtype)
    compare_loss(nn.L1Loss(reduction=reduction), torch.nn.L1Loss(reduction=reduction), x, y, backend, dtype)


@given(data=regression(), reduction=REDUCTIONS, weighted=st.booleans())
def test_bce_against_pytorch(backend, data, reduction, weighted):
    x, y, dtype, rng = data
    probs = rng.uniform(0.02, 0.98, x.shape).astype(dtype)
    target = (rng.uniform(size=x.shape) < 0.5).astype(dtype)
    target[..., 0] = rng.uniform(size=target[..., 0].shape)  # soft targets too
    w = rng.uniform(0.5, 2, x.shape).astype(dtype) if weighted else None
    ours = nn.BCELoss(None if w is None else hw.Tensor(w, backend=backend), reduction=reduction)
    theirs = torch.nn.BCELoss(None if w is None else torch.from_numpy(w), reduction=reduction)
    compare_loss(ours, theirs, probs, target, backend, dtype)


@given(data=regression(), reduction=REDUCTIONS, weighted=st.booleans(), pos=st.booleans())
def test_bce_with_logits_against_pytorch(backend, data, reduction, weighted, pos):
    x, _, dtype, rng = data
    logits = (x * 8).astype(dtype)
    logits.reshape(-1)[0] = 0.0  # the kink of max(-x, 0)
    target = rng.uniform(size=x.shape).astype(dtype)
    w = rng.uniform(0.5, 2, x.shape).astype(dtype) if weighted else None
    pw = rng.uniform(0.5, 3, x.shape[-1:]).astype(dtype) if pos else None
    ours = nn.BCEWithLogitsLoss(None if w is None else hw.Tensor(w, backend=backend), reduction=reduction,
                                pos_weight=None if pw is None else hw.Tensor(pw, backend=backend))
    theirs = torch.nn.BCEWithLogitsLoss(None if w is None else torch.from_numpy(w), reduction=reduction,
                                        pos_weight=None if pw is None else torch.from_numpy(pw))
    compare_loss(ours, theirs, logits, target, backend, dtype)


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # log(0), clamped to -100
def test_bce_saturates_like_pytorch_and_rejects_bad_input(backend):
    x = np.array([0.0, 1.0, 0.5, 1e-50])
    y = np.array([1.0, 0.0, 0.5, 1.0])
    out = F.binary_cross_entropy(hw.Tensor(x, backend=backend), hw.Tensor(y, backend=backend), reduction="none")
    ref = torch.nn.functional.binary_cross_entropy(torch.from_numpy(x), torch.from_numpy(y), reduction="none")
    assert_close(out, ref, 1e-12)  # log clamped at -100
    with pytest.raises(ValueError, match="between 0 and 1"), _host_checks(backend):
        F.binary_cross_entropy(hw.Tensor([1.5], backend=backend), hw.Tensor([1.0], backend=backend))
    with pytest.raises(ValueError, match="differs from input shape"):
        F.mse_loss(hw.zeros(3, 1, backend=backend), hw.zeros(3, backend=backend))


def test_loss_weights_are_buffers_and_follow_to(backend):
    loss = nn.CrossEntropyLoss(weight=hw.tensor([1.0, 2.0]))
    assert list(loss.state_dict()) == list(torch.nn.CrossEntropyLoss(weight=torch.ones(2)).state_dict())
    loss.to(backend, "float64")
    assert loss.weight.backend == backend and loss.weight.dtype == np.float64


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_rows_second_order_and_retained_graph(backend, reduction, weighted):
    """(N, C) logits with integer labels take the one-node path: its create_graph backward is
    differentiable again, and a retained graph gives the same gradient twice."""
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((4, 5))
    labels = np.array([0, 4, -100, 2])
    w = rng.uniform(0.5, 2.0, 5) if weighted else None

    def ours(t):
        return F.cross_entropy(t, hw.Tensor(labels, backend=backend), reduction=reduction,
                               weight=None if w is None else hw.Tensor(w, backend=backend))

    def theirs(t):
        return torch.nn.functional.cross_entropy(t, torch.from_numpy(labels), reduction=reduction,
                                                 weight=None if w is None else torch.from_numpy(w))

    assert ours(hw.Tensor(logits, backend=backend, requires_grad=True))._ctx.name == "CrossEntropyRows"
    compare_with_torch(ours, theirs, [logits], backend)
    compare_second_order(ours, theirs, [logits], backend)
    x = hw.Tensor(logits, backend=backend, requires_grad=True)
    loss = ours(x).sum()
    loss.backward(retain_graph=True)
    first = x.grad.numpy().copy()
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * first, rtol=1e-12)


def test_bce_of_a_saturated_sigmoid_has_torch_finite_gradient(backend):
    # sigmoid(20) is exactly 1.0 in float32: PyTorch clamps each log at -100 and its gradient is
    # (x - y) / max(x (1 - x), 1e-12), so one SGD step keeps the weights finite
    z = np.array([20.0, -20.0, 0.3, 20.0, -20.0], dtype=np.float32)
    y = np.array([1.0, 0.0, 1.0, 0.0, 1.0], dtype=np.float32)
    for reduction in ("none", "mean", "sum"):
        compare_with_torch(lambda t: hw.nn.BCELoss(reduction=reduction)(t.sigmoid(), hw.Tensor(y, backend=backend)),
                           lambda t: torch.nn.BCELoss(reduction=reduction)(t.sigmoid(), torch.from_numpy(y)),
                           [z], backend, rtol=1e-6)
    # the target's gradient too (log(1 - x) - log(x), unclamped, as in PyTorch)
    x = np.array([0.2, 0.5, 0.9], dtype=np.float64)
    compare_with_torch(lambda a, b: hw.nn.functional.binary_cross_entropy(a, b, weight=hw.Tensor([1.0, 2.0, 3.0], dtype="float64")),
                       lambda a, b: torch.nn.functional.binary_cross_entropy(a, b, weight=torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)),
                       [x, np.array([0.0, 0.3, 1.0])], backend)
    layer = hw.nn.Linear(1, 1)
    layer.weight.data[...] = 20.0
    layer.bias.data[...] = 0.0
    opt = hw.optim.SGD(layer.parameters(), lr=0.1)
    hw.nn.BCELoss()(layer(hw.ones(4, 1)).sigmoid(), hw.zeros(4, 1)).backward()
    opt.step()
    assert np.isfinite(layer.weight.numpy()).all() and np.isfinite(layer.bias.numpy()).all()


def test_bce_second_order_matches_torch(backend):
    x = np.array([0.2, 0.5, 0.9])
    y = np.array([0.0, 0.3, 1.0])
    compare_second_order(lambda t: hw.nn.functional.binary_cross_entropy(t, hw.Tensor(y, backend=backend), reduction="none"),
                         lambda t: torch.nn.functional.binary_cross_entropy(t, torch.from_numpy(y), reduction="none"),
                         [x], backend)


def test_cross_entropy_float_labels_say_labels_must_be_integers():
    logits = hw.randn(4, 10)
    for loss in (lambda t: hw.nn.CrossEntropyLoss()(logits, t), lambda t: F.cross_entropy(logits, t)):
        with pytest.raises(TypeError, match="class labels must be integers"):
            loss(hw.Tensor([1.0, 2.0, 3.0, 0.0]))
    with pytest.raises(TypeError, match="integer class labels"):
        F.nll_loss(logits.log_softmax(1), hw.Tensor([1.0, 2.0, 3.0, 0.0]))
    # probability targets of the input's shape are PyTorch's other form and work
    probs = np.random.default_rng(0).dirichlet(np.ones(10), size=4).astype(np.float32)
    ours = F.cross_entropy(logits, hw.Tensor(probs))
    theirs = torch.nn.functional.cross_entropy(torch.from_numpy(logits.numpy()), torch.from_numpy(probs))
    np.testing.assert_allclose(ours.item(), theirs.item(), rtol=1e-5)
    with pytest.raises(ValueError, match="differs from input shape"):
        F.cross_entropy(logits, hw.Tensor(probs[:, :5]))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("kind,param", [("huber", 1.0), ("huber", 0.3), ("smooth_l1", 1.0), ("smooth_l1", 0.5), ("smooth_l1", 0.0)])
@given(data=st.data())
def test_huber_and_smooth_l1_match_torch(backend, kind, param, reduction, data):
    from hypothesis.extra import numpy as hnp
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))
    x, y = (data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-3, 3, allow_nan=False))) for _ in range(2))
    y = np.where(np.isclose(np.abs(x - y), param), y + 0.1, y)  # off the kink
    if kind == "huber":
        ours, theirs = hw.nn.HuberLoss(reduction, delta=param), torch.nn.HuberLoss(reduction=reduction, delta=param)
    else:
        ours, theirs = hw.nn.SmoothL1Loss(reduction=reduction, beta=param), torch.nn.SmoothL1Loss(reduction=reduction, beta=param)
    compare_with_torch(ours, theirs, [x, y], backend)
