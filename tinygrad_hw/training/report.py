"""Text reports of an evaluation and a description of the machine, for a run's record."""
from __future__ import annotations

import os
import platform

import numpy

__all__ = ["classification_report", "machine"]


def classification_report(result, class_names, plain=None) -> str:
    """Overall and per-class accuracy and the confusion matrix of an
    :func:`~tinygrad_hw.training.evaluate` result as text; with ``plain`` (the same evaluation
    without flip averaging) both accuracies."""
    lines = []
    if plain is not None:
        lines.append(f"Accuracy of the network on the {result['total']} test images: "
                     f"{100 * result['accuracy']:.2f}% with flip averaging "
                     f"({100 * plain['accuracy']:.2f}% without)")
    else:
        lines.append(f"Accuracy of the network on the {result['total']} test images: "
                     f"{100 * result['accuracy']:.2f}%")
    for name, acc in zip(class_names, result["per_class"]):
        lines.append(f"Accuracy of {name:>5s} : {100 * acc:5.1f} %")
    lines.append("confusion matrix (rows: true class, columns: predicted):")
    lines.append("       " + " ".join(f"{n:>5s}" for n in class_names))
    for name, row in zip(class_names, result["confusion"]):
        lines.append(f"{name:>6s} " + " ".join(f"{v:5d}" for v in row))
    return "\n".join(lines)


def machine() -> dict:
    """The platform, Python, NumPy, CPU count and CPU model, for a run's record."""
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
