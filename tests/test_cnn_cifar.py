"""Whole small CNNs on a batch of real CIFAR-10 images: the same weights in tinygrad_hw and
PyTorch give the same loss and the same gradient for every parameter (float64 against PyTorch
< 1e-9; float32 against the float64 result of the same network < 1e-4, on a batch where every
max-pooling and ReLU choice agrees, see tinygrad_hw.testing), and BatchNorm's running statistics
evolve identically."""
import numpy as np
import pytest
import torch

import tinygrad_hw as hw
from helpers import normalized, read_cifar
from tinygrad_hw import models, nn
from tinygrad_hw.testing import assert_close

RTOL = {np.float64: 1e-9, np.float32: 1e-4}


@pytest.fixture(scope="module")
def cifar_batch():
    """64 real training images (N, 3, 32, 32) normalised per channel, and their labels: four
    candidate batches of 16 for the float32 tests."""
    images, labels = read_cifar("train", 7)
    return normalized(images[:64]), labels[:64]


def small_cnn(lib, p=0.05):
    """The original exercise's CNN (tinygrad_hw.models.small_cnn) with dropout ``p``."""
    return models.small_cnn(lib, dropout=p)


def bn_net(lib):
    """Conv-BN-ReLU blocks (train mode), global average pooling and a linear head. The convolutions
    have no bias: before a train-mode BatchNorm its gradient is exactly zero (rounding noise only)."""
    return lib.Sequential(
        lib.Conv2d(3, 8, 3, padding=1, bias=False), lib.BatchNorm2d(8), lib.ReLU(), lib.MaxPool2d(2),
        lib.Conv2d(8, 16, 3, padding=1, bias=False), lib.BatchNorm2d(16), lib.ReLU(), lib.MaxPool2d(2),
        lib.Conv2d(16, 16, 3, padding=1, bias=False), lib.BatchNorm2d(16), lib.ReLU(),
        lib.AdaptiveAvgPool2d(1), lib.Flatten(), lib.Linear(16, 10))


def twin_models(make, dtype, backend):
    torch.manual_seed(0)
    theirs = make(torch.nn).to(torch.float64 if dtype == np.float64 else torch.float32)
    ours = make(nn).to(backend, dtype)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    return ours, theirs


def compare_step(ours, theirs, x, labels, dtype, backend, **loss_kwargs):
    """One forward/backward of cross-entropy on both; compare loss and all parameter gradients.
    float32 is judged against the float64 result of the same network; returns the loss, or None
    where a float32 pass routed a max-pooling window or ReLU differently from float64 (the
    caller then tries another batch)."""
    rtol = RTOL[dtype]
    if dtype == np.float32:
        result = hw.testing.compare_gradients(ours, theirs, x, labels, **loss_kwargs)
        if not result["routes_agree"]:
            return None
        assert result["loss"] < rtol, f"loss: relative error {result['loss']:.2e}"
        for name, err in result["grads"].items():
            assert err < rtol, (f"gradient of {name}: relative error {err:.2e} (PyTorch float32: "
                                f"{result['torch_grads'][name]:.2e})")
        return result["loss_value"]
    x = x.astype(dtype)
    loss = nn.CrossEntropyLoss(**loss_kwargs)(ours(hw.Tensor(x, backend=backend)), hw.Tensor(labels, backend=backend))
    ref = torch.nn.CrossEntropyLoss(**loss_kwargs)(theirs(torch.from_numpy(x)), torch.from_numpy(labels))
    assert loss.dtype == dtype
    assert_close(loss, ref, rtol, "loss")
    ours.zero_grad()
    theirs.zero_grad()
    loss.backward()
    ref.backward()
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert p.grad is not None, f"{name}: no gradient"
        assert_close(p.grad, theirs_params[name].grad, rtol, f"gradient of {name}")
    return loss.item()


def candidate_batches(cifar_batch, dtype):
    """float64: the first 16 images; float32: each batch of 16 in turn (see compare_step)."""
    x, labels = cifar_batch
    count = 1 if dtype == np.float64 else len(labels) // 16
    return [(x[i * 16:(i + 1) * 16], labels[i * 16:(i + 1) * 16]) for i in range(count)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_small_cnn_matches_pytorch_on_cifar(cifar_batch, backend, dtype):
    for x, labels in candidate_batches(cifar_batch, dtype):
        ours, theirs = twin_models(small_cnn, dtype, backend)
        ours.eval()  # dropout off
        theirs.eval()
        loss = compare_step(ours, theirs, x, labels, dtype, backend)
        if loss is None:
            continue
        assert 1.5 < loss < 3.5  # ~log(10) for a fresh network on real images
        ours_p0, theirs_p0 = twin_models(lambda lib: small_cnn(lib, p=0.0), dtype, backend)
        if compare_step(ours_p0.train(), theirs_p0.train(), x, labels, dtype, backend,
                        label_smoothing=0.1) is not None:
            return
    pytest.fail("no batch routes max-pooling and ReLU the same way in float32 and float64")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batchnorm_cnn_matches_pytorch_on_cifar(cifar_batch, backend, dtype):
    for x, labels in candidate_batches(cifar_batch, dtype):
        ours, theirs = twin_models(bn_net, dtype, backend)
        routed = True
        for step in range(2):  # train mode, batch statistics; running statistics follow PyTorch's
            half = slice(8 * step, 8 * step + 8)
            routed &= compare_step(ours, theirs, x[half], labels[half], dtype, backend) is not None
            theirs_state = theirs.state_dict()
            for name, value in ours.state_dict().items():
                assert_close(value, theirs_state[name], RTOL[dtype], f"state {name} after step {step + 1}")
        ours.eval()
        theirs.eval()
        routed &= compare_step(ours, theirs, x, labels, dtype, backend) is not None
        if routed:
            return
    pytest.fail("no batch routes max-pooling and ReLU the same way in float32 and float64")
