"""The CIFAR-10 networks of the example, the tests and the benchmarks.

Each builder takes the layer library as its first argument: ``tinygrad_hw.nn`` (the default) or
``torch.nn``. The same call gives the same architecture with the same ``state_dict`` keys and
shapes in both libraries, so weights copied from one (:func:`copy_weights`) make the other compute
the same function; :func:`torch_model` builds the PyTorch twin of a tinygrad_hw network by name.
PyTorch is optional: it is imported only by :func:`torch_model` and :func:`copy_weights` when
asked for.

* :func:`seed_net`: the assignment's network. The text says every convolution doubles the
  channels (kernel 3, stride 1, padding 1) and is followed by ReLU and 2x2 max pooling, then
  dense layers of 512, 256 and 10 units with dropout 0.05 before each; it does not say how many
  convolutions. We read it as three: 3 -> 6 -> 12 -> 24 channels, 32 -> 16 -> 8 -> 4 pixels, so
  24 * 4 * 4 = 384 features enter the dense layers.
* :func:`fast_net`: the CPU recipe's network, three blocks of conv -> max-pool -> BatchNorm ->
  ReLU -> conv -> BatchNorm -> ReLU (32, 64, 128 channels) after a conv-BatchNorm-ReLU stem
  (16 channels), a global max-pool and a linear
  classifier whose logits are scaled down by ``logit_scale``. Convolution and pooling come
  before normalisation so that the first conv of each block runs at the block's input
  resolution while BatchNorm and ReLU run on four times fewer pixels.
* :func:`vgg_net`: a wider, deeper ResNet-9-style network (conv 64, conv 128 + pool, residual
  128, conv 256 + pool, conv 512 + pool, residual 512) for a GPU.
"""
from __future__ import annotations

__all__ = ["seed_net", "fast_net", "vgg_net", "build", "torch_model", "copy_weights", "MODELS",
           "count_parameters", "patch_whitening_filters", "whiten_first_conv"]


def _default_lib(lib):
    if lib is None:
        from tinygrad_hw import nn
        return nn
    return lib


_CLASS_CACHE: dict = {}


def _helpers(lib):
    """(Residual, Scale) module classes written against ``lib``'s Module, built once per library.

    Both only use operations that tinygrad_hw and PyTorch tensors share (``+``, ``*``)."""
    key = id(lib)
    if key not in _CLASS_CACHE:
        class Residual(lib.Module):
            """``x + body(x)``."""

            def __init__(self, *layers):
                super().__init__()
                self.body = lib.Sequential(*layers)

            def forward(self, x):
                return x + self.body(x)

        class Scale(lib.Module):
            """Multiplies its input by a constant ``factor``."""

            def __init__(self, factor: float):
                super().__init__()
                self.factor = float(factor)

            def forward(self, x):
                return x * self.factor

            def extra_repr(self):
                return f"factor={self.factor}"

        _CLASS_CACHE[key] = (lib, Residual, Scale)  # keep lib alive so its id stays unique
    return _CLASS_CACHE[key][1:]


def seed_net(lib=None, dropout: float = 0.05, channels=(6, 12, 24), hidden=(512, 256),
             num_classes: int = 10):
    """The assignment's CNN (see the module docstring): conv(3->6->12->24, k3 s1 p1) each with
    ReLU and MaxPool 2x2, then Dropout -> Linear(384, 512) -> ReLU -> Dropout -> Linear(512, 256)
    -> ReLU -> Dropout -> Linear(256, 10)."""
    nn = _default_lib(lib)
    layers, cin, size = [], 3, 32
    for cout in channels:
        layers += [nn.Conv2d(cin, cout, 3, stride=1, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2)]
        cin, size = cout, size // 2
    features = cin * size * size
    layers.append(nn.Flatten())
    for width in hidden:
        layers += [nn.Dropout(dropout), nn.Linear(features, width), nn.ReLU()]
        features = width
    layers += [nn.Dropout(dropout), nn.Linear(features, num_classes)]
    return nn.Sequential(*layers)


def _conv_bn(nn, cin, cout, pool=False):
    """conv3x3 (no bias: BatchNorm's shift replaces it) [-> max-pool 2x2] -> BatchNorm -> ReLU."""
    layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return layers + [nn.BatchNorm2d(cout), nn.ReLU()]


