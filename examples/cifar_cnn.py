"""Train a CNN on CIFAR-10 with tinygrad_hw.

    python examples/cifar_cnn.py                      # --preset fast: the CPU recipe (~16 min, 2 cores)
    python examples/cifar_cnn.py --preset baseline    # the original exercise's net and recipe (~3 min)
    python examples/cifar_cnn.py --limit 500 --epochs 2 --out runs/quick   # a quick check
    python examples/cifar_cnn.py --resume --out runs/cifar_fast            # continue a run
    python examples/cifar_cnn.py --check-gradients    # loss and gradients against PyTorch

Presets (every value can be overridden on the command line):

* ``baseline``: the original exercise (docs/origin.md): :func:`tinygrad_hw.models.small_cnn`,
  its four augmentations (horizontal and vertical flips, rotation by 0-180 degrees, 10%
  grayscale), normalisation to [-1, 1], batch 4, Adam at 1e-3, 2 epochs, the running loss
  printed every 2000 batches.
* ``fast`` (default): :func:`tinygrad_hw.models.fast_cnn` with its first convolution initialised
  by patch whitening, random crops and flips, label smoothing 0.2, batch 256, SGD with Nesterov
  momentum under a one-cycle schedule (peak 0.2), weight decay 5e-4 on the weights only, 7
  epochs, flip averaging at test time.
* ``resnet9``: the same recipe with the wider :func:`tinygrad_hw.models.resnet9`, for a GPU.

Each epoch writes a checkpoint to ``--out``; at the end the model is saved, loaded into a fresh
network and that copy is evaluated on the test set (overall and per-class accuracy, confusion
matrix), and ``metrics.json`` and plots are written. The test set draws the per-epoch curves and
gives the final numbers; nothing is selected on it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy

import tinygrad_hw as hw
from tinygrad_hw import models, nn, training
from tinygrad_hw.data import CIFAR10, CIFAR10_MEAN, CIFAR10_STD, CLASSES, DataLoader, derived_seed, fixed_subset
from tinygrad_hw.data import transforms as T

SHORT_CLASSES = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CHECKPOINT, FINAL_MODEL = "checkpoint.ckpt", "model.ckpt"
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
    backend: str = "numpy"

    NOT_TRAINING = ("backend",)  # may differ between an interrupted run and its resumption

    def model_kwargs(self) -> dict:
        """The builder's keyword arguments: ``widths`` (and ``stem``) in each net's terms."""
        if self.widths is None:
            return {}
        name = models.canonical_name(self.model)
        if name == "small_cnn":
            return {"channels": tuple(self.widths)}
        if name == "resnet9":
            return {"width": int(self.widths[0])}
        return {"widths": tuple(self.widths), **({} if self.stem is None else {"stem": int(self.stem)})}

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


def make_loaders(cfg: Config, train_data, test_data):
    """Shuffled, augmented training batches and ordered test batches, both normalised."""
    mean, std = normalization(cfg)
    common = dict(backend=cfg.backend, mean=mean, std=std, dtype=cfg.dtype, prefetch=2)
    return (DataLoader(*train_data, batch_size=cfg.batch_size, shuffle=True, seed=derived_seed(cfg.seed, 1),
                       transform=train_transform(cfg), **common),
            DataLoader(*test_data, batch_size=cfg.eval_batch_size, shuffle=False, seed=0, **common))


def make_model(cfg: Config, train_images=None):
    """The network, initialised from ``cfg.seed``; with ``cfg.whiten`` its first convolution
    starts from the principal directions of the training images' 3x3 patches."""
    hw.manual_seed(cfg.seed)
    model = models.build(cfg.model, **cfg.model_kwargs())
    if cfg.whiten and train_images is not None:
        mean, std = normalization(cfg)
        x = numpy.asarray(train_images[:WHITEN_IMAGES], dtype=numpy.float64) / 255.0
        models.whiten_first_conv(model, (x - numpy.reshape(mean, (1, 3, 1, 1))) / numpy.reshape(std, (1, 3, 1, 1)))
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
        return hw.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    if cfg.optimizer == "swats":
        return hw.optim.SWATS(params, lr=cfg.lr)
    return hw.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


