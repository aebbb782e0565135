"""Test helpers: real CIFAR-10 images for the tests that need them, and the example scripts
loaded as modules. (The comparisons with PyTorch are :mod:`tinygrad_hw.testing`.)"""
import io
import importlib.util
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tinygrad_hw.data import CIFAR10, CIFAR10_MEAN, CIFAR10_STD, CLASSES
from tinygrad_hw.data.cifar import locate

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str):
    """The example script ``examples/<name>.py`` as a module (loaded from its file: the examples
    are scripts, not an installed package)."""
    return load_file(EXAMPLES / f"{name}.py", f"example_{name}")


def load_file(path, name=None):
    """The Python file ``path`` as a module named ``name`` (default: its stem)."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def read_cifar(split: str, per_class: int, offset: int = 0):
    """``per_class`` real CIFAR-10 images of each class of ``split`` ('train' or 'test'), from
    position ``offset`` of each class, as (N, 3, 32, 32) uint8 with the classes interleaved
    (image i has label i % 10), and their labels. From an image-folder zip only those members
    are read; from other copies the split is loaded. Skips the test where no copy is found."""
    try:
        source = locate(download=False)
    except FileNotFoundError:
        pytest.skip("CIFAR-10 is not on this machine (see tinygrad_hw.data.CIFAR10)")
    order = [(label, i) for i in range(offset, offset + per_class) for label in range(len(CLASSES))]
    labels = np.array([label for label, _ in order], dtype=np.int64)
    if source.kind != "zip":
        data = CIFAR10(root=source.path, train=split == "train", download=False)
        first = {label: np.flatnonzero(data.labels == label) for label in range(len(CLASSES))}
        return data.images[[first[label][i] for label, i in order]], labels
    Image = pytest.importorskip("PIL.Image")
    with zipfile.ZipFile(source.path) as zf:
        by_class = {}
        for name in zf.namelist():
            parts = name.split("/")
            if len(parts) >= 3 and parts[-3] == split and parts[-1].endswith((".jpg", ".png")):
                by_class.setdefault(parts[-2], []).append(name)
        images = []
        for label, i in order:
            with Image.open(io.BytesIO(zf.read(sorted(by_class[CLASSES[label]])[i]))) as img:
                images.append(np.asarray(img.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1))
    return np.stack(images), labels


def normalized(images, mean=None, std=None):
    """uint8 images as float64, normalised per channel (CIFAR-10's statistics by default), C-contiguous."""
    mean = np.reshape(CIFAR10_MEAN if mean is None else mean, (1, 3, 1, 1))
    std = np.reshape(CIFAR10_STD if std is None else std, (1, 3, 1, 1))
    return np.ascontiguousarray((images.astype(np.float64) / 255.0 - mean) / std)


def on_cupy_standin() -> bool:
    """Whether ``cupy`` is the CPU stand-in of tests/cupy_standin (a test tool over NumPy), not
    CuPy: tests that need real CUDA (NCCL, kernels) skip there."""
    try:
        import cupy
    except ImportError:
        return False
    return bool(getattr(cupy, "STANDIN", False))


def second_order_against_torch(backend, hw_fn, torch_fn, arrays, seed, rtol=1e-9):
    """d/d(inputs, upstream) of sum_i <d f / d input_i (upstream), v_i>, ours against torch.

    The upstream gradient is itself a variable, so this exercises the backward of every op that
    the first backward recorded (for conv: Conv2dInputGrad and Conv2dWeightGrad in both inputs)."""
    import torch

    import tinygrad_hw as hw
    from tinygrad_hw.testing import assert_close

    rng = np.random.default_rng(seed)
    xs = [hw.Tensor(a, backend=backend, requires_grad=True) for a in arrays]
    ts = [torch.from_numpy(a.copy()).requires_grad_() for a in arrays]
    out, ref = hw_fn(*xs), torch_fn(*ts)
    up = rng.standard_normal(out.shape)
    u, ut = hw.Tensor(up, backend=backend, requires_grad=True), torch.from_numpy(up).requires_grad_()
    g_hw = hw.grad([out], xs, [u], create_graph=True)
    g_t = torch.autograd.grad([ref], ts, [ut], create_graph=True)
    for g in g_hw:
        assert g.requires_grad, "create_graph=True gave a gradient with no graph"
    vs = [rng.standard_normal(a.shape) for a in arrays]
    s_hw = sum((g * hw.Tensor(v, backend=backend)).sum() for g, v in zip(g_hw, vs))
    s_t = sum((g * torch.from_numpy(v)).sum() for g, v in zip(g_t, vs))
    gg_hw = hw.grad([s_hw], xs + [u], allow_unused=True)
    gg_t = torch.autograd.grad([s_t], ts + [ut], allow_unused=True)
    for i, (a, b) in enumerate(zip(gg_hw, gg_t)):
        shape = up.shape if i == len(arrays) else arrays[i].shape
        a = np.zeros(shape) if a is None else a.numpy()
        b = np.zeros(shape) if b is None else b.detach().numpy()
        assert_close(a, b, rtol, f"second-order gradient {i}")
