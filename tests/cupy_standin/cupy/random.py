"""``cupy.random`` of the CPU stand-in: a RandomState over NumPy's PCG64 whose state, as with
CuPy's cuRAND generators, cannot be exported (its draws are not CuPy's)."""
from __future__ import annotations

import numpy as _np

from . import _standin


class RandomState:
    def __init__(self, seed=None, method=None):
        self.method = method
        self.seed(seed)

    def seed(self, seed=None):
        self._gen = _np.random.Generator(_np.random.PCG64(seed))

    def _out(self, a):
        _standin._kernel()
        return _standin._wrap(_np.asarray(a))

    def random_sample(self, size=None, dtype=float):
        return self._out(self._gen.random(size, dtype=_np.dtype(dtype)))

    def rand(self, *size, dtype=float):
        return self.random_sample(size or None, dtype)

    def standard_normal(self, size=None, dtype=float):
        return self._out(self._gen.standard_normal(size, dtype=_np.dtype(dtype)))

    def randn(self, *size, dtype=float):
        return self.standard_normal(size or None, dtype)

    def normal(self, loc=0.0, scale=1.0, size=None, dtype=float):
        return self._out((self._gen.normal(loc, scale, size)).astype(dtype))

    def uniform(self, low=0.0, high=1.0, size=None, dtype=float):
        return self._out(self._gen.uniform(low, high, size).astype(dtype))

    def randint(self, low, high=None, size=None, dtype=int):
        return self._out(self._gen.integers(low, high, size=size, dtype=_np.dtype(dtype)))

    def permutation(self, num):
        return self._out(self._gen.permutation(num))

    def shuffle(self, a):
        _standin._kernel()
        self._gen.shuffle(a._a)


_global = RandomState()


def seed(seed=None):
    _global.seed(seed)


def get_random_state():
    return _global
