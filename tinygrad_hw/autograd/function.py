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

What a recorded op keeps (PyTorch's ``save_for_backward``, Chainer's retain-by-index): the graph's
edges point to the *ops* that produced the inputs (``self.edges``), never to the input tensors, so
a forward activation lives only as long as an op saved it. An op says what its backward reads:

* ``self.save_for_backward(*indices)`` in ``forward`` keeps the inputs at those positions (a class
  attribute ``saves = (0, 1)`` says the same for every call; ``saves = ()`` keeps none);
* ``self.save_output()`` in ``forward`` (or ``saves_output = True``) keeps the output's array.

An op that declares nothing keeps every input (what a user's own op written for the old API
expects). Inside ``backward``: ``self.inputs`` are the saved input tensors (``None`` where not
saved), ``self.output()`` the saved output as a tensor of this op (so gradients of it flow back
into the graph; ``self.output_data()`` is its array, for array-level code),
``self.needs_input_grad[i]`` says whether input ``i`` needs a gradient at all (known in
``forward`` too, so an op can save only what the requested gradients read), and
``self.const(array)`` wraps an array as a constant tensor. Reading a saved tensor that was
modified in place since it was saved raises PyTorch's ``RuntimeError`` (version counters).
The engine frees a node's saved state once its backward ran, unless ``retain_graph=True``.
"""
from __future__ import annotations

import weakref

from . import grad_mode as _mode

__all__ = ["Function"]

_state = _mode.state
_new_object = object.__new__
_weakref = weakref.ref
_NO_GRADS = ((), (False,), (False, False), (False, False, False))
_PARTNERS = {(True, True): (0, 1), (True, False): (1,), (False, True): (0,), (False, False): ()}


def first_order() -> bool:
    """Whether a backward running now is a plain first-order one in this thread (grad mode off,
    anomaly mode off everywhere): the ops a backward would call then record and check nothing,
    so it may compute its gradient on the arrays directly (one op call fewer)."""
    return not _state.grad_enabled and not _mode.anomaly_on


class Function:
    saves = None          # input positions kept for backward; None: every input
    saves_output = False  # whether backward reads the output
    view = False          # whether the output may share the first input's memory (reshape...)
    # a weak reference to the output, set by the output's retain_grad() (and by in-place ops),
    # never to keep the output alive; None: no tensor of this op wants its .grad kept
    output_ref = None

    def __init__(self, backend, **params):
        self.backend = backend
        self.xp = backend.xp
        if params:
            self.__dict__.update(params)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # apply() builds the node without calling __init__ unless a subclass defines its own
        cls._plain_init = cls.__init__ is Function.__init__

    _plain_init = True

    @classmethod
    def apply(cls, *inputs, **params):
        """Run the op on tensors ``inputs``; where one of them requires grad and grad mode is on,
        record it in the graph (the output's ``_ctx`` is this op)."""
        # Every op goes through here, so the common cases (one or two inputs, default modes)
        # are written out by hand: no per-call lists, one global read for the modes.
        n = len(inputs)
        first = inputs[0]
        be = first._be
        if n == 2:
            b = inputs[1]
            if b._be is not be:
                cls._backend_error(be, b._be)
            ra = first.requires_grad
            rb = b.requires_grad
            needs = (ra, rb)
            record = ra or rb
        elif n == 1:
            ra = first.requires_grad
            needs = (ra,)
            record = ra
        else:
            for t in inputs:
                if t._be is not be:
                    cls._backend_error(be, t._be)
            needs = tuple([t.requires_grad for t in inputs])
            record = True in needs
        if record and _mode.grad_off:  # some thread has grad mode off: is it this one?
            record = _state.grad_enabled
        if cls._plain_init:
            fn = _new_object(cls)
            d = fn.__dict__
            d["backend"] = be
            d["xp"] = be.xp
            if params:
                d.update(params)
        else:
            fn = cls(be, **params)
            d = fn.__dict__
        # known to forward, which may save only what the gradients asked for will read
        d["needs_input_grad"] = needs if record else _NO_GRADS[n] if n < 4 else (False,) * n
        if n == 2:
            data = fn.forward(first.data, b.data)
        elif n == 1:
            data = fn.forward(first.data)
        else:
            data = fn.forward(*[t.data for t in inputs])
        make = first._make
        out = make(data, be)
        if fn.view:  # one memory, one version counter: an in-place change through either counts
            out._vc = first._vc
            out._is_view = True
        if _mode.anomaly_on and _state.anomaly:
            fn._check_output(out, inputs)
        if record:
            out.requires_grad = True
            out._ctx = fn
            d["_make"] = make
            # an edge per input: the op that made it, the leaf itself, or None (no gradient)
            if n == 2:
                d["edges"] = (first._ctx or (first if ra else None), b._ctx or (b if rb else None))
            elif n == 1:
                d["edges"] = (first._ctx or first,)
            else:
                d["edges"] = tuple([t._ctx or (t if t.requires_grad else None) for t in inputs])
            d["out_meta"] = (data.shape, data.dtype)  # what the consumers' gradients must be
            saves = fn.saves
            if saves is None or len(saves) == n:
                d["_saved"] = inputs
                if n == 2:
                    d["_versions"] = (first._vc[0], b._vc[0])
                elif n == 1:
                    d["_versions"] = (first._vc[0],)
                else:
                    d["_versions"] = tuple([t._vc[0] for t in inputs])
            elif n == 2 and len(saves) == 1:  # one of two (Mul with a constant factor)
                if saves[0] == 0:
                    d["_saved"] = (first, None)
                    d["_versions"] = (first._vc[0], 0)
                else:
                    d["_saved"] = (None, b)
                    d["_versions"] = (0, b._vc[0])
            elif saves:
                saved = [None] * n
                for i in saves:
                    saved[i] = inputs[i]
                d["_saved"] = saved
                d["_versions"] = tuple([t._vc[0] if t is not None else 0 for t in saved])
            if fn.saves_output:
                # the array and version counter, not the tensor: a node holding its own output
                # tensor would be a reference cycle
                vc = out._vc
                d["_saved_out"] = (data, vc, vc[0])
        return out

    @classmethod
    def compute(cls, backend, *arrays, **params):
        """``forward`` on ``arrays`` of ``backend``, returning the array: no tensors, no node,
        no checks. For a plain first-order backward (:func:`first_order`), which records and
        checks nothing anyway, to make a gradient with another op's forward without ``apply``."""
        # the op is made as apply makes it (kept inline there: a shared helper's call measured
        # 0.07 us more per recorded op, ~3% of the per-op overhead)
        if cls._plain_init:
            fn = _new_object(cls)
            d = fn.__dict__
            d["backend"] = backend
            d["xp"] = backend.xp
            if params:
                d.update(params)
        else:
            fn = cls(backend, **params)
        n = len(arrays)
        fn.needs_input_grad = _NO_GRADS[n] if n < 4 else (False,) * n
        return fn.forward(*arrays)

    @classmethod
    def _backend_error(cls, be, other):
        raise ValueError(f"{cls.__name__}: tensors on two backends, {be.name} and "
                         f"{other.name}; move one with .to({be.name!r})")

    # -- what backward reads ---------------------------------------------------------------------
    def save_for_backward(self, *indices):
        """Called in ``forward``: keep the inputs at these positions for ``backward``."""
        self.saves = indices

    def save_partners(self, *groups):
        """Called in ``forward``: keep input ``j`` where some input ``i != j`` of the same group
        needs a gradient (the gradient of a product in one factor reads the others). ``groups``
        are tuples of positions; none given: all inputs form one group."""
        need = self.needs_input_grad
        if not groups and len(need) == 2:  # the common cases, without the generators
            self.saves = _PARTNERS[need]
            return
        if groups == ((0, 1),):  # a pair among more inputs (a convolution and its bias)
            self.saves = _PARTNERS[need[0], need[1]]
            return
        groups = groups or (tuple(range(len(need))),)
        self.saves = tuple(j for group in groups for j in group
                           if any(need[i] for i in group if i != j))

    def save_output(self):
        """Called in ``forward``: keep the output for ``backward`` (read as ``self.output()``)."""
        self.saves_output = True

    @property
    def inputs(self) -> tuple:
        """The saved input tensors (``None`` where an input was not saved), checked against
        in-place changes since they were saved."""
        saved = self.__dict__.get("_saved")
        if saved is None:
            if "edges" not in self.__dict__:
                raise self._freed_error()
            return (None,) * len(self.needs_input_grad)
        for t, version in zip(saved, self._versions):
            if t is not None and t._vc[0] != version:
                raise self._version_error(t.shape, t.dtype, t._vc, version)
        return tuple(saved)

    def output_data(self):
        """The saved output's array (checked against in-place changes), for array-level backward code."""
        saved = self.__dict__.get("_saved_out")
        if saved is None:
            if "edges" not in self.__dict__:
                raise self._freed_error()
            raise RuntimeError(f"{self.name}.backward reads its output, but forward did not call "
                               "save_output()")
        data, vc, version = saved
        if vc[0] != version:
            raise self._version_error(data.shape, data.dtype, vc, version)
        return data

    def output(self):
        """The saved output as a tensor whose op is this one (checked against in-place changes)."""
        data = self.output_data()
        vc = self._saved_out[1]
        t = self._make(data, self.backend, True)
        t._ctx = self
        t._vc = vc
        return t

    def free(self) -> None:
        """Drop everything the node holds (saved tensors and arrays, edges); a second backward
        through it is then an error."""
        self.__dict__.clear()

    def _freed_error(self):
        return RuntimeError(f"trying to backward through the graph a second time ({self.name} was "
                            "freed by an earlier backward()), or to read saved tensors after they were "
                            "freed; pass retain_graph=True to the first backward() if you need to")

    def _version_error(self, shape, dtype, vc, version):
        modified_by = f" by {vc[1]}" if vc[1] else ""
        return RuntimeError(
            "one of the variables needed for gradient computation has been modified by an inplace "
            f"operation: a {dtype} tensor of shape {tuple(shape)} saved by {self.name} was modified"
            f"{modified_by}; it is at version {vc[0]}, expected version {version} instead. Hint: "
            "copy it before the in-place operation, or use the out-of-place form")

    def _check_output(self, out, inputs):
        """Anomaly mode: raise where this op made a NaN or Inf, naming the op and its origin."""
        be = out._be
        self.created_at = _mode.user_frame()
        node = _state.backward_node
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
        return self._make(self.backend.asarray(array), self.backend)

    @property
    def name(self) -> str:
        return type(self).__name__

    def __repr__(self):
        return f"<{self.name} op>"
