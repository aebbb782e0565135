"""Adam versus SGD on CIFAR-10, and two ways of switching from one to the other.

    python examples/optimizer_study.py                  # the default study (~15 min on 2 CPU cores)
    python examples/optimizer_study.py --seeds 3 --out runs/study3
    python examples/optimizer_study.py --quick          # a small end-to-end check (~20 s)
    python examples/optimizer_study.py --optimizers adam,sgd --epochs 5
    python examples/optimizer_study.py --replot --out docs/optimizer_study   # redraw the figures

Default: the original exercise's network (:func:`tinygrad_hw.models.small_cnn`, 334k
parameters), 10,000 training and 5,000 validation images, batch 64, 16 epochs, 2 seeds, these
optimizers:

* ``adam``: Adam, lr 1e-3 (betas 0.9/0.999, eps 1e-8);
* ``sgd``: SGD, lr 0.05, momentum 0.9, constant rate;
* ``nesterov``: the same with Nesterov momentum;
* ``swats``: SWATS (Keskar & Socher 2017, arXiv:1712.07628), lr 1e-3, with the paper's absolute
  switching test ``|lambda_k/(1-beta2^k) - gamma_k| < 1e-9`` (and its eps 1e-9);
* ``swats_rtol``: SWATS with a relative switching test instead,
  ``|lambda_k/(1-beta2^k) - gamma_k| < rtol * |gamma_k|`` (``switch_rtol``, default 1e-2). Not
  in the paper: on this CNN ``gamma_k`` is of order 1 and jumps by tens of percent (even changes
  sign) from step to step, so the paper's absolute 1e-9 test does not fire;
* ``plateau``: Adam until the validation loss has not improved for ``--patience`` (2) epochs,
  then SGD with momentum 0.9 (:class:`tinygrad_hw.optim.SwitchOnPlateau`); the SGD learning rate
  is estimated during the Adam phase as SWATS does (``(1 - 0.9) * Lambda`` in PyTorch's form),
  or given with ``--plateau-lr``.

Per seed, every optimizer trains the same network from the same initial weights, on the same
training images in the same order with the same dropout draws.

The training set is split once (a fixed shuffle, the same for every seed): ``--val`` images are
held out for validation, ``--limit`` of the rest are trained on. Validation loss and accuracy are
measured after every epoch (the plateau rule reads the validation loss); the test set is used
only at the end, for the last epoch's model and for the model of the epoch with the best
validation accuracy (selected on validation, never on test). No augmentation, so that over-fitting
shows within a short run.

Writes ``study.json`` (settings, machine, every epoch of every run, switch points, final numbers,
a per-optimizer summary) and PNG figures to ``--out``: ``train_loss.png``, ``val_loss.png``,
``val_accuracy.png``, ``train_accuracy.png`` (one line per optimizer, switch points marked) and
``test_accuracy.png`` (final test accuracy per optimizer; with ``--seeds`` > 1 the mean with the
spread over seeds). Prints a summary table.

The training and evaluation loops are the library's (:func:`tinygrad_hw.training.train_one_epoch`,
:func:`tinygrad_hw.training.evaluate`).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy

import tinygrad_hw as hw
from tinygrad_hw import models, nn, training
from tinygrad_hw.data import CIFAR10, CIFAR10_MEAN, CIFAR10_STD, DataLoader, DatasetError, derived_seed, fixed_subset
from tinygrad_hw.training import cli

ALL_OPTIMIZERS = ("adam", "sgd", "nesterov", "swats", "swats_rtol", "plateau")
DEFAULT_OPTIMIZERS = ("adam", "sgd", "nesterov", "swats", "swats_rtol", "plateau")
LABELS = {"adam": "Adam", "sgd": "SGD momentum", "nesterov": "SGD Nesterov", "swats": "SWATS",
          "swats_rtol": "SWATS, relative test", "plateau": "Adam -> SGD on plateau"}
COLORS = {"adam": "tab:red", "sgd": "tab:blue", "nesterov": "tab:cyan", "swats": "tab:green",
          "swats_rtol": "tab:olive", "plateau": "tab:purple"}


@dataclasses.dataclass
class StudyConfig:
    """Everything that defines the study (saved in study.json)."""

    optimizers: tuple = DEFAULT_OPTIMIZERS
    epochs: int = 16
    limit: int = 10000           # training images (after the validation split)
    val: int = 5000              # validation images held out of the training set
    test_limit: int | None = None  # test images (None: all 10,000)
    seeds: int = 2
    seed: int = 0                # first seed; seeds are seed, seed + 1, ...
    batch_size: int = 64
    eval_batch_size: int = 500
    model: str = "small_cnn"
    widths: tuple | None = None
    adam_lr: float = 1e-3
    sgd_lr: float = 0.05
    momentum: float = 0.9
    swats_lr: float = 1e-3
    swats_tol: float = 1e-9
    swats_rtol: float = 1e-2     # for the 'swats_rtol' variant only
    patience: int = 2
    plateau_lr: float | None = None  # None: estimated as in SWATS
    target_loss: float = 1.0     # "epochs to reach this training loss"
    backend: str = "numpy"
    dtype: str = "float32"

    def model_kwargs(self) -> dict:
        return models.size_kwargs(self.model, self.widths)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["optimizers"] = list(self.optimizers)
        d["widths"] = None if self.widths is None else list(self.widths)
        return d


# ==================================================================================================
# data
# ==================================================================================================
def split_data(train_images, train_labels, test_images, test_labels, cfg: StudyConfig):
    """(train, val, test) as (images, labels) host arrays: one fixed shuffle (seed 0) of the
    training set gives ``cfg.val`` validation images, then ``cfg.limit`` training images; the
    test set is the first ``cfg.test_limit`` images of a fixed shuffle (all by default)."""
    n = len(train_labels)
    if cfg.val + cfg.limit > n:
        raise SystemExit(f"--val {cfg.val} + --limit {cfg.limit} is more than the {n} training "
                         "images")
    order = numpy.random.default_rng(0).permutation(n)

    def take(indices):
        indices = numpy.sort(indices)  # sorted reads from the memory-mapped cache
        return numpy.ascontiguousarray(train_images[indices]), numpy.asarray(train_labels)[indices]

    val = take(order[:cfg.val])
    train = take(order[cfg.val:cfg.val + cfg.limit])
    test = fixed_subset(test_images, test_labels, cfg.test_limit)
    return train, val, test


def make_loader(cfg: StudyConfig, data, *, train: bool, seed: int = 0):
    common = dict(backend=cfg.backend, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                  dtype=cfg.dtype, prefetch=2)
    if train:
        return DataLoader(data[0], data[1], batch_size=cfg.batch_size, shuffle=True,
                          seed=derived_seed(seed, 1), **common)
    return DataLoader(data[0], data[1], batch_size=cfg.eval_batch_size, shuffle=False, seed=0,
                      **common)


# ==================================================================================================
# models and optimizers
# ==================================================================================================
def build_model(cfg: StudyConfig):
    return models.build(cfg.model, **cfg.model_kwargs()).to(cfg.backend, cfg.dtype)


def initial_state(cfg: StudyConfig, seed: int) -> dict:
    """The initial weights of ``seed`` as host arrays (every optimizer starts from these)."""
    hw.manual_seed(seed)
    return {k: v.numpy().copy() for k, v in build_model(cfg).state_dict().items()}


def state_checksum(state: dict) -> float:
    """A fingerprint of a state dict (to show that runs started from the same weights)."""
    return float(sum(numpy.abs(numpy.asarray(v, dtype=numpy.float64)).sum()
                     for v in state.values()))


def make_optimizer(name: str, cfg: StudyConfig, params):
    """The optimizer called ``name`` (see the module docstring) over ``params``."""
    params = list(params)
    if name == "adam":
        return hw.optim.Adam(params, lr=cfg.adam_lr, betas=(0.9, 0.999), eps=1e-8)
    if name == "sgd":
        return hw.optim.SGD(params, lr=cfg.sgd_lr, momentum=cfg.momentum)
    if name == "nesterov":
        return hw.optim.SGD(params, lr=cfg.sgd_lr, momentum=cfg.momentum, nesterov=True)
    if name == "swats":
        return hw.optim.SWATS(params, lr=cfg.swats_lr, switch_tol=cfg.swats_tol)
    if name == "swats_rtol":
        return hw.optim.SWATS(params, lr=cfg.swats_lr, switch_tol=0.0, switch_rtol=cfg.swats_rtol)
    if name == "plateau":
        momentum = cfg.momentum

        def then(groups, lr):
            # ``lr`` is the rate of plain SGD (SWATS's Lambda); SGD with momentum mu in
            # PyTorch's form takes (1 - mu) * Lambda, as SWATS's own SGD phase does.
            rate = lr if cfg.plateau_lr is not None else (1 - momentum) * lr
            return hw.optim.SGD(groups, lr=rate, momentum=momentum)

        return hw.optim.SwitchOnPlateau(
            params, first=lambda p: hw.optim.Adam(p, lr=cfg.adam_lr, betas=(0.9, 0.999), eps=1e-8),
            then=then, patience=cfg.patience, sgd_lr=cfg.plateau_lr)
    raise ValueError(f"unknown optimizer {name!r}: expected one of {ALL_OPTIMIZERS}")


def current_rate(name: str, optimizer) -> tuple[str, float]:
    """(phase, learning rate of the update rule in use). For an SGD phase the rate is that of
    PyTorch's SGD with momentum (``p -= lr * buf``): for SWATS ``(1 - beta1) * Lambda``."""
    if name in ("swats", "swats_rtol"):
        group = optimizer.param_groups[0]
        if group["phase"] == "sgd":
            scale = group["lr"] / group["switch_base_lr"]
            return "sgd", (1 - group["betas"][0]) * group["sgd_lr"] * scale
        return "adam", group["lr"]
    if name == "plateau":
        return ("sgd" if optimizer.switched else "adam"), optimizer.param_groups[0]["lr"]
    return ("adam" if name == "adam" else "sgd"), optimizer.param_groups[0]["lr"]


