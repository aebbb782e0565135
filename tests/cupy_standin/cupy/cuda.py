"""``cupy.cuda`` of the CPU stand-in: one pretend device, streams and events that only count
their synchronisations (the work they would order already ran, on the CPU)."""
from __future__ import annotations

import threading

from . import _standin

_local = threading.local()


class _Runtime:
    @staticmethod
    def getDeviceCount():
        return 1

    @staticmethod
    def runtimeGetVersion():
        return 0

    @staticmethod
    def driverGetVersion():
        return 0


runtime = _Runtime()


class Device:
    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise ValueError(f"the CPU stand-in for CuPy has one device, not device {self.id}")

    def use(self):
        _local.device = self.id

    def synchronize(self):
        _standin._sync("Device.synchronize")

    def __enter__(self):
        self._previous = getattr(_local, "device", 0)
        self.use()
        return self

    def __exit__(self, *exc):
        _local.device = self._previous

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id} (CPU stand-in)>"


def get_device_id():
    return getattr(_local, "device", 0)


class Stream:
    """A stream: ``with stream:`` makes it this thread's current stream, as in CuPy."""

    def __init__(self, null=False, non_blocking=False, ptr=None):
        self.non_blocking = bool(non_blocking)
        self.ptr = 0 if null else id(self)
        self.device_id = get_device_id()

    def synchronize(self):
        _standin._sync("Stream.synchronize")

    def use(self):
        _local.stream = self
        return self

    def record(self, event=None):
        event = event or Event()
        event.record(self)
        return event

    def wait_event(self, event):
        pass  # ordering between streams: nothing to do where everything already ran

    def __enter__(self):
        self._previous = get_current_stream()
        return self.use()

    def __exit__(self, *exc):
        _local.stream = self._previous

    def __repr__(self):
        return f"<Stream {self.ptr} (CPU stand-in)>"


Stream.null = Stream(null=True)


def get_current_stream():
    return getattr(_local, "stream", Stream.null)


class Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.done = True

    def record(self, stream=None):
        pass

    def synchronize(self):
        _standin._sync("Event.synchronize")

    def query(self):
        return True


def alloc_pinned_memory(nbytes):
    return bytearray(nbytes)


class curand:
    """The generator types of ``cupy.cuda.curand`` (only their names matter here)."""
    CURAND_RNG_PSEUDO_DEFAULT = 100
    CURAND_RNG_PSEUDO_XORWOW = 101
    CURAND_RNG_PSEUDO_MRG32K3A = 121
    CURAND_RNG_PSEUDO_MTGP32 = 141
    CURAND_RNG_PSEUDO_MT19937 = 142
    CURAND_RNG_PSEUDO_PHILOX4_32_10 = 161