def make_scheduler(cfg: Config, optimizer, steps_per_epoch: int):
    """One-cycle per batch (warm-up over the first quarter, then cosine annealing), or None."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule != "onecycle" or total < 4:  # too short to warm up (OneCycleLR divides by zero)
        return None
    return hw.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, total_steps=total, pct_start=max(0.25, 2.0 / total), div_factor=10.0,
        final_div_factor=100.0, cycle_momentum=cfg.optimizer == "sgd" and cfg.momentum > 0,
        base_momentum=0.85, max_momentum=0.95)


def _log(*args):
    print(*args, flush=True)


def run(cfg: Config, out, train_data, test_data, *, resume=False, progress=True, stop_after=None,
        plots=True, log=_log) -> dict:
    """Train ``cfg`` on ``train_data`` = (images, labels), checkpointing each epoch to ``out``;
    then save, reload and evaluate the model and write metrics.json and plots."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    saved = training.load_checkpoint(out / CHECKPOINT) if resume else None
    if saved is not None:  # the checkpoint's settings win: the run continues as it started
        saved_cfg = dataclasses.replace(Config.from_dict(saved["config"]), backend=cfg.backend)
        differ = [f.name for f in dataclasses.fields(Config) if getattr(saved_cfg, f.name) != getattr(cfg, f.name)]
        if differ:
            log(f"resuming with the checkpoint's settings; ignoring the command line's {', '.join(differ)}")
        cfg = saved_cfg
    hw.set_default_dtype(cfg.dtype)
    model = make_model(cfg, None if saved is not None else train_data[0])
    train_loader, test_loader = make_loaders(cfg, train_data, test_data)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_scheduler(cfg, optimizer, len(train_loader))
    log(f"preset {cfg.preset}: {cfg.model} net ({models.count_parameters(model):,} parameters), "
        f"{len(train_data[1])} training / {len(test_data[1])} test images, {cfg.epochs} epochs of batch "
        f"{cfg.batch_size}, {cfg.optimizer} lr {cfg.lr} ({cfg.schedule}), backend {cfg.backend}, {cfg.dtype}")
    result = training.fit(model, optimizer, train_loader, test_loader,
                          nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing), epochs=cfg.epochs,
                          scheduler=scheduler, checkpoint=out / CHECKPOINT, config=cfg.to_dict(),
                          backend=cfg.backend, resume=saved, stop_after=stop_after, progress=progress,
                          log_every=cfg.log_every, log=log)
    if not result["finished"]:
        log(f"stopped after epoch {len(result['history']['epochs'])}; continue with --resume --out {out}")
        return {"finished": False, "config": cfg.to_dict(), "history": result["history"]}
    return finish(cfg, out, model, test_loader, result["history"], plots=plots, log=log)


