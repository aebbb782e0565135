"""Losses: cross-entropy, negative log-likelihood, squared and absolute error, binary cross-entropy."""
from __future__ import annotations

from ...autograd.grad_mode import is_anomaly_enabled
from ...ops.nn import BinaryCrossEntropy, CrossEntropyRows
from ...tensor import Tensor
from ..validation import check_float, check_reduction, legacy_reduction

__all__ = ['cross_entropy', 'nll_loss', 'mse_loss', 'l1_loss', 'binary_cross_entropy', 'binary_cross_entropy_with_logits',
           'huber_loss', 'smooth_l1_loss']


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _as_tensor(value, like, name, what):
    """``value`` (Tensor, array, list, number) as a Tensor on ``like``'s backend."""
    if isinstance(value, Tensor):
        if value._be is not like._be:
            raise ValueError(f"{name}: {what} is on backend {value.backend} but the input is on "
                             f"{like.backend}; move one with .to()")
        return value
    return Tensor(value, backend=like._be)


def _float_like(value, like, name, what):
    t = _as_tensor(value, like, name, what)
    if t.dtype != like.dtype:
        if t.dtype.kind not in "biuf":
            raise TypeError(f"{name}: {what} has dtype {t.dtype}")
        t = t.astype(like.dtype)
    return t


def _same_shape(name, input, target):
    if input.shape != target.shape:
        raise ValueError(f"{name}: target shape {target.shape} differs from input shape "
                         f"{input.shape} (no broadcasting: it usually hides a bug)")


def _class_weight(name, weight, input, channels):
    if weight is None:
        return None
    w = _float_like(weight, input, name, "weight")
    if w.shape != (channels,):
        raise ValueError(f"{name}: expected weight of shape ({channels},) (one per class), got {w.shape}")
    return w


def _check_labels(name, target, channels, ignore_index):
    """Integer labels in [0, channels) (or == ignore_index); ValueError naming the first bad one.

    Deviation on a GPU backend: reading the check's result would make the host wait for the
    device in every step, so there (outside ``detect_anomaly()``) it returns the device flag
    'some label is out of range' instead, and :func:`_poisoned` makes the loss NaN with it through the row weights
    (PyTorch's CUDA kernels stop with a device-side assert)."""
    if target.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer class labels (or float class probabilities of "
                        f"the input's shape), got a target of dtype {target.dtype}")
    labels = target.data
    bad = ((labels < 0) | (labels >= channels)) & (labels != ignore_index)
    if target._be.name != "numpy" and not is_anomaly_enabled():
        return bad.any() if labels.size else None
    if labels.size and bool(bad.any()):
        first = int(labels[bad].reshape(-1)[0])
        raise ValueError(f"{name}: label {first} is out of range for {channels} classes "
                         f"(labels must be in [0, {channels - 1}] or ignore_index={ignore_index})")


def _poisoned(xp, row_weight, bad):
    """The row weights (an array), all NaN where the device flag ``bad`` (from
    :func:`_check_labels`) is set: the loss and its gradient become NaN, with no host wait."""
    if bad is None:
        return row_weight
    return row_weight + xp.where(bad, xp.nan, 0.0).astype(row_weight.dtype)


def _in_range(xp, safe, channels, bad):
    """Labels with the unchecked out-of-range ones (see :func:`_check_labels`) read as 0, so that
    no kernel indexes outside the row."""
    return safe if bad is None else xp.where((safe >= 0) & (safe < channels), safe, 0)


def _classes_last(input, target, name):
    """(N*d..., C) rows from (N, C, d...) input, labels (N*d...), and the per-sample shape."""
    if input.ndim == 1:  # one unbatched sample
        if target.ndim != 0:
            raise ValueError(f"{name}: for an input of shape {input.shape} the target must be a "
                             f"single label (shape ()), got {target.shape}")
        return input.reshape(1, -1), target.reshape(1), ()
    if input.ndim < 1:
        raise ValueError(f"{name}: expected an input of shape (C,), (N, C) or (N, C, d1, ...), got {input.shape}")
    expected = (input.shape[0],) + input.shape[2:]
    if target.shape != expected:
        raise ValueError(f"{name}: expected a target of shape {expected} for an input of shape "
                         f"{input.shape}, got {target.shape}")
    channels = input.shape[1]
    if input.ndim > 2:
        order = (0,) + tuple(range(2, input.ndim)) + (1,)
        rows = input.permute(*order).reshape(-1, channels)
    else:
        rows = input
    return rows, target.reshape(-1), expected


