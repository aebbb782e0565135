"""Networks by name, as ``torchvision.models`` is for PyTorch, and their PyTorch twins.

``build(name)`` makes a network of :mod:`.cifar`; ``torch_model(name)`` its PyTorch twin with the
same layers, names and shapes; :func:`copy_weights` copies every parameter and buffer between
two such models (either may be tinygrad_hw or PyTorch). PyTorch is optional: only
:func:`torch_model` and :func:`copy_weights` into a PyTorch model import it.
"""
from __future__ import annotations

from .cifar import bn_cnn, fast_cnn, resnet9, small_cnn, vgg_style
from .whitening import patch_whitening_filters, whiten_first_conv

__all__ = ["MODELS", "ALIASES", "build", "canonical_name", "size_kwargs", "torch_model", "copy_weights",
           "count_parameters", "small_cnn", "fast_cnn", "resnet9", "vgg_style", "bn_cnn",
           "patch_whitening_filters", "whiten_first_conv"]

MODELS = {"small_cnn": small_cnn, "fast_cnn": fast_cnn, "resnet9": resnet9, "vgg_style": vgg_style,
          "bn_cnn": bn_cnn}
# names used by earlier versions (and by checkpoints they wrote)
ALIASES = {"seed": "small_cnn", "fast": "fast_cnn", "vgg": "resnet9"}


def canonical_name(name: str) -> str:
    """``name`` or the model an old alias stands for; ValueError for an unknown name."""
    name = ALIASES.get(name, name)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: expected one of {sorted(MODELS)}")
    return name


def size_kwargs(name: str, widths=None, stem=None) -> dict:
    """Keyword arguments that set the channels of network ``name`` from one list ``widths``
    (as a command line gives them): ``small_cnn``'s ``channels``, ``resnet9``'s base ``width``
    (the first value), ``fast_cnn``'s and ``vgg_style``'s ``widths`` (and ``fast_cnn``'s
    ``stem``). Empty for None."""
    name = canonical_name(name)
    kwargs = {}
    if widths is not None:
        if name == "small_cnn":
            kwargs["channels"] = tuple(widths)
        elif name == "resnet9":
            kwargs["width"] = int(widths[0])
        else:  # fast_cnn, vgg_style, bn_cnn
            kwargs["widths"] = tuple(widths)
    if stem is not None and name == "fast_cnn":
        kwargs["stem"] = int(stem)
    return kwargs


def build(name: str, lib=None, **kwargs):
    """The network called ``name`` (see :data:`MODELS`) built from ``lib`` (default
    ``tinygrad_hw.nn``; ``torch.nn`` builds the PyTorch twin)."""
    return MODELS[canonical_name(name)](lib, **kwargs)


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
