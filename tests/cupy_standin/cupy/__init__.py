"""A CPU stand-in for CuPy, for the test suite only: NOT CuPy, and never a substitute for a GPU run.

Importable as ``cupy`` only when its parent folder is put on ``PYTHONPATH``
(``PYTHONPATH=tests/cupy_standin TINYGRAD_HW_BACKEND=cupy pytest tests``; ``make test`` runs the
suite once more this way). Arrays are NumPy arrays wrapped in a ``cupy.ndarray`` that behaves like
CuPy's where that is cheap to mimic, so that code which only works on NumPy fails here too:

* ``flags`` has only ``c_contiguous``, ``f_contiguous`` and ``owndata`` (no ``writeable``);
* reductions and integer indexing give 0-d arrays, never NumPy scalars;
* NumPy arrays are refused as operands (Python and NumPy scalars are fine);
* ``numpy.asarray(device_array)`` raises (CuPy bans implicit conversion): ``.get()`` and
  ``cupy.asnumpy`` are the only ways back to the host;
* ``RandomState`` cannot export its state; CUDA kernels (``ElementwiseKernel``, ``RawKernel``,
  ``ReductionKernel``) compile nothing and raise when called.

It also counts, by the source line outside this package that asked: kernel-like operations (each
function, method or operator that makes or changes an array on the device), host
synchronisations (``.get()``, ``asnumpy``, ``float()``/``int()``/``bool()``/``.item()``,
``Stream.synchronize()``) and host-to-device copies (``asarray`` of host data, setting from host
data). See :mod:`cupy._standin` (``counting()``, ``forbid_host_transfers()``).
"""
from __future__ import annotations

import numpy as _np

from . import _standin
from ._standin import ndarray, _wrap, _wrap_function, asnumpy, get_array_module
from . import cuda, random  # noqa: F401  (cupy.cuda, cupy.random)
from ._kernels import ElementwiseKernel, RawKernel, RawModule, ReductionKernel  # noqa: F401
from . import lib  # noqa: F401

__version__ = "14.0.0+cpu-standin"
STANDIN = True  # how a test (and nothing in the library) can tell this is not CuPy

# Host data in, device array out: the host-to-device copies.
asarray = _standin.make_creator(_np.asarray)
array = _standin.make_creator(_np.array)
asanyarray = asarray
ascontiguousarray = _standin.make_creator(_np.ascontiguousarray)

# Names that are NumPy's own objects in CuPy too (dtypes, scalar types, constants).
dtype = _np.dtype
newaxis = None
pi, e, inf, nan = _np.pi, _np.e, _np.inf, _np.nan
_PASS = {"dtype", "finfo", "iinfo", "result_type", "promote_types", "can_cast", "issubdtype",
         "isscalar", "ndim", "shape", "min_scalar_type"}


def __getattr__(name):
    """Every other NumPy function, as a device function (wrapped once, then cached)."""
    try:
        obj = getattr(_np, name)
    except AttributeError:
        raise AttributeError(f"module 'cupy' (CPU stand-in) has no attribute {name!r}") from None
    if isinstance(obj, type) or not callable(obj):
        value = obj  # dtypes, scalar types, constants
    elif name in _PASS:
        value = _wrap_function(obj, name, count=False)  # dtype and shape queries: no kernel
    else:
        value = _wrap_function(obj, name)
    globals()[name] = value
    return value
