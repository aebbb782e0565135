"""The CIFAR-10 networks of tinygrad_hw.models in tinygrad_hw and in PyTorch, with the same
weights, on the same real CIFAR-10 test images (no augmentation, dropout off, BatchNorm in
training mode): the loss and every parameter's gradient agree (float64 against PyTorch < 1e-9;
float32 against the float64 result of the same network < 1e-4), and 20 training steps with SGD
and with Adam keep the two trajectories together (float64). The same comparison is what
``examples/cifar_cnn.py --check-gradients`` prints (tinygrad_hw.testing.check_networks)."""
import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tinygrad_hw as hw  # noqa: E402
from helpers import load_example, normalized, read_cifar  # noqa: E402
from tinygrad_hw import models, testing  # noqa: E402
from tinygrad_hw.ops import conv  # noqa: E402

# The networks as the presets build them; fast_cnn also at the width of the tests.
NETS = [("small_cnn", {}), ("fast_cnn", {}), ("fast_cnn", {"widths": (8, 16, 16)})]


def build(name, **kwargs):
    return functools.partial(models.build, name, **kwargs)


@pytest.fixture(scope="module")
def real_images():
    """160 test images (16 per class), normalised with CIFAR-10's statistics, float64."""
    images, labels = read_cifar("test", 16)
    return normalized(images), labels


@pytest.fixture(autouse=True)
def _torch_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: threads only add overhead and noise
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name,kwargs", NETS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_loss_and_every_gradient_match_pytorch(name, kwargs, dtype, label_smoothing, real_images):
    """float64: ours against PyTorch's float64 result on the first 16 images. float32: ours
    against the float64 result of the same network, on the first 16-image batch where both
    libraries' float32 passes and the float64 pass route every max-pooling window and ReLU
    the same way (see tinygrad_hw.testing: a near-tie goes either way by one float32 rounding,
    depending on the BLAS kernel); PyTorch's own float32 error is in the message."""
    x, y = real_images
    if dtype == "float64":
        ours, theirs = testing.twins(build(name, **kwargs), dtype)
        result = testing.compare_gradients(ours, theirs, x[:16], y[:16], label_smoothing)
    else:
        result, tried = testing.agreeing_batch(build(name, **kwargs), x, y, 16, label_smoothing)
        assert result is not None, f"none of {tried} batches routes the same way in float32 and float64"
    limit = testing.LIMITS[dtype]

    def beside(key):
        torch_errors = result["torch_grads"]
        return "" if torch_errors is None else f" (PyTorch float32: {torch_errors[key]:.2e})"

    assert result["loss"] < limit, f"loss: relative error {result['loss']:.2e}"
    assert len(result["grads"]) == len(list(models.build(name, **kwargs).parameters()))
    for pname, err in result["grads"].items():
        assert err < limit, f"{name} {pname}: relative error {err:.2e}{beside(pname)}"
    assert 1.0 < result["loss_value"] < 4.0  # a real loss of an untrained net on 10 classes


def test_float32_check_catches_a_one_percent_error_in_one_conv_gradient(real_images, monkeypatch):
    """Mutation check: the float32 comparison is tight enough that a backward that is wrong by
    1% in one convolution's weight gradient (the stem's) fails it, while the other parameters
    still pass."""
    x, y = real_images
    good, offset = testing.agreeing_batch(build("fast_cnn"), x, y, 16)
    assert good is not None and testing.worst_error(good) < testing.LIMITS["float32"]
    original = conv.Conv2dWeightGrad.forward

    def one_percent_off(self, inp, g):
        gw = original(self, inp, g)
        return gw * 1.01 if inp.shape[1] == 3 else gw  # the first convolution only

    monkeypatch.setattr(conv.Conv2dWeightGrad, "forward", one_percent_off)
    ours, theirs = testing.twins(build("fast_cnn"), "float32")
    bad = testing.compare_gradients(ours, theirs, x[offset:offset + 16], y[offset:offset + 16])
    assert bad["routes_agree"]
    assert bad["grads"]["0.weight"] > 0.005  # 1e-2 by construction, 50 times the limit
    assert all(err < testing.LIMITS["float32"] for k, err in bad["grads"].items() if k != "0.weight")


