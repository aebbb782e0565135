"""Grad mode (whether ops record a graph) and anomaly mode (whether every op is checked for
NaN/Inf), with ``torch``'s names: ``no_grad``, ``enable_grad``, ``set_grad_enabled``,
``is_grad_enabled``, ``detect_anomaly``.

Both modes are per thread, as in PyTorch: each thread starts with grad mode on and anomaly mode
off, and ``no_grad()`` in a data-loading thread does not switch recording off in the training
thread. The state lives in one ``threading.local`` object, ``state``, read by the ops on every
call (``state.grad_enabled``, ``state.anomaly``, ``state.backward_node``).
"""
from __future__ import annotations

import functools
import os
import sys
import threading

__all__ = ["no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "detect_anomaly",
           "AnomalyError", "is_anomaly_enabled"]


class _State(threading.local):
    """One per thread; the class attributes are every new thread's starting values."""
    grad_enabled = True
    anomaly = False
    # under detect_anomaly: the op whose backward is running (its ops are named as coming from it)
    backward_node = None
    queued = None  # the callbacks queued during the backward() now running (None outside one)


state = _State()
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _GradMode:
    """Context manager (and decorator) that sets graph recording on or off in this thread."""

    def __init__(self, enabled: bool):
        self.enabled = bool(enabled)
        self.prev = []  # a stack: one instance may be entered again while active (recursion)

    def __enter__(self):
        self.prev.append(state.grad_enabled)
        state.grad_enabled = self.enabled
        return self

    def __exit__(self, *exc):
        state.grad_enabled = self.prev.pop()

    def __call__(self, fn):
        enabled = self.enabled

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with _GradMode(enabled):
                return fn(*args, **kwargs)
        return wrapper


def _mode_or_decorator(enabled, fn):
    mode = _GradMode(enabled)
    return mode if fn is None else mode(fn)


def no_grad(fn=None):
    """``with hw.no_grad():`` records no graph inside; also a decorator, as ``@hw.no_grad`` or
    ``@hw.no_grad()``."""
    return _mode_or_decorator(False, fn)


def enable_grad(fn=None):
    """``with hw.enable_grad():`` records the graph again inside a ``no_grad`` region; also a
    decorator, with or without parentheses."""
    return _mode_or_decorator(True, fn)


class set_grad_enabled(_GradMode):
    """``hw.set_grad_enabled(mode)``: sets grad mode in this thread at once (as a plain call),
    or for a ``with`` block (restored on exit), or around a function (as a decorator)."""

    def __init__(self, mode: bool):
        super().__init__(mode)
        self.prev.append(state.grad_enabled)  # a plain call takes effect now, as in PyTorch
        state.grad_enabled = self.enabled

    def __enter__(self):
        return self  # already set by the constructor

    def __call__(self, fn):
        state.grad_enabled = self.prev.pop()  # used as a decorator: undo the constructor's setting
        return super().__call__(fn)


def set_grad_mode(enabled: bool) -> _GradMode:
    """The context manager that sets grad mode to ``enabled`` (the engine's backward uses it)."""
    return _GradMode(enabled)


def is_grad_enabled() -> bool:
    """Whether ops record a graph in this thread."""
    return state.grad_enabled


class AnomalyError(RuntimeError):
    """A NaN or infinity appeared under ``detect_anomaly()``; the message names the op and its origin."""


class detect_anomaly:
    """``with hw.detect_anomaly():`` checks every op's output, and every gradient computed in
    backward, for NaN/Inf and raises :class:`AnomalyError` naming the first op that produced one
    and the line of user code that created it. It costs one reduction per op: a debugging aid.
    Per thread, like grad mode."""

    def __enter__(self):
        self.prev, state.anomaly = state.anomaly, True
        return self

    def __exit__(self, *exc):
        state.anomaly = self.prev


def is_anomaly_enabled() -> bool:
    return state.anomaly


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
