"""Train a CNN on CIFAR-10 with tinygrad_hw: the assignment's network and recipe, or a fast one.

    python examples/cifar_cnn.py                      # --preset fast: the best CPU recipe
    python examples/cifar_cnn.py --preset seed        # the assignment, reproduced
    python examples/cifar_cnn.py --limit 500 --epochs 2 --out runs/quick   # a quick check
    python examples/cifar_cnn.py --resume --out runs/cifar_fast            # continue a run
    python examples/cifar_cnn.py --check-gradients    # compare gradients with PyTorch

Presets (every value can be overridden on the command line):

* ``seed``: the assignment's network (:func:`models.seed_net`: three convolutions 3 -> 6 -> 12
  -> 24, dense 512-256-10, dropout 0.05), its four augmentations (horizontal and vertical flip,
  rotation by 0-180 degrees, 10% grayscale), normalisation to [-1, 1], batch 4, Adam with
  lr 0.001, 2 epochs, cross-entropy. The running loss is printed every 2000 batches.
* ``fast`` (default): :func:`models.fast_net` (BatchNorm; the first convolution initialised by
  patch whitening), random crops (2-pixel reflect padding) and horizontal flips, label
  smoothing 0.2, batch 256, SGD with Nesterov momentum under a one-cycle schedule (peak 0.2),
  weight decay 5e-4 on the conv/linear weights only, 7 epochs (about 16 minutes on 2 CPU
  cores), and test-time flip averaging.
* ``vgg``: the same recipe with the wider ResNet-9-style :func:`models.vgg_net`, for a GPU.

Every run shows a progress bar (loss, accuracy, images/s), writes an atomic checkpoint each
epoch to ``--out`` (model, optimizer, schedule, epoch, data-loader position, random states,
history), and at the end saves the model, loads it back into a fresh network, evaluates that
copy on the 10,000 test images (overall and per-class accuracy, confusion matrix) and writes
``metrics.json`` and PNG plots to ``--out``. ``--resume`` continues from the last checkpoint and
ends exactly where an uninterrupted run would (same seed, NumPy backend). A non-finite loss stops
the run with a message naming the step and, from a re-run of the batch under
``hw.detect_anomaly()``, the op that produced it; the last good checkpoint is kept.

The training loop is importable without side effects: :func:`train_one_epoch`,
:func:`evaluate`, :func:`make_optimizer`, :func:`make_loaders`, :func:`run`.

The test set serves for the per-epoch curves and the final numbers only; nothing is selected
on it (the final model is the last epoch's). No validation split is held out.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy

try:
    import tinygrad_hw as hw
except ImportError:  # run from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import tinygrad_hw as hw
from tinygrad_hw import nn
from tinygrad_hw.data import CLASSES, CIFAR10, DataLoader
from tinygrad_hw.data import transforms as T

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models  # noqa: E402  (examples/models.py, next to this file)

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
SHORT_CLASSES = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CHECKPOINT = "checkpoint.ckpt"
FINAL_MODEL = "model.ckpt"

PRESETS = {
    "seed": dict(model="seed", widths=None, epochs=2, batch_size=4, optimizer="adam", lr=1e-3,
                 momentum=0.9, weight_decay=0.0, schedule="constant", label_smoothing=0.0,
                 augment="assignment", crop_padding=0, normalize="half", tta=False,
                 log_every=2000, whiten=False, stem=None),
    "fast": dict(model="fast", widths=(32, 64, 128), epochs=7, batch_size=256, optimizer="sgd",
                 lr=0.2, momentum=0.9, weight_decay=5e-4, schedule="onecycle",
                 label_smoothing=0.2, augment="crop_flip", crop_padding=2, normalize="cifar",
                 tta=True, log_every=0, whiten=True, stem=None),
    "vgg": dict(model="vgg", widths=(64,), epochs=24, batch_size=512, optimizer="sgd", lr=0.4,
                momentum=0.9, weight_decay=5e-4, schedule="onecycle", label_smoothing=0.2,
                augment="crop_flip", crop_padding=4, normalize="cifar", tta=True, log_every=0,
                whiten=True, stem=None),
}


@dataclasses.dataclass
class Config:
    """Everything that defines a run (saved in checkpoints and metrics.json); the defaults are
    the ``fast`` preset's."""

    preset: str = "fast"
    model: str = "fast"
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

    # fields that may differ between an interrupted run and its resumption
    NOT_TRAINING = ("backend",)

    def model_kwargs(self) -> dict:
        if self.model == "seed":
            return {} if self.widths is None else {"channels": tuple(self.widths)}
        if self.model == "fast":
            kwargs = {} if self.widths is None else {"widths": tuple(self.widths)}
            if self.stem is not None:
                kwargs["stem"] = int(self.stem)
            return kwargs
        return {} if self.widths is None else {"width": int(self.widths[0])}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["widths"] = None if self.widths is None else list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        d = dict(d)
        if d.get("widths") is not None:
            d["widths"] = tuple(int(w) for w in d["widths"])
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message says where and, if found, which op."""


# ==================================================================================================
# data
# ==================================================================================================
def train_transform(cfg: Config):
    """The batched augmentation of the training images (None: no augmentation)."""
    if cfg.augment == "assignment":
        # The assignment's list, with torchvision's defaults (nearest-neighbour rotation, black
        # fill); "RandomRotation(0-180 degrees)" read as angles drawn from [0, 180].
        return T.Compose([T.RandomHorizontalFlip(0.5), T.RandomVerticalFlip(0.5),
                          T.RandomRotation((0.0, 180.0), interpolation="nearest"),
                          T.RandomGrayscale(0.1)])
    if cfg.augment == "crop_flip":
        layers = [T.RandomHorizontalFlip(0.5)]
        if cfg.crop_padding > 0:
            layers.insert(0, T.RandomCrop(32, padding=cfg.crop_padding, padding_mode="reflect"))
        return T.Compose(layers)
    if cfg.augment == "none":
        return None
    raise ValueError(f"unknown augmentation {cfg.augment!r}")


def normalization(cfg: Config):
    """(mean, std) per channel: CIFAR-10's statistics, or 0.5/0.5 (the PyTorch tutorial's [-1, 1])."""
    if cfg.normalize == "cifar":
        return CIFAR_MEAN, CIFAR_STD
    if cfg.normalize == "half":
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    raise ValueError(f"unknown normalisation {cfg.normalize!r}")


def subset(images, labels, limit):
    """The first ``limit`` images of a fixed shuffle (seed 0, whatever ``--seed`` is). The
    image-folder zip stores the classes one after another, so the literal first N images would
    all be airplanes; this keeps the classes mixed and is the same subset in every run."""
    if limit is None or limit >= len(labels):
        return images, labels
    order = numpy.random.default_rng(0).permutation(len(labels))[:int(limit)]
    order.sort()  # sorted reads from the memory-mapped cache
    return numpy.ascontiguousarray(images[order]), numpy.asarray(labels)[order]


def load_data(cfg: Config, root=None):
    """((train images, labels), (test images, labels)) as host arrays, ``--limit`` applied."""
    train, test = CIFAR10(root=root, train=True), CIFAR10(root=root, train=False)
    test_limit = cfg.test_limit if cfg.test_limit is not None else cfg.limit
    return (subset(train.images, train.labels, cfg.limit),
            subset(test.images, test.labels, test_limit))


def loader_seed(seed: int) -> int:
    return int(numpy.random.SeedSequence([int(seed), 1]).generate_state(1, numpy.uint64)[0] >> 1)


def make_loaders(cfg: Config, train_data, test_data, prefetch: int = 2):
    """(train loader, test loader) on ``cfg.backend``: shuffled and augmented training batches,
    test batches in order, both normalised."""
    mean, std = normalization(cfg)
    common = dict(backend=cfg.backend, mean=mean, std=std, dtype=cfg.dtype, prefetch=prefetch)
    train = DataLoader(train_data[0], train_data[1], batch_size=cfg.batch_size, shuffle=True,
                       seed=loader_seed(cfg.seed), transform=train_transform(cfg), **common)
    test = DataLoader(test_data[0], test_data[1], batch_size=cfg.eval_batch_size, shuffle=False,
                      seed=0, **common)
    return train, test


# ==================================================================================================
# model, optimizer, schedule
# ==================================================================================================
WHITEN_IMAGES = 2000


def make_model(cfg: Config, train_images=None):
    """The network of ``cfg`` on its backend and dtype, initialised from ``cfg.seed``; with
    ``cfg.whiten`` its first convolution starts from the principal directions of the 3x3
    patches of the first 2000 ``train_images`` (:func:`models.whiten_first_conv`)."""
    hw.manual_seed(cfg.seed)
    model = models.build(cfg.model, **cfg.model_kwargs())
    if cfg.whiten and train_images is not None:
        mean, std = normalization(cfg)
        x = numpy.asarray(train_images[:WHITEN_IMAGES], dtype=numpy.float64) / 255.0
        x = (x - numpy.reshape(mean, (1, 3, 1, 1))) / numpy.reshape(std, (1, 3, 1, 1))
        models.whiten_first_conv(model, x)
    return model.to(cfg.backend, cfg.dtype)


def param_groups(model, weight_decay: float):
    """Weight decay on conv/linear weights only: decaying BatchNorm's scale and shift or the
    biases only slows a short run down."""
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def make_optimizer(cfg: Config, model):
    """Adam (the assignment's betas, eps), SGD (Nesterov momentum) or SWATS."""
    groups = param_groups(model, cfg.weight_decay) if cfg.weight_decay else model.parameters()
    if cfg.optimizer == "adam":
        return hw.optim.Adam(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, amsgrad=False)
    if cfg.optimizer == "sgd":
        nesterov = cfg.momentum > 0
        return hw.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=nesterov)
    if cfg.optimizer == "swats":
        return hw.optim.SWATS(groups, lr=cfg.lr)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def make_scheduler(cfg: Config, optimizer, steps_per_epoch: int):
    """A per-batch schedule: one-cycle (warm-up over the first quarter, cosine annealing), or
    None for a constant rate."""
    if cfg.schedule == "constant":
        return None
    if cfg.schedule == "onecycle":
        cycle_momentum = cfg.optimizer == "sgd" and cfg.momentum > 0
        total = cfg.epochs * steps_per_epoch
        if total < 4:  # too short to warm up (OneCycleLR, like PyTorch's, divides by zero)
            return None
        # at least two warm-up steps, for the same reason
        pct_start = max(0.25, 2.0 / total)
        return hw.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=total, pct_start=pct_start,
            div_factor=10.0, final_div_factor=100.0, cycle_momentum=cycle_momentum,
            base_momentum=0.85, max_momentum=0.95)
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


