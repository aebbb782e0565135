"""Patch-whitening initialisation of a first convolution (PCA of the image patches)."""
from __future__ import annotations

import numpy

__all__ = ["patch_whitening_filters", "whiten_first_conv"]


def patch_whitening_filters(images, out_channels: int, kernel_size: int = 3, eps: float = 5e-4):
    """Convolution filters (out_channels, C, k, k) that project each k x k patch of ``images``
    (N, C, H, W floats, already normalised) onto its principal directions, scaled by
    1 / sqrt(variance + eps), in pairs of opposite sign (a ReLU after them then keeps both
    halves of every direction). The first filters follow the directions of largest variance.

    The idea is PCA/ZCA whitening of image patches (Coates & Ng, 2011), used as the
    initialisation of a first layer in fast CIFAR-10 training recipes."""
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
    :func:`patch_whitening_filters` of ``images``; its bias, if any, is set to zero.

    A C x k x k patch has only C*k*k directions, so at most 2*C*k*k filters can be whitened
    (54 for 3x3 RGB patches): where the convolution has more (ResNet-9's 64), the first 54 are
    whitened and the others keep their random initialisation."""
    conv = next(m for m in model.modules() if type(m).__name__ == "Conv2d")
    kh, kw = conv.kernel_size
    if kh != kw:
        raise ValueError("whitening needs a square kernel")
    count = min(conv.out_channels, 2 * numpy.shape(images)[1] * kh * kw)
    filters = patch_whitening_filters(images, count, kh)
    if type(conv).__module__.startswith("torch"):
        import torch
        with torch.no_grad():
            conv.weight[:count].copy_(torch.from_numpy(filters))
            if conv.bias is not None:
                conv.bias.zero_()
    else:
        weight = conv.weight
        weight.data[:count] = weight._be.asarray(filters.astype(weight.dtype))
        if conv.bias is not None:
            conv.bias.data[...] = 0