def switch_record(name: str, optimizer, steps_per_epoch: int):
    """Where a switching optimizer switched (None for the others)."""
    if name in ("swats", "swats_rtol"):
        info = optimizer.switch_info()[0]
        if not info["switched"]:
            group = optimizer.param_groups[0]
            # the rate SWATS would switch to now (its bias-corrected average of gamma_k)
            estimate = (group["sgd_lr_avg"] / (1 - group["betas"][1] ** group["step"])
                        if group["step"] else None)
            return {"switched": False, "step": None, "epoch": None, "position": None,
                    "sgd_lr": None, "sgd_lr_torch": None, "estimated_lr": estimate,
                    "estimated_lr_torch": None if estimate is None
                    else (1 - group["betas"][0]) * estimate}
        beta1 = optimizer.param_groups[0]["betas"][0]
        step = int(info["step"])
        return {"switched": True, "step": step,
                "epoch": (step - 1) // steps_per_epoch + 1,  # the epoch the switch happened in
                "position": step / steps_per_epoch,        # in epochs, for the plots
                "sgd_lr": float(info["lr"]), "sgd_lr_torch": (1 - beta1) * float(info["lr"])}
    if name == "plateau":
        if not optimizer.switched:
            return {"switched": False, "step": None, "epoch": None, "position": None,
                    "sgd_lr": None, "sgd_lr_torch": None, "estimated_lr": optimizer.estimated_lr()}
        epoch = int(optimizer.switch_epoch)
        return {"switched": True, "step": epoch * steps_per_epoch,
                "epoch": epoch,             # the last Adam epoch; SGD from the next one on
                "position": float(epoch),
                "sgd_lr": float(optimizer.sgd_lr),
                "sgd_lr_torch": float(optimizer.param_groups[0]["lr"])}
    return None


