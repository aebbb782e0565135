"""Layers with ``torch.nn``'s names, arguments, defaults, parameter names, shapes and
initialisation. Each is a thin wrapper around :mod:`tinygrad_hw.nn.functional`.

Every layer also takes keyword arguments ``backend=`` ('numpy'/'cupy', default: the default
backend) and ``dtype=`` (default: ``hw.get_default_dtype()``) for its parameters, PyTorch's
``device=`` / ``dtype=``.
"""
from __future__ import annotations

import math

import numpy

from ..backend import get_backend
from ..dtypes import get_default_dtype, to_dtype
from ..tensor import Tensor
from . import functional as F
from .functional.conv import conv2d_relu
from . import init
from .module import Module, Parameter
from .validation import check_probability, pair, positive_int

__all__ = ["Identity", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Dropout",
           "Dropout2d", "BatchNorm1d", "BatchNorm2d", "SyncBatchNorm", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU",
           "SiLU", "ELU", "Softplus", "Softmax", "LogSoftmax", "Flatten", "LayerNorm", "Embedding", "Unflatten",
           "Hardtanh", "ReLU6"]


def _new_param(shape, dtype, backend, fill=0.0):
    be = get_backend(backend)
    dtype = to_dtype(dtype) if dtype is not None else get_default_dtype()
    if dtype.kind != "f":
        raise TypeError(f"parameters must be floating point, got dtype {dtype}")
    return Parameter(Tensor._make(be.xp.full(shape, fill, dtype=dtype), be))


def _new_buffer(shape, dtype, backend, fill):
    be = get_backend(backend)
    return Tensor._make(be.xp.full(shape, fill, dtype=dtype), be)


def _weight_and_bias(module, weight_shape, bias: bool, dtype, backend) -> None:
    """Register ``module.weight`` of ``weight_shape`` and ``module.bias`` (one per output, or
    None when ``bias`` is false), uninitialised."""
    module.weight = _new_param(weight_shape, dtype, backend)
    if bias:
        module.bias = _new_param((weight_shape[0],), dtype, backend)
    else:
        module.register_parameter("bias", None)


def _reset_like_pytorch(weight, bias) -> None:
    """PyTorch's default initialisation of Linear and Conv2d: kaiming_uniform with a=sqrt(5) for
    the weight (U(+-1/sqrt(fan_in))), and U(+-1/sqrt(fan_in)) for the bias."""
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    fan_in = math.prod(weight.shape[1:])
    if bias is not None and fan_in:
        bound = 1 / math.sqrt(fan_in)
        init.uniform_(bias, -bound, bound)


