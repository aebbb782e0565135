"""Figures of a training run (loss, accuracy, confusion matrix) and the matplotlib plumbing that
every figure of the examples shares. matplotlib is optional: without it nothing is drawn."""
from __future__ import annotations

from pathlib import Path

import numpy

__all__ = ["pyplot", "finish_axes", "save_figure", "plot_run"]


def pyplot(log=print):
    """``matplotlib.pyplot`` on the file-only Agg backend, or None (saying so through ``log``)
    where matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no figures (pip install matplotlib)")
        return None
    return plt


def finish_axes(ax, xlabel: str, ylabel: str, title: str, title_size=None, **legend) -> None:
    """Labels, title, a light grid and the legend (``legend`` holds its keyword arguments)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=title_size)
    ax.grid(alpha=0.3)
    ax.legend(**legend)


def save_figure(plt, fig, path, dpi: int = 120) -> Path:
    """Lay out, write and close ``fig``; returns the path written."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return Path(path)


def plot_run(out, metrics: dict, class_names, log=print) -> list:
    """loss.png, accuracy.png and confusion.png of a finished run in ``out``, from its metrics
    (``history``, ``loss_trace``, ``confusion_matrix``, ``test_accuracy``, ``config`` with
    ``preset``, ``label_smoothing`` and ``tta``); returns the paths written."""
    plt = pyplot(log)
    if plt is None:
        return []
    out = Path(out)
    hist = metrics["history"]
    cfg = metrics["config"]
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
    finish_axes(ax, "epoch", "cross-entropy" + (" (training: with label smoothing)"
                                               if cfg["label_smoothing"] else ""),
                f"CIFAR-10, preset {cfg['preset']}: loss")
    written.append(save_figure(plt, fig, out / "loss.png"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(epochs, [100 * e["train_accuracy"] for e in hist], "o-", label="training (augmented)")
    ax.plot(epochs, [100 * e["test_accuracy"] for e in hist], "s-", label="test")
    if cfg["tta"] and epochs:
        ax.plot([epochs[-1]], [100 * metrics["test_accuracy"]], "*", ms=12,
                label=f"final, flip-averaged: {100 * metrics['test_accuracy']:.2f}%")
    finish_axes(ax, "epoch", "accuracy (%)", f"CIFAR-10, preset {cfg['preset']}: accuracy")
    written.append(save_figure(plt, fig, out / "accuracy.png"))

    cm = numpy.asarray(metrics["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > threshold else "black")
    ax.set_title(f"confusion matrix, test accuracy {100 * metrics['test_accuracy']:.2f}%")
    fig.colorbar(im, ax=ax, fraction=0.046)
    written.append(save_figure(plt, fig, out / "confusion.png"))
    return written