def finish(cfg, out, model, test_loader, history, *, plots=True, log=_log) -> dict:
    """Save the model, load it into a fresh network, evaluate that copy, report and plot."""
    hw.save(model.state_dict(), out / FINAL_MODEL)
    fresh = models.build(cfg.model, **cfg.model_kwargs()).to(cfg.backend, cfg.dtype)
    fresh.load_state_dict(hw.load(out / FINAL_MODEL))
    log(f"saved the model to {out / FINAL_MODEL} and evaluated a fresh network loaded from it")
    plain = training.evaluate(fresh, test_loader)
    final = training.evaluate(fresh, test_loader, tta=True) if cfg.tta else plain
    log(training.classification_report(final, SHORT_CLASSES, plain if cfg.tta else None))
    metrics = {
        "finished": True, "config": cfg.to_dict(), "command": " ".join(sys.argv),
        "test_accuracy": final["accuracy"], "test_accuracy_no_tta": plain["accuracy"],
        "test_loss": final["loss"], "per_class_accuracy": dict(zip(CLASSES, final["per_class"])),
        "confusion_matrix": final["confusion"], "classes": list(CLASSES),
        "train_seconds": sum(e["train_seconds"] for e in history["epochs"]),
        "wall_seconds": history["wall_seconds"], "history": history["epochs"],
        "loss_trace": history["trace"], "machine": training.machine(),
        "parameters": models.count_parameters(fresh)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    log(f"wrote {out / 'metrics.json'}; {len(history['epochs'])} epochs, {metrics['train_seconds']:.0f} s "
        f"of training, {history['wall_seconds']:.0f} s in all")
    if plots:
        written = training.plot_run(out, metrics, SHORT_CLASSES, log=log)
        if written:
            log("plots: " + ", ".join(str(p) for p in written))
    return metrics


def check_gradients(cfg: Config, test_data, batch: int = 16, log=_log) -> dict:
    """``--check-gradients``: the baseline and fast networks against PyTorch on the user's test
    images (see :func:`tinygrad_hw.testing.check_networks`)."""
    mean, std = normalization(cfg)
    x = (test_data[0].astype(numpy.float64) / 255.0 - numpy.reshape(mean, (1, 3, 1, 1))) / numpy.reshape(std, (1, 3, 1, 1))
    builds = {}
    for name in ("small_cnn", "fast_cnn"):
        kwargs = cfg.model_kwargs() if name == models.canonical_name(cfg.model) else {}
        builds[name] = lambda lib, name=name, kwargs=kwargs: models.build(name, lib, **kwargs)
    return hw.testing.check_networks(builds, numpy.ascontiguousarray(x), test_data[1], batch,
                                     cfg.label_smoothing, log=log)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS) + sorted(PRESET_ALIASES), default="fast")
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    for flag, kind in (("--epochs", int), ("--batch-size", int), ("--lr", float), ("--momentum", float),
                       ("--weight-decay", float), ("--label-smoothing", float), ("--crop-padding", int),
                       ("--stem", int), ("--log-every", int)):
        p.add_argument(flag, type=kind)
    p.add_argument("--optimizer", choices=("adam", "sgd", "swats"))
    p.add_argument("--schedule", choices=("onecycle", "constant"))
    p.add_argument("--augment", choices=("exercise", "crop_flip", "none"))
    p.add_argument("--widths", type=lambda text: tuple(int(w) for w in text.split(",")),
                   help="channels, comma separated: fast_cnn's three blocks, small_cnn's convs, resnet9's base")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="average the predictions of each test image and its mirror image")
    p.add_argument("--whiten", action=argparse.BooleanOptionalAction, default=None,
                   help="start the first convolution from the training images' patch directions")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", help="where CIFAR-10 is (default: searched, see tinygrad_hw.data.CIFAR10)")
    p.add_argument("--out", help="output folder (default runs/cifar_<preset>)")
    p.add_argument("--limit", type=int, help="train on the first N images of a fixed shuffle")
    p.add_argument("--test-limit", type=int, help="evaluate on N test images (default: all, or --limit's N)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--stop-after", type=int, help="stop after N epochs, as if interrupted")
    p.add_argument("--blas-threads", default="auto", help="a number, or 'auto' (1 under batch 64)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--check-gradients", action="store_true",
                   help="compare loss and gradients of two networks with PyTorch, then exit")
    return p.parse_args(argv)


def config_from_args(args) -> Config:
    preset = PRESET_ALIASES.get(args.preset, args.preset)
    values = dict(PRESETS[preset])
    for key in ("epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "schedule", "label_smoothing",
                "widths", "augment", "crop_padding", "tta", "log_every", "whiten", "stem"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    return Config(preset=preset, seed=args.seed, limit=args.limit, test_limit=args.test_limit,
                  dtype=args.dtype, backend=args.backend, **values)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = config_from_args(args)
    # small batches: matrices too small to share between cores, and a multi-threaded OpenBLAS
    # loses milliseconds per call synchronising its threads (3.5x slower at batch 4 on 2 cores)
    threads = 1 if args.blas_threads == "auto" and cfg.batch_size < 64 else args.blas_threads
    if threads != "auto" and hw.kernels.parallel.limit_blas_threads(int(threads)):
        _log(f"BLAS limited to {threads} thread(s) (--blas-threads)")
    if args.backend != "numpy":
        hw.set_backend(args.backend)
    out = Path(args.out or f"runs/cifar_{cfg.preset}")
    start = time.perf_counter()
    train, test = CIFAR10(root=args.data, train=True), CIFAR10(root=args.data, train=False)
    train_data = fixed_subset(train.images, train.labels, cfg.limit)
    test_data = fixed_subset(test.images, test.labels, cfg.limit if cfg.test_limit is None else cfg.test_limit)
    _log(f"data loaded in {time.perf_counter() - start:.1f} s")
    if args.check_gradients:
        return 0 if check_gradients(cfg, test_data)["ok"] else 1
    try:
        run(cfg, out, train_data, test_data, resume=args.resume, progress=not args.no_progress,
            stop_after=args.stop_after, plots=not args.no_plots)
    except training.NonFiniteLossError as exc:
        print(f"\nstopped: {exc}\nthe last good checkpoint (if an epoch finished) is {out / CHECKPOINT}",
              file=sys.stderr, flush=True)
        return 3
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue from the last finished epoch with: --resume --out {out}",
              file=sys.stderr, flush=True)
        return 130
    _log(f"total wall time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
