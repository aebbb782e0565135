"""Batched data augmentation on backend arrays.

Every transform takes a whole batch ``(N, C, H, W)`` (a NumPy or CuPy array, float or uint8, or a
:class:`~tinygrad_hw.tensor.Tensor`) and treats each image with its own random draw, with
vectorised array operations only (no Python loop over images), so on the ``cupy`` backend the
work stays on the GPU. The semantics per image follow torchvision's transforms of the same names.

Random transforms split into two steps, so that the draws can be inspected or replayed:

* ``draw(batch, rng)`` returns the per-image parameters (backend arrays: flip masks, angles,
  crop offsets);
* ``apply(batch, params)`` transforms the batch with those parameters, deterministically.

``transform(batch, rng=None)`` does both. ``rng`` is a :class:`~tinygrad_hw.backend.Backend`
or anything else with ``rand(shape, dtype)`` and ``randint(low, high, shape)``; by default the
global backend of the batch's array library, which :func:`tinygrad_hw.manual_seed` seeds.
Parameters may live on the host or on the batch's backend: ``apply`` accepts either.

Transforms do not record autograd graphs: a Tensor in gives a new constant Tensor out.
"""
from __future__ import annotations

import math
import numbers

import numpy

from ..backend import backend_of

__all__ = ["Transform", "Compose", "RandomHorizontalFlip", "RandomVerticalFlip",
           "RandomRotation", "RandomGrayscale", "RandomCrop", "Normalize"]

# ITU-R 601-2 luma, as used by PIL's convert("L") and torchvision's rgb_to_grayscale.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def _unwrap(batch):
    """(array, rewrap) where rewrap turns a result back into the caller's type."""
    if hasattr(batch, "_be") and hasattr(batch, "data"):  # a Tensor
        from ..tensor import Tensor
        return batch.data, lambda array: Tensor(array, backend=batch._be)
    return batch, lambda array: array


def _check_batch(array, name):
    if getattr(array, "ndim", None) != 4:
        raise ValueError(f"{name}: expected a batch of shape (N, C, H, W), "
                         f"got shape {getattr(array, 'shape', None)}")


def _work_dtype(dtype):
    """Floating dtype to compute in: the batch's own if floating, float32 for integer images."""
    dtype = numpy.dtype(dtype)
    return dtype if dtype.kind == "f" else numpy.dtype(numpy.float32)


def _to_input_dtype(xp, result, dtype):
    """Cast a floating result back to the batch's dtype; integer images are rounded (half to
    even, like torch.round) and clipped to the dtype's range, as torchvision does."""
    dtype = numpy.dtype(dtype)
    if dtype.kind == "f":
        return result.astype(dtype, copy=False)
    info = numpy.iinfo(dtype)
    return xp.clip(xp.rint(result), info.min, info.max).astype(dtype)


def _per_channel(xp, values, channels, dtype, name):
    """A scalar or per-channel sequence as a (1, C, 1, 1) array."""
    values = numpy.asarray(values, dtype=numpy.float64).reshape(-1)
    if values.size == 1:
        values = numpy.repeat(values, channels)
    if values.size != channels:
        raise ValueError(f"{name}: {values.size} values for {channels} channels")
    return xp.asarray(values.astype(dtype).reshape(1, channels, 1, 1))


class Transform:
    """Base class: a callable on a batch that draws per-image parameters, then applies them."""

    def draw(self, batch, rng):
        """The per-image random parameters for ``batch`` (None for a deterministic transform)."""
        return None

    def apply(self, batch, params):
        raise NotImplementedError

    def __call__(self, batch, rng=None):
        array, rewrap = _unwrap(batch)
        _check_batch(array, type(self).__name__)
        rng = backend_of(array) if rng is None else rng
        return rewrap(self.apply(array, self.draw(array, rng)))

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class Compose(Transform):
    """Apply ``transforms`` in order, each with its own draws from the same ``rng``."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, batch, rng=None):
        for transform in self.transforms:
            batch = transform(batch, rng=rng)
        return batch

    def __repr__(self):
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])"


class _RandomPerImage(Transform):
    """A transform applied to each image with probability ``p``."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{type(self).__name__}: p must be in [0, 1], got {p}")
        self.p = float(p)

    def draw(self, batch, rng):
        """A boolean mask (N,): which images are transformed (each independently, with prob. p)."""
        return rng.rand((batch.shape[0],), numpy.float32) < self.p


class RandomHorizontalFlip(_RandomPerImage):
    """Mirror each image left-right with probability ``p``."""

    def apply(self, batch, flip):
        xp = backend_of(batch).xp
        return xp.where(xp.asarray(flip)[:, None, None, None], batch[..., ::-1], batch)


