"""tinygrad_hw: a small reverse-mode autodiff library with PyTorch's API on NumPy or CuPy."""
from .backend import (get_backend, get_default_dtype, get_rng_state, manual_seed, set_backend,
                      set_default_dtype, set_rng_state)
from .tensor import (AnomalyError, Tensor, arange, cat, detect_anomaly, enable_grad, full, grad,
                     is_grad_enabled, no_grad, ones, ones_like, rand, randn, stack, tensor, where, zeros,
                     zeros_like)
from .gradcheck import gradcheck, gradgradcheck
from . import optim, data

__version__ = "0.1.0"
from . import nn, testing
from .serialization import CheckpointError, load, save
