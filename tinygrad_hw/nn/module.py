"""The module system: :class:`Parameter` and :class:`Module` (the containers are in :mod:`.containers`).

A :class:`Module` registers the :class:`Parameter` objects, sub-modules and buffers assigned to it
as attributes, in order, exactly like ``torch.nn.Module``; ``state_dict()`` keys therefore match
PyTorch's (``features.0.weight``, ``bn.running_var``, ...) and a PyTorch state dict converted to
arrays loads into the same architecture.
"""
from __future__ import annotations

from collections import OrderedDict, namedtuple
from typing import Iterator

import numpy

from ..backend import Backend, backend_of, get_backend
from ..dtypes import to_dtype
from ..tensor import Tensor

__all__ = ["Parameter", "Module"]


class Parameter(Tensor):
    """A leaf Tensor that a :class:`Module` registers as a learnable parameter.

    ``Parameter(data, requires_grad=True)``: ``data`` is a Tensor (its array is shared, as
    PyTorch shares storage), a NumPy/CuPy array or a list. Operations on a Parameter give plain
    Tensors.
    """

    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            data = numpy.empty((0,), dtype=_default_float())
        if isinstance(data, Tensor):
            self._init(data.data, data._be, False)
        else:
            Tensor.__init__(self, data)
        if requires_grad:
            self.requires_grad_(True)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    # ``.data`` and ``.grad`` are checked when assigned, as PyTorch checks them, so that a wrong
    # value fails at the line that assigns it rather than later inside a layer or ``opt.step()``.
    # Deviation: PyTorch lets ``p.data = t`` change the shape; here a parameter keeps its shape
    # (optimizer state and the module's layers depend on it). A Tensor is unwrapped to its array.
    @property
    def data(self):
        return _DATA_SLOT.__get__(self, Parameter)

    @data.setter
    def data(self, value):
        try:
            old = _DATA_SLOT.__get__(self, Parameter)
        except AttributeError:  # the first assignment, from Tensor._init
            _DATA_SLOT.__set__(self, value)
            return
        if isinstance(value, Tensor):
            value = value.data
        if not (hasattr(value, "shape") and hasattr(value, "dtype")) or isinstance(value, numpy.generic):
            raise TypeError(f"Parameter.data: expected an array (or a Tensor) of shape {tuple(old.shape)}, "
                            f"got {type(value).__name__}")
        try:
            be = backend_of(value)
        except TypeError:
            raise TypeError(f"Parameter.data: expected a NumPy or CuPy array, got {type(value).__name__}") from None
        if be is not self._be:
            raise ValueError(f"Parameter.data: the array is on backend {be.name}, the parameter on "
                             f"{self._be.name}; move the parameter with .to({be.name!r})")
        if tuple(value.shape) != tuple(old.shape):
            raise ValueError(f"Parameter.data: shape {tuple(value.shape)} differs from the parameter's "
                             f"{tuple(old.shape)}")
        if self.requires_grad and value.dtype.kind != "f":
            raise TypeError(f"Parameter.data: a parameter that requires grad needs a floating array, got {value.dtype}")
        _DATA_SLOT.__set__(self, value)

    @property
    def grad(self):
        return _GRAD_SLOT.__get__(self, Parameter)

    @grad.setter
    def grad(self, value):
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"assigned grad expected to be a Tensor or None, got {type(value).__name__}")
            data = _DATA_SLOT.__get__(self, Parameter)
            if value._be is not self._be:
                raise ValueError(f"assigned grad is on backend {value.backend}, the parameter on {self.backend}")
            if tuple(value.data.shape) != tuple(data.shape):
                raise ValueError(f"assigned grad has shape {tuple(value.data.shape)}, the parameter "
                                 f"{tuple(data.shape)}")
            if value.data.dtype != data.dtype:
                raise TypeError(f"assigned grad has dtype {value.data.dtype}, the parameter {data.dtype}")
        _GRAD_SLOT.__set__(self, value)


_DATA_SLOT = Tensor.__dict__["data"]  # the slot descriptors that Parameter's properties wrap
_GRAD_SLOT = Tensor.__dict__["grad"]
# Reading goes straight to the slots (no Python frame: every layer call and optimizer step reads
# .data and .grad of each parameter); assigning keeps the checks above.
Parameter.data = property(_DATA_SLOT.__get__, Parameter.data.fset, doc=Parameter.data.__doc__)
Parameter.grad = property(_GRAD_SLOT.__get__, Parameter.grad.fset, doc=Parameter.grad.__doc__)


def _default_float():
    from ..dtypes import get_default_dtype
    return get_default_dtype()


_IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _host_array(value, key):
    """A state-dict value (Tensor, NumPy/CuPy array, torch tensor, number) as a NumPy array."""
    if isinstance(value, Tensor):
        return value.numpy()
    if isinstance(value, numpy.ndarray) or numpy.isscalar(value):
        return numpy.asarray(value)
    try:
        return backend_of(value).to_numpy(value)  # a CuPy array
    except TypeError:
        pass
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch.Tensor, without importing torch
        return value.detach().cpu().numpy()
    try:
        array = numpy.asarray(value)
    except Exception as exc:
        raise TypeError(f"load_state_dict: value for {key!r} is a {type(value).__name__}, "
                        "not an array or tensor") from exc
    if array.dtype == object:
        raise TypeError(f"load_state_dict: value for {key!r} is a {type(value).__name__}, "
                        "not an array or tensor")
    return array


def _split_to_args(args, kwargs):
    """``Module.to``'s arguments: (backend, dtype), each possibly None."""
    backend, dtype = kwargs.pop("backend", None), kwargs.pop("dtype", None)
    if "device" in kwargs:
        backend = kwargs.pop("device")
    if kwargs:
        raise TypeError(f"to(): unexpected keyword arguments {sorted(kwargs)}")
    for arg in args:
        if isinstance(arg, Backend) or (isinstance(arg, str) and arg.lower() in _DEVICE_NAMES):
            backend = arg
        elif arg is not None:
            dtype = arg
    if isinstance(backend, str):
        backend = _DEVICE_NAMES.get(backend.lower(), backend)
    return (get_backend(backend) if backend is not None else None,
            to_dtype(dtype) if dtype is not None else None)


# backend names, and PyTorch's device names as aliases ('cpu' -> numpy, 'cuda' -> cupy)
_DEVICE_NAMES = {"numpy": "numpy", "cupy": "cupy", "cpu": "numpy", "cuda": "cupy"}


def _moved_array(array, src: Backend, dst: Backend | None, dtype):
    if dst is not None and dst is not src:
        array = dst.asarray(src.to_numpy(array))
    if dtype is not None and array.dtype.kind == "f" and array.dtype != dtype:
        array = array.astype(dtype)
    return array


_call_depth = 0  # nesting of Module.__call__, so that the outermost one can name a failing layer


def _name_module_in_error(root, exc):
    """Prefix the message with the failing layer's qualified name, e.g. 'features.3 (Conv2d): '."""
    failed = exc._hw_module
    where = type(failed).__name__
    if failed is not root:
        for name, module in root.named_modules():
            if module is failed:
                where = f"{name} ({where})"
                break
    if exc.args and isinstance(exc.args[0], str) and not exc.args[0].startswith(where):
        message = exc.args[0].removeprefix(f"{type(failed).__name__}: ")  # the layer's own prefix
        # the prefix of the functional that raised it ('conv2d: ...'): the layer's name replaces it
        head, sep, rest = message.partition(": ")
        if sep and head.isidentifier() and head.islower():
            message = rest
        exc.args = (f"{where}: {message}",) + exc.args[1:]


def _registered_value(value, allowed, kind, name, required):
    """``value`` if it may go into a registered slot (None, or an instance of ``allowed``, a type
    or a tuple of types); TypeError naming the slot otherwise."""
    if value is None or isinstance(value, allowed):
        return value
    raise TypeError(f"cannot assign a {type(value).__name__} as {kind} {name!r} "
                    f"({required} or None is required)")


