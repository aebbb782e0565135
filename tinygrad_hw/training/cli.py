"""What the examples' command lines share: argparse types that reject values a run cannot use
(``--epochs 0``, ``--momentum 1.5``, ``--lr nan``...), checks of ``--data``, ``--out``,
``--backend`` and ``--resume`` made before any work starts, and :func:`run_main`, which turns a
:class:`UsageError` into one line on stderr and exit status 2, with no traceback (a traceback
stays the sign of a bug).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

__all__ = ["UsageError", "positive_int", "nonnegative_int", "positive_float", "nonnegative_float",
           "finite_float", "momentum_value", "probability", "threads_value", "widths_value",
           "check_data_path", "check_output_dir", "check_backend", "run_main"]


class UsageError(Exception):
    """A mistake in the command line or in what it points at: reported in one line, exit 2."""


def _number(text, kind):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                         f"got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def nonnegative_int(text) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def finite_float(text) -> float:
    return _number(text, float)


def positive_float(text) -> float:
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value:g}")
    return value


def nonnegative_float(text) -> float:
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value:g}")
    return value


def momentum_value(text) -> float:
    """A momentum or decay factor: in [0, 1) (1 or more makes SGD diverge)."""
    value = _number(text, float)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value:g}")
    return value


def probability(text) -> float:
    """A fraction in [0, 1] (label smoothing)."""
    value = _number(text, float)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value:g}")
    return value


def threads_value(text):
    """'auto' or a positive number of threads."""
    if str(text).lower() == "auto":
        return "auto"
    return positive_int(text)


def widths_value(text) -> tuple:
    """Comma-separated positive channel counts."""
    try:
        widths = tuple(int(w) for w in str(text).split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not widths or any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"channel counts must be at least 1, got {text!r}")
    return widths


def check_data_path(path) -> None:
    """``--data`` must name something that exists (a folder or a file); nothing is created."""
    if path is not None and not Path(path).expanduser().exists():
        raise UsageError(f"--data {path}: no such file or folder (give the folder or the file that "
                         "holds CIFAR-10, or leave --data out to search the usual places)")


def check_output_dir(path) -> None:
    """``--out`` must be a folder this process can write: it is created (as the run would) and a
    file is written and removed in it (permission bits do not tell for root or read-only mounts)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UsageError(f"--out {path}: cannot write there ({exc.strerror or exc})") from None


def check_backend(name) -> None:
    """``--backend cupy`` must be usable here (CuPy installed, a GPU present)."""
    from ..backend import get_backend
    try:
        get_backend(name)
    except (RuntimeError, ValueError) as exc:
        raise UsageError(f"--backend {name}: {exc}") from None


def run_main(main, argv=None, prog=None) -> int:
    """``main(argv)``, with a :class:`UsageError` printed as ``prog: error: message`` on stderr
    and exit status 2; every other exception keeps its traceback."""
    prog = prog or Path(sys.argv[0]).name
    try:
        return main(argv)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
        return 2
