"""The stand-in's device array and its counters (see the package docstring)."""
from __future__ import annotations

import collections
import contextlib
import os
import sys
import threading

import numpy as _np

_HERE = os.path.dirname(os.path.abspath(__file__))


# -- counters ------------------------------------------------------------------------------------
class Counts:
    """Kernel-like operations, host synchronisations and host-to-device copies, each a
    ``collections.Counter`` keyed by ``"file:line"`` of the code outside the stand-in that asked."""

    def __init__(self):
        self.kernels = collections.Counter()
        self.syncs = collections.Counter()
        self.h2d = collections.Counter()

    def totals(self) -> dict:
        return {"kernels": sum(self.kernels.values()), "syncs": sum(self.syncs.values()),
                "h2d": sum(self.h2d.values())}

    def __repr__(self):
        return f"Counts({self.totals()})"


_state = threading.local()  # per thread: the loader thread's copies are not the step's


def _active():
    return getattr(_state, "counts", None)


def _strict():
    return getattr(_state, "strict", False)


def _caller() -> str:
    """``file:line`` of the first frame outside this package."""
    f = sys._getframe(2)
    while f is not None and f.f_code.co_filename.startswith(_HERE):
        f = f.f_back
    if f is None:
        return "?"
    return f"{os.path.relpath(f.f_code.co_filename)}:{f.f_lineno}"


def _kernel():
    counts = _active()
    if counts is not None:
        counts.kernels[_caller()] += 1


def _sync(what):
    if _strict():
        raise AssertionError(f"host synchronisation ({what}) where forbid_host_transfers() is on")
    counts = _active()
    if counts is not None:
        counts.syncs[_caller()] += 1


def _h2d(what):
    if _strict():
        raise AssertionError(f"host-to-device copy ({what}) where forbid_host_transfers() is on")
    counts = _active()
    if counts is not None:
        counts.h2d[_caller()] += 1


@contextlib.contextmanager
def counting():
    """Count this thread's device work inside the block: ``with counting() as c: ...; c.totals()``."""
    previous, _state.counts = _active(), Counts()
    try:
        yield _state.counts
    finally:
        _state.counts = previous


@contextlib.contextmanager
def forbid_host_transfers():
    """Raise (with the traceback of the offending line) on any host sync or host-to-device copy
    made by this thread inside the block."""
    previous, _state.strict = _strict(), True
    try:
        yield
    finally:
        _state.strict = previous


# -- wrapping ------------------------------------------------------------------------------------
def _refuse(obj):
    raise TypeError(f"Unsupported type {type(obj)} (the CPU stand-in for CuPy refuses NumPy arrays "
                    "as operands, as CuPy does: move them to the device with cupy.asarray)")


def _unwrap(obj):
    """Device arrays -> their NumPy array; NumPy arrays refused; containers recursively."""
    t = type(obj)
    if t is ndarray:
        return obj._a
    if t is _np.ndarray:
        _refuse(obj)
    if t is tuple or t is list:
        return t(_unwrap(o) for o in obj)
    return obj


def _unwrap_index(idx):
    """An index: device arrays unwrapped; NumPy index arrays accepted (a host-to-device copy, as
    CuPy copies them)."""
    t = type(idx)
    if t is ndarray:
        return idx._a
    if t is _np.ndarray:
        _h2d("a NumPy index array")
        return idx
    if t is tuple or t is list:
        return t(_unwrap_index(o) for o in idx)
    return idx


def _wrap(obj):
    """NumPy results -> device arrays (NumPy scalars become 0-d arrays, as CuPy gives them)."""
    if isinstance(obj, _np.ndarray):
        out = object.__new__(ndarray)
        out._a = obj
        return out
    if isinstance(obj, _np.generic):
        return _wrap(_np.asarray(obj))
    if type(obj) is tuple or type(obj) is list:
        return type(obj)(_wrap(o) for o in obj)
    return obj


def _wrap_function(fn, name, count=True):
    def device_function(*args, **kwargs):
        args = _unwrap(args)
        kwargs = {k: _unwrap(v) for k, v in kwargs.items()}
        if count:
            _kernel()
        return _wrap(fn(*args, **kwargs))
    device_function.__name__ = device_function.__qualname__ = name
    device_function.__doc__ = f"cupy.{name} (CPU stand-in over numpy.{name})"
    return device_function


