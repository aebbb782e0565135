"""The example's networks (examples/models.py) in tinygrad_hw and in PyTorch, with the same
weights, on the same batch of real CIFAR-10 test images (no augmentation, dropout off, BatchNorm
in training mode): the loss and every parameter's gradient agree (float64 relative error < 1e-9,
float32 against the float64 result of the same network < 1e-4), and 20 training steps with SGD and with Adam keep the two trajectories together
(float64). The same comparison is what ``examples/cifar_cnn.py --check-gradients`` prints."""
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tinygrad_hw as hw  # noqa: E402
from tinygrad_hw.ops import conv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "tests"))
import cifar_cnn  # noqa: E402
import models  # noqa: E402
from test_cifar_example import read_cifar_zip  # noqa: E402

# The networks as the presets build them; the fast net also at the width of the tests.
NETS = [("seed", {}), ("fast", {}), ("fast", {"widths": (8, 16, 16)})]


@pytest.fixture(scope="module")
def real_images():
    """160 test images (16 per class), normalised with CIFAR-10's statistics, float64."""
    images, labels = read_cifar_zip("test", 16)
    x = images.astype(np.float64) / 255.0
    mean = np.reshape(cifar_cnn.CIFAR_MEAN, (1, 3, 1, 1))
    std = np.reshape(cifar_cnn.CIFAR_STD, (1, 3, 1, 1))
    return np.ascontiguousarray((x - mean) / std), labels


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
        result = cifar_cnn.compare_gradients(name, x[:16], y[:16], dtype, label_smoothing, **kwargs)
    else:
        result, tried = cifar_cnn.agreeing_batch(name, x, y, 16, label_smoothing, **kwargs)
        assert result is not None, f"none of {tried} batches routes the same way in float32 and float64"
    limit = hw.testing.LIMITS[dtype]

    def beside(key):
        torch_errors = result["torch_grads"]
        return "" if torch_errors is None else f" (PyTorch float32: {torch_errors[key]:.2e})"

    assert result["loss"] < limit, f"loss: relative error {result['loss']:.2e}"
    n_params = len(list(models.build(name, **kwargs).parameters()))
    assert len(result["grads"]) == n_params
    for pname, err in result["grads"].items():
        assert err < limit, f"{name} {pname}: relative error {err:.2e}{beside(pname)}"
    assert 1.0 < result["loss_value"] < 4.0  # a real loss of an untrained net on 10 classes


def test_float32_check_catches_a_one_percent_error_in_one_conv_gradient(real_images, monkeypatch):
    """Mutation check: the float32 comparison is tight enough that a backward that is wrong by
    1% in one convolution's weight gradient (the stem's) fails it, while the other parameters
    still pass."""
    x, y = real_images
    good, offset = cifar_cnn.agreeing_batch("fast", x, y, 16)
    assert good is not None and hw.testing.worst_error(good) < hw.testing.LIMITS["float32"]
    original = conv.Conv2dWeightGrad.forward

    def one_percent_off(self, inp, g):
        gw = original(self, inp, g)
        return gw * 1.01 if inp.shape[1] == 3 else gw  # the first convolution only

    monkeypatch.setattr(conv.Conv2dWeightGrad, "forward", one_percent_off)
    bad = cifar_cnn.compare_gradients("fast", x[offset:offset + 16], y[offset:offset + 16], "float32")
    assert bad["routes_agree"]
    assert bad["grads"]["0.weight"] > 0.005  # 1e-2 by construction, 50 times the limit
    assert all(err < hw.testing.LIMITS["float32"] for k, err in bad["grads"].items() if k != "0.weight")


def test_gradients_are_not_trivially_zero(real_images):
    """Guard against a comparison of two zero gradients: every parameter gets a real gradient."""
    x, y = real_images
    ours, _ = cifar_cnn.reference_pair("fast", "float64")
    loss = hw.nn.functional.cross_entropy(ours(hw.Tensor(x[:16])), hw.Tensor(y[:16]))
    loss.backward()
    for pname, p in ours.named_parameters():
        assert np.abs(p.grad.numpy()).max() > 1e-8, pname


