"""tinygrad_hw: a small reverse-mode autodiff library with PyTorch's API on NumPy or CuPy.

Layers, bottom up (each imports only those below it): :mod:`.backend` and :mod:`.dtypes` (arrays
and their types), :mod:`.kernels` (raw array kernels), :mod:`.autograd` (the Function base, grad
modes, the backward pass), :mod:`.ops` (every differentiable op), :mod:`.tensor` and
:mod:`.creation` (the Tensor API), :mod:`.distributed` (process groups and collectives), then
:mod:`.nn`, :mod:`.optim`, :mod:`.data`, and on top
:mod:`.models`, :mod:`.training` and :mod:`.testing`.
"""
from .backend import (are_deterministic_algorithms_enabled, get_backend, get_rng_state, manual_seed,
                      set_backend, set_rng_state, use_deterministic_algorithms)
from .dtypes import get_default_dtype, set_default_dtype
from .autograd import (AnomalyError, detect_anomaly, enable_grad, grad, is_anomaly_enabled, is_grad_enabled, no_grad,
                       set_grad_enabled)
from .tensor import Tensor, cat, stack, where
from .creation import arange, full, ones, ones_like, rand, randn, tensor, zeros, zeros_like
from .creation import (as_tensor, empty, empty_like, eye, from_numpy, full_like, linspace, rand_like,
                       randint, randn_like, randperm)
from .device import device
from .dtypes import (double, float16, float32, float64, half, int8, int16, int32, int64, long, short,
                     uint8)
from .dtypes import bool_ as bool, float32 as float, int32 as int  # noqa: A001 (PyTorch's names)
from .functions import *  # noqa: F401,F403 (hw.max, hw.argmax... the torch.* function forms)
from .gradcheck import gradcheck, gradgradcheck
from .serialization import CheckpointError, load, save
from . import distributed, nn, optim, data, models, training, testing

__version__ = "0.1.0"

import builtins as _builtins

# ``from tinygrad_hw import *`` must not shadow the builtins that hw.max, hw.float, hw.all...
# are named after (use them as hw.max etc.)
__all__ = sorted(name for name in dir() if not name.startswith("_") and not hasattr(_builtins, name))