class Identity(Module):
    """Returns its input (any constructor arguments are ignored, as in PyTorch)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


class Linear(Module):
    """``y = x @ weight.T + bias``; weight (out_features, in_features), bias (out_features,).

    Initialised like PyTorch: weight ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform with a=sqrt(5)),
    bias ~ U(-1/sqrt(in), 1/sqrt(in)).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, backend=None, dtype=None):
        super().__init__()
        positive_int("Linear", "in_features", in_features)
        positive_int("Linear", "out_features", out_features)
        self.in_features, self.out_features = in_features, out_features
        _weight_and_bias(self, (out_features, in_features), bias, dtype, backend)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_like_pytorch(self.weight, self.bias)

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Conv2d(Module):
    """2-D convolution over (N, C_in, H, W) input; weight (C_out, C_in / groups, kh, kw), bias
    (C_out,). ``kernel_size``, ``stride``, ``padding`` and ``dilation`` take an int or a pair;
    ``padding`` may also be 'valid' or 'same' (stride 1). Only ``padding_mode='zeros'``.
    Initialised like PyTorch (kaiming_uniform with a=sqrt(5); bias U(+-1/sqrt(fan_in)))."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *,
                 backend=None, dtype=None):
        super().__init__()
        name = "Conv2d"
        positive_int(name, "in_channels", in_channels)
        positive_int(name, "out_channels", out_channels)
        positive_int(name, "groups", groups)
        if in_channels % groups:
            raise ValueError(f"{name}: in_channels={in_channels} must be divisible by groups={groups}")
        if out_channels % groups:
            raise ValueError(f"{name}: out_channels={out_channels} must be divisible by groups={groups}")
        self.kernel_size = pair(kernel_size, name, "kernel_size", 1)
        self.stride = pair(stride, name, "stride", 1)
        self.dilation = pair(dilation, name, "dilation", 1)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"{name}: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(f"{name}: padding='same' is not supported for strided convolutions")
            self.padding = padding
        else:
            self.padding = pair(padding, name, "padding", 0)
        if padding_mode != "zeros":
            raise NotImplementedError(f"{name}: only padding_mode='zeros' is supported, got {padding_mode!r}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.padding_mode = padding_mode
        _weight_and_bias(self, (out_channels, in_channels // groups) + self.kernel_size, bias, dtype,
                         backend)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_like_pytorch(self.weight, self.bias)

    def forward(self, input, *, _then_relu=False):
        # _then_relu: nn.Sequential's fused Conv2d -> ReLU (conv2d_relu: the same values and
        # gradients as the two ops, one pass fewer)
        conv = conv2d_relu if _then_relu else F.conv2d
        return conv(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding!r}" if isinstance(self.padding, str) else f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class _Pool2d(Module):
    """The window arguments every pooling layer keeps; ``stride`` defaults to ``kernel_size``."""

    def __init__(self, kernel_size, stride, padding, ceil_mode):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.ceil_mode = padding, ceil_mode


class MaxPool2d(_Pool2d):
    """Max pooling (ties go to the first maximum, padding never wins)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices: bool = False,
                 ceil_mode: bool = False):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.dilation, self.return_indices = dilation, return_indices

    def forward(self, input):
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(_Pool2d):
    """Average pooling (PyTorch's divisor rules; ``divisor_override`` is not supported)."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override=None):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def forward(self, input):
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size (``AdaptiveAvgPool2d(1)``: global average)."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, input):
        return F.adaptive_avg_pool2d(input, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class Dropout(Module):
    """Inverted dropout in training mode (zero with probability p, scale by 1/(1-p)); the
    identity in eval mode."""

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        check_probability("Dropout", p)
        self.p, self.inplace = p, inplace

    def forward(self, input):
        return F.dropout(input, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Dropout2d(Dropout):
    """Drops whole channels of (N, C, H, W) input in training mode."""

    def forward(self, input):
        return F.dropout2d(input, self.p, self.training)


class _BatchNorm(Module):
    _dims: tuple = ()
    _normalize = staticmethod(F.batch_norm)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *, backend=None, dtype=None):
        super().__init__()
        positive_int(type(self).__name__, "num_features", num_features)
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = _new_param((num_features,), dtype, backend, 1.0)
            self.bias = _new_param((num_features,), dtype, backend, 0.0)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            fdtype = to_dtype(dtype) if dtype is not None else get_default_dtype()
            self.register_buffer("running_mean", _new_buffer((num_features,), fdtype, backend, 0.0))
            self.register_buffer("running_var", _new_buffer((num_features,), fdtype, backend, 1.0))
            self.register_buffer("num_batches_tracked", _new_buffer((), numpy.int64, backend, 0))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def forward(self, input):
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: expected a Tensor input, got {type(input).__name__}")
        if input.ndim not in self._dims:
            raise ValueError(f"{name}: expected a {' or '.join(f'{d}-D' for d in self._dims)} input, "
                             f"got shape {input.shape}")
        if input.shape[1] != self.num_features:
            raise ValueError(f"{name}: input of shape {input.shape} has {input.shape[1]} channels "
                             f"(dim 1), expected num_features={self.num_features}")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.data += 1
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked.item())
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        return self._normalize(input, self.running_mean if track else None,
                               self.running_var if track else None, self.weight, self.bias,
                               use_batch_stats, factor, self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L) input."""
    _dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W) input."""
    _dims = (4,)


class SyncBatchNorm(_BatchNorm):
    """Batch norm whose training batch is every rank's batch together
    (:func:`~tinygrad_hw.nn.functional.normalization.sync_batch_norm`): the statistics, the
    running statistics and the input gradient are those of one process with the whole global
    batch. Any (N, C, ...) input. Without a process group it is plain batch norm. PyTorch's
    ``process_group`` argument is not taken (the default group is used)."""
    _dims = (2, 3, 4, 5)
    _normalize = staticmethod(F.normalization.sync_batch_norm)

    @classmethod
    def convert_sync_batchnorm(cls, module):
        """``module`` with every BatchNorm1d/2d replaced by a SyncBatchNorm holding the same
        parameters and buffers (the Parameter objects are kept); returns the new module."""
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
            sync = cls(module.num_features, module.eps, module.momentum, module.affine,
                       module.track_running_stats)
            for registry in ("_parameters", "_buffers"):
                getattr(sync, registry).update(getattr(module, registry))
            sync.train(module.training)
            return sync
        for name, child in list(module._modules.items()):
            if child is not None:
                module._modules[name] = cls.convert_sync_batchnorm(child)
        return module


class _Activation(Module):
    """Base of the activation layers: keeps the constructor's options as attributes and shows
    them as PyTorch does (``LeakyReLU(negative_slope=0.01)``; ``inplace`` only when true)."""

    def __init__(self, **options):
        super().__init__()
        self._options = tuple(options)
        for key, value in options.items():
            setattr(self, key, value)

    def extra_repr(self):
        shown = [f"{key}={getattr(self, key)!r}" for key in self._options if key != "inplace"]
        if getattr(self, "inplace", False):
            shown.append("inplace=True")
        return ", ".join(shown)


class ReLU(_Activation):
    """``max(x, 0)`` elementwise, gradient 0 at 0. ``inplace`` is accepted and ignored (never in
    place). Deviation: ``relu(-0.0)`` is ``+0.0`` (PyTorch keeps the sign)."""

    def __init__(self, inplace: bool = False):
        super().__init__(inplace=inplace)

    def forward(self, input): return F.relu(input)


class Sigmoid(Module):
    """``1 / (1 + exp(-x))``, without overflow for large ``|x|``."""

    def forward(self, input): return F.sigmoid(input)


class LeakyReLU(_Activation):
    """``x`` where positive, ``negative_slope * x`` elsewhere."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__(negative_slope=negative_slope, inplace=inplace)

    def forward(self, input): return F.leaky_relu(input, self.negative_slope)


