"""Checking tinygrad_hw against PyTorch (the counterpart of ``torch.testing``).

The test suite and ``examples/cifar_cnn.py --check-gradients`` compare whole networks with
their PyTorch twins through :func:`compare_gradients`. PyTorch is imported only when a function
that needs it is called; tinygrad_hw itself never needs it.

Why float32 is judged against float64
-------------------------------------
A network with max pooling (or ReLU) makes discrete choices: which element of a window is the
maximum, which activations are positive. Real images hold near-ties (flat regions give window
elements that are equal in exact arithmetic), and there one float32 rounding decides the choice.
Which way it goes depends on the order of the additions, so on the BLAS kernel the machine picks
(``OPENBLAS_CORETYPE``), in either library. Two correct float32 computations that route one
window differently have parameter gradients that differ by far more than float32 precision.

So a float32 result is compared with the float64 result of the *same* network (the float32
weights and inputs, exactly representable in float64), on a batch where every discrete choice of
tinygrad_hw's float32 pass, PyTorch's float32 pass and the float64 pass is the same. There the
only difference left is rounding, a few float32 epsilons; a wrong backward (1% off in one
layer) is orders of magnitude above it. PyTorch's own float32 distance from the same reference
is reported beside ours.
"""
from __future__ import annotations

import copy

import numpy

from . import nn
from .tensor import Tensor

__all__ = ["rel_err", "LIMITS", "decisions", "compare_gradients", "worst_error", "disable_dropout"]

#: Largest relative error (max |ours - reference| / max |reference|) accepted per dtype.
LIMITS = {"float64": 1e-9, "float32": 1e-4}