def fast_net(lib=None, widths=(32, 64, 128), stem: int | None = None, logit_scale: float = 0.125,
             num_classes: int = 10):
    """The CPU recipe's network (see the module docstring). ``widths`` are the channels of the
    three blocks, ``stem`` those of the first convolution (default: half the first block's).
    Input 32x32 -> 16 -> 8 -> 4 -> global max-pool."""
    nn = _default_lib(lib)
    _, Scale = _helpers(nn)
    if stem is None:
        stem = max(4, widths[0] // 2)
    layers = _conv_bn(nn, 3, stem)
    cin = stem
    for width in widths:
        layers += _conv_bn(nn, cin, width, pool=True) + _conv_bn(nn, width, width)
        cin = width
    layers += [nn.MaxPool2d(4), nn.Flatten(), nn.Linear(cin, num_classes, bias=False),
               Scale(logit_scale)]
    return nn.Sequential(*layers)


def vgg_net(lib=None, width: int = 64, logit_scale: float = 0.125, num_classes: int = 10):
    """ResNet-9-style network for a GPU: conv(w) -> conv(2w)+pool -> residual(2w) ->
    conv(4w)+pool -> conv(8w)+pool -> residual(8w) -> global max-pool -> linear (w=64: about
    6.6 M parameters)."""
    nn = _default_lib(lib)
    Residual, Scale = _helpers(nn)
    w = width
    layers = _conv_bn(nn, 3, w) + _conv_bn(nn, w, 2 * w, pool=True)
    layers.append(Residual(*(_conv_bn(nn, 2 * w, 2 * w) + _conv_bn(nn, 2 * w, 2 * w))))
    layers += _conv_bn(nn, 2 * w, 4 * w, pool=True) + _conv_bn(nn, 4 * w, 8 * w, pool=True)
    layers.append(Residual(*(_conv_bn(nn, 8 * w, 8 * w) + _conv_bn(nn, 8 * w, 8 * w))))
    layers += [nn.MaxPool2d(4), nn.Flatten(), nn.Linear(8 * w, num_classes, bias=False),
               Scale(logit_scale)]
    return nn.Sequential(*layers)


MODELS = {"seed": seed_net, "fast": fast_net, "vgg": vgg_net}


def patch_whitening_filters(images, out_channels: int, kernel_size: int = 3, eps: float = 5e-4):
    """Convolution filters (out_channels, C, k, k) that project each k x k patch of ``images``
    (N, C, H, W floats, already normalised) onto its principal directions, scaled by
    1 / sqrt(variance + eps), in pairs of opposite sign (a ReLU after them then keeps both
    halves of every direction). The first filters follow the directions of largest variance.

    The idea is PCA/ZCA whitening of image patches (Coates & Ng, 2011), used as the
    initialisation of a first layer in fast CIFAR-10 training recipes."""
    import numpy
    x = numpy.asarray(images, dtype=numpy.float64)
    n, c, h, w = x.shape
    k = kernel_size
    windows = numpy.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))
    # (N, C, H-k+1, W-k+1, k, k) -> rows of C*k*k values in the layout of a conv weight
    patches = windows.transpose(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)
    patches = patches - patches.mean(0)
    cov = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = numpy.linalg.eigh(cov)  # ascending
    order = numpy.argsort(eigenvalues)[::-1]
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    pairs = -(-out_channels // 2)
    if pairs > len(eigenvalues):
        raise ValueError(f"{out_channels} filters need {pairs} directions but {c}x{k}x{k} "
                         f"patches have only {len(eigenvalues)}")
    directions = (eigenvectors[:, :pairs] / numpy.sqrt(eigenvalues[:pairs] + eps)).T
    # interleave +d, -d so that truncating an odd count keeps the strongest directions
    filters = numpy.stack([directions, -directions], 1).reshape(-1, c * k * k)[:out_channels]
    return filters.reshape(out_channels, c, k, k)


def whiten_first_conv(model, images) -> None:
    """Initialise the first Conv2d of ``model`` (tinygrad_hw or PyTorch) with
    :func:`patch_whitening_filters` of ``images``; its bias, if any, is set to zero."""
    import numpy
    conv = next(m for m in model.modules() if type(m).__name__ == "Conv2d")
    kh, kw = conv.kernel_size
    if kh != kw:
        raise ValueError("whitening needs a square kernel")
    filters = patch_whitening_filters(images, conv.out_channels, kh)
    state = {"weight": filters}
    if conv.bias is not None:
        state["bias"] = numpy.zeros(conv.out_channels)
    if type(conv).__module__.startswith("torch"):
        import torch
        with torch.no_grad():
            for key, value in state.items():
                getattr(conv, key).copy_(torch.from_numpy(value))
    else:
        for key, value in state.items():
            param = getattr(conv, key)
            param.data[...] = param._be.asarray(value.astype(param.dtype))


def build(name: str, lib=None, **kwargs):
    """The network called ``name`` ('seed', 'fast' or 'vgg') built from ``lib``."""
    try:
        builder = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}: expected one of {sorted(MODELS)}") from None
    return builder(lib, **kwargs)


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise ImportError("this needs PyTorch (pip install torch), which tinygrad_hw itself does "
                          "not need") from exc
    return torch


def torch_model(name: str, **kwargs):
    """The PyTorch twin of ``build(name, **kwargs)`` (same layers, names and shapes)."""
    torch = _torch()
    return build(name, torch.nn, **kwargs)


def copy_weights(src, dst) -> None:
    """Copy every parameter and buffer of ``src`` into ``dst`` (either may be tinygrad_hw or
    PyTorch), keeping ``dst``'s dtype. Raises if the two state dicts do not have the same keys
    and shapes."""
    import numpy

    def host(value):
        if hasattr(value, "detach"):  # torch.Tensor
            return value.detach().cpu().numpy()
        return value.numpy()

    src_state, dst_state = src.state_dict(), dst.state_dict()
    if list(src_state) != list(dst_state):
        raise ValueError(f"state dicts differ: {sorted(set(src_state) ^ set(dst_state))}")
    for key, value in src_state.items():
        if tuple(src_state[key].shape) != tuple(dst_state[key].shape):
            raise ValueError(f"{key}: shape {tuple(src_state[key].shape)} vs {tuple(dst_state[key].shape)}")
    if hasattr(dst, "load_state_dict") and type(dst).__module__.startswith("torch"):
        torch = _torch()
        new = {}
        for key, value in src_state.items():
            target = dst_state[key]
            new[key] = torch.from_numpy(numpy.array(host(value))).to(target.dtype)
        dst.load_state_dict(new)
        return
    dst.load_state_dict({key: numpy.asarray(host(value)).astype(dst_state[key].dtype)
                         for key, value in src_state.items()})


def count_parameters(model) -> int:
    """Number of learnable scalars of a tinygrad_hw or PyTorch model."""
    return int(sum(int(p.numel()) for p in model.parameters()))
