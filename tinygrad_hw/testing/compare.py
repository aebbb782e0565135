"""Single ops and layers against PyTorch: the forward value, its dtype and the gradients (of
first and second order) for the same inputs and the same random upstream gradient."""
from __future__ import annotations

import numpy as np

from ..autograd import grad
from ..tensor import Tensor

__all__ = ["TOLERANCE", "rel_err", "assert_close", "to_torch", "compare_with_torch",
           "compare_second_order", "torch_module"]

#: Default relative tolerance of a comparison, per dtype.
TOLERANCE = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}


def torch_module():
    """``torch``, imported on first use (tinygrad_hw itself never needs it)."""
    try:
        import torch
    except ImportError as exc:
        raise ImportError("tinygrad_hw.testing compares with PyTorch: pip install torch") from exc
    return torch


def rel_err(a, b) -> float:
    """``max |a - b| / max |b|`` over whole arrays (``max |a - b|`` where ``b`` is all zero, 0
    for empty arrays): the one relative error every comparison with PyTorch uses."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    diff = float(np.abs(a - b).max())
    scale = float(np.abs(b).max())
    return diff / scale if scale > 0 else diff


def assert_close(ours, theirs, rtol, what="value"):
    """``ours`` (a Tensor or array) equals ``theirs`` (a PyTorch tensor or array) in shape, in
    which elements are finite, and within relative error ``rtol`` (:func:`rel_err`) on the
    finite ones; integer and bool arrays exactly."""
    ours = ours.numpy() if isinstance(ours, Tensor) else np.asarray(ours)
    theirs = theirs.detach().cpu().numpy() if isinstance(theirs, torch_module().Tensor) else np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs torch {theirs.shape}"
    if ours.dtype.kind == "f" or theirs.dtype.kind == "f":
        # where both sides are not finite they must agree exactly (inf/nan positions)
        np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(theirs), err_msg=what)
        fin = np.isfinite(theirs)
        err = rel_err(ours[fin], theirs[fin])
        assert err <= rtol, f"{what}: relative error {err:.3g} > {rtol:g}"
    else:
        np.testing.assert_array_equal(ours, theirs, err_msg=what)


def to_torch(array, requires_grad):
    """A PyTorch tensor of a copy of ``array``, requiring grad where floating and asked to."""
    t = torch_module().from_numpy(np.array(array))
    return t.requires_grad_(requires_grad and t.is_floating_point())


def compare_with_torch(hw_fn, torch_fn, arrays, backend=None, rtol=None, grad_rtol=None,
                       seed=0, check_grad=True, check_dtype=True):
    """Run ``hw_fn(*tensors)`` and ``torch_fn(*torch_tensors)`` on the same ``arrays`` (NumPy;
    our tensors on ``backend``, default: the default backend).

    Floating inputs require grad. Compares the output, its dtype, and, after backpropagating the
    same random upstream gradient through both, every input's gradient. Returns (ours, theirs).
    """
    xs = [Tensor(a, backend=backend, requires_grad=np.asarray(a).dtype.kind == "f") for a in arrays]
    ts = [to_torch(a, True) for a in arrays]
    out, ref = hw_fn(*xs), torch_fn(*ts)
    dtype = out.dtype
    if rtol is None:
        rtol = TOLERANCE.get(np.dtype(dtype), 1e-10)
    assert_close(out, ref, rtol, "forward")
    if check_dtype:
        assert str(np.dtype(dtype)) == str(ref.dtype).replace("torch.", ""), f"dtype {dtype} vs {ref.dtype}"
    if check_grad and out.requires_grad:
        upstream = np.random.default_rng(seed).standard_normal(out.shape).astype(dtype)
        out.backward(Tensor(upstream, backend=backend))
        ref.backward(torch_module().from_numpy(upstream))
        for i, (x, t) in enumerate(zip(xs, ts)):
            if t.requires_grad:
                theirs = t.grad if t.grad is not None else torch_module().zeros_like(t)
                assert x.grad is not None, f"input {i}: no gradient"
                assert x.grad.dtype == x.dtype, f"input {i}: gradient dtype {x.grad.dtype} vs {x.dtype}"
                assert_close(x.grad, theirs, grad_rtol or rtol, f"gradient of input {i}")
    return out, ref


def compare_second_order(hw_fn, torch_fn, arrays, backend=None, rtol=1e-9, seed=1):
    """Gradient of <grad(f)(x), v> with respect to x (and v), ours against torch's create_graph."""
    rng = np.random.default_rng(seed)
    xs = [Tensor(a, backend=backend, requires_grad=True) for a in arrays]
    ts = [to_torch(a, True) for a in arrays]
    out, ref = hw_fn(*xs), torch_fn(*ts)
    up = rng.standard_normal(out.shape)
    g_hw = grad([out], xs, [Tensor(up, backend=backend)], create_graph=True, allow_unused=True)
    torch = torch_module()
    g_t = torch.autograd.grad([ref], ts, [torch.from_numpy(up)], create_graph=True, allow_unused=True)
    vs = [rng.standard_normal(np.shape(a)) for a in arrays]
    s_hw = sum(((g * Tensor(v, backend=backend)).sum() for g, v in zip(g_hw, vs) if g is not None and g.requires_grad),
               Tensor(0.0, dtype="float64", backend=backend))
    s_t = sum((g * torch.from_numpy(v)).sum() for g, v in zip(g_t, vs) if g is not None and g.requires_grad)
    # where a side's first gradient is constant its second derivative is zero (None here)
    gg_hw = grad([s_hw], xs, allow_unused=True) if s_hw.requires_grad else [None] * len(xs)
    torch_const = not isinstance(s_t, torch.Tensor) or not s_t.requires_grad
    gg_t = [None] * len(ts) if torch_const else torch.autograd.grad([s_t], ts, allow_unused=True)
    for i, (a, b) in enumerate(zip(gg_hw, gg_t)):
        a = np.zeros(np.shape(arrays[i])) if a is None else a.numpy()
        b = np.zeros(np.shape(arrays[i])) if b is None else b.detach().numpy(force=True)
        assert_close(a, b, rtol, f"second-order gradient of input {i}")
