"""The backward pass: walk the recorded graph from the outputs back to the leaves.

``backward(tensor)`` (behind ``Tensor.backward``) accumulates gradients into the ``.grad`` of
leaves and of tensors that ``retain_grad()``; :func:`grad` (``hw.grad``, like
``torch.autograd.grad``) returns them instead. Both run :func:`_backprop`:

1. order the recorded ops reachable from the outputs, producers before consumers (iteratively,
   so a chain of 100,000 ops is fine); edges lead from an op to the ops that made its inputs
   (or to leaf tensors), so gradients are keyed by op and an op's inputs need not stay alive;
2. visit them in reverse, calling each op's ``backward`` with the gradient of its output, under
   grad mode ``create_graph`` (so with ``create_graph=True`` the backward pass is itself recorded
   and differentiable);
3. reduce each input gradient to the input's shape (``sum_to``: broadcasting is undone here, in
   one place, never inside an op) and dtype, and add it to what that input already received;
4. free each op's saved tensors and arrays once it ran, unless ``retain_graph``, so memory falls
   as the walk proceeds; a second backward through a freed op is an error;
5. what is left belongs to leaves: stored in ``.grad`` (added to an existing one), or returned.

Under ``detect_anomaly()`` every gradient is checked for NaN/Inf as it is computed, and ops that
a backward creates are reported as coming from the op whose backward created them.

Hooks (PyTorch's names): :func:`register_post_accumulate_grad_hook` calls ``hook(leaf)`` once
``backward()`` has stored the leaf's ``.grad``, and a hook may :func:`queue_callback` a function
that runs when that ``backward()`` ends. ``DistributedDataParallel`` uses both to average
gradients across processes without a change to the training loop. This engine stores the
leaves' gradients at the end of the walk, so the hooks run then, in the order the leaves
received their first gradient (the last layer's parameters first).

The engine works on the ops and tensors it is given (``fn.edges``, ``fn.out_meta``,
``fn.output_ref``; ``data``, ``_be``, ``_ctx``, ``requires_grad``, ``grad``, ``_retains_grad``) and makes new ones through them, so it does not import the Tensor
class: imports run one way, from the Tensor to the engine.
"""
from __future__ import annotations

import weakref

from . import grad_mode as _mode
from .function import Function

__all__ = ["backward", "grad", "register_post_accumulate_grad_hook", "queue_callback"]

_leaf_hooks: dict = {}  # id(leaf) -> (weak reference to the leaf, [hook, ...])


def backward(tensor, gradient=None, retain_graph=None, create_graph=False):
    """``tensor.backward(...)``: accumulate d(tensor)/d(leaf) into every leaf's ``.grad``."""
    if not tensor.requires_grad:
        raise RuntimeError("backward(): this tensor does not require grad and has no grad_fn")
    if gradient is None:
        if tensor.data.size != 1:
            raise RuntimeError(f"backward(): grad can be implicitly created only for scalar "
                               f"outputs; this tensor has shape {tensor.shape}, pass gradient=")
        gradient = tensor._make(tensor._be.xp.ones(tensor.data.shape, dtype=tensor.dtype), tensor._be)
    else:
        gradient = _as_grad(gradient, tensor)
    if retain_graph is None:
        retain_graph = create_graph
    state = _mode.state  # the callbacks queued during this thread's backward() (None outside one)
    outer, state.queued = state.queued, []
    try:
        _backprop([tensor], [gradient], retain_graph, create_graph)
        queued = state.queued
        while queued:
            queued.pop(0)()
    finally:
        state.queued = outer