def _nll_rows(rows, labels, weight, ignore_index, bad=None):
    """Per-row negative log-likelihood terms (0 for ignored rows), the row weights and their sum
    (a 0-d constant: the 'mean' denominator, PyTorch's sum of target weights)."""
    be = rows._be
    xp = be.xp
    lab = labels.data
    valid = lab != ignore_index
    safe = _in_range(xp, xp.where(valid, lab, 0), rows.shape[1], bad)
    picked = rows[xp.arange(rows.shape[0]), safe]
    if weight is None:
        row_w = valid.astype(rows.dtype)
    else:
        row_w = weight.data[safe] * valid
    row_w = _poisoned(xp, row_w, bad)
    row_w_t = rows._const(row_w)
    return -(picked * row_w_t), row_w_t, rows._const(row_w.sum())


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    """Negative log-likelihood of integer labels given log-probabilities (N, C, ...).

    'mean' divides by the sum of the weights of the non-ignored targets (PyTorch's definition)."""
    name = "nll_loss"
    reduction = legacy_reduction(size_average, reduce, reduction)
    check_reduction(name, reduction)
    check_float(name, input)
    target = _as_tensor(target, input, name, "target")
    channels = input.shape[0] if input.ndim == 1 else input.shape[1]
    weight = _class_weight(name, weight, input, channels)
    bad = _check_labels(name, target, channels, ignore_index)
    rows, labels, sample_shape = _classes_last(input, target, name)
    losses, _, total = _nll_rows(rows, labels, weight, ignore_index, bad)
    if reduction == "none":
        return losses.reshape(sample_shape)
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / total


