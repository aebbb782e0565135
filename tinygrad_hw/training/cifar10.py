"""The CIFAR-10 recipes of ``examples/cifar_cnn.py``: the presets, the :class:`Config` that
holds one run's settings, and the factories that turn a Config into data loaders, a network, an
optimizer and a schedule. The benchmarks time the presets' networks at the presets' batch sizes.

* ``baseline``: the original exercise (docs/origin.md): :func:`tinygrad_hw.models.small_cnn`, its
  four augmentations (horizontal and vertical flips, rotation by 0-180 degrees, 10% grayscale),
  normalisation to [-1, 1], batch 4, Adam at 1e-3, 2 epochs, the running loss printed every 2000
  batches.
* ``fast`` (the default): :func:`tinygrad_hw.models.fast_cnn` with its first convolution
  initialised by patch whitening, random crops and flips, label smoothing 0.2, batch 256, SGD
  with Nesterov momentum under a one-cycle schedule (peak 0.2), weight decay 5e-4 on the weights
  only, 7 epochs, flip averaging at test time.
* ``resnet9``: the same recipe with the wider :func:`tinygrad_hw.models.resnet9`, for a GPU.
"""
from __future__ import annotations

import dataclasses

import numpy

from .. import distributed as dist
from .. import models, optim
from ..backend import get_backend, manual_seed
from ..data import CIFAR10_MEAN, CIFAR10_STD, DataLoader, DistributedSampler, derived_seed
from ..data import transforms as T

__all__ = ["Config", "PRESETS", "PRESET_ALIASES", "preset", "train_transform", "normalization",
           "make_loaders", "make_model", "make_optimizer", "make_scheduler", "WHITEN_IMAGES"]

WHITEN_IMAGES = 2000  # training images whose 3x3 patches initialise the first convolution


@dataclasses.dataclass
class Config:
    """Everything that defines a run (saved in checkpoints and metrics.json); the defaults are
    the ``fast`` preset's."""

    preset: str = "fast"
    model: str = "fast_cnn"
    widths: tuple | None = (32, 64, 128)
    epochs: int = 7
    batch_size: int = 256
    optimizer: str = "sgd"
    lr: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    label_smoothing: float = 0.2
    augment: str = "crop_flip"
    crop_padding: int = 2
    normalize: str = "cifar"
    tta: bool = True
    log_every: int = 0
    whiten: bool = True
    stem: int | None = None
    seed: int = 0
    limit: int | None = None
    test_limit: int | None = None
    dtype: str = "float32"
    eval_batch_size: int = 500
    backend: str = dataclasses.field(default_factory=lambda: get_backend().name)  # the default backend

    def model_kwargs(self) -> dict:
        return models.size_kwargs(self.model, self.widths, self.stem)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "widths": None if self.widths is None else list(self.widths)}

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        d = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}
        if d.get("widths") is not None:
            d["widths"] = tuple(int(w) for w in d["widths"])
        return cls(**d)


PRESETS = {
    "baseline": dict(model="small_cnn", widths=None, epochs=2, batch_size=4, optimizer="adam",
                     lr=1e-3, weight_decay=0.0, schedule="constant", label_smoothing=0.0,
                     augment="exercise", crop_padding=0, normalize="half", tta=False,
                     log_every=2000, whiten=False),
    "fast": {},
    "resnet9": dict(model="resnet9", widths=(64,), epochs=24, batch_size=512, lr=0.4, crop_padding=4),
}
PRESET_ALIASES = {"seed": "baseline", "vgg": "resnet9"}  # the names of earlier versions


def preset(name: str, **overrides) -> Config:
    """The Config of preset ``name`` (or an earlier name of it), with ``overrides``."""
    name = PRESET_ALIASES.get(name, name)
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: expected one of {sorted(PRESETS)}")
    return Config(preset=name, **{**PRESETS[name], **overrides})


MIN_STEPS_PER_EPOCH = 16  # fewer SGD steps than this and a short run learns nothing


