"""Checking tinygrad_hw against PyTorch, the counterpart of ``torch.testing``.

* :mod:`.compare`: one op or layer: :func:`compare_with_torch` (forward, dtype, gradients with a
  random upstream gradient), :func:`compare_second_order`, :func:`assert_close`, :func:`rel_err`;
* :mod:`.networks`: a whole network and its PyTorch twin: :func:`compare_gradients` on a batch
  (float32 judged against the float64 result of the same network), :func:`check_networks`
  (the report of ``examples/cifar_cnn.py --check-gradients``), :func:`compare_trajectories`.

PyTorch is imported only when a comparison runs.
"""
from .compare import TOLERANCE, assert_close, compare_second_order, compare_with_torch, rel_err, to_torch
from .networks import (LIMITS, agreeing_batch, check_networks, compare_gradients, compare_trajectories,
                       decisions, disable_dropout, twins, worst_error)

__all__ = ["TOLERANCE", "rel_err", "assert_close", "to_torch", "compare_with_torch",
           "compare_second_order", "LIMITS", "twins", "disable_dropout", "decisions",
           "compare_gradients", "worst_error", "agreeing_batch", "check_networks",
           "compare_trajectories"]