# ==================================================================================================
# one run
# ==================================================================================================
def _quiet(*args):
    pass


def train_run(name: str, cfg: StudyConfig, seed: int, init: dict, train, val, test, *,
              log=print) -> dict:
    """Train optimizer ``name`` from the weights ``init`` for ``cfg.epochs`` epochs; evaluate on
    validation each epoch, and on test (and on the training images, in eval mode) at the end."""
    hw.set_default_dtype(cfg.dtype)
    model = build_model(cfg)
    model.load_state_dict(init)
    hw.manual_seed(seed + 1)  # the dropout draws: the same stream for every optimizer
    train_loader = make_loader(cfg, train, train=True, seed=seed)
    val_loader = make_loader(cfg, val, train=False)
    optimizer = make_optimizer(name, cfg, model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    steps_per_epoch = len(train_loader)
    history, best, best_state = [], None, None
    start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        phase_before, _ = current_rate(name, optimizer)
        stats = training.train_one_epoch(model, train_loader, optimizer, None, loss_fn,
                                         epoch=epoch, progress=False, log=_quiet)
        phase, rate = current_rate(name, optimizer)
        bad = training.nonfinite_parameters(model)
        if bad:
            raise training.NonFiniteLossError(f"{name}, seed {seed}, epoch {epoch}: parameters "
                                              f"not finite: {', '.join(bad)}")
        v = training.evaluate(model, val_loader)
        switched_now = False
        if name == "plateau":
            switched_now = optimizer.epoch_end(v["loss"])
        record = {"epoch": epoch, "train_loss": stats["loss"], "train_accuracy": stats["accuracy"],
                  "val_loss": v["loss"], "val_accuracy": v["accuracy"],
                  "phase": phase, "lr": rate, "train_seconds": stats["seconds"],
                  "eval_seconds": v["seconds"]}
        if phase != phase_before:
            record["switched_during_epoch"] = True
        if switched_now:
            record["switch_after_epoch"] = True
            record["next_lr"] = current_rate(name, optimizer)[1]
        history.append(record)
        if best is None or v["accuracy"] > best["val_accuracy"]:
            best = record
            best_state = {k: t.numpy().copy() for k, t in model.state_dict().items()}
        note = ""
        if switched_now:
            note = f"  -> switched to SGD, lr {record['next_lr']:.4g}"
        elif record.get("switched_during_epoch"):
            note = f"  -> switched to SGD during this epoch, lr {rate:.4g}"
        log(f"  [{name} seed {seed}] epoch {epoch:2d}/{cfg.epochs}: train loss "
            f"{stats['loss']:.4f} acc {100 * stats['accuracy']:5.2f}% | val loss {v['loss']:.4f} "
            f"acc {100 * v['accuracy']:5.2f}% | {phase} lr {rate:.4g} | "
            f"{stats['seconds']:.1f}+{v['seconds']:.1f} s{note}")
    train_seconds = time.perf_counter() - start

    # the end: the test set, once for the last model and once for the best-on-validation model
    test_loader = make_loader(cfg, test, train=False)
    final_test = training.evaluate(model, test_loader)
    final_train = training.evaluate(model, make_loader(cfg, train, train=False))
    best_model = build_model(cfg)
    best_model.load_state_dict(best_state)
    best_test = training.evaluate(best_model, test_loader)
    reached = next((r["epoch"] for r in history if r["train_loss"] <= cfg.target_loss), None)
    return {
        "optimizer": name, "label": LABELS[name], "seed": seed,
        "init_checksum": state_checksum(init), "steps_per_epoch": steps_per_epoch,
        "history": history,
        "switch": switch_record(name, optimizer, steps_per_epoch),
        "best_val_accuracy": best["val_accuracy"], "best_val_epoch": best["epoch"],
        "best_val_loss": min(r["val_loss"] for r in history),
        "test_accuracy": final_test["accuracy"], "test_loss": final_test["loss"],
        "test_accuracy_best_val": best_test["accuracy"],
        "train_accuracy_eval": final_train["accuracy"], "train_loss_eval": final_train["loss"],
        "generalization_gap": final_train["accuracy"] - final_test["accuracy"],
        "epochs_to_target_loss": reached,
        "seconds": time.perf_counter() - start, "train_seconds": train_seconds,
    }


# ==================================================================================================
# summary
# ==================================================================================================
def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    arr = numpy.asarray(values, dtype=numpy.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def summarize(runs: list, cfg: StudyConfig) -> list:
    """Per optimizer: mean and spread over seeds of the final numbers."""
    rows = []
    for name in cfg.optimizers:
        mine = [r for r in runs if r["optimizer"] == name]
        if not mine:
            continue
        row = {"optimizer": name, "label": LABELS[name], "runs": len(mine)}
        for key in ("best_val_accuracy", "test_accuracy", "test_accuracy_best_val",
                    "train_accuracy_eval", "generalization_gap"):
            row[key], row[key + "_std"] = _mean_std([r[key] for r in mine])
        reached = [r["epochs_to_target_loss"] for r in mine]
        row["epochs_to_target_loss"] = reached
        row["final_train_loss"] = _mean_std([r["history"][-1]["train_loss"] for r in mine])[0]
        row["final_val_loss"] = _mean_std([r["history"][-1]["val_loss"] for r in mine])[0]
        row["best_val_loss"] = _mean_std([r["best_val_loss"] for r in mine])[0]
        switches = [r["switch"] for r in mine if r["switch"] is not None]
        if switches:
            row["switched"] = [s["switched"] for s in switches]
            row["switch_epochs"] = [s["epoch"] for s in switches]
            row["switch_steps"] = [s["step"] for s in switches]
            row["switch_sgd_lr_torch"] = [s["sgd_lr_torch"] for s in switches]
            row["unswitched_estimate_torch"] = [s.get("estimated_lr_torch") for s in switches]
        rows.append(row)
    return rows


def _pct(mean, std, runs):
    if mean is None:
        return "-"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if runs > 1 else "")


def _switch_text(row):
    if "switched" not in row:
        return "-"
    parts = []
    estimates = row.get("unswitched_estimate_torch") or [None] * len(row["switched"])
    for ok, epoch, step, lr, estimate in zip(row["switched"], row["switch_epochs"],
                                             row["switch_steps"], row["switch_sgd_lr_torch"],
                                             estimates):
        if ok:
            parts.append(f"ep {epoch} (step {step}), lr {lr:.3g}")
        else:
            parts.append("never" if estimate is None else f"never (estimate {estimate:.3g})")
    return "; ".join(parts)


def table(rows: list, cfg: StudyConfig, markdown: bool = False) -> str:
    """The summary as a text table (or a Markdown table)."""
    head = ["optimizer", "best val acc %", "test acc % (last epoch)", "test acc % (best-val epoch)",
            f"epochs to train loss <= {cfg.target_loss:g}", "train acc % (eval)",
            "gap train-test (pts)", "switch (epoch, step, SGD lr)"]
    body = []
    for r in rows:
        n = r["runs"]
        reached = ", ".join("-" if e is None else str(e) for e in r["epochs_to_target_loss"])
        body.append([r["label"], _pct(r["best_val_accuracy"], r["best_val_accuracy_std"], n),
                     _pct(r["test_accuracy"], r["test_accuracy_std"], n),
                     _pct(r["test_accuracy_best_val"], r["test_accuracy_best_val_std"], n),
                     reached, _pct(r["train_accuracy_eval"], r["train_accuracy_eval_std"], n),
                     _pct(r["generalization_gap"], r["generalization_gap_std"], n),
                     _switch_text(r)])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body])