class RemovableHandle:
    """What registering a hook returns: ``handle.remove()`` unregisters it."""

    def __init__(self, hooks, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


def register_post_accumulate_grad_hook(tensor, hook) -> RemovableHandle:
    """``tensor.register_post_accumulate_grad_hook(hook)``: call ``hook(tensor)`` after every
    ``backward()`` that stored a gradient in this leaf's ``.grad`` (``hw.grad`` stores none)."""
    if tensor._ctx is not None or not tensor.requires_grad:
        raise RuntimeError("post-accumulate-grad hooks can only be registered on leaf tensors "
                           "that require grad")
    key = id(tensor)
    entry = _leaf_hooks.get(key)
    if entry is None or entry[0]() is not tensor:
        def forget(ref, key=key):
            if _leaf_hooks.get(key, (None,))[0] is ref:
                del _leaf_hooks[key]
        entry = _leaf_hooks[key] = (weakref.ref(tensor, forget), [])
    entry[1].append(hook)
    return RemovableHandle(entry[1], hook)


def queue_callback(callback) -> None:
    """Run ``callback()`` when the ``backward()`` now running has finished (after every hook);
    for hooks, which run inside a backward pass."""
    queued = _mode.state.queued
    if queued is None:
        raise RuntimeError("queue_callback() can only be called during a backward() pass")
    queued.append(callback)


def _as_grad(gradient, like):
    """``gradient`` (a tensor, or anything ``Tensor()`` takes) as a tensor of ``like``'s shape."""
    gradient = like._coerce(gradient)
    if gradient.shape != like.shape:
        raise RuntimeError(f"gradient has shape {gradient.shape} but the output has {like.shape}")
    return gradient


def _node_of(t):
    """The graph key of tensor ``t``: the op that made it, or the tensor itself for a leaf."""
    return t._ctx if t._ctx is not None else t


def _topological(roots):
    """Recorded ops reachable from the root tensors, producers before consumers. The graph's
    edges point from each op to the ops that made its inputs (``fn.edges``), not to tensors."""
    order, seen = [], set()
    stack = [(r._ctx, False) for r in roots if r._ctx is not None]
    push, pop, emit, mark = stack.append, stack.pop, order.append, seen.add  # once per backward
    while stack:
        fn, expanded = pop()
        if expanded:
            emit(fn)
            continue
        key = id(fn)
        if key in seen:
            continue
        mark(key)
        try:
            edges = fn.edges
        except AttributeError:
            raise fn._freed_error() from None
        push((fn, True))
        for e in edges:
            if isinstance(e, Function) and id(e) not in seen:  # not None, not a leaf tensor
                push((e, False))
    return order


def _backprop(roots, root_grads, retain_graph, create_graph, wanted=None):
    """Run the backward pass. With ``wanted`` (a list of tensors) return their gradients;
    otherwise accumulate into the ``.grad`` of leaves (and of tensors that retain_grad).

    Gradients are keyed by graph node: the op that made a tensor, or a leaf tensor itself."""
    grads = {}  # id(node) -> [node, gradient]; holding the node keeps its id unique
    for r, g in zip(roots, root_grads):
        _accumulate(grads, _node_of(r), g)
    wanted_ids = None if wanted is None else {id(_node_of(w)) for w in wanted}
    captured = {}
    anomaly = _mode.state.anomaly  # this thread's anomaly mode when backward() was called
    order = _topological(roots)
    pop, get = grads.pop, grads.get
    with _mode.set_grad_mode(create_graph):
        for fn in reversed(order):
            entry = pop(id(fn), None)
            if entry is not None:
                g = entry[1]
                if wanted_ids is not None:
                    if id(fn) in wanted_ids:
                        captured[id(fn)] = g
                else:
                    ref = fn.output_ref  # set by retain_grad() only
                    if ref is not None:
                        t = ref()
                        if t is not None and t._retains_grad and t._ctx is fn:
                            t.grad = g if create_graph else g.detach()
                if anomaly:
                    in_grads = _anomalous_backward(fn, g)
                else:
                    in_grads = fn.backward(g)
                for k, (edge, gi, need) in enumerate(zip(fn.edges, in_grads, fn.needs_input_grad)):
                    if need and gi is not None:
                        if anomaly:
                            _mode.check_finite(gi.data, gi._be, f"the backward of {fn.name} returned {{bad}} in the "
                                          f"gradient of its input {k} (op created at {fn.created_at})")
                        meta = getattr(edge, "out_meta", None)  # None: a leaf tensor
                        if meta is None:
                            data = edge.data
                            shape, dtype = data.shape, data.dtype
                        else:
                            shape, dtype = meta
                        data = gi.data
                        if data.shape != shape:
                            gi = gi.sum_to(shape)
                            data = gi.data
                        if data.dtype != dtype:
                            gi = gi.astype(dtype)
                        key = id(edge)
                        previous = get(key)
                        if previous is None:
                            grads[key] = [edge, gi]
                        else:
                            previous[1] = previous[1] + gi
            if not retain_graph:
                # fn.free(): saved tensors and arrays go now, so memory falls as backward proceeds
                fn.__dict__.clear()
    stored = set()
    hooked = []
    for key, (t, g) in grads.items():  # what is left are leaves (tensors with no recorded op)
        if wanted_ids is not None:
            if key in wanted_ids:
                captured[key] = g
        elif t.requires_grad:
            old = t.grad
            if old is not None:
                g = old + g
            elif not create_graph:
                g = _owned(g, stored)
            if not create_graph:
                g = g.detach()
            t.grad = g
            stored.add(id(g.data))
            if _leaf_hooks:
                entry = _leaf_hooks.get(key)
                if entry is not None and entry[0]() is t:
                    hooked.append((t, entry[1]))
    # after every leaf is stored: a hook may then change any .grad in place safely
    for t, hooks in hooked:
        for hook in list(hooks):
            hook(t)
    return captured


def _owned(g, stored):
    """``g`` itself where it owns its writable array, else a copy: a gradient may be a broadcast
    view, or the very array another leaf received (``a + b`` passes one array to both), and a
    leaf's ``.grad`` must be safe to update in place."""
    data = g.data
    flags = data.flags
    # CuPy's flags have no ``writeable`` (device memory is always writable)
    if flags.owndata and getattr(flags, "writeable", True) and id(data) not in stored:
        return g
    return g._make(data.copy(), g._be)


def _anomalous_backward(fn, g):
    fn.created_at = getattr(fn, "created_at", "<created outside detect_anomaly>")
    state = _mode.state
    previous, state.backward_node = state.backward_node, fn
    try:
        return fn.backward(g)
    finally:
        state.backward_node = previous


def _accumulate(grads, node, g):
    entry = grads.get(id(node))
    if entry is None:
        grads[id(node)] = [node, g]
    else:
        entry[1] = entry[1] + g


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False):
    """Gradients of ``outputs`` with respect to ``inputs`` (like ``torch.autograd.grad``).

    Returns a tuple with one Tensor per input; ``.grad`` attributes are left untouched.
    """
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    elif not isinstance(grad_outputs, (list, tuple)):
        grad_outputs = [grad_outputs]
    roots, root_grads = [], []
    for out, g in zip(outputs, grad_outputs):
        if not out.requires_grad:
            raise RuntimeError("grad(): an output does not require grad and has no grad_fn")
        if g is None:
            if out.data.size != 1:
                raise RuntimeError(f"grad(): grad_outputs is needed for the non-scalar output of shape {out.shape}")
            g = out._make(out._be.xp.ones(out.shape, dtype=out.dtype), out._be)
        roots.append(out)
        root_grads.append(_as_grad(g, out))
    for x in inputs:
        if not x.requires_grad:
            raise RuntimeError("grad(): an input does not require grad")
    if retain_graph is None:
        retain_graph = create_graph
    captured = _backprop(roots, root_grads, retain_graph, create_graph, wanted=inputs)
    result = []
    for x in inputs:
        g = captured.get(id(_node_of(x)))
        if g is None and not allow_unused:
            raise RuntimeError("grad(): one of the inputs was not used to compute the outputs; "
                               "pass allow_unused=True to get None for it")
        result.append(g if g is None or create_graph else g.detach())
    return tuple(result)
