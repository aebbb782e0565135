"""Grad mode (whether ops record a graph) and anomaly mode (whether every op is checked for
NaN/Inf), with ``torch``'s names: ``no_grad``, ``enable_grad``, ``is_grad_enabled``,
``detect_anomaly``."""
from __future__ import annotations

import os
import sys

__all__ = ["no_grad", "enable_grad", "is_grad_enabled", "detect_anomaly", "AnomalyError",
           "is_anomaly_enabled"]

_grad_enabled = True
_anomaly_mode = False
# under detect_anomaly: the op whose backward is running (its ops are named as coming from it)
backward_node = None
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _GradMode:
    """Context manager (and decorator) that switches graph recording off or on."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        global _grad_enabled
        self.prev, _grad_enabled = _grad_enabled, self.enabled

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self.prev

    def __call__(self, fn):
        def wrapper(*args, **kwargs):
            with _GradMode(self.enabled):
                return fn(*args, **kwargs)
        wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
        return wrapper


def no_grad():
    """``with hw.no_grad():`` records no graph inside (also usable as a decorator)."""
    return _GradMode(False)


def enable_grad():
    """``with hw.enable_grad():`` records the graph again inside a ``no_grad`` region."""
    return _GradMode(True)


def set_grad_mode(enabled: bool) -> _GradMode:
    """The context manager that sets grad mode to ``enabled`` (the engine's backward uses it)."""
    return _GradMode(enabled)


def is_grad_enabled() -> bool:
    return _grad_enabled


class AnomalyError(RuntimeError):
    """A NaN or infinity appeared under ``detect_anomaly()``; the message names the op and its origin."""


class detect_anomaly:
    """``with hw.detect_anomaly():`` checks every op's output, and every gradient computed in
    backward, for NaN/Inf and raises :class:`AnomalyError` naming the first op that produced one
    and the line of user code that created it. It costs one reduction per op: a debugging aid."""

    def __enter__(self):
        global _anomaly_mode
        self.prev, _anomaly_mode = _anomaly_mode, True
        return self

    def __exit__(self, *exc):
        global _anomaly_mode
        _anomaly_mode = self.prev


def is_anomaly_enabled() -> bool:
    return _anomaly_mode


def user_frame() -> str:
    """'file:line in function' of the innermost caller outside this package."""
    frame = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


def check_finite(array, be, what):
    """Raise :class:`AnomalyError` (``what`` formatted with ``bad`` = 'NaN' or 'Inf') where a
    floating array holds a non-finite value."""
    if array.dtype.kind == "f" and not bool(be.xp.isfinite(array).all()):
        bad = "NaN" if bool(be.xp.isnan(array).any()) else "Inf"
        raise AnomalyError(what.format(bad=bad))
