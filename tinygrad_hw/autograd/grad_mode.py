"""Grad mode (whether ops record a graph) and anomaly mode (whether every op is checked for
NaN/Inf), with ``torch``'s names: ``no_grad``, ``enable_grad``, ``set_grad_enabled``,
``is_grad_enabled``, ``detect_anomaly``.

Both modes are per thread, as in PyTorch: each thread starts with grad mode on and anomaly mode
off, and ``no_grad()`` in a data-loading thread does not switch recording off in the training
thread. The state lives in one ``threading.local`` object, ``state``, read by the ops on every
call (``state.grad_enabled``, ``state.anomaly``, ``state.backward_node``).

Reading a ``threading.local`` costs about four times a module global, and ``Function.apply`` runs
for every op, so the modes are written only through :func:`_set_modes`, which keeps a count of
the threads whose modes are not the defaults (``grad_off``: threads with grad mode off,
``anomaly_on``: threads with anomaly mode on). While a count is 0 -- grad mode in a training
loop's forward pass, anomaly mode almost always -- ``apply`` reads that global and not the
thread-local state: a thread whose own mode is not the default has counted itself, and a
thread's own writes are seen by that thread, so the shortcut never hides a thread's own mode.
(A thread that ends with a non-default mode leaves its count above 0: ops then just take the
thread-local reads.)
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
grad_off = 0    # threads whose grad mode is off (see the module docstring)
anomaly_on = 0  # threads whose anomaly mode is on
_count_lock = threading.Lock()
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _set_modes(grad_enabled=None, anomaly=None):
    """Set this thread's grad mode and/or anomaly mode, keeping ``grad_off`` and ``anomaly_on`` right."""
    global grad_off, anomaly_on
    s = state
    if grad_enabled is not None:
        grad_enabled = bool(grad_enabled)
        if grad_enabled != s.grad_enabled:
            s.grad_enabled = grad_enabled
            with _count_lock:
                grad_off += -1 if grad_enabled else 1
    if anomaly is not None:
        anomaly = bool(anomaly)
        if anomaly != s.anomaly:
            s.anomaly = anomaly
            with _count_lock:
                anomaly_on += 1 if anomaly else -1


class _GradMode:
    """Context manager (and decorator) that sets graph recording on or off in this thread."""

    def __init__(self, enabled: bool):
        self.enabled = bool(enabled)
        self.prev = []  # a stack: one instance may be entered again while active (recursion)

    def __enter__(self):
        self.prev.append(state.grad_enabled)
        _set_modes(grad_enabled=self.enabled)
        return self

    def __exit__(self, *exc):
        _set_modes(grad_enabled=self.prev.pop())

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
        _set_modes(grad_enabled=self.enabled)

    def __enter__(self):
        return self  # already set by the constructor

    def __call__(self, fn):
        _set_modes(grad_enabled=self.prev.pop())  # used as a decorator: undo the constructor's setting
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
        self.prev = state.anomaly
        _set_modes(anomaly=True)
        return self

    def __exit__(self, *exc):
        _set_modes(anomaly=self.prev)


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