# ==================================================================================================
# training and evaluation (reusable)
# ==================================================================================================
class _Progress:
    """A tqdm bar on a terminal where tqdm is installed; otherwise (a log file, no tqdm) a line
    every ``interval`` seconds."""

    def __init__(self, total, desc, enabled=True, log=print, interval=30.0):
        self.total, self.desc, self.enabled, self.bar, self.log = total, desc, enabled, None, log
        self.count, self.last_print, self.interval = 0, time.perf_counter(), interval
        if enabled and sys.stdout.isatty():
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc=desc, leave=True, dynamic_ncols=True,
                                mininterval=1.0, file=sys.stdout)
            except ImportError:
                self.bar = None

    def update(self, n, **stats):
        self.count += n
        if not self.enabled:
            return
        text = ", ".join(f"{k}={v}" for k, v in stats.items())
        if self.bar is not None:
            self.bar.update(n)
            now = time.perf_counter()
            if now - self.last_print > 1.0 or self.count == self.total:
                self.bar.set_postfix_str(text, refresh=False)
                self.last_print = now
        elif time.perf_counter() - self.last_print > self.interval or self.count == self.total:
            self.log(f"{self.desc}: {self.count}/{self.total} {text}")
            self.last_print = time.perf_counter()

    def write(self, line):
        if self.bar is not None:
            self.bar.write(line)
        else:
            self.log(line)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _nonfinite_parameters(model):
    bad = []
    for name, p in model.named_parameters():
        if not bool(p._be.xp.isfinite(p.data).all()):
            bad.append(name)
    return bad


