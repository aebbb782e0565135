"""``cupy.lib.stride_tricks.as_strided``: a view (CuPy's is writable too)."""
import numpy as _np

from .. import _standin


def as_strided(x, shape=None, strides=None):
    return _standin._wrap(_np.lib.stride_tricks.as_strided(_standin._unwrap(x), shape, strides))