class RandomVerticalFlip(_RandomPerImage):
    """Mirror each image top-bottom with probability ``p``."""

    def apply(self, batch, flip):
        xp = backend_of(batch).xp
        return xp.where(xp.asarray(flip)[:, None, None, None], batch[..., ::-1, :], batch)


class RandomGrayscale(_RandomPerImage):
    """Turn each RGB image grey with probability ``p``, keeping 3 channels (R = G = B = luma).

    Luma is ITU-R 601-2 (0.299 R + 0.587 G + 0.114 B). Integer images are rounded to the nearest
    value like PIL's ``convert("L")``; torchvision's tensor path truncates instead (and weighs red
    0.2989), so uint8 results can differ from it by one. One-channel images pass unchanged.
    """

    def apply(self, batch, gray):
        if batch.shape[1] == 1:
            return batch
        if batch.shape[1] != 3:
            raise ValueError(f"RandomGrayscale: expected 1 or 3 channels, got {batch.shape[1]}")
        xp = backend_of(batch).xp
        work = _work_dtype(batch.dtype)
        r, g, b = (batch[:, i:i + 1].astype(work, copy=False) for i in range(3))
        luma = LUMA_WEIGHTS[0] * r + LUMA_WEIGHTS[1] * g + LUMA_WEIGHTS[2] * b
        luma = _to_input_dtype(xp, luma, batch.dtype)
        return xp.where(xp.asarray(gray)[:, None, None, None], luma, batch)


class RandomRotation(Transform):
    """Rotate each image by an angle drawn uniformly from ``degrees``, about its centre.

    Positive angles turn the picture counter-clockwise, as in torchvision. ``degrees`` is a number
    d (meaning (-d, d)) or a pair (min, max). The output keeps the input's size (torchvision's
    ``expand=False``; ``expand=True`` is not offered). ``center`` is (x, y) in pixels from the
    top-left corner, default the image centre. Pixels whose source falls outside the image take
    ``fill`` (a scalar or one value per channel).

    ``interpolation`` is ``'bilinear'`` (the default here; torchvision's default is nearest) or
    ``'nearest'``. The result equals torchvision's tensor implementation (``F.rotate`` on a
    tensor: ``grid_sample`` with zero padding and ``align_corners=False``, then blending with the
    fill through a sampled mask of ones, so border pixels are ``value * m + fill * (1 - m)``
    where ``m`` is the in-bounds share of the bilinear weights).
    """

    def __init__(self, degrees, interpolation: str = "bilinear", center=None, fill=0.0):
        if isinstance(degrees, numbers.Number):
            if degrees < 0:
                raise ValueError("RandomRotation: a single degrees value must be non-negative")
            degrees = (-float(degrees), float(degrees))
        degrees = tuple(float(d) for d in degrees)
        if len(degrees) != 2 or degrees[0] > degrees[1]:
            raise ValueError(f"RandomRotation: degrees must be d or (min, max), got {degrees}")
        interpolation = str(getattr(interpolation, "value", interpolation)).lower()
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(f"RandomRotation: interpolation must be 'bilinear' or 'nearest', "
                             f"got {interpolation!r}")
        self.degrees, self.interpolation, self.center, self.fill = (
            degrees, interpolation, center, fill)

    def draw(self, batch, rng):
        """The angle of each image in degrees, (N,) float64."""
        low, high = self.degrees
        return low + (high - low) * rng.rand((batch.shape[0],), numpy.float64)

    def apply(self, batch, angles):
        xp = backend_of(batch).xp
        n, c, h, w = batch.shape
        work = _work_dtype(batch.dtype)
        # Rotation centre in index coordinates (pixel k covers [k, k+1), its centre is k + 0.5).
        if self.center is None:
            cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
        else:
            cx, cy = float(self.center[0]) - 0.5, float(self.center[1]) - 0.5
        # For every output pixel, the source point it samples: the inverse rotation maps
        # (x, y) -> (cos a * x - sin a * y, sin a * x + cos a * y) about the centre (y points
        # down, so this turns the picture counter-clockwise for positive a). Coordinates are
        # computed in float64: they are small arrays, and it keeps 'nearest' rounding exact.
        theta = xp.asarray(angles, dtype=numpy.float64) * (math.pi / 180.0)
        cos, sin = xp.cos(theta)[:, None, None], xp.sin(theta)[:, None, None]
        ys = (xp.arange(h, dtype=numpy.float64) - cy)[None, :, None]
        xs = (xp.arange(w, dtype=numpy.float64) - cx)[None, None, :]
        src_x = cos * xs - sin * ys + cx  # (N, H, W)
        src_y = sin * xs + cos * ys + cy

        # Gather from a zero-padded copy (1 pixel before, 2 after each spatial axis) so that
        # every sample point, clipped to [-1, size], reads real pixels or zeros without masking:
        # a point beyond the border has weight 0 on the neighbour that lies further out.
        padded = xp.pad(batch.astype(work, copy=False), ((0, 0), (0, 0), (1, 2), (1, 2)))
        row = w + 3
        flat = padded.reshape(-1)
        # Offset of each image's channel plane in ``flat``: (N, C, 1, 1).
        plane = (xp.arange(n, dtype=numpy.int64)[:, None] * c
                 + xp.arange(c, dtype=numpy.int64)[None, :]) * ((h + 3) * row)
        plane = plane[:, :, None, None]
        fill = _per_channel(xp, self.fill, c, work, "RandomRotation fill")

        if self.interpolation == "nearest":
            # rint rounds half to even, like grid_sample's nearbyint.
            xi, yi = xp.rint(src_x), xp.rint(src_y)
            inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
            xi = xp.clip(xi, -1, w).astype(numpy.int64) + 1
            yi = xp.clip(yi, -1, h).astype(numpy.int64) + 1
            values = xp.take(flat, plane + (yi * row + xi)[:, None])
            out = xp.where(inside[:, None], values, fill)
            return _to_input_dtype(xp, out, batch.dtype)

        src_x, src_y = xp.clip(src_x, -1, w), xp.clip(src_y, -1, h)
        x0, y0 = xp.floor(src_x), xp.floor(src_y)
        fx, fy = (src_x - x0).astype(work), (src_y - y0).astype(work)
        # The share of each point's weights that falls inside the image: the bilinear sample of
        # an image of ones, which torchvision uses to blend in the fill.
        in_x0, in_x1 = (x0 >= 0) & (x0 <= w - 1), (x0 >= -1) & (x0 <= w - 2)
        in_y0, in_y1 = (y0 >= 0) & (y0 <= h - 1), (y0 >= -1) & (y0 <= h - 2)
        mask = (((1 - fx) * in_x0 + fx * in_x1) * ((1 - fy) * in_y0 + fy * in_y1))[:, None]
        corner = (y0.astype(numpy.int64) + 1) * row + x0.astype(numpy.int64) + 1
        top_left = plane + corner[:, None]  # flat index of each point's top-left neighbour
        fx, fy = fx[:, None], fy[:, None]
        # Interpolate along x on the two rows, then along y; in place, to spare temporaries.
        top = xp.take(flat, top_left)
        out = xp.take(flat, top_left + 1)
        out -= top
        out *= fx
        out += top
        bottom_left = xp.take(flat, top_left + row)
        bottom = xp.take(flat, top_left + (row + 1))
        bottom -= bottom_left
        bottom *= fx
        bottom += bottom_left
        bottom -= out
        bottom *= fy
        out += bottom
        out *= mask
        if any(float(v) != 0.0 for v in numpy.atleast_1d(self.fill)):
            out += (1 - mask) * fill
        return _to_input_dtype(xp, out, batch.dtype)


