"""Stateless layer functions with ``torch.nn.functional``'s names, arguments and defaults.

Import as ``import tinygrad_hw.nn.functional as F``. The layer classes of :mod:`tinygrad_hw.nn`
call these. One module per family:

* :mod:`.linear`: ``linear``
* :mod:`.conv`: ``conv2d``, ``conv_transpose2d``, ``max_pool2d``, ``avg_pool2d``, ``adaptive_avg_pool2d``
* :mod:`.normalization`: ``batch_norm``, ``layer_norm``, ``normalize``
* :mod:`.dropout`: ``dropout``, ``dropout2d``
* :mod:`.activation`: ``relu``, ``leaky_relu``, ``sigmoid``, ``tanh``, ``gelu``, ``silu``, ``elu``,
  ``softplus``, ``softmax``, ``log_softmax``, ``hardtanh``, ``relu6``
* :mod:`.loss`: ``cross_entropy``, ``nll_loss``, ``mse_loss``, ``l1_loss``,
  ``binary_cross_entropy``, ``binary_cross_entropy_with_logits``, ``huber_loss``, ``smooth_l1_loss``
* :mod:`.shape`: ``flatten``, ``pad``, ``one_hot``, ``embedding``

Argument checks shared with the layers are in :mod:`tinygrad_hw.nn.validation`; the
differentiable ops these functions record are in :mod:`tinygrad_hw.ops`.
"""
from .activation import elu, gelu, leaky_relu, log_softmax, relu, sigmoid, silu, softmax, softplus, tanh
from .activation import hardtanh, relu6
from .conv import adaptive_avg_pool2d, avg_pool2d, conv2d, conv_transpose2d, max_pool2d
from .dropout import dropout, dropout2d
from .linear import linear
from .loss import (binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy, huber_loss, l1_loss,
                   mse_loss, nll_loss, smooth_l1_loss)
from .normalization import batch_norm, layer_norm, normalize
from .shape import embedding, flatten, one_hot, pad

__all__ = [
    "linear", "conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
    "dropout", "dropout2d", "batch_norm", "normalize", "layer_norm", "flatten", "pad", "one_hot",
    "embedding", "hardtanh", "relu6",
    "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "silu", "elu", "softplus", "softmax",
    "log_softmax",
    "cross_entropy", "nll_loss", "mse_loss", "l1_loss", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "huber_loss", "smooth_l1_loss",
]
