"""The benchmark's networks, as twin builders for tinygrad_hw and PyTorch.

``seed`` and ``fast`` come from the CIFAR-10 example (``examples/cifar_cnn.py`` and the
``examples/models.py`` it uses): ``fast`` is built from the example's ``fast`` preset (model and
widths), so the benchmark times exactly the network the example trains, at the preset's batch
size. ``vgg`` is the benchmark's VGG-style net, defined here: it is *not*
``examples.models.vgg_net`` (a ResNet-9-style GPU network).

The benchmark trains every net the same way (cross-entropy, SGD with momentum 0.9), not with the
preset's own recipe (label smoothing, weight decay, schedule): only the network and the batch
size come from the preset.
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples import cifar_cnn  # noqa: E402

models = cifar_cnn.models  # the very module the example builds its nets from

DESCRIPTIONS = {
    "seed": "the assignment's CNN (examples.models.seed_net): conv 3->6->12->24 (3x3, pad 1, ReLU, "
            "max-pool 2), dropout 0.05, dense 512-256-10",
    "vgg": "VGG-style: conv 3->32->32, pool, 32->64->64, pool, 64->128->128, pool (3x3, pad 1, ReLU), "
           "Linear 2048-256, ReLU, Dropout 0.5, Linear 256-10",
    "fast": "the CIFAR-10 example's `fast` preset network (examples.models.fast_net)",
}


def vgg_style_net(lib=None):
    """The benchmark's VGG-style CNN, built from ``lib`` (tinygrad_hw.nn by default, or torch.nn)."""
    if lib is None:
        from tinygrad_hw import nn as lib
    layers, cin = [], 3
    for width in (32, 64, 128):
        layers += [lib.Conv2d(cin, width, 3, padding=1), lib.ReLU(),
                   lib.Conv2d(width, width, 3, padding=1), lib.ReLU(), lib.MaxPool2d(2)]
        cin = width
    layers += [lib.Flatten(), lib.Linear(128 * 4 * 4, 256), lib.ReLU(), lib.Dropout(0.5), lib.Linear(256, 10)]
    return lib.Sequential(*layers)


def fast_preset():
    """(model name, builder keyword arguments, batch size) of the example's ``fast`` preset."""
    cfg = cifar_cnn.Config(preset="fast", **cifar_cnn.PRESETS["fast"])
    return cfg.model, cfg.model_kwargs(), cfg.batch_size


def _fast_net(lib):
    name, kwargs, _ = fast_preset()
    return models.build(name, lib, **kwargs)


_BUILDERS = {"seed": models.seed_net, "fast": _fast_net, "vgg": vgg_style_net}


def ours_builder(kind):
    """A no-argument function building the tinygrad_hw net ``kind``."""
    from tinygrad_hw import nn
    return lambda: _BUILDERS[kind](nn)


def torch_builder(kind):
    """A no-argument function building the PyTorch twin of net ``kind``."""
    import torch
    return lambda: _BUILDERS[kind](torch.nn)


def fast_batch_size() -> int:
    """The training batch size of the CIFAR-10 example's ``fast`` preset."""
    return fast_preset()[2]
