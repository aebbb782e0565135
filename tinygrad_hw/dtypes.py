"""Data types: the default floating dtype and PyTorch's type promotion.

Tensors use NumPy's dtype objects (CuPy uses the same ones). Python floats and lists of floats
become the default dtype (float32 unless :func:`set_default_dtype` says otherwise), as in
PyTorch.
"""
from __future__ import annotations

import numpy

__all__ = ["set_default_dtype", "get_default_dtype", "to_dtype", "is_float", "promote_types"]

_default_dtype = numpy.dtype(numpy.float32)


def set_default_dtype(dtype) -> None:
    """Set the floating dtype of tensors made from Python numbers and of new parameters."""
    global _default_dtype
    dt = numpy.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"set_default_dtype: expected a floating dtype, got {dt}")
    _default_dtype = dt


def get_default_dtype() -> numpy.dtype:
    return _default_dtype


def to_dtype(dtype) -> numpy.dtype:
    """``dtype`` ('float32', numpy.float64, ...) as a numpy.dtype (CuPy uses the same objects)."""
    try:
        return numpy.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"not a dtype: {dtype!r}") from exc


def is_float(dtype) -> bool:
    return dtype.kind == "f"


def promote_types(a, b) -> numpy.dtype:
    """PyTorch's promotion between two tensor dtypes: floats win over integers and bools."""
    if a == b:
        return a
    if is_float(a) != is_float(b):
        return a if is_float(a) else b
    if a.kind == "b":
        return b
    if b.kind == "b":
        return a
    return numpy.promote_types(a, b)



# PyTorch's dtype names (``hw.float32``, ``hw.long``...) as the NumPy dtypes that tensors use.
# ``hw.float``, ``hw.int`` and ``hw.bool`` are set in the package's __init__, so that this module
# does not shadow the builtins.
float16 = half = numpy.dtype(numpy.float16)
float32 = numpy.dtype(numpy.float32)
float64 = double = numpy.dtype(numpy.float64)
uint8 = numpy.dtype(numpy.uint8)
int8 = numpy.dtype(numpy.int8)
int16 = short = numpy.dtype(numpy.int16)
int32 = numpy.dtype(numpy.int32)
int64 = long = numpy.dtype(numpy.int64)
bool_ = numpy.dtype(numpy.bool_)
