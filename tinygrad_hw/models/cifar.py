"""The CIFAR-10 networks that the examples, the tests and the benchmarks share.

Each builder takes the layer library as its first argument: ``tinygrad_hw.nn`` (the default) or
``torch.nn``. The same call gives the same architecture with the same ``state_dict`` keys and
shapes in both libraries, so weights copied from one make the other compute the same function
(:func:`tinygrad_hw.models.copy_weights`). PyTorch is never imported here.

* :func:`small_cnn`: the original exercise's network (docs/origin.md), 334k parameters.
* :func:`fast_cnn`: the fast CPU recipe's network (BatchNorm, 32-64-128 channels).
* :func:`resnet9`: a wider ResNet-9-style network (64-128-256-512 channels) for a GPU.
* :func:`vgg_style`: a VGG-style network (32-32-64-64-128-128 channels), the benchmark's.
"""
from __future__ import annotations

__all__ = ["small_cnn", "fast_cnn", "resnet9", "vgg_style", "bn_cnn"]


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


def small_cnn(lib=None, dropout: float = 0.05, channels=(6, 12, 24), hidden=(512, 256),
              num_classes: int = 10):
    """The original exercise's CNN (docs/origin.md): conv 3 -> 6 -> 12 -> 24 (3x3, stride 1,
    padding 1), each with ReLU and 2x2 max pooling, then Dropout -> Linear(384, 512) -> ReLU ->
    Dropout -> Linear(512, 256) -> ReLU -> Dropout -> Linear(256, 10), dropout 0.05.

    Every convolution doubles the channels and every pooling halves the image, as the exercise
    says; it does not say how many convolutions, and three is our reading: 32 -> 16 -> 8 -> 4
    pixels, so 24 * 4 * 4 = 384 features enter the dense layers."""
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


def fast_cnn(lib=None, widths=(32, 64, 128), stem: int | None = None, logit_scale: float = 0.125,
             num_classes: int = 10):
    """The fast CPU recipe's network: a conv-BatchNorm-ReLU stem (``stem`` channels, default
    half of the first block's), three blocks of conv -> max-pool 2x2 -> BatchNorm -> ReLU ->
    conv -> BatchNorm -> ReLU with ``widths`` channels, a global max-pool and a linear
    classifier whose logits are scaled by ``logit_scale``. Input 32x32 -> 16 -> 8 -> 4 -> 1.

    Convolution and pooling come before normalisation so that the first convolution of each
    block runs at the block's input resolution while BatchNorm and ReLU run on four times fewer
    pixels."""
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


def resnet9(lib=None, width: int = 64, logit_scale: float = 0.125, num_classes: int = 10):
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


def vgg_style(lib=None, widths=(32, 64, 128), hidden: int = 256, dropout: float = 0.5,
              num_classes: int = 10):
    """A VGG-style CNN (the benchmark's): two 3x3 convolutions with ReLU per block (``widths``
    channels, padding 1), 2x2 max pooling after each block, then Linear(widths[-1] * 4 * 4,
    ``hidden``) -> ReLU -> Dropout -> Linear(hidden, 10)."""
    nn = _default_lib(lib)
    layers, cin, size = [], 3, 32
    for width in widths:
        layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(),
                   nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        cin, size = width, size // 2
    layers += [nn.Flatten(), nn.Linear(cin * size * size, hidden), nn.ReLU(), nn.Dropout(dropout),
               nn.Linear(hidden, num_classes)]
    return nn.Sequential(*layers)


def bn_cnn(lib=None, widths=(32, 64, 128, 256), num_classes: int = 10):
    """A plain conv-BatchNorm-ReLU CNN (the benchmark's memory case): one block per width of
    conv3x3 (no bias) -> BatchNorm -> ReLU, with 2x2 max pooling between blocks (32x32 -> 16 ->
    8 -> 4), then Linear(widths[-1] * 4 * 4, 10): 4096 -> 10 with the default widths."""
    nn = _default_lib(lib)
    layers, cin, size = [], 3, 32
    for i, width in enumerate(widths):
        if i:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        layers += [nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        cin = width
    layers += [nn.Flatten(), nn.Linear(cin * size * size, num_classes)]
    return nn.Sequential(*layers)