def diagnose_nonfinite(model, loss_fn, x, y, step_desc: str) -> str:
    """Re-run one batch under ``hw.detect_anomaly()`` and describe where NaN/Inf first appears."""
    lines = [f"the training loss is not finite at {step_desc}."]
    if not bool(x._be.xp.isfinite(x.data).all()):
        lines.append("the input batch itself contains NaN or Inf: check the data")
    bad = _nonfinite_parameters(model)
    if bad:
        lines.append(f"parameters already non-finite before this batch: {', '.join(bad)} "
                     "(an earlier step's update blew up: lower --lr)")
    try:
        with hw.detect_anomaly():
            loss = loss_fn(model(x), y)
            loss.backward()
        lines.append("re-running the batch under hw.detect_anomaly() found no NaN/Inf "
                     "(the failure depends on random draws such as dropout)")
    except hw.AnomalyError as exc:
        lines.append(f"hw.detect_anomaly() on this batch: {exc}")
    finally:
        for p in model.parameters():
            p.grad = None
    return "\n".join(lines)


def train_one_epoch(model, loader, optimizer, scheduler, loss_fn, *, epoch: int = 1,
                    progress: bool = True, log_every: int = 0, trace_every: int = 0,
                    desc: str | None = None, log=print):
    """One pass over ``loader``: forward, loss, backward, optimizer step and (per batch)
    ``scheduler.step()`` when a scheduler is given.

    Returns ``{'loss', 'accuracy', 'images', 'steps', 'seconds', 'images_per_second', 'lr',
    'trace'}``: the mean training loss and accuracy over the epoch (of the augmented batches, in
    training mode), and ``trace``, the mean loss of every ``trace_every`` consecutive batches
    as (step within the epoch, loss) pairs. ``log_every`` > 0 prints the running loss every
    that many batches, as the PyTorch tutorial does (``[epoch, batch] loss: ...``), through the
    progress bar or, without one, through ``log``.
    Raises :class:`NonFiniteLossError` when the loss becomes NaN/Inf.
    """
    model.train()
    total = len(loader)
    bar = _Progress(total, desc or f"epoch {epoch}", progress, log)
    loss_sum = correct = seen = steps = 0
    running, window, window_steps = 0.0, 0.0, 0
    trace = []
    start = time.perf_counter()
    try:
        for x, y in loader:
            logits = model(x)
            loss = loss_fn(logits, y)
            value = loss.item()
            if not math.isfinite(value):
                optimizer.zero_grad()
                raise NonFiniteLossError(diagnose_nonfinite(
                    model, loss_fn, x, y, f"epoch {epoch}, batch {steps + 1} of {total}"))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            n = y.shape[0]
            steps += 1
            seen += n
            loss_sum += value * n
            correct += int((logits.data.argmax(1) == y.data).sum())
            running += value
            window += value
            window_steps += 1
            if log_every and steps % log_every == 0:
                bar.write(f"[{epoch}, {steps:5d}] loss: {running / log_every:.3f}")
                running = 0.0
            if trace_every and window_steps == trace_every:
                trace.append((steps, window / window_steps))
                window, window_steps = 0.0, 0
            elapsed = time.perf_counter() - start
            bar.update(1, loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}%",
                       img_s=f"{seen / max(elapsed, 1e-9):.0f}")
    finally:
        bar.close()
    if window_steps:
        trace.append((steps, window / window_steps))
    seconds = time.perf_counter() - start
    return {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1), "images": seen,
            "steps": steps, "seconds": seconds, "images_per_second": seen / max(seconds, 1e-9),
            "lr": [g["lr"] for g in optimizer.param_groups], "trace": trace}


