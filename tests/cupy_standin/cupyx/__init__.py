"""``cupyx`` of the CPU stand-in for CuPy (tests only): ``scatter_add``."""
import numpy as _np

from cupy import _standin


def scatter_add(a, slices, value):
    """``a[slices] += value`` with repeated indices summed (CuPy's uses atomics)."""
    _standin._kernel()
    _np.add.at(_standin._unwrap(a), _standin._unwrap_index(slices), _standin._unwrap(value))