def batch_size_for(batch_size: int, train_images: int) -> int:
    """The batch size for a run on ``train_images`` images: ``batch_size``, or for a tiny run
    (``--limit 500``) the largest power of two that still gives at least 16 steps per epoch, and
    at least 32. The fast preset's batch of 256 gives 2 steps per epoch on 500 images, and 2
    epochs of that predict one class for every image (8.6% test accuracy); batch 32 with the
    same learning rate reaches 26% (README, "Set up and run")."""
    if train_images >= MIN_STEPS_PER_EPOCH * batch_size:
        return batch_size
    fit = max(int(train_images) // MIN_STEPS_PER_EPOCH, 1)
    return min(batch_size, max(32, 1 << (fit.bit_length() - 1)))


def train_transform(cfg: Config):
    """The batched augmentation of the training images (None: no augmentation)."""
    if cfg.augment in ("exercise", "assignment"):  # torchvision's defaults: nearest, black fill
        return T.Compose([T.RandomHorizontalFlip(0.5), T.RandomVerticalFlip(0.5),
                          T.RandomRotation((0.0, 180.0), interpolation="nearest"), T.RandomGrayscale(0.1)])
    if cfg.augment == "crop_flip":
        crop = [T.RandomCrop(32, padding=cfg.crop_padding, padding_mode="reflect")] if cfg.crop_padding else []
        return T.Compose(crop + [T.RandomHorizontalFlip(0.5)])
    return None


def normalization(cfg: Config):
    """(mean, std) per channel: CIFAR-10's statistics, or 0.5/0.5 (to [-1, 1])."""
    return (CIFAR10_MEAN, CIFAR10_STD) if cfg.normalize == "cifar" else ((0.5,) * 3, (0.5,) * 3)


def _rank_and_world():
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def make_loaders(cfg: Config, train_data, test_data):
    """Shuffled, augmented training batches and ordered test batches, both normalised.

    With several ranks each rank's training loader serves its share of one shuffle common to all
    ranks (a :class:`~tinygrad_hw.data.DistributedSampler`), ``cfg.batch_size`` images a batch
    (the global batch is that times the ranks), augmented from its own random stream."""
    mean, std = normalization(cfg)
    common = dict(backend=cfg.backend, mean=mean, std=std, dtype=cfg.dtype, prefetch=2)
    rank, world = _rank_and_world()
    if world == 1:
        order = dict(shuffle=True, seed=derived_seed(cfg.seed, 1))
    else:
        order = dict(sampler=DistributedSampler(len(train_data[1]), world, rank, shuffle=True,
                                                seed=derived_seed(cfg.seed, 1)),
                     seed=derived_seed(cfg.seed, 1, rank))
    return (DataLoader(*train_data, batch_size=cfg.batch_size, transform=train_transform(cfg),
                       **order, **common),
            DataLoader(*test_data, batch_size=cfg.eval_batch_size, shuffle=False, seed=0, **common))


def make_model(cfg: Config, train_images=None):
    """The network, initialised from ``cfg.seed``; with ``cfg.whiten`` its first convolution
    starts from the principal directions of the training images' 3x3 patches. With several
    ranks the library's generators (dropout) are then reseeded per rank."""
    manual_seed(cfg.seed)
    model = models.build(cfg.model, **cfg.model_kwargs())
    if cfg.whiten and train_images is not None:
        mean, std = normalization(cfg)
        x = numpy.asarray(train_images[:WHITEN_IMAGES], dtype=numpy.float64) / 255.0
        models.whiten_first_conv(model, (x - numpy.reshape(mean, (1, 3, 1, 1))) / numpy.reshape(std, (1, 3, 1, 1)))
    rank, world = _rank_and_world()
    if world > 1:  # the same model on every rank, then a dropout stream of each rank's own
        manual_seed(derived_seed(cfg.seed, 2, rank))
    return model.to(cfg.backend, cfg.dtype)


def make_optimizer(cfg: Config, model):
    """Adam, SGD with Nesterov momentum, or SWATS; weight decay on conv and linear weights only
    (decaying BatchNorm's scale and shift or the biases only slows a short run down)."""
    params = model.parameters()
    if cfg.weight_decay:
        weights = [p for p in model.parameters() if p.ndim > 1]
        others = [p for p in model.parameters() if p.ndim <= 1]
        params = [{"params": weights, "weight_decay": cfg.weight_decay}] + ([{"params": others, "weight_decay": 0.0}] if others else [])
    if cfg.optimizer == "adam":
        return optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    if cfg.optimizer == "swats":
        return optim.SWATS(params, lr=cfg.lr)
    return optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


def make_scheduler(cfg: Config, optimizer, steps_per_epoch: int):
    """One-cycle per batch (warm-up over the first quarter, then cosine annealing), or None."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule != "onecycle" or total < 4:  # too short to warm up (OneCycleLR divides by zero)
        return None
    return optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, total_steps=total, pct_start=max(0.25, 2.0 / total), div_factor=10.0,
        final_div_factor=100.0, cycle_momentum=cfg.optimizer == "sgd" and cfg.momentum > 0,
        base_momentum=0.85, max_momentum=0.95)