class RandomCrop(Transform):
    """Pad each image, then crop a ``size`` window at a random position per image.

    ``size`` is an int (square) or (height, width). ``padding`` is an int (all sides), a pair
    (left/right, top/bottom) or a 4-tuple (left, top, right, bottom), as in torchvision.
    ``padding_mode`` is 'constant' (with ``fill``), 'reflect' (mirror without repeating the edge),
    'edge' or 'symmetric' (mirror repeating the edge). ``pad_if_needed`` pads images smaller than
    ``size`` (on both sides of the short dimension, as torchvision does).
    """

    _MODES = ("constant", "edge", "reflect", "symmetric")

    def __init__(self, size, padding=None, pad_if_needed: bool = False, fill=0,
                 padding_mode: str = "constant"):
        self.size = (int(size), int(size)) if isinstance(size, numbers.Number) else tuple(
            int(s) for s in size)
        if len(self.size) != 2 or min(self.size) <= 0:
            raise ValueError(f"RandomCrop: size must be a positive int or (h, w), got {size}")
        if padding_mode not in self._MODES:
            raise ValueError(f"RandomCrop: padding_mode must be one of {self._MODES}, "
                             f"got {padding_mode!r}")
        self.padding, self.pad_if_needed, self.fill, self.padding_mode = (
            padding, bool(pad_if_needed), fill, padding_mode)

    def _pad_widths(self, h, w):
        """(top, bottom, left, right) padding for an h x w image."""
        p = self.padding
        if p is None:
            left = top = right = bottom = 0
        elif isinstance(p, numbers.Number):
            left = top = right = bottom = int(p)
        elif len(p) == 2:
            left = right = int(p[0])
            top = bottom = int(p[1])
        elif len(p) == 4:
            left, top, right, bottom = (int(v) for v in p)
        else:
            raise ValueError(f"RandomCrop: padding must be an int, a pair or a 4-tuple, got {p}")
        th, tw = self.size
        if self.pad_if_needed:
            if h + top + bottom < th:
                extra = th - (h + top + bottom)
                top, bottom = top + extra, bottom + extra
            if w + left + right < tw:
                extra = tw - (w + left + right)
                left, right = left + extra, right + extra
        return top, bottom, left, right

    def _padded_size(self, h, w):
        top, bottom, left, right = self._pad_widths(h, w)
        ph, pw = h + top + bottom, w + left + right
        th, tw = self.size
        if ph < th or pw < tw:
            raise ValueError(f"RandomCrop: crop size {self.size} is larger than the padded "
                             f"image ({ph}, {pw})")
        return ph, pw

    def draw(self, batch, rng):
        """(top, left) offsets (N,) int64 of each crop in the padded image."""
        ph, pw = self._padded_size(*batch.shape[2:])
        th, tw = self.size
        n = batch.shape[0]
        return rng.randint(0, ph - th + 1, (n,)), rng.randint(0, pw - tw + 1, (n,))

    def pad(self, batch):
        """The whole batch padded as configured, (N, C, H + pads, W + pads)."""
        xp = backend_of(batch).xp
        top, bottom, left, right = self._pad_widths(*batch.shape[2:])
        if not (top or bottom or left or right):
            return batch
        widths = ((0, 0), (0, 0), (top, bottom), (left, right))
        if self.padding_mode == "constant":
            n, c, h, w = batch.shape
            if isinstance(self.fill, numbers.Number):
                return xp.pad(batch, widths, mode="constant", constant_values=self.fill)
            fill = _per_channel(xp, self.fill, c, batch.dtype, "RandomCrop fill")
            out = xp.empty((n, c, h + top + bottom, w + left + right), dtype=batch.dtype)
            out[...] = fill
            out[:, :, top:top + h, left:left + w] = batch
            return out
        if self.padding_mode == "reflect" and (max(top, bottom) >= batch.shape[2]
                                              or max(left, right) >= batch.shape[3]):
            raise ValueError("RandomCrop: reflect padding must be smaller than the image")
        return xp.pad(batch, widths, mode=self.padding_mode)

    def apply(self, batch, offsets):
        xp = backend_of(batch).xp
        top, left = (xp.asarray(o, dtype=numpy.int64) for o in offsets)
        self._padded_size(*batch.shape[2:])
        padded = xp.ascontiguousarray(self.pad(batch))
        n, c, ph, pw = padded.shape
        th, tw = self.size
        # One gather from the flattened batch: the flat index of every output pixel.
        plane = (xp.arange(n, dtype=numpy.int64)[:, None] * c
                 + xp.arange(c, dtype=numpy.int64)[None, :]) * (ph * pw)
        rows = (top[:, None] + xp.arange(th, dtype=numpy.int64)) * pw  # (N, th)
        cols = left[:, None] + xp.arange(tw, dtype=numpy.int64)  # (N, tw)
        index = plane[:, :, None, None] + (rows[:, :, None] + cols[:, None, :])[:, None]
        return xp.take(padded.reshape(-1), index)