# ==================================================================================================
# figures
# ==================================================================================================
def _curves(runs, name, key):
    """(epochs, mean, min, max) of ``key`` over the seeds of optimizer ``name``."""
    mine = [r for r in runs if r["optimizer"] == name]
    values = numpy.asarray([[e[key] for e in r["history"]] for r in mine], dtype=numpy.float64)
    epochs = [e["epoch"] for e in mine[0]["history"]]
    return epochs, values.mean(0), values.min(0), values.max(0)


def write_figures(study: dict, out) -> list:
    """The PNG figures of ``study`` in ``out`` (an empty list without matplotlib)."""
    plt = training.pyplot()
    if plt is None:
        return []
    out = Path(out)
    runs, cfg = study["runs"], study["config"]
    names = [n for n in cfg["optimizers"] if any(r["optimizer"] == n for r in runs)]
    seeds = cfg["seeds"]
    subtitle = (f"{cfg['limit']} training / {cfg['val']} validation images, "
                f"{cfg['model']} net, batch {cfg['batch_size']}"
                + (f", mean of {seeds} seeds (band: min-max)" if seeds > 1 else ""))
    written = []
    panels = [("train_loss", "training loss (epoch mean, dropout on)", "train_loss.png", 1.0),
              ("val_loss", "validation loss", "val_loss.png", 1.0),
              ("val_accuracy", "validation accuracy (%)", "val_accuracy.png", 100.0),
              ("train_accuracy", "training accuracy (%) (epoch mean, dropout on)",
               "train_accuracy.png", 100.0)]
    for key, ylabel, filename, scale in panels:
        fig, ax = plt.subplots(figsize=(9.5, 4.8))
        for name in names:
            epochs, mean, low, high = _curves(runs, name, key)
            color = COLORS[name]
            ax.plot(epochs, scale * mean, "-o", ms=3, color=color, label=LABELS[name])
            if seeds > 1:
                ax.fill_between(epochs, scale * low, scale * high, color=color, alpha=0.15)
            for r in runs:
                s = r["switch"]
                if r["optimizer"] != name or not s or not s["switched"]:
                    continue
                # the value at the switch, interpolated between epoch points
                y = numpy.interp(s["position"], epochs, scale * mean)
                ax.axvline(s["position"], color=color, ls=":", lw=1)
                ax.plot([s["position"]], [y], marker="X", ms=10, color=color,
                        markeredgecolor="black", ls="none")
        ax.plot([], [], marker="X", ms=8, color="gray", markeredgecolor="black", ls="none",
                label="switch to SGD")
        training.finish_axes(ax, "epoch", ylabel, f"CIFAR-10: {ylabel.split(' (')[0]}\n{subtitle}",
                             title_size=10, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        written.append(training.save_figure(plt, fig, out / filename, dpi=110))

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    xs = numpy.arange(len(names))
    for i, name in enumerate(names):
        mine = [r for r in runs if r["optimizer"] == name]
        last = numpy.asarray([100 * r["test_accuracy"] for r in mine])
        best = numpy.asarray([100 * r["test_accuracy_best_val"] for r in mine])
        for offset, values, hatch, alpha in ((-0.2, last, None, 0.9), (0.2, best, "//", 0.5)):
            err = values.std(ddof=1) if len(values) > 1 else None
            ax.bar(i + offset, values.mean(), width=0.38, color=COLORS[name], alpha=alpha,
                   hatch=hatch, yerr=err, capsize=4, edgecolor="black", lw=0.5)
            if len(values) > 1:
                ax.plot([i + offset] * len(values), values, "k.", ms=4)
            top = values.max() if len(values) > 1 else values.mean()
            ax.text(i + offset, max(top, values.mean() + (err or 0)) + 0.6, f"{values.mean():.1f}",
                    ha="center", va="bottom", fontsize=7)
    from matplotlib.patches import Patch
    handles = [Patch(facecolor="lightgray", edgecolor="black", label="last epoch's model"),
               Patch(facecolor="white", hatch="//", edgecolor="black",
                     label="model of the best validation epoch")]
    ax.set_xticks(xs, [LABELS[n] for n in names], rotation=15, fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    lo = min(100 * min(r["test_accuracy"], r["test_accuracy_best_val"]) for r in runs)
    ax.set_ylim(max(0.0, lo - 10), None)
    spread = f", error bars: std over {seeds} seeds, dots: seeds" if seeds > 1 else ""
    ax.set_title(f"CIFAR-10 test accuracy ({study['test_images']} images){spread}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    written.append(training.save_figure(plt, fig, out / "test_accuracy.png", dpi=110))
    return written


# ==================================================================================================
# command line
# ==================================================================================================
QUICK = dict(limit=2000, val=500, test_limit=1000, epochs=3, seeds=1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = StudyConfig()
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    p.add_argument("--epochs", type=cli.positive_int, help=f"epochs per run (default {d.epochs}; --quick "
                   f"{QUICK['epochs']})")
    p.add_argument("--limit", type=cli.positive_int, help=f"training images (default {d.limit}; --quick "
                   f"{QUICK['limit']})")
    p.add_argument("--val", type=cli.positive_int, help=f"validation images held out of the training set "
                   f"(default {d.val}; --quick {QUICK['val']})")
    p.add_argument("--test-limit", type=cli.positive_int, help="test images (default all 10,000; --quick "
                   f"{QUICK['test_limit']})")
    p.add_argument("--seeds", type=cli.positive_int, help="initialisations (and data orders) per optimizer "
                   f"(default {d.seeds}; --quick {QUICK['seeds']})")
    p.add_argument("--seed", type=cli.nonnegative_int, default=0, help="the first seed")
    p.add_argument("--optimizers", default=",".join(DEFAULT_OPTIMIZERS),
                   help=f"comma separated, from {','.join(ALL_OPTIMIZERS)}")
    p.add_argument("--batch-size", type=cli.positive_int, default=d.batch_size)
    p.add_argument("--model", choices=sorted(models.MODELS) + sorted(models.ALIASES), default=d.model)
    p.add_argument("--widths", type=cli.widths_value,
                   help="channels (see examples/cifar_cnn.py --widths)")
    p.add_argument("--adam-lr", type=cli.positive_float, default=d.adam_lr)
    p.add_argument("--sgd-lr", type=cli.positive_float, default=d.sgd_lr)
    p.add_argument("--momentum", type=cli.momentum_value, default=d.momentum)
    p.add_argument("--swats-lr", type=cli.positive_float, default=d.swats_lr)
    p.add_argument("--swats-tol", type=cli.nonnegative_float, default=d.swats_tol,
                   help="SWATS's absolute switching tolerance (the paper's 1e-9)")
    p.add_argument("--swats-rtol", type=cli.nonnegative_float, default=d.swats_rtol,
                   help="relative switching tolerance of the 'swats_rtol' variant")
    p.add_argument("--patience", type=cli.positive_int, default=d.patience,
                   help="plateau: epochs without a better validation loss before switching")
    p.add_argument("--plateau-lr", type=cli.positive_float, help="plateau: the SGD learning rate after the "
                   "switch (default: estimated during the Adam phase as in SWATS)")
    p.add_argument("--target-loss", type=cli.positive_float, default=d.target_loss)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--data", help="where CIFAR-10 is (default: searched, see tinygrad_hw.data)")
    p.add_argument("--out", default="runs/optimizer_study")
    p.add_argument("--quick", action="store_true", help="a small end-to-end check: "
                   + ", ".join(f"{k}={v}" for k, v in QUICK.items()) + " unless given")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--replot", action="store_true", help="only redraw the figures from the "
                   "study.json already in --out (no training)")
    return p.parse_args(argv)


def config_from_args(args) -> StudyConfig:
    names = tuple(n.strip() for n in args.optimizers.split(",") if n.strip())
    unknown = [n for n in names if n not in ALL_OPTIMIZERS]
    if unknown or not names:
        raise SystemExit(f"unknown optimizer(s) {unknown}: choose from {','.join(ALL_OPTIMIZERS)}")
    defaults = StudyConfig()
    sizes = {}
    for key in ("epochs", "limit", "val", "test_limit", "seeds"):
        given = getattr(args, key)
        sizes[key] = given if given is not None else (QUICK[key] if args.quick
                                                     else getattr(defaults, key))
    if sizes["seeds"] < 1:
        raise SystemExit("--seeds must be >= 1")
    return StudyConfig(optimizers=names, seed=args.seed,
                       batch_size=args.batch_size, model=args.model, widths=args.widths,
                       adam_lr=args.adam_lr, sgd_lr=args.sgd_lr, momentum=args.momentum,
                       swats_lr=args.swats_lr, swats_tol=args.swats_tol,
                       swats_rtol=args.swats_rtol, patience=args.patience,
                       plateau_lr=args.plateau_lr, target_loss=args.target_loss,
                       backend=args.backend, dtype=args.dtype, **sizes)


def run_study(cfg: StudyConfig, train, val, test, *, log=print) -> dict:
    """Every optimizer of ``cfg`` for every seed; returns the study dict (without writing)."""
    runs = []
    wall = time.perf_counter()
    for seed in range(cfg.seed, cfg.seed + cfg.seeds):
        init = initial_state(cfg, seed)
        log(f"seed {seed}: initial weights checksum {state_checksum(init):.6f}")
        for name in cfg.optimizers:
            log(f"{LABELS[name]} (seed {seed})")
            r = train_run(name, cfg, seed, copy.deepcopy(init), train, val, test, log=log)
            log(f"  -> best val acc {100 * r['best_val_accuracy']:.2f}% (epoch "
                f"{r['best_val_epoch']}), test acc {100 * r['test_accuracy']:.2f}% (best-val "
                f"model {100 * r['test_accuracy_best_val']:.2f}%), {r['seconds']:.0f} s")
            runs.append(r)
    return {"config": cfg.to_dict(), "runs": runs, "summary": summarize(runs, cfg),
            "train_images": int(len(train[1])), "val_images": int(len(val[1])),
            "test_images": int(len(test[1])), "wall_seconds": time.perf_counter() - wall}


def main(argv=None, log=print) -> dict:
    args = parse_args(argv)
    if args.replot:
        saved = Path(args.out) / "study.json"
        if not saved.is_file():
            raise cli.UsageError(f"--replot: no study.json in {args.out} (run the study first, or "
                                 "give its --out)")
        study = json.loads(saved.read_text())
        written = write_figures(study, args.out)
        log("figures: " + ", ".join(str(p) for p in written))
        return study
    cfg = config_from_args(args)
    cli.check_backend(cfg.backend)  # the user's mistakes first, one line each (training.cli)
    cli.check_data_path(args.data)
    cli.check_output_dir(args.out)
    if cfg.backend != "numpy":
        hw.set_backend(cfg.backend)
    out = Path(args.out)
    start = time.perf_counter()
    try:
        train_set = CIFAR10(root=args.data, train=True)
        test_set = CIFAR10(root=args.data, train=False)
    except (FileNotFoundError, DatasetError) as exc:  # no data, a corrupt or truncated copy
        raise cli.UsageError(str(exc)) from None
    train, val, test = split_data(train_set.images, train_set.labels, test_set.images,
                                  test_set.labels, cfg)
    log(f"{len(train[1])} training, {len(val[1])} validation (held out of the training set), "
        f"{len(test[1])} test images; {cfg.model} net "
        f"({models.count_parameters(build_model(cfg)):,} parameters); optimizers "
        f"{', '.join(cfg.optimizers)}; {cfg.epochs} epochs of batch {cfg.batch_size}; "
        f"{cfg.seeds} seed(s); backend {cfg.backend}")
    study = run_study(cfg, train, val, test, log=log)
    study["command"] = " ".join(["python", "examples/optimizer_study.py"] + list(
        sys.argv[1:] if argv is None else argv))
    study["machine"] = training.machine()
    study["total_wall_seconds"] = time.perf_counter() - start
    (out / "study.json").write_text(json.dumps(study, indent=1))
    log("")
    log(table(study["summary"], cfg))
    log(f"\nwrote {out / 'study.json'}; wall time {study['total_wall_seconds']:.0f} s")
    if not args.no_plots:
        written = write_figures(study, out)
        if written:
            log("figures: " + ", ".join(str(p) for p in written))
    return study


def cli_main(argv=None) -> int:
    """The command line: :func:`main`, exit status 0 (a user error: one line, status 2)."""
    main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(cli_main))
