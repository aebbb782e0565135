"""The :class:`Optimizer` base class: parameter groups, per-parameter state, checkpoints.

Optimizers work on the parameters' raw backend arrays (``p.data``, ``p.grad.data``) with the
backend's array module, updating parameters and state in place. Nothing they do is recorded in
the autograd graph. State arrays live on the parameter's backend; if a parameter has moved to
another backend (or changed dtype) since its state was made, the state follows it at the next
step.
"""
from __future__ import annotations

import copy
from collections import defaultdict

import numpy

from ..backend import Backend, backend_of, get_backend
from ..autograd import enable_grad

__all__ = ["Optimizer", "required", "mark_updated"]


def mark_updated(p, name: str) -> None:
    """Bump parameter ``p``'s version counter, as PyTorch's in-place ``p.add_(...)`` in an
    optimizer step does: an op that saved ``p`` for a backward not yet run then raises
    "modified by an inplace operation" instead of using the new values. Every optimizer calls
    this for each parameter it updates (whichever path does the arithmetic: NumPy, CuPy, or a
    fused kernel), before the update."""
    vc = p._vc
    vc[0] += 1
    vc[1] = name


class _Required:
    """Marks a hyper-parameter that every parameter group must give (no default)."""

    def __repr__(self):
        return "<required parameter>"


required = _Required()


def param_backend(p) -> Backend:
    """The backend object of parameter ``p``."""
    be = getattr(p, "_be", None)
    return be if isinstance(be, Backend) else get_backend(p.backend)


def grad_array(p):
    """The gradient of ``p`` as a backend array, or None."""
    g = p.grad
    if g is None:
        return None
    return getattr(g, "data", g)


def _is_array(value) -> bool:
    return isinstance(value, numpy.ndarray) or type(value).__module__.startswith("cupy")


def array_on(be: Backend, value, dtype=None, copy_always=False):
    """``value`` (NumPy/CuPy array or Tensor) as an array of backend ``be``.

    No copy when it is already there with the right dtype, unless ``copy_always``."""
    if hasattr(value, "_be") and hasattr(value, "data"):  # a Tensor
        value = value.data
    if be.is_array(value):
        if dtype is not None and value.dtype != dtype:
            return value.astype(dtype)
        return value.copy() if copy_always else value
    host = backend_of(value).to_numpy(value)  # another backend: through the host
    return be.xp.array(host, dtype=dtype if dtype is not None else host.dtype, copy=True)


