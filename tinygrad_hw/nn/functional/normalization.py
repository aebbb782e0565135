"""Batch normalisation, on batch statistics (training) or running statistics; across ranks for
SyncBatchNorm."""
from __future__ import annotations

from ... import distributed as dist
from ...backend import backend_of
from ...kernels import compiled, compiled_nn
from ...ops.nn import BatchNormTrain
from ...tensor import Tensor
from ..validation import check_float, check_tensor

__all__ = ['batch_norm', 'sync_batch_norm', 'normalize', 'layer_norm']


def _bn_check(name, t, what, channels, x):
    if t is None:
        return
    check_tensor(name, t, what)
    if t.shape != (channels,):
        raise ValueError(f"{name}: expected {what} of shape ({channels},) for an input of shape "
                         f"{x.shape}, got {t.shape}")


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalisation over every axis but the channel axis 1 of (N, C, ...) input.

    In ``training`` mode it normalises with the batch mean and biased variance and, where
    ``running_mean`` / ``running_var`` are given, updates them in place:
    ``running = (1 - momentum) * running + momentum * batch_stat`` with the *unbiased* batch
    variance, as PyTorch does. Otherwise it uses the running statistics.
    """
    return _batch_norm("batch_norm", input, running_mean, running_var, weight, bias, training,
                       momentum, eps, None)


def sync_batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
                    momentum=0.1, eps=1e-5):
    """:func:`batch_norm` whose batch is the union of every rank's batch (what
    :class:`~tinygrad_hw.nn.SyncBatchNorm` calls): in training the mean and variance are those
    of all ranks' inputs together (one ``all_gather`` of each rank's count, mean and sum of
    squared deviations, combined into those of one batch, equal within rounding), and the
    backward pass sums its two per-channel reductions over the ranks (one ``all_reduce``). The gradients of the weight
    and bias stay this rank's, for DistributedDataParallel to average. Without a process group
    (or with one rank) it is :func:`batch_norm`. First-order gradients only."""
    sync = training and dist.is_initialized() and dist.get_world_size() > 1
    return _batch_norm("sync_batch_norm", input, running_mean, running_var, weight, bias,
                       training, momentum, eps, _sum_over_ranks if sync else None)


def _local_stats(x, axes, xp):
    mean = x.mean(axis=axes, keepdims=True)
    centred = x - mean
    return mean, centred, xp.mean(centred * centred, axis=axes, keepdims=True), x.size // mean.size


def _global_stats(x, axes, xp):
    """Mean and biased variance of every rank's ``x`` together (Chan et al.'s pairwise
    combination of counts, means and sums of squared deviations, in float64)."""
    mean, centred, var, count = _local_stats(x, axes, xp)
    shape, be = mean.shape, backend_of(x)
    mine = xp.concatenate([xp.asarray([count], dtype=xp.float64),
                           mean.reshape(-1).astype(xp.float64), (var * count).reshape(-1).astype(xp.float64)])
    parts = [Tensor._make(xp.empty_like(mine), be) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, Tensor._make(mine, be))
    table = xp.stack([t.data for t in parts])  # (ranks, 1 + 2C): count, means, M2
    channels = mean.size
    counts, means, m2 = table[:, :1], table[:, 1:1 + channels], table[:, 1 + channels:]
    total = float(counts.sum())
    g_mean = (counts * means).sum(0) / total
    g_m2 = m2.sum(0) + (counts * (means - g_mean) ** 2).sum(0)
    g_mean = g_mean.astype(x.dtype).reshape(shape)
    centred = x - g_mean
    return g_mean, centred, (g_m2 / total).astype(x.dtype).reshape(shape), int(total)


def _sum_over_ranks(*arrays):
    """The backward pass's per-channel sums, summed over the ranks in one all_reduce."""
    be = backend_of(arrays[0])
    flat = be.xp.concatenate([a.reshape(-1) for a in arrays])
    dist.all_reduce(Tensor._make(flat, be))
    out, start = [], 0
    for a in arrays:
        out.append(flat[start:start + a.size].reshape(a.shape))
        start += a.size
    return tuple(out)


