"""The base class of every differentiable operation.

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


class Function:
    def __init__(self, backend, **params):
        self.backend = backend
        self.xp = backend.xp
        if params:
            self.__dict__.update(params)

    @classmethod
    def apply(cls, *inputs, **params):
        """Run the op on tensors ``inputs`` and record it in the graph where gradients are needed."""
        return inputs[0]._run_op(cls, inputs, params)

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
