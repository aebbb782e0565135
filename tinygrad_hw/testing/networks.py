"""Whole networks against their PyTorch twins: gradients on one batch, training trajectories.

The test suite and ``examples/cifar_cnn.py --check-gradients`` compare networks with their
PyTorch twins through :func:`compare_gradients` (and :func:`check_networks`, which prints the
report). A network is given as ``build(lib)``, a function that builds it from ``lib``
(``tinygrad_hw.nn`` or ``torch.nn``), as every builder of :mod:`tinygrad_hw.models` does.

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

from .. import nn, optim
from ..autograd import no_grad
from ..backend import get_backend, manual_seed
from ..models import copy_weights
from ..tensor import Tensor
from .compare import rel_err, torch_module as _torch

__all__ = ["LIMITS", "twins", "disable_dropout", "decisions", "compare_gradients", "worst_error",
           "agreeing_batch", "check_networks", "compare_trajectories"]

#: Largest relative error (max |ours - reference| / max |reference|) accepted per dtype.
LIMITS = {"float64": 1e-9, "float32": 1e-4}


def _is_torch(module) -> bool:
    return not isinstance(module, nn.Module)


def _host(value):
    """A NumPy array of a tinygrad_hw or PyTorch tensor."""
    if isinstance(value, Tensor):
        return value.numpy()
    return value.detach().cpu().numpy()


def twins(build, dtype: str = "float64", seed: int = 1234, backend: str | None = None):
    """``(ours, theirs)``: ``build(tinygrad_hw.nn)`` initialised from ``seed`` on ``backend`` and
    ``build(torch.nn)`` with the same weights, both in ``dtype``, training mode, dropout off."""
    torch = _torch()
    manual_seed(seed)
    ours = build(nn).to(backend or get_backend().name, dtype)
    theirs = build(torch.nn).to(getattr(torch, dtype))
    copy_weights(ours, theirs)
    return disable_dropout(ours), disable_dropout(theirs)


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
        first = next(iter(model.parameters()))
        dtype, be = first.dtype, first.backend  # the batch goes where the model is
        out = _forward(model, Tensor(x.astype(dtype), backend=be), record)
        loss = nn.functional.cross_entropy(out, Tensor(y, backend=be), label_smoothing=label_smoothing)
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


def agreeing_batch(build, images, labels, batch: int, label_smoothing: float = 0.0,
                   backend: str | None = None):
    """float32 gradients of ``build``'s network on the first ``batch`` consecutive images (from
    offset 0, then ``batch``, ...) where tinygrad_hw's float32 pass, PyTorch's float32 pass and
    the float64 pass make the same choice in every max-pooling window and ReLU (see the module
    docstring). Returns ``(comparison, offset)``, or ``(None, batches tried)`` when none does."""
    tried = 0
    for offset in range(0, len(labels) - batch + 1, batch):
        tried += 1
        ours, theirs = twins(build, "float32", backend=backend)
        result = compare_gradients(ours, theirs, images[offset:offset + batch],
                                   labels[offset:offset + batch], label_smoothing)
        if result["routes_agree"]:
            return result, offset
    return None, tried


def check_networks(builds: dict, images, labels, batch: int = 16, label_smoothing: float = 0.0,
                   log=print, backend: str | None = None) -> dict:
    """For every ``name: build`` of ``builds``, in float64 and float32, the loss and every
    parameter gradient of tinygrad_hw against PyTorch, one line per parameter through ``log``.

    float64 compares with PyTorch's float64 result on the first ``batch`` images (limit 1e-9).
    float32 compares ours, and PyTorch's float32 result beside it, with the float64 result of
    the same network on the first batch where all three route max-pooling and ReLU the same way
    (:func:`agreeing_batch`; limit 1e-4). Our networks run on ``backend`` (the GPU's kernels
    are checked with ``'cupy'``; default: the default backend). Returns ``{'name/dtype': comparison, 'ok': bool}``."""
    results, ok = {}, True
    backend = backend or get_backend().name
    for name, build in builds.items():
        for dtype, limit in LIMITS.items():
            if dtype == "float32":
                r, offset = agreeing_batch(build, images, labels, batch, label_smoothing, backend)
                if r is None:
                    log(f"{name} net, float32: none of the {offset} batches of {batch} images "
                        "routes max-pooling and ReLU the same way in float32 (either library) "
                        "and float64; not checked")
                    ok = False
                    continue
                where = f"images {offset}-{offset + batch - 1} of the"
                against = "the float64 result of the same network"
            else:
                r = compare_gradients(*twins(build, dtype, backend=backend), images[:batch], labels[:batch],
                                      label_smoothing)
                where, against = f"the first {batch}", "PyTorch float64"
            results[f"{name}/{dtype}"] = r
            worst = worst_error(r)
            ok &= worst < limit
            torch_note = ""
            if r["torch_grads"] is not None:
                torch_worst = max([r["torch_loss"]] + list(r["torch_grads"].values()))
                torch_note = f" (PyTorch float32: {torch_worst:.2e})"
            log(f"{name} net on {backend}, {dtype}, {where} test images, against {against}: loss "
                f"{r['loss_value']:.6f}, relative error of the loss {r['loss']:.2e}; worst over "
                f"parameters {worst:.2e}{torch_note} ({'ok' if worst < limit else 'TOO LARGE'}, "
                f"limit {limit:g})")
            for pname, err in r["grads"].items():
                beside = "" if r["torch_grads"] is None else f"   PyTorch {r['torch_grads'][pname]:.2e}"
                log(f"    {pname:32s} {err:.2e}{beside}")
    log("all gradients agree with PyTorch" if ok else "SOME GRADIENTS DISAGREE WITH PYTORCH")
    results["ok"] = ok
    return results


def compare_trajectories(build, batches, optimizer: str = "sgd", lr: float = 0.01,
                         dtype: str = "float64") -> dict:
    """Train the tinygrad_hw and PyTorch twins of ``build`` side by side on ``batches`` (a list
    of (images, labels)) with cross-entropy and ``optimizer`` ('sgd': Nesterov momentum 0.9 and
    weight decay 5e-4; 'adam'). Returns the worst relative error of the losses (``'loss'``), of
    each final parameter and buffer (``'params'``), and how far the parameters moved from their
    start (``'moved'``, the largest relative change)."""
    torch = _torch()
    ours, theirs = twins(build, dtype)
    if optimizer == "sgd":
        opt = optim.SGD(ours.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
        ref_opt = torch.optim.SGD(theirs.parameters(), lr=lr, momentum=0.9, nesterov=True,
                                  weight_decay=5e-4)
    elif optimizer == "adam":
        opt = optim.Adam(ours.parameters(), lr=lr)
        ref_opt = torch.optim.Adam(theirs.parameters(), lr=lr)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}: expected 'sgd' or 'adam'")
    initial = {k: v.numpy().copy() for k, v in ours.state_dict().items()}
    loss_err = 0.0
    for images, labels in batches:
        x, y = numpy.asarray(images, dtype=dtype), numpy.asarray(labels, dtype=numpy.int64)
        loss = nn.functional.cross_entropy(ours(Tensor(x)), Tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        ref = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y))
        ref_opt.zero_grad()
        ref.backward()
        ref_opt.step()
        loss_err = max(loss_err, rel_err(loss.item(), ref.item()))
    theirs_state = theirs.state_dict()
    param_err = {k: rel_err(v.numpy(), theirs_state[k].detach().numpy())
                 for k, v in ours.state_dict().items()}
    moved = max(rel_err(p.numpy(), initial[k]) for k, p in ours.named_parameters())
    return {"loss": loss_err, "params": param_err, "moved": moved}
