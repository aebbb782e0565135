"""Containers with ``torch.nn``'s behaviour: :class:`Sequential`, :class:`ModuleList`, :class:`ModuleDict`."""
from __future__ import annotations

import operator
from collections import OrderedDict

from .layers import Conv2d, ReLU
from .module import Module

__all__ = ["Sequential", "ModuleList", "ModuleDict"]


# A Conv2d followed by a ReLU runs as one op (ops.conv.Conv2dReLU: max(., 0) applied as the
# convolution writes its output, no pass of its own; the same values and gradients, bit for
# bit). Only the exact classes, without a forward of their own on the instance, are fused;
# False runs every module on its own.
FUSE_CONV_RELU = True


def _conv_then_relu(first, second) -> bool:
    return (type(first) is Conv2d and type(second) is ReLU
            and "forward" not in first.__dict__ and "forward" not in second.__dict__)


def _checked_index(container, idx) -> int:
    """``idx`` (negative counts from the end) as a position in ``container``, or IndexError."""
    n = len(container)
    idx = operator.index(idx)
    if not -n <= idx < n:
        raise IndexError(f"index {idx} is out of range for a {type(container).__name__} of length {n}")
    return idx % n


class Sequential(Module):
    """Modules applied one after the other. ``Sequential(m0, m1, ...)`` names them ``'0'``,
    ``'1'``, ... (state-dict keys ``0.weight``...); ``Sequential(OrderedDict(name=module))``
    keeps the given names."""

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], (dict, OrderedDict)):
            for name, module in args[0].items():
                self.add_module(name, module)
        else:
            for i, module in enumerate(args):
                self.add_module(str(i), module)

    def forward(self, input):
        modules = tuple(self._modules.values())
        i, count = 0, len(modules)
        while i < count:
            module = modules[i]
            if i + 1 < count and FUSE_CONV_RELU and _conv_then_relu(module, modules[i + 1]):
                input = module(input, _then_relu=True)  # one op: the ReLU as the conv writes
                i += 2
            else:
                input = module(input)
                i += 1
        return input

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def _index(self, idx):
        return _checked_index(self, idx)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return Sequential(OrderedDict(list(self._modules.items())[idx]))
        return list(self._modules.values())[self._index(idx)]

    def __setitem__(self, idx, module):
        key = list(self._modules.keys())[self._index(idx)]
        self.add_module(key, module)

    def __delitem__(self, idx):
        keys = list(self._modules.keys())
        for key in (keys[idx] if isinstance(idx, slice) else [keys[self._index(idx)]]):
            del self._modules[key]
        # renumber like PyTorch so that keys stay 0..n-1
        items = list(self._modules.items())
        self._modules.clear()
        for i, (_, m) in enumerate(items):
            self._modules[str(i)] = m

    def append(self, module: Module) -> "Sequential":
        self.add_module(str(len(self)), module)
        return self


class ModuleList(Module):
    """A list of modules whose parameters are registered (keys ``0.weight``, ``1.weight``...)."""

    def __init__(self, modules=None):
        super().__init__()
        self.extend(() if modules is None else modules)

    def _index(self, idx):
        return _checked_index(self, idx)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return ModuleList(list(self._modules.values())[idx])
        return self._modules[str(self._index(idx))]

    def __setitem__(self, idx, module):
        self.add_module(str(self._index(idx)), module)

    def __delitem__(self, idx):
        modules = list(self._modules.values())
        del modules[idx if isinstance(idx, slice) else self._index(idx)]
        self._modules.clear()
        for i, m in enumerate(modules):
            self._modules[str(i)] = m

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __iadd__(self, modules):
        return self.extend(modules)

    def append(self, module: Module) -> "ModuleList":
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules) -> "ModuleList":
        for m in modules:
            self.append(m)
        return self

    def insert(self, index: int, module: Module) -> None:
        modules = list(self._modules.values())
        modules.insert(index, module)
        self._modules.clear()
        for i, m in enumerate(modules):
            self.add_module(str(i), m)

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleList has no forward(): iterate over it in your module")


class ModuleDict(Module):
    """A dict of modules whose parameters are registered under their keys."""

    def __init__(self, modules=None):
        super().__init__()
        self.update({} if modules is None else modules)

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        self.add_module(key, module)

    def __delitem__(self, key):
        del self._modules[key]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def items(self):
        return self._modules.items()

    def values(self):
        return self._modules.values()

    def update(self, modules):
        items = modules.items() if hasattr(modules, "items") else modules
        for key, module in items:
            self[key] = module

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleDict has no forward(): index it in your module")
