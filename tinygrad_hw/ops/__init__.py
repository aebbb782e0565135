"""Every differentiable operation, one small :class:`~tinygrad_hw.autograd.Function` class each,
forward (on raw arrays) beside backward (on Tensors, so higher-order gradients come free).

* :mod:`.elementwise`: arithmetic, maximum/minimum/where, unary functions, ReLU and friends, casts
* :mod:`.reduce`: sum, max, min, softmax, log-softmax
* :mod:`.shape`: reshape, permute, expand, indexing and scatter, padding, concatenation
* :mod:`.linalg`: matrix product, the fused linear layer
* :mod:`.conv`: convolution, its input and weight gradients
* :mod:`.pool`: max and average pooling and their adjoints
* :mod:`.nn`: fused batch norm, cross-entropy rows, the normal CDF

Array kernels with no autograd (im2col, Winograd, pooling) are in :mod:`tinygrad_hw.kernels`.
"""
from .conv import Conv2d, Conv2dInputGrad, Conv2dReLU, Conv2dWeightGrad
from .elementwise import (Abs, Add, Cast, Clamp, Div, Exp, LeakyRelu, Log, Log1p, Maximum, Minimum, Mul,
                          Neg, Pow, Relu, Sigmoid, Sqrt, Sub, Tanh, Where)
from .linalg import Linear, MatMul
from .nn import BatchNormTrain, CrossEntropyRows, NormalCdf
from .pool import AvgPool2d, AvgPool2dBackward, MaxPool2d, MaxPool2dBackward, MaxPool2dGather
from .reduce import Max, Min, LogSoftmax, Softmax, Sum
from .elementwise import Clone, Cos, Sin
from .nn import BinaryCrossEntropy
from .reduce import Cumsum, Norm2, NormP, Prod
from .shape import Cat, Expand, GetItem, Pad, Permute, Reshape, ScatterInto, SetItem

__all__ = [
    "Add", "Sub", "Mul", "Div", "Pow", "Maximum", "Minimum", "Where", "Neg", "Exp", "Log", "Log1p",
    "Sqrt", "Tanh", "Sigmoid", "Abs", "Relu", "LeakyRelu", "Clamp", "Cast",
    "Sum", "Max", "Min", "Softmax", "LogSoftmax",
    "Reshape", "Permute", "Expand", "GetItem", "ScatterInto", "SetItem", "Pad", "Cat",
    "MatMul", "Linear", "Conv2d", "Conv2dReLU", "Conv2dInputGrad", "Conv2dWeightGrad",
    "MaxPool2d", "MaxPool2dBackward", "MaxPool2dGather", "AvgPool2d", "AvgPool2dBackward",
    "BatchNormTrain", "CrossEntropyRows", "NormalCdf",
    "Clone", "Sin", "Cos", "Cumsum", "Norm2", "NormP", "Prod", "BinaryCrossEntropy",
]
