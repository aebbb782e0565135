"""The benchmark's networks: builders of :mod:`tinygrad_hw.models` for both libraries, and the
batch sizes they are timed at.

``fast_cnn`` is the CIFAR-10 example's ``fast`` preset (:mod:`tinygrad_hw.training.cifar10`):
its network, timed at its training batch size. The benchmark trains every net the same way (cross-entropy, SGD with momentum 0.9),
not with the preset's own recipe (label smoothing, weight decay, schedule).
"""
from __future__ import annotations

from tinygrad_hw import models
from tinygrad_hw.training import cifar10

FAST = cifar10.preset("fast")
FAST_PRESET_BATCH = FAST.batch_size

DESCRIPTIONS = {
    "small_cnn": "the original exercise's CNN (tinygrad_hw.models.small_cnn): conv 3->6->12->24 "
                 "(3x3, pad 1, ReLU, max-pool 2), dropout 0.05, dense 512-256-10",
    "vgg_style": "VGG-style (tinygrad_hw.models.vgg_style): conv 3->32->32, pool, 32->64->64, pool, "
                 "64->128->128, pool (3x3, pad 1, ReLU), Linear 2048-256, ReLU, Dropout 0.5, Linear 256-10",
    "fast_cnn": "the CIFAR-10 example's `fast` preset network (tinygrad_hw.models.fast_cnn)",
    "bn_cnn": "conv-BatchNorm-ReLU blocks (tinygrad_hw.models.bn_cnn): 3->32, pool, 32->64, pool, "
              "64->128, pool, 128->256 (3x3, pad 1, no bias), Linear 4096-10",
    "resnet9": "the CIFAR-10 example's `resnet9` preset network (tinygrad_hw.models.resnet9, width 64)",
}


def _kwargs(kind):
    return FAST.model_kwargs() if kind == models.canonical_name(FAST.model) else {}


def ours_builder(kind):
    """A no-argument function building the tinygrad_hw net ``kind``."""
    return lambda: models.build(kind, **_kwargs(kind))


def torch_builder(kind):
    """A no-argument function building the PyTorch twin of net ``kind``."""
    import torch
    return lambda: models.build(kind, torch.nn, **_kwargs(kind))