def _batch_norm(name, input, running_mean, running_var, weight, bias, training, momentum, eps, sync):
    check_float(name, input)
    if input.ndim < 2:
        raise ValueError(f"{name}: expected an input of at least 2 dims (N, C, ...), got {input.shape}")
    channels = input.shape[1]
    for t, what in ((running_mean, "running_mean"), (running_var, "running_var"),
                    (weight, "weight"), (bias, "bias")):
        _bn_check(name, t, what, channels, input)
    if (weight is None) != (bias is None):
        raise ValueError(f"{name}: give both weight and bias or neither")
    axes = (0,) + tuple(range(2, input.ndim))
    bshape = (1, channels) + (1,) * (input.ndim - 2)
    xp = input._be.xp
    if training:
        if sync is None and input.numel() // channels <= 1:
            raise ValueError(f"{name}: expected more than 1 value per channel when training, got "
                             f"input of shape {input.shape}")
        x = input.data
        affine = () if weight is None else (weight.data, bias.data)
        out = None
        if sync is None and compiled.active(input._be, x, *affine) and all(a.dtype == x.dtype for a in affine):
            # one compiled kernel: statistics and output in two passes over x (kernels/compiled_nn.py)
            out, mean, var, invstd = compiled_nn.batch_norm_forward(input._be, xp.ascontiguousarray(x),
                                                                    *(affine or (None, None)), eps)
            mean, var, count, xhat = mean.reshape(bshape), var.reshape(bshape), x.size // channels, None
        else:
            mean, centred, var, count = (_local_stats if sync is None else _global_stats)(x, axes, xp)
            if count <= 1:
                raise ValueError(f"{name}: expected more than 1 value per channel when training, got "
                                 f"{count} over all ranks")
            invstd = 1.0 / xp.sqrt(var + eps)
            xhat = centred
            xhat *= invstd
        if running_mean is not None or running_var is not None:
            m = float(momentum)
            if running_mean is not None:
                rm = running_mean.data
                rm *= 1.0 - m
                rm += (m * mean.reshape(-1)).astype(rm.dtype, copy=False)
            if running_var is not None:
                rv = running_var.data
                rv *= 1.0 - m
                rv += (m * count / (count - 1) * var.reshape(-1)).astype(rv.dtype, copy=False)
        params = dict(xhat=xhat, out=out, mean=mean, invstd=invstd.reshape(-1), axes=axes, bshape=bshape,
                      count=count, eps=eps, sum_over_ranks=sync)
        if weight is None:
            return BatchNormTrain.apply(input, **params)
        return BatchNormTrain.apply(input, weight, bias, **params)
    if running_mean is None or running_var is None:
        raise ValueError(f"{name}: running_mean and running_var are needed when training=False")
    # eval: an affine map with constant statistics; plain Tensor ops are differentiable as is
    invstd = running_var._const(1.0 / xp.sqrt(running_var.data + eps))
    scale = invstd if weight is None else weight * invstd
    shift = -(running_mean.detach() * scale)
    if bias is not None:
        shift = shift + bias
    return input * scale.reshape(bshape) + shift.reshape(bshape)


def normalize(input, p=2.0, dim=1, eps=1e-12):
    """``torch.nn.functional.normalize``: ``input / max(||input||_p over dim, eps)``."""
    check_tensor("normalize", input)
    return input / input.norm(p, dim, keepdim=True).clamp_min(eps)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the last ``len(normalized_shape)`` dims with their own mean and biased
    variance, then scale and shift elementwise (``torch.nn.functional.layer_norm``)."""
    check_tensor("layer_norm", input)
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if input.shape[input.ndim - len(shape):] != shape:
        raise ValueError(f"layer_norm: input of shape {input.shape} does not end with normalized_shape {shape}")
    dims = tuple(range(input.ndim - len(shape), input.ndim))
    mean = input.mean(dims, keepdims=True)
    centred = input - mean
    out = centred * ((centred * centred).mean(dims, keepdims=True) + eps).rsqrt()
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out
