"""Batched transforms against independent per-image references on the same random draws.

torchvision is not installed here, so the references are plain per-image NumPy code and, for
RandomRotation, torchvision's own algorithm rebuilt from torch's ``affine_grid``/``grid_sample``
(the kernels torchvision's tensor ``rotate`` calls). Float64 results must agree to 1e-10,
float32 to 1e-5; uint8 results exactly, or within 1 where rounding of a float computation can
land on the other side of .5.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_hw as hw
from tinygrad_hw.backend import get_backend
from tinygrad_hw.data import transforms as T


def _batch(backend, shape, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype) == np.uint8:
        host = rng.integers(0, 256, shape, dtype=np.uint8)
    else:
        host = rng.random(shape).astype(dtype)
    return host, get_backend(backend).asarray(host)


def _host(array):
    return get_backend("cupy" if type(array).__module__.startswith("cupy") else "numpy").to_numpy(
        array)


# -- flips and grayscale ------------------------------------------------------------------------
@pytest.mark.parametrize("cls,axis", [(T.RandomHorizontalFlip, -1), (T.RandomVerticalFlip, -2)])
@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_flips_match_per_image_reference(backend, cls, axis, dtype):
    host, batch = _batch(backend, (16, 3, 5, 7), dtype)
    transform = cls(p=0.5)
    rng = get_backend(backend).__class__(3)
    flip = transform.draw(batch, rng)
    out = _host(transform.apply(batch, flip))
    flags = _host(flip)
    assert flags.dtype == bool and 0 < flags.sum() < 16  # both outcomes are exercised
    for k in range(16):
        expected = np.flip(host[k], axis=axis) if flags[k] else host[k]
        np.testing.assert_array_equal(out[k], expected)
    assert out.dtype == dtype


@pytest.mark.parametrize("p,expect", [(0.0, "none"), (1.0, "all")])
def test_flip_probability_extremes(backend, p, expect):
    host, batch = _batch(backend, (8, 3, 4, 4))
    out = _host(T.RandomHorizontalFlip(p)(batch))
    np.testing.assert_array_equal(out, host if expect == "none" else host[..., ::-1])


def test_flip_rate_is_p():
    rng = get_backend("numpy").__class__(0)
    flags = T.RandomHorizontalFlip(0.3).draw(np.zeros((20000, 1, 1, 1)), rng)
    assert abs(flags.mean() - 0.3) < 0.015


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.uint8])
def test_grayscale_matches_per_image_reference(backend, dtype):
    host, batch = _batch(backend, (12, 3, 6, 5), dtype, seed=1)
    transform = T.RandomGrayscale(p=0.5)
    gray = transform.draw(batch, get_backend(backend).__class__(5))
    out = _host(transform.apply(batch, gray))
    flags = _host(gray)
    assert 0 < flags.sum() < 12
    for k in range(12):
        if not flags[k]:
            np.testing.assert_array_equal(out[k], host[k])
            continue
        r, g, b = host[k].astype(np.float64)
        luma = 0.299 * r + 0.587 * g + 0.114 * b
        if dtype == np.uint8:
            # Within 1 of the exact luma rounded (float32 arithmetic near .5), and equal to PIL's
            # convert("L") within 1 (PIL uses fixed-point arithmetic).
            assert np.abs(out[k].astype(int) - np.rint(luma)).max() <= 1
            from PIL import Image
            pil = np.asarray(Image.fromarray(host[k].transpose(1, 2, 0)).convert("L"))
            assert np.abs(out[k, 0].astype(int) - pil.astype(int)).max() <= 1
        else:
            tol = 1e-12 if dtype == np.float64 else 1e-6
            np.testing.assert_allclose(out[k], np.broadcast_to(luma, (3,) + luma.shape), atol=tol)
        assert out.dtype == dtype


def test_grayscale_single_channel_passes_through():
    batch = np.random.default_rng(0).random((4, 1, 3, 3))
    np.testing.assert_array_equal(T.RandomGrayscale(1.0)(batch), batch)


# -- crop ---------------------------------------------------------------------------------------
def _reference_crop(image, top, left, size, padding, mode, fill):
    """Pad one (C, H, W) image with np.pad (per channel fill for constant), then slice."""
    (pl, pt, pr, pb) = padding
    widths = ((0, 0), (pt, pb), (pl, pr))
    if mode == "constant":
        fills = np.broadcast_to(np.asarray(fill, dtype=np.float64), (image.shape[0],))
        padded = np.stack([np.pad(ch, widths[1:], mode="constant", constant_values=f)
                           for ch, f in zip(image, fills)])
    else:
        padded = np.pad(image, widths, mode=mode)
    return padded[:, top:top + size[0], left:left + size[1]]


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "symmetric"])
@pytest.mark.parametrize("padding,expanded", [(4, (4, 4, 4, 4)), ((2, 3), (2, 3, 2, 3)),
                                              ((1, 2, 3, 0), (1, 2, 3, 0))])
def test_random_crop_matches_per_image_reference(backend, mode, padding, expanded):
    host, batch = _batch(backend, (10, 3, 8, 9), np.float32, seed=2)
    transform = T.RandomCrop((8, 9), padding=padding, padding_mode=mode, fill=0)
    offsets = transform.draw(batch, get_backend(backend).__class__(7))
    out = _host(transform.apply(batch, offsets))
    tops, lefts = (_host(o) for o in offsets)
    assert tops.max() <= expanded[1] + expanded[3] and lefts.max() <= expanded[0] + expanded[2]
    for k in range(10):
        expected = _reference_crop(host[k], tops[k], lefts[k], (8, 9), expanded, mode, 0)
        np.testing.assert_array_equal(out[k], expected)


def test_random_crop_cifar_style_uint8_and_channel_fill(backend):
    host, batch = _batch(backend, (32, 3, 32, 32), np.uint8, seed=3)
    transform = T.RandomCrop(32, padding=4, fill=(10, 20, 30))
    offsets = transform.draw(batch, get_backend(backend).__class__(1))
    out = _host(transform.apply(batch, offsets))
    tops, lefts = (_host(o) for o in offsets)
    assert out.dtype == np.uint8 and out.shape == (32, 3, 32, 32)
    assert set(np.unique(tops)) <= set(range(9)) and len(np.unique(tops)) > 3
    for k in range(32):
        expected = _reference_crop(host[k], tops[k], lefts[k], (32, 32), (4,) * 4, "constant",
                                   (10, 20, 30))
        np.testing.assert_array_equal(out[k], expected)


def test_random_crop_smaller_window_and_pad_if_needed(backend):
    host, batch = _batch(backend, (6, 2, 5, 7), np.float64, seed=4)
    transform = T.RandomCrop((4, 3))
    offsets = transform.draw(batch, get_backend(backend).__class__(2))
    out = _host(transform.apply(batch, offsets))
    for k, (i, j) in enumerate(zip(*(_host(o) for o in offsets))):
        np.testing.assert_array_equal(out[k], host[k][:, i:i + 4, j:j + 3])
    grown = T.RandomCrop((8, 9), pad_if_needed=True)
    offsets = grown.draw(batch, get_backend(backend).__class__(2))
    out = _host(grown.apply(batch, offsets))
    for k, (i, j) in enumerate(zip(*(_host(o) for o in offsets))):  # torchvision pads 3 and 2
        np.testing.assert_array_equal(out[k], _reference_crop(host[k], i, j, (8, 9), (2, 3, 2, 3),
                                                              "constant", 0))


def test_random_crop_errors():
    batch = np.zeros((2, 3, 8, 8), np.float32)
    with pytest.raises(ValueError, match="larger than"):
        T.RandomCrop(10)(batch)
    with pytest.raises(ValueError, match="reflect"):
        T.RandomCrop(8, padding=8, padding_mode="reflect")(batch)
    with pytest.raises(ValueError, match="padding_mode"):
        T.RandomCrop(8, padding_mode="wrap")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        T.RandomCrop(8)(np.zeros((3, 8, 8)))


# -- rotation -----------------------------------------------------------------------------------
def _reference_rotate_loop(image, angle, mode, fill, center=None):
    """One (C, H, W) image, pixel by pixel, the textbook way: each output pixel samples the
    inverse-rotated point; bilinear weights of neighbours outside the image read as 0 and the
    result is then blended with ``fill`` by the in-bounds weight share m (torchvision's rule:
    value * m + fill * (1 - m)); nearest takes ``fill`` when the nearest pixel is outside."""
    c, h, w = image.shape
    cx, cy = ((w - 1) / 2, (h - 1) / 2) if center is None else (center[0] - 0.5,
                                                                  center[1] - 0.5)
    a = math.radians(angle)
    out = np.empty_like(image, dtype=np.float64)
    for row in range(h):
        for col in range(w):
            dx, dy = col - cx, row - cy
            sx = math.cos(a) * dx - math.sin(a) * dy + cx
            sy = math.sin(a) * dx + math.cos(a) * dy + cy
            if mode == "nearest":
                ix, iy = round(sx), round(sy)  # Python's round is half to even too
                inside = 0 <= ix < w and 0 <= iy < h
                out[:, row, col] = image[:, iy, ix] if inside else fill
                continue
            x0, y0 = math.floor(sx), math.floor(sy)
            value, share = np.zeros(c), 0.0
            for yy, wy in ((y0, 1 - (sy - y0)), (y0 + 1, sy - y0)):
                for xx, wx in ((x0, 1 - (sx - x0)), (x0 + 1, sx - x0)):
                    if 0 <= xx < w and 0 <= yy < h:
                        value += wy * wx * image[:, yy, xx]
                        share += wy * wx
            out[:, row, col] = value * share + (1 - share) * fill
    return out


def _torchvision_rotate(images, angles, mode, fill):
    """torchvision.transforms.functional.rotate on tensors, rebuilt from torch's kernels:
    affine_grid (align_corners=False), grid_sample with zero padding on the image plus a mask
    channel of ones, then the mask blend with the fill."""
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    n, c, h, w = images.shape
    out = []
    for k in range(n):
        a = math.radians(angles[k])
        theta = torch.tensor([[[math.cos(a), -math.sin(a) * h / w, 0.0],
                               [math.sin(a) * w / h, math.cos(a), 0.0]]], dtype=torch.float64)
        grid = functional.affine_grid(theta, (1, c + 1, h, w), align_corners=False)
        with_mask = torch.cat([torch.from_numpy(images[k:k + 1].astype(np.float64)),
                               torch.ones(1, 1, h, w, dtype=torch.float64)], dim=1)
        sampled = functional.grid_sample(with_mask, grid, mode=mode, padding_mode="zeros",
                                         align_corners=False)
        value, mask = sampled[:, :-1], sampled[:, -1:].expand(1, c, h, w)
        if mode == "nearest":
            value = torch.where(mask < 0.5, torch.full_like(value, fill), value)
        else:
            value = value * mask + (1 - mask) * fill
        out.append(value)
    return torch.cat(out).numpy()


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("shape", [(6, 3, 32, 32), (4, 2, 9, 14)])
@pytest.mark.parametrize("fill", [0.0, 0.25])
def test_rotation_matches_torchvision_algorithm(backend, mode, shape, fill):
    host, batch = _batch(backend, shape, np.float64, seed=5)
    transform = T.RandomRotation(170, interpolation=mode, fill=fill)
    angles = transform.draw(batch, get_backend(backend).__class__(11))
    out = _host(transform.apply(batch, angles))
    expected = _torchvision_rotate(host, _host(angles), mode, fill)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_rotation_matches_pixel_loop(backend, mode):
    host, batch = _batch(backend, (3, 3, 7, 10), np.float64, seed=6)
    transform = T.RandomRotation((-60, 60), interpolation=mode, fill=(0.1, 0.2, 0.3))
    angles = transform.draw(batch, get_backend(backend).__class__(4))
    out = _host(transform.apply(batch, angles))
    for k, angle in enumerate(_host(angles)):
        expected = _reference_rotate_loop(host[k], angle, mode, np.array([0.1, 0.2, 0.3]))
        np.testing.assert_allclose(out[k], expected, rtol=0, atol=1e-10)


def test_rotation_custom_center_matches_pixel_loop(backend):
    host, batch = _batch(backend, (2, 1, 6, 8), np.float64, seed=7)
    transform = T.RandomRotation(45, center=(2.0, 1.5))
    angles = np.array([30.0, -75.0])
    out = _host(transform.apply(batch, get_backend(backend).asarray(angles)))
    for k in range(2):
        expected = _reference_rotate_loop(host[k], angles[k], "bilinear", 0.0, center=(2.0, 1.5))
        np.testing.assert_allclose(out[k], expected, rtol=0, atol=1e-10)


def test_rotation_by_90_is_counter_clockwise(backend):
    host, batch = _batch(backend, (2, 3, 6, 6), np.float64, seed=8)
    be = get_backend(backend)
    for mode in ("bilinear", "nearest"):
        out = _host(T.RandomRotation(0, interpolation=mode).apply(batch, be.asarray([90.0, 0.0])))
        np.testing.assert_allclose(out[0], np.rot90(host[0], k=1, axes=(1, 2)), atol=1e-12)
        np.testing.assert_allclose(out[1], host[1], atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_rotation_low_precision_inputs(backend, dtype):
    host, batch = _batch(backend, (8, 3, 32, 32), dtype, seed=9)
    transform = T.RandomRotation(30)
    angles = transform.draw(batch, get_backend(backend).__class__(12))
    out = _host(transform.apply(batch, angles))
    exact = _torchvision_rotate(host.astype(np.float64), _host(angles), "bilinear", 0.0)
    assert out.dtype == dtype
    if dtype == np.uint8:  # torchvision rounds back to uint8 (half to even)
        assert np.abs(out.astype(int) - np.rint(exact)).max() <= 1
        assert (out.astype(int) == np.rint(exact)).mean() > 0.999
    else:
        np.testing.assert_allclose(out, exact, rtol=0, atol=1e-5)


def test_rotation_argument_errors():
    with pytest.raises(ValueError):
        T.RandomRotation(-5)
    with pytest.raises(ValueError):
        T.RandomRotation((10, -10))
    with pytest.raises(ValueError, match="interpolation"):
        T.RandomRotation(5, interpolation="bicubic")


def test_rotation_angles_uniform_in_range():
    rng = get_backend("numpy").__class__(0)
    angles = T.RandomRotation((-10, 30)).draw(np.zeros((5000, 1, 1, 1)), rng)
    assert angles.min() >= -10 and angles.max() < 30 and abs(angles.mean() - 10) < 0.5


# -- normalize, compose, seeding ------------------------------------------------------------------
def test_normalize_matches_reference(backend):
    host, batch = _batch(backend, (5, 3, 4, 4), np.float64, seed=10)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    out = _host(T.Normalize(mean, std)(batch))
    expected = (host - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    out32 = _host(T.Normalize(mean, std)(batch.astype(np.float32)))
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, expected, rtol=1e-5, atol=1e-6)


def test_normalize_errors():
    with pytest.raises(ValueError, match="zero"):
        T.Normalize((0.5,), (0.0,))
    with pytest.raises(TypeError, match="floating"):
        T.Normalize(0.5, 0.5)(np.zeros((1, 3, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="channels"):
        T.Normalize((0.5, 0.5), (1, 1))(np.zeros((1, 3, 2, 2)))


def test_compose_equals_steps_with_same_generator(backend):
    host, batch = _batch(backend, (8, 3, 12, 12), np.float32, seed=11)
    steps = [T.RandomCrop(12, padding=2, padding_mode="reflect"), T.RandomHorizontalFlip(),
             T.RandomRotation(20), T.RandomGrayscale(0.5), T.Normalize((0.5,) * 3, (0.25,) * 3)]
    cls = get_backend(backend).__class__
    composed = _host(T.Compose(steps)(batch, rng=cls(21)))
    rng, manual = cls(21), batch
    for step in steps:
        manual = step.apply(manual, step.draw(manual, rng))
    np.testing.assert_array_equal(composed, _host(manual))
    assert "RandomRotation" in repr(T.Compose(steps))


def test_global_seed_makes_draws_reproducible(backend):
    _, batch = _batch(backend, (16, 3, 8, 8), np.float32, seed=12)
    transform = T.Compose([T.RandomCrop(8, padding=2), T.RandomRotation(30),
                           T.RandomHorizontalFlip()])
    hw.manual_seed(123)
    first = _host(transform(batch))
    hw.manual_seed(123)
    second = _host(transform(batch))
    third = _host(transform(batch))
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(second, third)


def test_tensor_in_tensor_out(backend):
    host = np.random.default_rng(0).random((4, 3, 6, 6)).astype(np.float32)
    x = hw.Tensor(get_backend(backend).asarray(host))
    y = T.RandomHorizontalFlip(1.0)(x)
    assert isinstance(y, hw.Tensor) and y.backend == backend
    np.testing.assert_array_equal(y.numpy(), x.numpy()[..., ::-1])


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 5), c=st.sampled_from([1, 3]), h=st.integers(2, 9), w=st.integers(2, 9),
       pad=st.integers(0, 3), seed=st.integers(0, 2 ** 16))
def test_crop_and_flip_property(n, c, h, w, pad, seed):
    rng = np.random.default_rng(seed)
    host = rng.random((n, c, h, w))
    gen = get_backend("numpy").__class__(seed)
    size = (int(rng.integers(1, h + 2 * pad + 1)), int(rng.integers(1, w + 2 * pad + 1)))
    crop = T.RandomCrop(size, padding=pad, padding_mode="edge")
    offsets = crop.draw(host, gen)
    out = crop.apply(host, offsets)
    for k in range(n):
        expected = _reference_crop(host[k], offsets[0][k], offsets[1][k], size, (pad,) * 4,
                                   "edge", 0)
        np.testing.assert_array_equal(out[k], expected)
    flip = T.RandomVerticalFlip(0.5)
    flags = flip.draw(out, gen)
    flipped = flip.apply(out, flags)
    for k in range(n):
        np.testing.assert_array_equal(flipped[k], out[k][:, ::-1] if flags[k] else out[k])