def make_creator(fn):
    """asarray/array: host data (NumPy arrays, lists, scalars) is copied to the device."""
    def creator(obj, dtype=None, *args, **kwargs):
        if isinstance(obj, ndarray):
            _kernel()
            return _wrap(fn(obj._a, dtype, *args, **kwargs))
        if isinstance(obj, (list, tuple)) and any(isinstance(o, ndarray) for o in obj):
            raise TypeError("the CPU stand-in for CuPy does not build arrays from sequences of "
                            "device arrays (use cupy.stack)")
        _h2d(f"cupy.{fn.__name__} of a host {type(obj).__name__}")
        out = _np.array(fn(obj, dtype, *args, **kwargs), copy=True)
        return _wrap(out)
    creator.__name__ = fn.__name__
    return creator


def asnumpy(a, stream=None, out=None):
    """The only way back to the host (with ``ndarray.get``): a copy, a host synchronisation."""
    if isinstance(a, ndarray):
        _sync("cupy.asnumpy")
        host = a._a.copy()
    else:
        host = _np.asarray(a)
    if out is not None:
        out[...] = host
        return out
    return host


def get_array_module(*args):
    import cupy
    return cupy if any(isinstance(a, ndarray) for a in args) else _np


class Flags:
    """CuPy's flags: no ``writeable`` (device memory cannot be made read-only)."""
    __slots__ = ("c_contiguous", "f_contiguous", "owndata")

    def __init__(self, a):
        self.c_contiguous = a.flags.c_contiguous
        self.f_contiguous = a.flags.f_contiguous
        self.owndata = a.flags.owndata

    def __getitem__(self, key):
        return getattr(self, {"C_CONTIGUOUS": "c_contiguous", "F_CONTIGUOUS": "f_contiguous",
                              "OWNDATA": "owndata"}[key])


def _binary(name):
    op = getattr(_np.ndarray, name)

    def method(self, other):
        if type(other) is _np.ndarray:
            _refuse(other)
        if type(other) is ndarray:
            other = other._a
        elif isinstance(other, (list, tuple)):
            return NotImplemented
        _kernel()
        return _wrap(op(self._a, other))
    method.__name__ = name
    return method


def _inplace(name):
    op = getattr(_np.ndarray, name)

    def method(self, other):
        if type(other) is _np.ndarray:
            _refuse(other)
        if type(other) is ndarray:
            other = other._a
        _kernel()
        op(self._a, other)
        return self
    method.__name__ = name
    return method


def _unary(name):
    op = getattr(_np.ndarray, name)

    def method(self):
        _kernel()
        return _wrap(op(self._a))
    method.__name__ = name
    return method


def _to_host_scalar(name):
    def method(self):
        _sync(f"{name}() of a device array")
        return getattr(self._a, name)()
    method.__name__ = name
    return method


# ndarray methods that only describe or re-view an array: no kernel.
_VIEWS = {"reshape", "view", "transpose", "swapaxes", "squeeze", "ravel_view"}
_ATTRS = {"shape", "dtype", "ndim", "size", "strides", "itemsize", "nbytes"}