def test_copy_weights_makes_the_same_function(real_images):
    x, _ = real_images
    for name, kwargs in NETS:
        ours, theirs = cifar_cnn.reference_pair(name, "float64", **kwargs)
        ours.eval()
        theirs.eval()
        a = ours(hw.Tensor(x[:8])).numpy()
        b = theirs(torch.from_numpy(x[:8])).detach().numpy()
        assert cifar_cnn.rel_err(a, b) < 1e-12, name


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.02), ("adam", 1e-3)])
@pytest.mark.parametrize("name,kwargs", [("seed", {}), ("fast", {"widths": (8, 16, 16)})])
def test_twenty_training_steps_stay_together(name, kwargs, optimizer, lr, real_images):
    x, y = real_images
    batches = [(x[i * 4:(i + 1) * 4], y[i * 4:(i + 1) * 4]) for i in range(20)]  # 20 distinct
    result = cifar_cnn.compare_trajectories(name, batches, optimizer, lr, "float64", **kwargs)
    assert result["loss"] < 1e-9, f"losses drifted apart: {result['loss']:.2e}"
    for pname, err in result["params"].items():
        assert err < 1e-9, f"{pname} after 20 {optimizer} steps: relative error {err:.2e}"
    # and the parameters did move: the comparison is not between two untouched copies
    assert result["moved"] > 1e-3


def test_check_gradients_command(real_images, capsys):
    """``--check-gradients`` on the user's images: both nets, both dtypes, a line per parameter."""
    x, y = real_images
    images = np.clip(np.round((x * np.reshape(cifar_cnn.CIFAR_STD, (1, 3, 1, 1))
                               + np.reshape(cifar_cnn.CIFAR_MEAN, (1, 3, 1, 1))) * 255), 0, 255)
    cfg = cifar_cnn.config_from_args(cifar_cnn.parse_args([]))
    lines = []
    result = cifar_cnn.check_gradients(cfg, (images.astype(np.uint8), y), batch=8,
                                       log=lines.append)
    assert result["ok"]
    text = "\n".join(lines)
    assert "seed net, float64" in text and "fast net, float32" in text
    assert "0.weight" in text and "all gradients agree with PyTorch" in text


def test_decisions_of_both_libraries_are_read_correctly(real_images):
    """The routing behind the float32 batch choice: in float64 both libraries make the same
    choice in every max-pooling window and ReLU; an exact tie routes to the window's first
    element, an all-zero window is marked -1, a ReLU records where its input is positive."""
    x, _ = real_images
    for name, kwargs in NETS:
        ours, theirs = cifar_cnn.reference_pair(name, "float64", **kwargs)
        a = hw.testing.decisions(ours, hw.Tensor(x[:16]))
        b = hw.testing.decisions(theirs, torch.from_numpy(x[:16]))
        kinds = [type(m).__name__ for m in ours if type(m).__name__ in ("MaxPool2d", "ReLU")]
        assert [k for k, _ in a] == [k for k, _ in b] == kinds
        for (_, ra), (_, rb) in zip(a, b):
            np.testing.assert_array_equal(ra, rb)
    pool = hw.nn.Sequential(hw.nn.MaxPool2d(2))
    tie = np.array([[[[1.0, 3.0], [3.0, 2.0]]]])
    zeros = np.zeros((1, 1, 2, 2))
    assert hw.testing.decisions(pool, hw.Tensor(tie))[0][1].ravel().tolist() == [1]
    assert hw.testing.decisions(pool, hw.Tensor(zeros))[0][1].ravel().tolist() == [-1]
    relu = hw.nn.Sequential(hw.nn.ReLU())
    assert hw.testing.decisions(relu, hw.Tensor([-1.0, 0.0, 2.0]))[0][1].tolist() == [False, False, True]
