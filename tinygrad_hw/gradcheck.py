"""Numerical gradient checks for users' own ops: ``gradcheck`` and ``gradgradcheck``."""
from __future__ import annotations

import numpy

from .autograd import grad
from .tensor import Tensor

__all__ = ["gradcheck", "gradgradcheck"]


def _outputs(fn, inputs):
    out = fn(*inputs)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True) -> bool:
    """Compare autograd's gradients of ``fn(*inputs)`` with central differences, in float64.

    ``inputs`` are tensors (those with ``requires_grad`` are checked; each should be float64 for
    the differences to be accurate). Every output element is checked against every input element,
    so keep the tensors small. Returns True, or raises (or returns False) naming the first mismatch.
    """
    inputs = list(inputs)
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    outs = _outputs(fn, inputs)
    for k, out in enumerate(outs):
        if not out.requires_grad:
            continue
        flat_out = out.numpy().reshape(-1)
        for j in range(flat_out.size):
            seed = numpy.zeros(flat_out.size, dtype=out.dtype)
            seed[j] = 1
            g_out = Tensor(seed.reshape(out.shape), backend=out.backend)
            analytic = grad([_outputs(fn, inputs)[k]], [inputs[i] for i in checked], [g_out],
                            allow_unused=True)
            for i, a in zip(checked, analytic):
                numeric = _numeric_row(fn, inputs, i, k, j, eps)
                a = numpy.zeros_like(numeric) if a is None else a.numpy().reshape(-1)
                if not numpy.allclose(a, numeric, atol=atol, rtol=rtol):
                    worst = int(numpy.argmax(numpy.abs(a - numeric)))
                    msg = (f"gradcheck: d output[{k}].flat[{j}] / d input[{i}].flat[{worst}]: "
                           f"autograd {a[worst]!r} vs numeric {numeric[worst]!r}")
                    if raise_exception:
                        raise AssertionError(msg)
                    return False
    return True


def _numeric_row(fn, inputs, i, k, j, eps):
    x = inputs[i]
    base = x.data.copy()
    flat = x.data.reshape(-1)
    row = numpy.zeros(base.size)
    for e in range(base.size):
        old = flat[e].item()
        flat[e] = old + eps
        plus = _outputs(fn, inputs)[k].numpy().reshape(-1)[j]
        flat[e] = old - eps
        minus = _outputs(fn, inputs)[k].numpy().reshape(-1)[j]
        flat[e] = old
        row[e] = (plus - minus) / (2 * eps)
    x.data[...] = base
    return row


def gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0, raise_exception=True) -> bool:
    """Check second derivatives: gradcheck of ``v -> grad(fn(inputs), inputs, v)`` with a random ``v``."""
    inputs = list(inputs)
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    outs = _outputs(fn, inputs)
    rng = numpy.random.default_rng(seed)
    vs = [Tensor(rng.standard_normal(o.shape).astype(o.dtype), backend=o.backend, requires_grad=True)
          for o in outs]

    def first_grads(*args):
        xs, v = list(args[:len(inputs)]), list(args[len(inputs):])
        gs = grad(_outputs(fn, xs), [xs[i] for i in checked], v, create_graph=True, allow_unused=True)
        return tuple(g for g in gs if g is not None)

    return gradcheck(first_grads, inputs + vs, eps=eps, atol=atol, rtol=rtol, raise_exception=raise_exception)