def _flip(x):
    xp = x._be.xp
    return hw.Tensor(xp.ascontiguousarray(x.data[..., ::-1]))


def evaluate(model, loader, *, tta: bool = False, num_classes: int = 10, progress: bool = False):
    """Accuracy of ``model`` (in eval mode, no graph) on ``loader``.

    With ``tta`` the logits of each image and of its mirror image are averaged. Returns
    ``{'loss', 'accuracy', 'correct', 'total', 'per_class', 'confusion', 'seconds'}``: the mean
    cross-entropy (no label smoothing), overall and per-class accuracy, and the confusion matrix
    (rows: true class, columns: predicted class) as nested lists.
    """
    was_training = model.training
    model.eval()
    confusion = numpy.zeros((num_classes, num_classes), dtype=numpy.int64)
    loss_sum, total = 0.0, 0
    bar = _Progress(len(loader), "test", progress)
    start = time.perf_counter()
    try:
        with hw.no_grad():
            for x, y in loader:
                logits = model(x)
                if tta:
                    logits = (logits + model(_flip(x))) * 0.5
                loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum").item())
                pred = logits.numpy().argmax(1)
                truth = y.numpy()
                numpy.add.at(confusion, (truth, pred), 1)
                total += len(truth)
                bar.update(1)
    finally:
        bar.close()
        model.train(was_training)
    per_class_total = confusion.sum(1)
    correct = int(numpy.trace(confusion))
    return {"loss": loss_sum / max(total, 1), "accuracy": correct / max(total, 1),
            "correct": correct, "total": total,
            "per_class": [float(confusion[i, i] / per_class_total[i]) if per_class_total[i] else
                          float("nan") for i in range(num_classes)],
            "confusion": confusion.tolist(), "seconds": time.perf_counter() - start}


# ==================================================================================================
# checkpoints
# ==================================================================================================
def _random_state(backend_name: str):
    state = {"host": hw.backend.host_rng().bit_generator.state}
    be = hw.get_backend(backend_name)
    if be.name == "numpy":
        state["backend"] = be.rng.bit_generator.state
    return state


def _set_random_state(state, backend_name: str):
    hw.backend.host_rng().bit_generator.state = state["host"]
    be = hw.get_backend(backend_name)
    if be.name == "numpy" and "backend" in state:
        be.rng.bit_generator.state = state["backend"]


def save_checkpoint(path, cfg, model, optimizer, scheduler, train_loader, epoch, history):
    """Everything needed to continue after ``epoch``, written atomically (``hw.save``)."""
    hw.save({"config": cfg.to_dict(), "epoch": epoch, "model": model.state_dict(),
             "optimizer": optimizer.state_dict(),
             "scheduler": None if scheduler is None else scheduler.state_dict(),
             "loader": train_loader.state_dict(), "random": _random_state(cfg.backend),
             "history": history}, path)


# ==================================================================================================
# the run
# ==================================================================================================
def _log(*args):
    print(*args, flush=True)


