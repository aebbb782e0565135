"""Neural-network building blocks with ``torch.nn``'s API: :class:`Module`, :class:`Parameter`,
containers, layers, losses, ``nn.functional`` (as ``F``), ``nn.init`` and ``nn.parallel``
(DistributedDataParallel).

Parameter names, shapes, defaults and initialisation follow PyTorch, so a PyTorch ``state_dict``
converted to arrays loads into the same architecture and gives the same outputs and gradients.
"""
from . import functional, init
from .layers import (ELU, GELU, AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout,
                     Dropout2d, Flatten, Identity, LeakyReLU, Linear, LogSoftmax, MaxPool2d, ReLU, Sigmoid,
                     SiLU, Softmax, Softplus, SyncBatchNorm, Tanh)
from .layers import Embedding, Hardtanh, LayerNorm, ReLU6, Unflatten
from .loss import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, L1Loss, MSELoss, NLLLoss, SmoothL1Loss
from .containers import ModuleDict, ModuleList, Sequential
from .module import Module, Parameter
from . import parallel, utils

__all__ = [
    "functional", "init", "Module", "Parameter", "Sequential", "ModuleList", "ModuleDict",
    "Identity", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Dropout", "Dropout2d",
    "BatchNorm1d", "BatchNorm2d", "SyncBatchNorm", "parallel", "utils", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "SiLU", "ELU",
    "Softplus", "Softmax", "LogSoftmax", "Flatten", "LayerNorm", "Embedding", "Unflatten", "Hardtanh", "ReLU6",
    "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "BCELoss", "BCEWithLogitsLoss", "HuberLoss", "SmoothL1Loss",
]