def rel_err(a, b) -> float:
    """``max |a - b| / max |b|`` over whole arrays (``max |a - b|`` where ``b`` is all zero, 0
    for empty arrays). The one relative error every comparison with PyTorch uses."""
    a = numpy.asarray(a, dtype=numpy.float64)
    b = numpy.asarray(b, dtype=numpy.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_err: shapes differ, {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    diff = float(numpy.abs(a - b).max())
    scale = float(numpy.abs(b).max())
    return diff / scale if scale > 0 else diff


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise ImportError("tinygrad_hw.testing compares with PyTorch: pip install torch") from exc
    return torch


def _is_torch(module) -> bool:
    return not isinstance(module, nn.Module)


def _host(value):
    """A NumPy array of a tinygrad_hw or PyTorch tensor."""
    if isinstance(value, Tensor):
        return value.numpy()
    return value.detach().cpu().numpy()


def disable_dropout(model):
    """Training mode (BatchNorm on batch statistics) with every dropout layer switched off, for a
    model of either library; returns it."""
    model.train()
    for m in model.modules():
        if type(m).__name__ in ("Dropout", "Dropout2d"):
            m.eval()
    return model


def _max_pool_route(layer, a, is_torch):
    """Which input element each window of max-pooling ``layer`` picks (index into the input
    plane, PyTorch's ``return_indices``); -1 where the window's maximum is 0, as after a ReLU
    that zeroed the whole window: there no gradient flows and the choice does not matter."""
    args = dict(kernel_size=layer.kernel_size, stride=layer.stride, padding=layer.padding,
                dilation=layer.dilation, ceil_mode=layer.ceil_mode, return_indices=True)
    if is_torch:
        torch = _torch()
        with torch.no_grad():
            values, index = torch.nn.functional.max_pool2d(a, **args)
    else:
        from .autograd import no_grad
        with no_grad():
            values, index = nn.functional.max_pool2d(a, **args)
    route = _host(index).astype(numpy.int64)
    route[_host(values) == 0] = -1
    return route


def _forward(model, x, record):
    """``model(x)`` for a ``Sequential`` (nested ``Sequential``s included) of either library,
    layer by layer, appending every discrete choice to ``record``: per ``MaxPool2d`` the route
    of each window, per ``ReLU`` which inputs are positive. Choices made inside other container
    modules (a residual block) are not seen."""
    is_torch = _is_torch(model)
    for layer in model:
        kind = type(layer).__name__
        if kind == "Sequential":
            x = _forward(layer, x, record)
            continue
        if kind == "MaxPool2d":
            record.append((kind, _max_pool_route(layer, x, is_torch)))
        elif kind == "ReLU":
            record.append((kind, _host(x) > 0))
        x = layer(x)
    return x


def decisions(model, x) -> list:
    """The discrete choices a ``Sequential`` network of either library makes on input ``x``
    (a tensor of its library): a list of ``(layer kind, array)`` in layer order (see
    :func:`compare_gradients`). Runs a forward pass: in training mode BatchNorm's running
    statistics move, as in any forward."""
    record: list = []
    _forward(model, x, record)
    return record


def _loss_and_grads(model, x, y, label_smoothing):
    """Cross-entropy of ``model`` on ``(x, y)`` (NumPy arrays), backpropagated. Returns the loss,
    ``{parameter name: gradient}`` and the network's discrete choices."""
    record: list = []
    if _is_torch(model):
        torch = _torch()
        dtype = next(model.parameters()).dtype
        model.zero_grad(set_to_none=True)
        out = _forward(model, torch.from_numpy(x).to(dtype), record)
        loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(y),
                                                 label_smoothing=label_smoothing)
    else:
        model.zero_grad()
        dtype = next(iter(model.parameters())).dtype
        out = _forward(model, Tensor(x.astype(dtype)), record)
        loss = nn.functional.cross_entropy(out, Tensor(y), label_smoothing=label_smoothing)
    loss.backward()
    grads = {name: _host(p.grad) for name, p in model.named_parameters()}
    return float(loss.item()), grads, record


def compare_gradients(ours, theirs, images, labels, label_smoothing: float = 0.0) -> dict:
    """Cross-entropy loss and every parameter gradient of ``ours`` (a tinygrad_hw
    ``Sequential``) and ``theirs`` (its PyTorch twin with the same weights and dtype) on one
    batch: ``images`` a float array, ``labels`` integer class labels.

    float64: ours is compared with PyTorch's float64 result. float32: both float32 results are
    compared with the float64 result of the same network (a float64 copy of ``theirs``, fed the
    float32 images; see the module docstring), and ``routes_agree`` says whether all three
    passes made the same discrete choices; only then do the errors measure rounding alone.

    Returns a dict: ``dtype``, ``loss_value`` (ours), ``loss`` and ``grads`` (our relative
    errors: of the loss, and ``{parameter name: error}``), ``torch_loss`` and ``torch_grads``
    (PyTorch's float32 errors against the same reference; ``None`` in float64), ``routes_agree``
    and ``mismatches`` (per layer that disagrees: ``(kind, elements that differ)``).
    Both models run one forward and backward pass (their ``.grad`` is overwritten)."""
    dtype = str(next(iter(ours.parameters())).dtype)
    x = numpy.ascontiguousarray(images, dtype=dtype)
    y = numpy.asarray(labels, dtype=numpy.int64)
    reference_model = copy.deepcopy(theirs).double() if dtype == "float32" else None
    loss_o, grads_o, routes_o = _loss_and_grads(ours, x, y, label_smoothing)
    loss_t, grads_t, routes_t = _loss_and_grads(theirs, x, y, label_smoothing)
    if reference_model is None:  # float64: PyTorch's result is the reference
        loss_r, grads_r, routes_r = loss_t, grads_t, routes_t
    else:
        loss_r, grads_r, routes_r = _loss_and_grads(reference_model, x.astype(numpy.float64), y,
                                                    label_smoothing)
    if set(grads_o) != set(grads_r):
        raise ValueError(f"parameter names differ: {sorted(set(grads_o) ^ set(grads_r))}")
    mismatches = {}
    for i, ((kind, ro), (_, rt), (_, rr)) in enumerate(zip(routes_o, routes_t, routes_r)):
        differ = int(numpy.count_nonzero((ro != rr) | (rt != rr)))
        if differ:
            mismatches[f"{kind} #{i}"] = differ
    if not (len(routes_o) == len(routes_t) == len(routes_r)):
        raise ValueError("the two networks do not have the same layers")
    result = {
        "dtype": dtype, "loss_value": loss_o,
        "loss": rel_err(loss_o, loss_r),
        "grads": {name: rel_err(g, grads_r[name]) for name, g in grads_o.items()},
        "torch_loss": None, "torch_grads": None,
        "routes_agree": not mismatches, "mismatches": mismatches,
    }
    if reference_model is not None:
        result["torch_loss"] = rel_err(loss_t, loss_r)
        result["torch_grads"] = {name: rel_err(g, grads_r[name]) for name, g in grads_t.items()}
    return result


def worst_error(result: dict) -> float:
    """The largest of our relative errors (loss and gradients) in a :func:`compare_gradients`
    result."""
    return max([result["loss"]] + list(result["grads"].values()))
