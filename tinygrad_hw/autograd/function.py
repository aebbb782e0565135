"""The base class of every differentiable operation, and how a call of one is recorded.

An operation is a small class with ``forward`` and ``backward`` side by side:

* ``forward(*arrays) -> array`` computes on raw backend arrays (``self.xp`` is NumPy or CuPy). It
  may keep arrays it needs later on ``self`` (masks, indices).
* ``backward(grad) -> tuple`` receives the output's gradient as a :class:`~tinygrad_hw.Tensor`
  and returns one gradient Tensor (or ``None``) per input, written with differentiable Tensor
  operations. Because of that, running backward with graph recording on (``create_graph=True``)
  records the backward pass itself and higher-order gradients fall out with no extra code.

Keyword parameters given to ``apply`` become attributes (``self.axis``...). Gradients returned by
``backward`` may have the *broadcast* shape of the output: the engine reduces them to the input's
shape in one place, so no op handles broadcasting itself.

Inside ``backward``: ``self.inputs`` are the input tensors, ``self.output`` the output tensor
(a weak reference call, ``self.output()``), ``self.needs_input_grad[i]`` says whether input ``i``
needs a gradient at all, and ``self.const(array)`` wraps an array as a constant tensor.
"""
from __future__ import annotations

import weakref

from . import grad_mode as _mode

__all__ = ["Function"]


class Function:
    def __init__(self, backend, **params):
        self.backend = backend
        self.xp = backend.xp
        if params:
            self.__dict__.update(params)

    @classmethod
    def apply(cls, *inputs, **params):
        """Run the op on tensors ``inputs``; where one of them requires grad and grad mode is on,
        record it in the graph (the output's ``_ctx`` is this op, which keeps its inputs)."""
        first = inputs[0]
        be = first._be
        arrays = []
        record = False
        for t in inputs:
            if t._be is not be:
                raise ValueError(f"{cls.__name__}: tensors on two backends, {be.name} and "
                                 f"{t._be.name}; move one with .to({be.name!r})")
            arrays.append(t.data)
            record = record or t.requires_grad
        fn = cls(be, **params)
        out = first._make(fn.forward(*arrays), be)
        if _mode._anomaly_mode:
            fn._check_output(out, inputs)
        if record and _mode._grad_enabled:
            out.requires_grad = True
            out._ctx = fn
            fn.inputs = inputs
            fn.needs_input_grad = tuple([t.requires_grad for t in inputs])
            fn.output = weakref.ref(out)
        return out

    def _check_output(self, out, inputs):
        """Anomaly mode: raise where this op made a NaN or Inf, naming the op and its origin."""
        be = out._be
        self.created_at = _mode.user_frame()
        node = _mode.backward_node
        where = (f"in the backward of {node.name} (created at {node.created_at})"
                 if node is not None else f"(created at {self.created_at})")
        finite_inputs = all(bool(be.xp.isfinite(t.data).all()) for t in inputs if t.dtype.kind == "f")
        _mode.check_finite(out.data, be, f"{self.name} {where} produced {{bad}} from finite inputs"
                           if finite_inputs else
                           f"{self.name} {where} produced {{bad}}; its inputs were not finite either")

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    def const(self, array):
        """A constant (no-gradient) tensor on this op's backend."""
        return self.inputs[0]._const(array)

    @property
    def name(self) -> str:
        return type(self).__name__

    def __repr__(self):
        return f"<{self.name} op>"