def _cross_entropy_rows(input, target, weight, ignore_index, reduction, bad=None):
    """``cross_entropy`` of (N, C) logits and (N,) integer labels, without label smoothing."""
    xp = input._be.xp
    labels = target.data
    valid = labels != ignore_index
    safe = _in_range(xp, xp.where(valid, labels, 0), input.shape[1], bad)
    if weight is None:
        row_weight = valid.astype(input.dtype)
    else:
        row_weight = (weight.data[safe] * valid).astype(input.dtype)
    row_weight = _poisoned(xp, row_weight, bad)
    return CrossEntropyRows.apply(input, labels=safe, row_weight=row_weight,
                                   total=row_weight.sum(keepdims=True).reshape(()), reduction=reduction)


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """Cross-entropy of logits ``input`` (C,), (N, C) or (N, C, d1, ...) against integer labels
    ``target`` (N,) / (N, d1, ...), or against class probabilities of the input's shape.

    As in PyTorch: with ``label_smoothing`` s the loss is (1 - s) * nll + s / C * smooth where
    smooth = -sum_c w_c log p_c; 'mean' divides both terms by the summed weight of the
    non-ignored targets (probability targets: by the number of samples).
    """
    name = "cross_entropy"
    reduction = legacy_reduction(size_average, reduce, reduction)
    check_reduction(name, reduction)
    check_float(name, input)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{name}: label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    target = _as_tensor(target, input, name, "target")
    class_axis = 0 if input.ndim == 1 else 1
    channels = input.shape[class_axis]
    weight = _class_weight(name, weight, input, channels)
    if (target.dtype.kind in "iu" and input.ndim == 2 and target.shape == input.shape[:1] and label_smoothing == 0
            and (weight is None or not weight.requires_grad)):
        bad = _check_labels(name, target, channels, ignore_index)
        return _cross_entropy_rows(input, target, weight, ignore_index, reduction, bad)
    logp = input.log_softmax(class_axis)
    wshape = [1] * input.ndim
    wshape[class_axis] = channels
    if target.dtype.kind == "f":  # class probabilities
        label_shape = input.shape[:class_axis] + input.shape[class_axis + 1:]
        if target.shape != input.shape and target.shape == label_shape:
            raise TypeError(f"{name}: class labels must be integers: the target of shape {target.shape} "
                            f"has dtype {target.dtype} (use target.long()); a float target holds class "
                            f"probabilities and has the input's shape {input.shape}")
        _same_shape(name, input, target)
        target = target.astype(input.dtype)
        if label_smoothing > 0:
            target = target * (1 - label_smoothing) + label_smoothing / channels
        weighted = logp * target
        if weight is not None:
            weighted = weighted * weight.reshape(wshape)
        losses = -weighted.sum(class_axis)
        if reduction == "mean":
            return losses.sum() / (input.numel() // channels if input.ndim > 1 else 1)
        return _reduce(losses, reduction)
    bad = _check_labels(name, target, channels, ignore_index)
    rows, labels, sample_shape = _classes_last(logp, target, name)
    nll, _, total = _nll_rows(rows, labels, weight, ignore_index, bad)
    if label_smoothing > 0:
        valid = rows._const((labels.data != ignore_index).astype(rows.dtype))
        per_class = rows if weight is None else rows * weight.reshape(1, channels)
        smooth = -per_class.sum(1) * valid
        losses = nll * (1 - label_smoothing) + smooth * (label_smoothing / channels)
    else:
        losses = nll
    if reduction == "none":
        return losses.reshape(sample_shape)
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / total


def _pointwise_args(name, input, target, size_average, reduce, reduction):
    """The checks of every loss that compares ``input`` and ``target`` element by element:
    (target as a tensor of the input's dtype and shape, the reduction)."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    check_reduction(name, reduction)
    check_float(name, input)
    target = _float_like(target, input, name, "target")
    _same_shape(name, input, target)
    return target, reduction


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """Mean squared error. Unlike PyTorch (which warns and broadcasts), input and target must
    have the same shape."""
    target, reduction = _pointwise_args("mse_loss", input, target, size_average, reduce, reduction)
    diff = input - target
    return _reduce(diff * diff, reduction)


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """Mean absolute error (same shapes required, like :func:`mse_loss`)."""
    target, reduction = _pointwise_args("l1_loss", input, target, size_average, reduce, reduction)
    return _reduce((input - target).abs(), reduction)


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None,
                         reduction="mean"):
    """-w * (y log x + (1 - y) log(1 - x)) for probabilities ``input`` in [0, 1]; each log is
    clamped at -100 as in PyTorch."""
    name = "binary_cross_entropy"
    target, reduction = _pointwise_args(name, input, target, size_average, reduce, reduction)
    x = input.data
    if input._be.name == "numpy" or is_anomaly_enabled():  # on a GPU: no host wait every call
        if x.size and bool(((x < 0) | (x > 1)).any()):
            raise ValueError(f"{name}: all elements of input should be between 0 and 1")
    loss = BinaryCrossEntropy.apply(input, target)  # PyTorch's clamped logs and gradient
    if weight is not None:
        loss = loss * _float_like(weight, input, name, "weight")
    return _reduce(loss, reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None):
    """Sigmoid + binary cross-entropy in one numerically stable expression:
    (1 - y) x + (1 + (pos_weight - 1) y) softplus(-x), times ``weight``."""
    name = "binary_cross_entropy_with_logits"
    target, reduction = _pointwise_args(name, input, target, size_average, reduce, reduction)
    softplus_neg = (-input).softplus()  # -log(sigmoid(x)); its gradient at 0 is exactly -1/2
    if pos_weight is None:
        loss = (1 - target) * input + softplus_neg
    else:
        pw = _float_like(pos_weight, input, name, "pos_weight")
        loss = (1 - target) * input + (1 + (pw - 1) * target) * softplus_neg
    if weight is not None:
        loss = loss * _float_like(weight, input, name, "weight")
    return _reduce(loss, reduction)


def huber_loss(input, target, reduction="mean", delta=1.0):
    """0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta), with d = input - target."""
    target, reduction = _pointwise_args("huber_loss", input, target, None, None, reduction)
    if not delta > 0:
        raise ValueError(f"huber_loss: delta must be positive, got {delta}")
    diff = input - target
    small = diff.abs() < delta
    return _reduce((diff * diff * 0.5).where(small, (diff.abs() - 0.5 * delta) * delta), reduction)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    """0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (beta = 0: the L1 loss)."""
    target, reduction = _pointwise_args("smooth_l1_loss", input, target, size_average, reduce, reduction)
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be non-negative, got {beta}")
    diff = input - target
    if beta == 0:
        return _reduce(diff.abs(), reduction)
    small = diff.abs() < beta
    return _reduce((diff * diff * (0.5 / beta)).where(small, diff.abs() - 0.5 * beta), reduction)
