"""tinygrad_hw: a small reverse-mode autodiff library with PyTorch's API on NumPy or CuPy.

Layers, bottom up (each imports only those below it): :mod:`.backend` and :mod:`.dtypes` (arrays
and their types), :mod:`.kernels` (raw array kernels), :mod:`.autograd` (the Function base, grad
modes, the backward pass), :mod:`.ops` (every differentiable op), :mod:`.tensor` and
:mod:`.creation` (the Tensor API), :mod:`.distributed` (process groups and collectives), then
:mod:`.nn`, :mod:`.optim`, :mod:`.data`, and on top
:mod:`.models`, :mod:`.training` and :mod:`.testing`.
"""
from .backend import get_backend, get_rng_state, manual_seed, set_backend, set_rng_state
from .dtypes import get_default_dtype, set_default_dtype
from .autograd import (AnomalyError, detect_anomaly, enable_grad, grad, is_anomaly_enabled, is_grad_enabled, no_grad,
                       set_grad_enabled)
from .tensor import Tensor, cat, stack, where
from .creation import arange, full, ones, ones_like, rand, randn, tensor, zeros, zeros_like
from .gradcheck import gradcheck, gradgradcheck
from .serialization import CheckpointError, load, save
from . import distributed, nn, optim, data, models, training, testing

__version__ = "0.1.0"