class Module:
    """Base class of every layer and model, with ``torch.nn.Module``'s interface.

    Subclasses call ``super().__init__()`` first, assign parameters, sub-modules and buffers as
    attributes and define ``forward``. Calling the module runs ``forward``.
    """

    training: bool

    def __init__(self):
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward() method")

    def __call__(self, *args, **kwargs):
        global _call_depth
        _call_depth += 1
        try:
            return self.forward(*args, **kwargs)
        except (ValueError, TypeError, IndexError, RuntimeError) as exc:
            if not hasattr(exc, "_hw_module"):
                exc._hw_module = self  # the innermost module that failed
            if _call_depth == 1:  # the outermost call names it by its place in the model
                _name_module_in_error(self, exc)
            raise
        finally:
            _call_depth -= 1

    # -- attribute registration ---------------------------------------------------------------
    def _registry(self, name):
        registry = self.__dict__.get(name)
        if registry is None:
            raise AttributeError(f"cannot assign parameters, modules or buffers before "
                                 f"{type(self).__name__} called Module.__init__()")
        return registry

    def __setattr__(self, name, value):
        params = self.__dict__.get("_parameters")
        modules = self.__dict__.get("_modules")
        buffers = self.__dict__.get("_buffers")
        if isinstance(value, Parameter):
            self._forget(name)
            self._registry("_parameters")[name] = value
        elif params is not None and name in params:
            params[name] = _registered_value(value, (), "parameter", name, "a Parameter")
        elif isinstance(value, Module):
            self._forget(name)
            self._registry("_modules")[name] = value
        elif modules is not None and name in modules:
            modules[name] = _registered_value(value, (), "child module", name, "a Module")
        elif buffers is not None and name in buffers:
            buffers[name] = _registered_value(value, Tensor, "buffer", name, "a Tensor")
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name):
        self.__dict__.pop(name, None)
        for registry in ("_parameters", "_buffers", "_modules"):
            reg = self.__dict__.get(registry)
            if reg is not None:
                reg.pop(name, None)
        self.__dict__.get("_non_persistent_buffers", set()).discard(name)

    def __getattr__(self, name):
        # only called when normal lookup fails; careful not to recurse before __init__ ran
        d = object.__getattribute__(self, "__dict__")
        for registry in ("_parameters", "_buffers", "_modules"):
            reg = d.get(registry)
            if reg is not None and name in reg:
                return reg[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for registry in ("_parameters", "_buffers", "_modules"):
            reg = self.__dict__.get(registry)
            if reg is not None and name in reg:
                del reg[name]
                self._non_persistent_buffers.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers)
                      | set(self._modules))

    def _check_name(self, kind, name):
        if not isinstance(name, str):
            raise TypeError(f"{kind} name should be a string, got {type(name).__name__}")
        if name == "" or "." in name:
            raise KeyError(f"{kind} name can't be empty or contain '.', got {name!r}")
        if name in self.__dict__ or (hasattr(type(self), name) and not self._is_registered(name)):
            raise KeyError(f"attribute {name!r} already exists")

    def _is_registered(self, name):
        return any(name in self.__dict__.get(r, ()) for r in ("_parameters", "_buffers", "_modules"))

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add a parameter (or None) under ``name``."""
        self._registry("_parameters")
        self._check_name("parameter", name)
        param = _registered_value(param, Parameter, "parameter", name, "a Parameter")
        self._forget(name)
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Add a buffer: state that is not a parameter (e.g. BatchNorm's running mean). Persistent
        buffers are part of ``state_dict()``."""
        self._registry("_buffers")
        self._check_name("buffer", name)
        tensor = _registered_value(tensor, Tensor, "buffer", name, "a Tensor")
        self._forget(name)
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent_buffers.add(name)

    def add_module(self, name: str, module: "Module | None") -> None:
        """Add a child module under ``name``."""
        self._registry("_modules")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._check_name("module", name)
        self._forget(name)
        self._modules[name] = module

    register_module = add_module

    def get_submodule(self, target: str) -> "Module":
        module = self
        if target == "":
            return module
        for part in target.split("."):
            if part not in module._modules or module._modules[part] is None:
                raise AttributeError(f"{type(module).__name__} has no submodule {part!r} (in {target!r})")
            module = module._modules[part]
        return module

    # -- traversal ----------------------------------------------------------------------------
    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        """(qualified name, module) for this module and every descendant, depth first."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is None:
                continue
            sub = f"{prefix}.{name}" if prefix else name
            yield from module.named_modules(memo, sub, remove_duplicate)

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self) -> Iterator["Module"]:
        for _, m in self.named_children():
            yield m

    def _named_members(self, registry, prefix, recurse, remove_duplicate=True):
        seen = set()
        mods = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse \
            else [(prefix, self)]
        for mod_prefix, module in mods:
            for name, value in getattr(module, registry).items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), value

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        """(qualified name, Parameter) pairs; a parameter shared by two modules comes once."""
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def apply(self, fn) -> "Module":
        """Call ``fn`` on every sub-module (children first) and on this module; returns self."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # -- modes and gradients ------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        """Training mode (dropout active, batch norm on batch statistics) for this module and all
        sub-modules."""
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be a bool")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> "Module":
        """Evaluation mode: the same as ``train(False)``."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient: to None (default, like PyTorch) or to zeros."""
        for p in self.parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                # a fresh array: the gradient may be a read-only broadcast view
                p.grad = Tensor._make(p._be.xp.zeros(p.grad.shape, dtype=p.grad.dtype), p._be)

    # -- backend and dtype ------------------------------------------------------------------------
    def to(self, *args, **kwargs) -> "Module":
        """Move parameters and buffers to a backend and/or cast floating ones to a dtype, in place.

        ``model.to('cupy')``, ``model.to(dtype='float64')``, ``model.to('numpy', 'float32')``;
        PyTorch's device names 'cpu' and 'cuda' mean 'numpy' and 'cupy'.
        The Parameter objects stay the same (their array and backend are replaced), so an
        optimizer made before the move keeps working. Gradients move with their parameters.
        """
        backend, dtype = _split_to_args(args, kwargs)
        for t in list(self.parameters()) + list(self.buffers()):
            src = t._be
            moved = _moved_array(t.data, src, backend, dtype)
            if backend is not None:
                t._be = backend
            if isinstance(t, Parameter):  # a new dtype (and backend): past the assignment checks
                _DATA_SLOT.__set__(t, moved)
            else:
                t.data = moved
            if isinstance(t.grad, Tensor):
                g = t.grad
                t.grad = Tensor._make(_moved_array(g.data, g._be, backend or g._be, t.data.dtype),
                                      backend or g._be)
        return self

    def cpu(self) -> "Module":
        return self.to("numpy")

    def cuda(self) -> "Module":
        return self.to("cupy")

    def double(self) -> "Module":
        return self.to(dtype=numpy.float64)

    def float(self) -> "Module":
        return self.to(dtype=numpy.float32)

    # -- state dict -----------------------------------------------------------------------------
    def state_dict(self, destination=None, prefix: str = "", keep_vars: bool = False) -> "OrderedDict":
        """Parameters and persistent buffers by qualified name, in PyTorch's order (each module's
        own parameters, then its buffers, then its children). Values share memory with the module
        (detached unless ``keep_vars``); save them with ``hw.save`` or copy them."""
        if destination is None:
            destination = OrderedDict()
        for name, p in self._parameters.items():
            if p is not None:
                destination[prefix + name] = p if keep_vars else p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers:
                destination[prefix + name] = b if keep_vars else b.detach()
        for name, module in self._modules.items():
            if module is not None:
                module.state_dict(destination, prefix + name + ".", keep_vars)
        return destination

    def _state_slots(self):
        """qualified name -> the Tensor (Parameter or buffer) a state-dict entry is copied into."""
        slots = OrderedDict()
        for prefix, module in self.named_modules(remove_duplicate=False):
            base = prefix + "." if prefix else ""
            for name, p in module._parameters.items():
                if p is not None:
                    slots[base + name] = p
            for name, b in module._buffers.items():
                if b is not None and name not in module._non_persistent_buffers:
                    slots[base + name] = b
        return slots

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Copy parameters and buffers from ``state_dict`` (values: Tensors, NumPy/CuPy arrays,
        torch tensors or numbers) into this module, converting to each target's backend and dtype.

        With ``strict`` (default) missing and unexpected keys are an error; shape mismatches are
        always an error. Everything is checked before anything is copied, so a failed load leaves
        the module unchanged. Returns ``(missing_keys, unexpected_keys)`` like PyTorch. ``assign``
        is accepted for PyTorch compatibility and behaves like the default copy.
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"load_state_dict: expected a dict, got {type(state_dict).__name__}")
        slots = self._state_slots()
        missing = [k for k in slots if k not in state_dict]
        unexpected = [k for k in state_dict if k not in slots]
        problems, arrays = [], {}
        for key, target in slots.items():
            if key not in state_dict:
                continue
            host = _host_array(state_dict[key], key)
            if tuple(host.shape) != target.shape:
                problems.append(f"size mismatch for {key}: copying a param with shape "
                                f"{tuple(host.shape)} from checkpoint, the shape in current model "
                                f"is {target.shape}.")
                continue
            if host.dtype.kind not in "biuf":
                problems.append(f"dtype problem for {key}: cannot copy an array of dtype {host.dtype}.")
                continue
            arrays[key] = host
        if strict:
            if missing:
                problems.insert(0, "Missing key(s) in state_dict: "
                                + ", ".join(f'"{k}"' for k in missing) + ".")
            if unexpected:
                problems.insert(1 if missing else 0, "Unexpected key(s) in state_dict: "
                                + ", ".join(f'"{k}"' for k in unexpected) + ".")
        if problems:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                               + "\n\t".join(problems))
        for key, host in arrays.items():
            target = slots[key]
            value = target._be.asarray(host.astype(target.dtype, copy=False))
            if getattr(target.data.flags, "writeable", True):  # CuPy arrays have no such flag
                target.data[...] = value  # in place: views of the array stay valid
            else:
                target.data = value.copy()
        return _IncompatibleKeys(missing, unexpected)

    # -- representation ---------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def _get_name(self):
        return type(self).__name__

    def __repr__(self):
        lines = []
        extra = self.extra_repr()
        if extra:
            lines = extra.split("\n")
        for name, module in self._modules.items():
            body = repr(module).replace("\n", "\n  ")
            lines.append(f"({name}): {body}")
        main = self._get_name() + "("
        if lines:
            if len(lines) == 1 and not self._modules:
                main += lines[0]
            else:
                main += "\n  " + "\n  ".join(lines) + "\n"
        return main + ")"
