"""The benchmark's networks: builders of :mod:`tinygrad_hw.models` for both libraries, and the
batch sizes they are timed at.

``fast_cnn`` is timed at the training batch of the CIFAR-10 example's ``fast`` preset, whose
network is ``fast_cnn`` with its default widths (tests/test_benchmarks_smoke.py checks that the
two agree). The benchmark trains every net the same way (cross-entropy, SGD with momentum 0.9),
not with the preset's own recipe (label smoothing, weight decay, schedule).
"""
from __future__ import annotations

from tinygrad_hw import models

FAST_PRESET_BATCH = 256  # examples/cifar_cnn.py --preset fast

DESCRIPTIONS = {
    "small_cnn": "the original exercise's CNN (tinygrad_hw.models.small_cnn): conv 3->6->12->24 "
                 "(3x3, pad 1, ReLU, max-pool 2), dropout 0.05, dense 512-256-10",
    "vgg_style": "VGG-style (tinygrad_hw.models.vgg_style): conv 3->32->32, pool, 32->64->64, pool, "
                 "64->128->128, pool (3x3, pad 1, ReLU), Linear 2048-256, ReLU, Dropout 0.5, Linear 256-10",
    "fast_cnn": "the CIFAR-10 example's `fast` preset network (tinygrad_hw.models.fast_cnn)",
}


def ours_builder(kind):
    """A no-argument function building the tinygrad_hw net ``kind``."""
    return lambda: models.build(kind)


def torch_builder(kind):
    """A no-argument function building the PyTorch twin of net ``kind``."""
    import torch
    return lambda: models.build(kind, torch.nn)