class Optimizer:
    """Base class of all optimizers, with ``torch.optim.Optimizer``'s interface.

    ``params`` is an iterable of tensors, of ``(name, tensor)`` pairs, or of dicts (parameter
    groups) with a ``'params'`` entry and their own hyper-parameters; ``defaults`` fills the
    hyper-parameters a group does not give. Subclasses implement :meth:`_update_group`.
    """

    def __init__(self, params, defaults: dict):
        self.defaults = defaults
        self.state: defaultdict = defaultdict(dict)  # param -> its state dict (Tensors hash by id)
        self.param_groups: list[dict] = []
        if _is_tensor(params):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            f"Tensors or dicts, but got {type(params).__name__}")
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for group in param_groups:
            self.add_param_group(group)

    def __repr__(self):
        lines = [type(self).__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {k}: {group[k]}" for k in sorted(group) if k != "params")
        return "\n".join(lines) + "\n)"

    # -- parameter groups -------------------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters (a dict with ``'params'`` and optional hyper-parameters)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        params = param_group["params"]
        if _is_tensor(params):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets changes between runs; use a list")
        else:
            params = list(params)
        names = [p[0] for p in params if isinstance(p, tuple)]
        params = [p[1] if isinstance(p, tuple) else p for p in params]
        if names:
            if len(names) != len(params):
                raise ValueError("all optimizer params should be with/without names. "
                                 "Some param names are missing")
            param_group["param_names"] = names
        param_group["params"] = params
        for p in params:
            if not _is_tensor(p):
                raise TypeError("optimizer can only optimize Tensors, but one of the params is "
                                + type(p).__name__)
            if not getattr(p, "is_leaf", True):
                raise ValueError("can't optimize a non-leaf Tensor")
        for name, default in self.defaults.items():
            if default is required and name not in param_group:
                raise ValueError("parameter group didn't specify a value of required "
                                 f"optimization parameter {name}")
            param_group.setdefault(name, default)
        seen = {id(p) for group in self.param_groups for p in group["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        if len({id(p) for p in params}) != len(params):
            raise ValueError("optimizer contains a parameter group with duplicate parameters")
        self.param_groups.append(param_group)

    # -- gradients and steps ------------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients: drop them (``set_to_none=True``, the default) or fill them with 0."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    grad_array(p)[...] = 0

    def step(self, closure=None):
        """One update of every parameter that has a gradient; ``closure`` re-evaluates the loss."""
        loss = None
        if closure is not None:
            with enable_grad():  # a closure runs backward, even inside no_grad
                loss = closure()
        for group in self.param_groups:
            self._update_group(group)
        return loss

    def _update_group(self, group: dict) -> None:
        raise NotImplementedError

    def _with_grads(self, group):
        """(parameter, its gradient array, its array module) for every parameter of ``group``
        that has a gradient; each is marked as changed in place (:func:`mark_updated`), as the
        caller updates every one it is given."""
        name = f"{type(self).__name__}.step"
        for p in group["params"]:
            g = grad_array(p)
            if g is not None:
                if g.shape != p.data.shape:  # a Parameter refuses it when assigned; a plain tensor here
                    raise ValueError(f"step(): the gradient of a parameter of shape {tuple(p.data.shape)} "
                                     f"has shape {tuple(g.shape)} (was .grad assigned by hand?)")
                mark_updated(p, name)
                yield p, g, param_backend(p).xp

    @staticmethod
    def _descent_direction(group, g, x):
        """PyTorch's ``d = g + weight_decay * x`` (with ``-g`` when ``maximize``), a new array
        only where it differs from ``g``."""
        d = -g if group["maximize"] else g
        if group["weight_decay"] != 0:
            d = d + group["weight_decay"] * x
        return d

    def _state_of(self, p) -> dict:
        """``p``'s state, its arrays moved to ``p``'s backend and dtype if ``p`` has moved.

        The arrays are checked once per (state dict, backend, dtype) of ``p``: again after
        ``p.to(...)`` or ``load_state_dict``, not at every step."""
        state = self.state[p]
        if state:
            be, dtype = param_backend(p), p.data.dtype
            placed = self.__dict__.setdefault("_placed", {})
            where = (id(state), be, dtype)
            if placed.get(id(p)) != where:
                for key, value in state.items():
                    if _is_array(value) and (not be.is_array(value) or
                                             (value.dtype.kind == "f" and value.dtype != dtype)):
                        state[key] = array_on(be, value, dtype if value.dtype.kind == "f" else None)
                placed[id(p)] = where
        return state

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The optimizer's state in PyTorch's layout.

        ``{'state': {index: {name: array or number}}, 'param_groups': [{..., 'params': [index]}]}``,
        parameters numbered in group order. Like PyTorch, the arrays are the live state arrays
        (no copy): save the dict (``hw.save``) or copy it before training on.
        """
        index_of: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            for p in group["params"]:
                index_of.setdefault(id(p), len(index_of))
            packed["params"] = [index_of[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {index_of[id(p)]: dict(s) for p, s in self.state.items() if id(p) in index_of}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a :meth:`state_dict`: hyper-parameters, and state copied onto each parameter's
        backend (floating arrays in the parameter's dtype), so that training continues exactly."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        for mine, saved in zip(self.param_groups, saved_groups):
            if len(mine["params"]) != len(saved["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't match "
                                 "the size of optimizer's group")
        param_of = {}
        for mine, saved in zip(self.param_groups, saved_groups):
            for index, p in zip(saved["params"], mine["params"]):
                param_of[index] = p
        self._check_loaded_state(saved_groups, state_dict["state"], param_of)
        self.state = defaultdict(dict)
        self.__dict__.pop("_placed", None)  # new state dicts: _state_of checks them afresh
        for index, saved_state in state_dict["state"].items():
            p = param_of.get(index)
            if p is None:
                continue
            be, dtype = param_backend(p), p.data.dtype
            restored = {}
            for key, value in saved_state.items():
                if _is_array(value) or (hasattr(value, "_be") and hasattr(value, "data")):
                    kind = getattr(value, "dtype", numpy.dtype("f8")).kind
                    restored[key] = array_on(be, value, dtype if kind == "f" else None,
                                             copy_always=True)
                else:
                    restored[key] = copy.deepcopy(value)
            self.state[p] = restored
        new_groups = []
        for mine, saved in zip(self.param_groups, saved_groups):
            group = {k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}
            group["params"] = mine["params"]
            if "param_names" in mine and "param_names" not in saved:
                group["param_names"] = mine["param_names"]
            new_groups.append(group)
        self.param_groups = new_groups

    def _check_loaded_state(self, saved_groups, saved_state, param_of) -> None:
        """Refuse, before anything changes, a state dict that cannot drive this optimizer: one
        whose groups lack this optimizer's hyper-parameters (another optimizer's: Adam's into
        SGD), or whose state arrays have other shapes than the parameters they belong to."""
        kind = type(self).__name__
        for i, saved in enumerate(saved_groups):
            missing = sorted(k for k in self.defaults if k not in saved)
            if missing:
                raise ValueError(f"{kind}.load_state_dict: parameter group {i} lacks {missing}: "
                                 f"the state dict is not from a {kind} (it has "
                                 f"{sorted(k for k in saved if k != 'params')})")
        for index, entry in saved_state.items():
            p = param_of.get(index)
            if p is None:
                continue
            for key, value in entry.items():
                shape = tuple(getattr(value, "shape", ()))
                if shape and shape != tuple(p.data.shape):
                    raise ValueError(f"{kind}.load_state_dict: state {key!r} of parameter {index} has "
                                     f"shape {shape}, but the parameter has shape {tuple(p.data.shape)}")


def _is_tensor(obj) -> bool:
    from ..tensor import Tensor
    return isinstance(obj, Tensor)