class Normalize(Transform):
    """``(x - mean[c]) / std[c]`` per channel, on a floating batch (as torchvision)."""

    def __init__(self, mean, std):
        self.mean = tuple(float(m) for m in numpy.atleast_1d(mean))
        self.std = tuple(float(s) for s in numpy.atleast_1d(std))
        if any(s == 0 for s in self.std):
            raise ValueError(f"Normalize: std has a zero, which would divide by zero: {self.std}")
        self._cache = {}

    def apply(self, batch, params=None):
        if numpy.dtype(batch.dtype).kind != "f":
            raise TypeError(f"Normalize: expected a floating batch, got {batch.dtype} "
                            "(convert it to float first)")
        be = backend_of(batch)
        key = (be.name, batch.shape[1], numpy.dtype(batch.dtype).str)
        if key not in self._cache:  # the (1, C, 1, 1) constants, built once per backend/dtype
            self._cache[key] = (
                _per_channel(be.xp, self.mean, batch.shape[1], batch.dtype, "Normalize mean"),
                _per_channel(be.xp, self.std, batch.shape[1], batch.dtype, "Normalize std"))
        mean, std = self._cache[key]
        return (batch - mean) / std

    def __repr__(self):
        return f"Normalize(mean={self.mean}, std={self.std})"