def run(cfg: Config, out, train_data, test_data, *, resume: bool = False, progress: bool = True,
        stop_after: int | None = None, plots: bool = True, log=_log) -> dict:
    """Train ``cfg`` on ``train_data`` = (images, labels), evaluating on ``test_data`` after every
    epoch; checkpoint each epoch to ``out``; at the end save, reload and evaluate the model and
    write metrics.json and plots. ``stop_after`` stops (as if interrupted) after that many epochs
    of this call. Returns the metrics dict (``'finished'`` False when stopped early)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    wall_start = time.perf_counter()
    start_epoch, history = 0, {"epochs": [], "trace": [], "wall_seconds": 0.0}
    saved = None
    if resume:
        if not ckpt_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        saved = hw.load(ckpt_path)
        saved_cfg = Config.from_dict(saved["config"])
        differ = [f.name for f in dataclasses.fields(Config) if f.name not in Config.NOT_TRAINING
                  and getattr(saved_cfg, f.name) != getattr(cfg, f.name)]
        if differ:
            log(f"resuming with the checkpoint's settings; ignoring the command line's "
                f"{', '.join(differ)}")
        saved_cfg.backend = cfg.backend
        cfg = saved_cfg
        start_epoch, history = int(saved["epoch"]), saved["history"]
    hw.set_default_dtype(cfg.dtype)
    model = make_model(cfg, None if saved is not None else train_data[0])
    train_loader, test_loader = make_loaders(cfg, train_data, test_data)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_scheduler(cfg, optimizer, len(train_loader))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        train_loader.load_state_dict(saved["loader"])
        _set_random_state(saved["random"], cfg.backend)
        log(f"resumed from {ckpt_path} after epoch {start_epoch}")
    log(f"preset {cfg.preset}: {cfg.model} net ({models.count_parameters(model):,} parameters), "
        f"{len(train_data[1])} training / {len(test_data[1])} test images, {cfg.epochs} epochs "
        f"of batch {cfg.batch_size}, {cfg.optimizer} lr {cfg.lr} ({cfg.schedule}), backend "
        f"{cfg.backend}, {cfg.dtype}")
    trace_every = max(1, len(train_loader) // 50)
    finished = True
    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        if stop_after is not None and epoch > start_epoch + stop_after:
            finished = False
            break
        stats = train_one_epoch(model, train_loader, optimizer, scheduler, loss_fn, epoch=epoch,
                                progress=progress, log_every=cfg.log_every,
                                trace_every=trace_every, desc=f"epoch {epoch}/{cfg.epochs}",
                                log=log)
        bad = _nonfinite_parameters(model)
        if bad:
            raise NonFiniteLossError(f"after epoch {epoch} these parameters are not finite: "
                                     f"{', '.join(bad)}; the last good checkpoint is {ckpt_path}")
        test = evaluate(model, test_loader)
        base = (epoch - 1) * len(train_loader)
        history["trace"].extend([base + s, v] for s, v in stats["trace"])
        history["epochs"].append({
            "epoch": epoch, "train_loss": stats["loss"], "train_accuracy": stats["accuracy"],
            "test_loss": test["loss"], "test_accuracy": test["accuracy"],
            "lr_end": stats["lr"][0], "train_seconds": stats["seconds"],
            "eval_seconds": test["seconds"], "images_per_second": stats["images_per_second"]})
        log(f"epoch {epoch}/{cfg.epochs}: train loss {stats['loss']:.4f} acc "
            f"{100 * stats['accuracy']:.2f}% | test loss {test['loss']:.4f} acc "
            f"{100 * test['accuracy']:.2f}% | {stats['seconds']:.1f} s train "
            f"({stats['images_per_second']:.0f} img/s), {test['seconds']:.1f} s eval")
        history["wall_seconds"] += time.perf_counter() - wall_start
        wall_start = time.perf_counter()
        save_checkpoint(ckpt_path, cfg, model, optimizer, scheduler, train_loader, epoch, history)
    history["wall_seconds"] += time.perf_counter() - wall_start
    if not finished:
        log(f"stopped after epoch {epoch - 1}; continue with --resume --out {out}")
        return {"finished": False, "config": cfg.to_dict(), "history": history}
    return finish(cfg, out, model, test_loader, history, plots=plots, log=log)


def finish(cfg, out, model, test_loader, history, *, plots=True, log=_log) -> dict:
    """Save the model, load it into a fresh network, evaluate the copy, report and plot."""
    model_path = out / FINAL_MODEL
    hw.save(model.state_dict(), model_path)
    fresh = models.build(cfg.model, **cfg.model_kwargs()).to(cfg.backend, cfg.dtype)
    fresh.load_state_dict(hw.load(model_path))
    log(f"saved the model to {model_path} and evaluated a fresh network loaded from it")
    plain = evaluate(fresh, test_loader)
    final = evaluate(fresh, test_loader, tta=True) if cfg.tta else plain
    train_seconds = sum(e["train_seconds"] for e in history["epochs"])
    log(report(final, plain if cfg.tta else None))
    metrics = {
        "finished": True, "config": cfg.to_dict(), "command": " ".join(sys.argv),
        "test_accuracy": final["accuracy"], "test_accuracy_no_tta": plain["accuracy"],
        "test_loss": final["loss"], "per_class_accuracy": dict(zip(CLASSES, final["per_class"])),
        "confusion_matrix": final["confusion"], "classes": list(CLASSES),
        "train_seconds": train_seconds, "wall_seconds": history["wall_seconds"],
        "history": history["epochs"], "loss_trace": history["trace"], "machine": machine(),
        "parameters": models.count_parameters(fresh),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    log(f"wrote {out / 'metrics.json'}; {len(history['epochs'])} epochs, "
        f"{train_seconds:.0f} s of training, {history['wall_seconds']:.0f} s in all")
    if plots:
        written = write_plots(out, metrics)
        if written:
            log("plots: " + ", ".join(str(p) for p in written))
    return metrics


def report(result, plain=None) -> str:
    """Overall and per-class accuracy and the confusion matrix as text."""
    lines = []
    if plain is not None:
        lines.append(f"Accuracy of the network on the {result['total']} test images: "
                     f"{100 * result['accuracy']:.2f}% with flip averaging "
                     f"({100 * plain['accuracy']:.2f}% without)")
    else:
        lines.append(f"Accuracy of the network on the {result['total']} test images: "
                     f"{100 * result['accuracy']:.2f}%")
    for name, acc in zip(SHORT_CLASSES, result["per_class"]):
        lines.append(f"Accuracy of {name:>5s} : {100 * acc:5.1f} %")
    lines.append("confusion matrix (rows: true class, columns: predicted):")
    lines.append("       " + " ".join(f"{n:>5s}" for n in SHORT_CLASSES))
    for name, row in zip(SHORT_CLASSES, result["confusion"]):
        lines.append(f"{name:>6s} " + " ".join(f"{v:5d}" for v in row))
    return "\n".join(lines)


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "numpy": numpy.__version__, "cpus": os.cpu_count(), "processor": platform.processor()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def write_plots(out, metrics) -> list:
    """loss.png, accuracy.png and confusion.png in ``out`` (nothing without matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib)")
        return []
    out = Path(out)
    hist = metrics["history"]
    steps_per_epoch = None
    epochs = [e["epoch"] for e in hist]
    written = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    trace = metrics["loss_trace"]
    if trace and epochs:
        steps_per_epoch = max(s for s, _ in trace) / max(epochs)
        ax.plot([s / steps_per_epoch for s, _ in trace], [v for _, v in trace], lw=0.8, alpha=0.6,
                label="training batches (mean over each 1/50 epoch)")
    ax.plot(epochs, [e["train_loss"] for e in hist], "o-", label="training (epoch mean)")
    ax.plot(epochs, [e["test_loss"] for e in hist], "s-", label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy" + (" (training: with label smoothing)"
                                     if metrics["config"]["label_smoothing"] else ""))
    ax.set_title(f"CIFAR-10, preset {metrics['config']['preset']}: loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=120)
    plt.close(fig)
    written.append(out / "loss.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(epochs, [100 * e["train_accuracy"] for e in hist], "o-", label="training (augmented)")
    ax.plot(epochs, [100 * e["test_accuracy"] for e in hist], "s-", label="test")
    if metrics["config"]["tta"] and epochs:
        ax.plot([epochs[-1]], [100 * metrics["test_accuracy"]], "*", ms=12,
                label=f"final, flip-averaged: {100 * metrics['test_accuracy']:.2f}%")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"CIFAR-10, preset {metrics['config']['preset']}: accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=120)
    plt.close(fig)
    written.append(out / "accuracy.png")

    cm = numpy.asarray(metrics["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(10), SHORT_CLASSES, rotation=45)
    ax.set_yticks(range(10), SHORT_CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > threshold else "black")
    ax.set_title(f"confusion matrix, test accuracy {100 * metrics['test_accuracy']:.2f}%")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(out / "confusion.png", dpi=120)
    plt.close(fig)
    written.append(out / "confusion.png")
    return written


# ==================================================================================================
# gradients against PyTorch
# ==================================================================================================
def reference_pair(name, dtype="float64", **kwargs):
    """(tinygrad_hw model, PyTorch model) of ``name`` with identical weights in ``dtype``, both in
    training mode with dropout off."""
    import torch
    hw.manual_seed(1234)
    ours = models.build(name, **kwargs).to("numpy", dtype)
    theirs = models.torch_model(name, **kwargs).to(getattr(torch, dtype))
    models.copy_weights(ours, theirs)
    return hw.testing.disable_dropout(ours), hw.testing.disable_dropout(theirs)


rel_err = hw.testing.rel_err


def compare_gradients(name, images, labels, dtype="float64", label_smoothing=0.0, **kwargs):
    """Loss and every parameter gradient of network ``name`` on one batch, tinygrad_hw against
    PyTorch: :func:`tinygrad_hw.testing.compare_gradients` on a fresh :func:`reference_pair`.
    ``images``: (N, 3, 32, 32) float array (already normalised), ``labels``: (N,) ints."""
    ours, theirs = reference_pair(name, dtype, **kwargs)
    return hw.testing.compare_gradients(ours, theirs, images, labels, label_smoothing)


def compare_trajectories(name, batches, optimizer="sgd", lr=0.01, dtype="float64", **kwargs):
    """Train the tinygrad_hw and PyTorch twins side by side on ``batches`` (a list of (images,
    labels)); returns the worst relative error of the losses (``'loss'``), of each final
    parameter and buffer (``'params'``), and how far the parameters moved from their start
    (``'moved'``, the largest relative change)."""
    import torch
    ours, theirs = reference_pair(name, dtype, **kwargs)
    if optimizer == "sgd":
        opt = hw.optim.SGD(ours.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
        ref_opt = torch.optim.SGD(theirs.parameters(), lr=lr, momentum=0.9, nesterov=True,
                                  weight_decay=5e-4)
    elif optimizer == "adam":
        opt = hw.optim.Adam(ours.parameters(), lr=lr)
        ref_opt = torch.optim.Adam(theirs.parameters(), lr=lr)
    else:
        raise ValueError(optimizer)
    initial = {k: v.numpy().copy() for k, v in ours.state_dict().items()}
    loss_err = 0.0
    for images, labels in batches:
        x, y = numpy.asarray(images, dtype=dtype), numpy.asarray(labels, dtype=numpy.int64)
        loss = nn.functional.cross_entropy(ours(hw.Tensor(x)), hw.Tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        ref = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y))
        ref_opt.zero_grad()
        ref.backward()
        ref_opt.step()
        loss_err = max(loss_err, rel_err(loss.item(), ref.item()))
    theirs_state = theirs.state_dict()
    param_err = {k: rel_err(v.numpy(), theirs_state[k].detach().numpy())
                 for k, v in ours.state_dict().items()}
    moved = max(rel_err(p.numpy(), initial[k]) for k, p in ours.named_parameters())
    return {"loss": loss_err, "params": param_err, "moved": moved}


def agreeing_batch(name, images, labels, batch, label_smoothing=0.0, **kwargs):
    """float32 gradients of network ``name`` on the first ``batch`` consecutive images (from
    offset 0, then ``batch``, ...) where tinygrad_hw's float32 pass, PyTorch's float32 pass and
    the float64 pass make the same choice in every max-pooling window and ReLU (see
    :mod:`tinygrad_hw.testing`). Returns ``(comparison, offset)``, or ``(None, batches
    tried)`` when no batch qualifies."""
    tried = 0
    for offset in range(0, len(labels) - batch + 1, batch):
        tried += 1
        result = compare_gradients(name, images[offset:offset + batch],
                                   labels[offset:offset + batch], "float32", label_smoothing,
                                   **kwargs)
        if result["routes_agree"]:
            return result, offset
    return None, tried


def check_gradients(cfg: Config, test_data, batch: int = 16, log=_log) -> dict:
    """``--check-gradients``: both networks, float64 and float32, on ``batch`` of the user's
    test images (normalised, no augmentation, dropout off, BatchNorm in training mode); prints
    the worst relative error per parameter. float64 compares with PyTorch's float64 result on
    the first ``batch`` images. float32 compares ours, and PyTorch's float32 result beside it,
    with the float64 result of the same network, on the first batch where all three route
    max-pooling and ReLU identically (:func:`agreeing_batch`)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise SystemExit("--check-gradients needs PyTorch: pip install torch") from None
    mean, std = normalization(cfg)
    images = test_data[0].astype(numpy.float64) / 255.0
    images = (images - numpy.reshape(mean, (1, 3, 1, 1))) / numpy.reshape(std, (1, 3, 1, 1))
    labels = test_data[1]
    results, ok = {}, True
    for name in ("seed", "fast"):
        kwargs = cfg.model_kwargs() if name == cfg.model else {}
        for dtype, limit in hw.testing.LIMITS.items():
            if dtype == "float32":
                r, offset = agreeing_batch(name, images, labels, batch, cfg.label_smoothing,
                                           **kwargs)
                if r is None:
                    log(f"{name} net, float32: none of the {offset} batches of {batch} images "
                        "routes max-pooling and ReLU the same way in float32 (either library) "
                        "and float64; not checked")
                    ok = False
                    continue
                where = f"images {offset}-{offset + batch - 1} of the"
                against = "the float64 result of the same network"
            else:
                r = compare_gradients(name, images[:batch], labels[:batch], dtype,
                                      cfg.label_smoothing, **kwargs)
                where, against = f"the first {batch}", "PyTorch float64"
            results[f"{name}/{dtype}"] = r
            worst = hw.testing.worst_error(r)
            ok &= worst < limit
            torch_note = ""
            if r["torch_grads"] is not None:
                torch_worst = max([r["torch_loss"]] + list(r["torch_grads"].values()))
                torch_note = f" (PyTorch float32: {torch_worst:.2e})"
            log(f"{name} net, {dtype}, {where} test images, against {against}: loss "
                f"{r['loss_value']:.6f}, relative error of the loss {r['loss']:.2e}; worst over "
                f"parameters {worst:.2e}{torch_note} ({'ok' if worst < limit else 'TOO LARGE'}, "
                f"limit {limit:g})")
            for pname, err in r["grads"].items():
                beside = "" if r["torch_grads"] is None else f"   PyTorch {r['torch_grads'][pname]:.2e}"
                log(f"    {pname:32s} {err:.2e}{beside}")
    log("all gradients agree with PyTorch" if ok else "SOME GRADIENTS DISAGREE WITH PYTORCH")
    results["ok"] = ok
    return results


# ==================================================================================================
# command line
# ==================================================================================================
def _widths(text):
    return tuple(int(w) for w in text.split(","))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="fast")
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate (the peak rate of a one-cycle schedule)")
    p.add_argument("--optimizer", choices=("adam", "sgd", "swats"))
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", choices=("onecycle", "constant"))
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--widths", type=_widths, help="channels, comma separated: the fast net's "
                   "three blocks (e.g. 32,64,128), the seed net's convs, or the vgg net's base")
    p.add_argument("--stem", type=int, help="channels of the fast net's first convolution")
    p.add_argument("--augment", choices=("assignment", "crop_flip", "none"))
    p.add_argument("--crop-padding", type=int)
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="average the predictions of each test image and its mirror image")
    p.add_argument("--log-every", type=int, help="print the running loss every N batches")
    p.add_argument("--whiten", action=argparse.BooleanOptionalAction, default=None,
                   help="start the first convolution from the principal directions of the "
                   "training images' 3x3 patches (fast and vgg presets)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", help="where CIFAR-10 is (default: searched, see tinygrad_hw.data.CIFAR10)")
    p.add_argument("--out", help="output folder (default runs/cifar_<preset>)")
    p.add_argument("--limit", type=int, help="train on the first N images (of a fixed shuffle)")
    p.add_argument("--test-limit", type=int, help="evaluate on N test images (default: all, or "
                   "--limit's N when --limit is given)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--stop-after", type=int, help="stop after N epochs of this run, as if "
                   "interrupted (--resume continues)")
    p.add_argument("--blas-threads", default="auto", help="BLAS threads: a number, or 'auto' "
                   "(1 for batches under 64, else the library's default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--check-gradients", action="store_true", help="compare the loss and gradients "
                   "of the seed and fast networks with PyTorch on your test images, then exit")
    return p.parse_args(argv)


def config_from_args(args) -> Config:
    values = dict(PRESETS[args.preset])
    for key in ("epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "schedule",
                "label_smoothing", "widths", "augment", "crop_padding", "tta", "log_every",
                "whiten", "stem"):
        given = getattr(args, key)
        if given is not None:
            values[key] = given
    if values["widths"] is not None:
        values["widths"] = tuple(values["widths"])
    return Config(preset=args.preset, seed=args.seed, limit=args.limit, test_limit=args.test_limit,
                  dtype=args.dtype, backend=args.backend, **values)


def limit_blas_threads(setting, batch_size: int):
    """Apply ``--blas-threads``. 'auto' makes BLAS single-threaded for batches under 64: the
    matrices of a small batch are too small to share between cores, and a multi-threaded
    OpenBLAS loses milliseconds per call synchronising its threads on a busy machine (3.5x
    slower at batch 4 on the 2-core machine of the README). Needs threadpoolctl; returns the
    limit applied, or None."""
    if setting == "auto":
        if batch_size >= 64:
            return None
        setting = 1
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    threadpool_limits(limits=int(setting), user_api="blas")
    return int(setting)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = config_from_args(args)
    threads = limit_blas_threads(args.blas_threads, cfg.batch_size)
    if threads is not None:
        _log(f"BLAS limited to {threads} thread(s) (--blas-threads)")
    if args.backend != "numpy":
        hw.set_backend(args.backend)
    out = Path(args.out or f"runs/cifar_{args.preset}")
    start = time.perf_counter()
    train_data, test_data = load_data(cfg, args.data)
    _log(f"data loaded in {time.perf_counter() - start:.1f} s")
    if args.check_gradients:
        return 0 if check_gradients(cfg, test_data)["ok"] else 1
    try:
        run(cfg, out, train_data, test_data, resume=args.resume, progress=not args.no_progress,
            stop_after=args.stop_after, plots=not args.no_plots)
    except NonFiniteLossError as exc:
        print(f"\nstopped: {exc}\nthe last good checkpoint (if an epoch finished) is "
              f"{out / CHECKPOINT}", file=sys.stderr, flush=True)
        return 3
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue from the last finished epoch with: --resume --out {out}",
              file=sys.stderr, flush=True)
        return 130
    _log(f"total wall time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