class Tanh(Module):
    """Hyperbolic tangent."""

    def forward(self, input): return F.tanh(input)


class GELU(_Activation):
    """``x * Phi(x)`` with the normal CDF Phi, or its tanh approximation (``approximate='tanh'``)."""

    def __init__(self, approximate: str = "none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        super().__init__(approximate=approximate)

    def forward(self, input): return F.gelu(input, self.approximate)


class ELU(_Activation):
    """``x`` where positive, ``alpha * (exp(x) - 1)`` elsewhere: smooth at 0 for ``alpha = 1``,
    and bounded below by ``-alpha``."""

    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        super().__init__(alpha=alpha, inplace=inplace)

    def forward(self, input): return F.elu(input, self.alpha)


class SiLU(_Activation):
    """``x * sigmoid(x)`` (swish)."""

    def __init__(self, inplace: bool = False):
        super().__init__(inplace=inplace)

    def forward(self, input): return F.silu(input)


class Softplus(_Activation):
    """``log(1 + exp(beta x)) / beta``, and ``x`` itself where ``beta * x > threshold``."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0):
        super().__init__(beta=beta, threshold=threshold)

    def forward(self, input): return F.softplus(input, self.beta, self.threshold)


class Softmax(_Activation):
    """Softmax along ``dim`` (which must be given)."""

    def __init__(self, dim=None):
        super().__init__(dim=dim)

    def forward(self, input): return F.softmax(input, self.dim)


class LogSoftmax(_Activation):
    """Log of the softmax along ``dim``, computed stably."""

    def __init__(self, dim=None):
        super().__init__(dim=dim)

    def forward(self, input): return F.log_softmax(input, self.dim)


class Flatten(Module):
    """Flattens dims ``start_dim``..``end_dim`` (default: all but the batch dim)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input):
        return input.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


# -- added with the PyTorch idioms: LayerNorm, Embedding, Unflatten, Hardtanh, ReLU6 -------------
class LayerNorm(Module):
    """Normalises over the last dims ``normalized_shape``; ``weight`` (ones) and ``bias`` (zeros)
    of that shape when ``elementwise_affine`` (PyTorch's names and defaults)."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 *, backend=None, dtype=None):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        for n in shape:
            positive_int("LayerNorm", "normalized_shape", n)
        self.normalized_shape, self.eps, self.elementwise_affine = shape, eps, elementwise_affine
        if elementwise_affine:
            self.weight = _new_param(shape, dtype, backend, fill=1.0)
            if bias:
                self.bias = _new_param(shape, dtype, backend)
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, input):
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class Embedding(Module):
    """A table of ``num_embeddings`` vectors of ``embedding_dim``, initialised N(0, 1) (the
    ``padding_idx`` row zero and without gradient), indexed by integer tensors."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx=None, *, backend=None, dtype=None):
        super().__init__()
        positive_int("Embedding", "num_embeddings", num_embeddings)
        positive_int("Embedding", "embedding_dim", embedding_dim)
        if padding_idx is not None and not -num_embeddings <= padding_idx < num_embeddings:
            raise ValueError(f"Embedding: padding_idx {padding_idx} is out of range for {num_embeddings} rows")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = None if padding_idx is None else padding_idx % num_embeddings
        self.weight = _new_param((num_embeddings, embedding_dim), dtype, backend)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    def forward(self, input):
        return F.embedding(input, self.weight, self.padding_idx)

    def extra_repr(self):
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


class Unflatten(Module):
    """Splits dim ``dim`` into ``unflattened_size`` (the inverse of :class:`Flatten`)."""

    def __init__(self, dim: int, unflattened_size):
        super().__init__()
        self.dim, self.unflattened_size = dim, tuple(unflattened_size)

    def forward(self, input):
        return input.unflatten(self.dim, self.unflattened_size)

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


class Hardtanh(Module):
    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False):
        super().__init__()
        self.min_val, self.max_val = min_val, max_val

    def forward(self, input):
        return F.hardtanh(input, self.min_val, self.max_val)

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}"


class ReLU6(Hardtanh):
    def __init__(self, inplace: bool = False):
        super().__init__(0.0, 6.0)