class ndarray:
    """A device array of the stand-in: a NumPy array behind CuPy's restrictions."""
    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 100

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        self._a = _np.empty(shape, dtype=dtype, order=order)

    # -- what numpy may and may not do with it
    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` "
                        "to construct a NumPy array explicitly. (CPU stand-in for CuPy)")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if any(type(x) is _np.ndarray for x in inputs) or any(
                type(x) is _np.ndarray for x in kwargs.get("out", ()) or ()):
            return NotImplemented
        inputs = _unwrap(inputs)
        if "out" in kwargs:
            kwargs["out"] = _unwrap(kwargs["out"])
        _kernel()
        return _wrap(getattr(ufunc, method)(*inputs, **kwargs))

    def __array_function__(self, func, types, args, kwargs):
        if any(t is _np.ndarray for t in types):
            return NotImplemented
        args = _unwrap(args)
        kwargs = {k: _unwrap(v) for k, v in kwargs.items()}
        _kernel()
        return _wrap(func(*args, **kwargs))

    # -- host transfers
    def get(self, stream=None, order="C", out=None):
        return asnumpy(self, out=out)

    def set(self, arr, stream=None):
        _h2d("ndarray.set")
        self._a[...] = _np.asarray(arr)

    def item(self):
        _sync("ndarray.item()")
        return self._a.item()

    def tolist(self):
        _sync("ndarray.tolist()")
        return self._a.tolist()

    __float__ = _to_host_scalar("__float__")
    __int__ = _to_host_scalar("__int__")
    __index__ = _to_host_scalar("__index__")
    __complex__ = _to_host_scalar("__complex__")

    def __bool__(self):
        _sync("bool() of a device array")
        return bool(self._a)

    def __repr__(self):
        return repr(self._a).replace("array(", "array(", 1)

    def __str__(self):
        return str(self._a)

    def __format__(self, spec):
        _sync("format() of a device array")
        return format(self._a if self._a.ndim else self._a.item(), spec)

    # -- description
    @property
    def flags(self):
        return Flags(self._a)

    @property
    def shape(self):
        return self._a.shape

    @shape.setter
    def shape(self, value):
        self._a.shape = value

    @property
    def dtype(self):
        return self._a.dtype

    @property
    def ndim(self):
        return self._a.ndim

    @property
    def size(self):
        return self._a.size

    @property
    def strides(self):
        return self._a.strides

    @property
    def itemsize(self):
        return self._a.itemsize

    @property
    def nbytes(self):
        return self._a.nbytes

    @property
    def base(self):
        return None if self._a.base is None else _wrap(self._a.base) if isinstance(
            self._a.base, _np.ndarray) else None

    @property
    def T(self):
        return _wrap(self._a.T)

    @property
    def real(self):
        return _wrap(self._a.real)

    @property
    def imag(self):
        return _wrap(self._a.imag)

    @property
    def device(self):
        from .cuda import Device
        return Device(0)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        for row in self._a:
            yield _wrap(row)

    __hash__ = None

    # -- indexing
    def __getitem__(self, idx):
        idx = _unwrap_index(idx)
        _kernel()
        return _wrap(self._a[idx])

    def __setitem__(self, idx, value):
        idx = _unwrap_index(idx)
        if type(value) is ndarray:
            value = value._a
        elif type(value) is _np.ndarray:
            _h2d("setting device elements from a NumPy array")
        _kernel()
        self._a[idx] = value

    # -- copies and pickling (CuPy arrays pickle through the host)
    def __copy__(self):
        _kernel()
        return _wrap(self._a.copy())

    def __deepcopy__(self, memo):
        _kernel()
        return _wrap(self._a.copy())

    def __reduce__(self):
        return _rebuild, (self._a.copy(),)

    # -- every other method: NumPy's, on the device
    def __getattr__(self, name):
        if name == "_a" or name.startswith("__"):
            # never NumPy's __array_interface__/__array_struct__/buffer: no implicit conversion
            raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r}")
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)
        count = name not in _VIEWS

        def method(*args, **kwargs):
            args = _unwrap(args)
            kwargs = {k: _unwrap(v) for k, v in kwargs.items()}
            if count:
                _kernel()
            return _wrap(attr(*args, **kwargs))
        method.__name__ = name
        return method


def _rebuild(host):
    return _wrap(host)


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or",
              "xor", "lshift", "rshift", "lt", "le", "gt", "ge", "eq", "ne", "divmod"):
    setattr(ndarray, f"__{_name}__", _binary(f"__{_name}__"))
    if _name not in ("lt", "le", "gt", "ge", "eq", "ne"):
        if hasattr(_np.ndarray, f"__r{_name}__"):
            setattr(ndarray, f"__r{_name}__", _binary(f"__r{_name}__"))
        if hasattr(_np.ndarray, f"__i{_name}__"):
            setattr(ndarray, f"__i{_name}__", _inplace(f"__i{_name}__"))
for _name in ("neg", "pos", "abs", "invert"):
    setattr(ndarray, f"__{_name}__", _unary(f"__{_name}__"))
