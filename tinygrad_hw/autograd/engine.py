"""The backward pass: walk the recorded graph from the outputs back to the leaves.

``backward(tensor)`` (behind ``Tensor.backward``) accumulates gradients into the ``.grad`` of
leaves and of tensors that ``retain_grad()``; :func:`grad` (``hw.grad``, like
``torch.autograd.grad``) returns them instead. Both run :func:`_backprop`:

1. order the recorded ops reachable from the outputs, producers before consumers (iteratively,
   so a chain of 100,000 ops is fine);
2. visit them in reverse, calling each op's ``backward`` with the gradient of its output, under
   grad mode ``create_graph`` (so with ``create_graph=True`` the backward pass is itself recorded
   and differentiable);
3. reduce each input gradient to the input's shape (``sum_to``: broadcasting is undone here, in
   one place, never inside an op) and dtype, and add it to what that input already received;
4. free each op's saved arrays and inputs once it ran, unless ``retain_graph``; a second backward
   through a freed op is an error;
5. what is left belongs to leaves: stored in ``.grad`` (added to an existing one), or returned.

Under ``detect_anomaly()`` every gradient is checked for NaN/Inf as it is computed, and ops that
a backward creates are reported as coming from the op whose backward created them.

Hooks (PyTorch's names): :func:`register_post_accumulate_grad_hook` calls ``hook(leaf)`` once
``backward()`` has stored the leaf's ``.grad``, and a hook may :func:`queue_callback` a function
that runs when that ``backward()`` ends. ``DistributedDataParallel`` uses both to average
gradients across processes without a change to the training loop. This engine stores the
leaves' gradients at the end of the walk, so the hooks run then, in the order the leaves
received their first gradient (the last layer's parameters first).

The engine works on the tensors it is given (``data``, ``_be``, ``_ctx``, ``requires_grad``,
``grad``, ``_retains_grad``) and makes new ones through them, so it does not import the Tensor
class: imports run one way, from the Tensor to the engine.
"""
from __future__ import annotations

import weakref

from . import grad_mode as _mode

__all__ = ["backward", "grad", "register_post_accumulate_grad_hook", "queue_callback"]

_leaf_hooks: dict = {}  # id(leaf) -> (weak reference to the leaf, [hook, ...])
_queued = None  # the callbacks queued during the backward() now running (None outside one)


def backward(tensor, gradient=None, retain_graph=None, create_graph=False):
    """``tensor.backward(...)``: accumulate d(tensor)/d(leaf) into every leaf's ``.grad``."""
    if not tensor.requires_grad:
        raise RuntimeError("backward(): this tensor does not require grad and has no grad_fn")
    if gradient is None:
        if tensor.data.size != 1:
            raise RuntimeError(f"backward(): grad can be implicitly created only for scalar "
                               f"outputs; this tensor has shape {tensor.shape}, pass gradient=")
        gradient = tensor._make(tensor._be.xp.ones(tensor.shape, dtype=tensor.dtype), tensor._be)
    gradient = _as_grad(gradient, tensor)
    if retain_graph is None:
        retain_graph = create_graph
    global _queued
    outer, _queued = _queued, []
    try:
        _backprop([tensor], [gradient], retain_graph, create_graph)
        while _queued:
            _queued.pop(0)()
    finally:
        _queued = outer


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
    if _queued is None:
        raise RuntimeError("queue_callback() can only be called during a backward() pass")
    _queued.append(callback)


def _as_grad(gradient, like):
    """``gradient`` (a tensor, or anything ``Tensor()`` takes) as a tensor of ``like``'s shape."""
    gradient = like._coerce(gradient)
    if gradient.shape != like.shape:
        raise RuntimeError(f"gradient has shape {gradient.shape} but the output has {like.shape}")
    return gradient


def _topological(roots):
    """Tensors with a recorded op reachable from ``roots``, producers before consumers."""
    order, seen = [], set()
    stack = [(r, False) for r in roots]
    while stack:
        t, expanded = stack.pop()
        if expanded:
            order.append(t)
            continue
        if id(t) in seen or t._ctx is None:
            continue
        seen.add(id(t))
        fn = t._ctx
        if getattr(fn, "inputs", None) is None:
            raise RuntimeError(
                f"trying to backward through the graph a second time ({fn.name} was freed by an "
                "earlier backward()); pass retain_graph=True to the first backward() if you need to")
        stack.append((t, True))
        stack.extend((i, False) for i in fn.inputs if i.requires_grad and i._ctx is not None)
    return order


def _backprop(roots, root_grads, retain_graph, create_graph, wanted=None):
    """Run the backward pass. With ``wanted`` (a list of tensors) return their gradients;
    otherwise accumulate into the ``.grad`` of leaves (and of tensors that retain_grad)."""
    grads = {}  # id -> [tensor, gradient]; holding the tensor keeps its id unique
    for r, g in zip(roots, root_grads):
        _accumulate(grads, r, g)
    wanted_ids = None if wanted is None else {id(w) for w in wanted}
    captured = {}
    with _mode.set_grad_mode(create_graph):
        for t in reversed(_topological(roots)):
            entry = grads.pop(id(t), None)
            fn = t._ctx
            if entry is not None:
                g = entry[1]
                if wanted_ids is not None:
                    if id(t) in wanted_ids:
                        captured[id(t)] = g
                elif t._retains_grad:
                    t.grad = g if create_graph else g.detach()
                if _mode._anomaly_mode:
                    in_grads = _anomalous_backward(fn, g)
                else:
                    in_grads = fn.backward(g)
                for k, (inp, gi, need) in enumerate(zip(fn.inputs, in_grads, fn.needs_input_grad)):
                    if need and gi is not None:
                        if _mode._anomaly_mode:
                            _mode.check_finite(gi.data, gi._be, f"the backward of {fn.name} returned {{bad}} in the "
                                          f"gradient of its input {k} (op created at {fn.created_at})")
                        if gi.data.shape != inp.data.shape:
                            gi = gi.sum_to(inp.shape)
                        if gi.data.dtype != inp.data.dtype:
                            gi = gi.astype(inp.dtype)
                        key = id(inp)
                        previous = grads.get(key)
                        if previous is None:
                            grads[key] = [inp, gi]
                        else:
                            previous[1] = previous[1] + gi
            if not retain_graph:
                fn.__dict__.clear()  # frees saved arrays and inputs; a second backward is an error
    stored = set()
    hooked = []
    for key, (t, g) in grads.items():  # what is left are leaves (tensors with no recorded op)
        if wanted_ids is not None:
            if key in wanted_ids:
                captured[key] = g
        elif t.requires_grad:
            if t.grad is not None:
                g = t.grad + g
            elif not create_graph:
                g = _owned(g, stored)
            t.grad = g if create_graph else g.detach()
            stored.add(id(t.grad.data))
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
    previous, _mode.backward_node = _mode.backward_node, fn
    try:
        return fn.backward(g)
    finally:
        _mode.backward_node = previous


def _accumulate(grads, t, g):
    entry = grads.get(id(t))
    if entry is None:
        grads[id(t)] = [t, g]
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
        g = captured.get(id(x))
        if g is None and not allow_unused:
            raise RuntimeError("grad(): one of the inputs was not used to compute the outputs; "
                               "pass allow_unused=True to get None for it")
        result.append(g if g is None or create_graph else g.detach())
    return tuple(result)