def test_gradients_are_not_trivially_zero(real_images):
    """Guard against a comparison of two zero gradients: every parameter gets a real gradient."""
    x, y = real_images
    ours, _ = testing.twins(build("fast_cnn"), "float64")
    loss = hw.nn.functional.cross_entropy(ours(hw.Tensor(x[:16])), hw.Tensor(y[:16]))
    loss.backward()
    for pname, p in ours.named_parameters():
        assert np.abs(p.grad.numpy()).max() > 1e-8, pname


def test_copy_weights_makes_the_same_function(real_images):
    x, _ = real_images
    for name, kwargs in NETS:
        ours, theirs = testing.twins(build(name, **kwargs), "float64")
        ours.eval()
        theirs.eval()
        a = ours(hw.Tensor(x[:8])).numpy()
        b = theirs(torch.from_numpy(x[:8])).detach().numpy()
        assert testing.rel_err(a, b) < 1e-12, name


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.02), ("adam", 1e-3)])
@pytest.mark.parametrize("name,kwargs", [("small_cnn", {}), ("fast_cnn", {"widths": (8, 16, 16)})])
def test_twenty_training_steps_stay_together(name, kwargs, optimizer, lr, real_images):
    x, y = real_images
    batches = [(x[i * 4:(i + 1) * 4], y[i * 4:(i + 1) * 4]) for i in range(20)]  # 20 distinct
    result = testing.compare_trajectories(build(name, **kwargs), batches, optimizer, lr, "float64")
    assert result["loss"] < 1e-9, f"losses drifted apart: {result['loss']:.2e}"
    for pname, err in result["params"].items():
        assert err < 1e-9, f"{pname} after 20 {optimizer} steps: relative error {err:.2e}"
    # and the parameters did move: the comparison is not between two untouched copies
    assert result["moved"] > 1e-3


def test_check_gradients_command(real_images):
    """``--check-gradients`` on the user's images: both nets, both dtypes, a line per parameter."""
    cifar_cnn = load_example("cifar_cnn")
    images, labels = read_cifar("test", 16)
    cfg = cifar_cnn.config_from_args(cifar_cnn.parse_args([]))
    lines = []
    result = cifar_cnn.check_gradients(cfg, (images, labels), batch=8, log=lines.append)
    assert result["ok"]
    text = "\n".join(lines)
    on = cfg.backend  # the default backend: the GPU's kernels where TINYGRAD_HW_BACKEND=cupy
    assert f"small_cnn net on {on}, float64" in text and f"fast_cnn net on {on}, float32" in text
    assert "0.weight" in text and "PyTorch float32" in text and "all gradients agree with PyTorch" in text


def test_decisions_of_both_libraries_are_read_correctly(real_images):
    """The routing behind the float32 batch choice: in float64 both libraries make the same
    choice in every max-pooling window and ReLU; an exact tie routes to the window's first
    element, an all-zero window is marked -1, a ReLU records where its input is positive."""
    x, _ = real_images
    for name, kwargs in NETS:
        ours, theirs = testing.twins(build(name, **kwargs), "float64")
        a = testing.decisions(ours, hw.Tensor(x[:16]))
        b = testing.decisions(theirs, torch.from_numpy(x[:16]))
        kinds = [type(m).__name__ for m in ours if type(m).__name__ in ("MaxPool2d", "ReLU")]
        assert [k for k, _ in a] == [k for k, _ in b] == kinds
        for (_, ra), (_, rb) in zip(a, b):
            np.testing.assert_array_equal(ra, rb)
    pool = hw.nn.Sequential(hw.nn.MaxPool2d(2))
    tie = np.array([[[[1.0, 3.0], [3.0, 2.0]]]])
    zeros = np.zeros((1, 1, 2, 2))
    assert testing.decisions(pool, hw.Tensor(tie))[0][1].ravel().tolist() == [1]
    assert testing.decisions(pool, hw.Tensor(zeros))[0][1].ravel().tolist() == [-1]
    relu = hw.nn.Sequential(hw.nn.ReLU())
    assert testing.decisions(relu, hw.Tensor([-1.0, 0.0, 2.0]))[0][1].tolist() == [False, False, True]
