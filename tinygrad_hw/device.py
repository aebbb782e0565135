"""PyTorch's device names for the backends: ``hw.device('cpu')`` is the NumPy backend,
``hw.device('cuda')`` (or ``'cuda:0'``) the CuPy one. ``t.device``, ``t.to('cpu')`` and
``Module.to('cuda')`` speak these names; the backend names 'numpy' and 'cupy' work everywhere too.
"""
from __future__ import annotations

from .backend import Backend, get_backend

__all__ = ["device", "backend_name", "is_device_spec"]

# PyTorch's device types, and the backend names as aliases of them
_TYPES = {"cpu": "numpy", "numpy": "numpy", "cuda": "cupy", "cupy": "cupy"}


class device:
    """``torch.device``'s small cousin: ``type`` ('cpu' or 'cuda') and ``index`` (None or an int).

    Deviation: only one GPU is addressed (CuPy's current one); ``'cuda:N'`` records N but does
    not select the device.
    """

    __slots__ = ("type", "index")

    def __init__(self, spec, index=None):
        if isinstance(spec, device):
            spec, index = spec.type, spec.index if index is None else index
        text = str(spec).lower()
        if ":" in text:
            text, _, num = text.partition(":")
            if not num.isdigit():
                raise ValueError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {spec!r}")
            index = int(num)
        if text not in _TYPES:
            raise ValueError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {spec!r}")
        self.type = "cuda" if _TYPES[text] == "cupy" else "cpu"
        self.index = index

    @property
    def backend(self) -> str:
        """The backend name this device means ('numpy' or 'cupy')."""
        return _TYPES[self.type]

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self):
        return f"device(type={self.type!r}" + ("" if self.index is None else f", index={self.index}") + ")"

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = device(other)
            except ValueError:
                return False
        return isinstance(other, device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self):
        return hash((self.type, self.index))


def is_device_spec(value) -> bool:
    """Whether ``value`` names a device or backend (as opposed to, say, a dtype name)."""
    if isinstance(value, (device, Backend)):
        return True
    if isinstance(value, str):
        return value.lower().partition(":")[0] in _TYPES
    return False


def backend_name(value) -> str:
    """The backend name ('numpy'/'cupy') of a device, device name, backend or backend name."""
    if isinstance(value, Backend):
        return value.name
    return device(value).backend if not isinstance(value, device) else value.backend


def _backend_of(value) -> Backend:
    return get_backend(backend_name(value))
