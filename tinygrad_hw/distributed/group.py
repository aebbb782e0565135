"""The default process group and its collectives, with ``torch.distributed``'s names.

One process group per process, made by :func:`init_process_group` from what the MPI launcher
(``mpiexec -n N python ...``) tells every process: its rank and the world size. Collectives work
in place on a Tensor's array and block until done. Every rank must call the same collectives in
the same order.

Failures stop the whole job instead of leaving the other ranks waiting forever:

* an exception that nothing catches on one rank prints its traceback (prefixed with the rank)
  and aborts every rank (MPI_Abort), as ``python -m mpi4py`` does;
* a rank that dies is noticed by the launcher, which ends the others;
* a collective that has not completed after ``timeout`` (a rank hung, or skipped it) makes a
  watchdog thread print which collective on which rank waited, and abort the job.

A rank that leaves with ``sys.exit()`` while the others wait in a collective does not end the
job: MPI's finalisation waits for them, and they wait until the timeout. Let the exception
propagate instead (or exit the same way on every rank).
"""
from __future__ import annotations

import datetime
import os
import sys
import threading
import time
import traceback

from ..tensor import Tensor

__all__ = ["ReduceOp", "init_process_group", "destroy_process_group", "is_initialized",
           "is_available", "get_backend", "get_rank", "get_world_size", "launcher_world_size",
           "barrier", "all_reduce", "broadcast", "all_gather", "all_gather_object",
           "broadcast_object_list", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)  # PyTorch's default for its CPU backends
BACKENDS = ("mpi", "nccl")


class ReduceOp:
    """The reductions of :func:`all_reduce` (plain strings work too: ``op="sum"``)."""

    SUM, PRODUCT, MIN, MAX, AVG = "sum", "product", "min", "max", "avg"


_group = None  # the default process group (a _Group), None before init_process_group


def launcher_world_size() -> int:
    """The number of processes the MPI launcher started (from its environment: MPICH and Intel
    MPI set PMI_SIZE, Open MPI OMPI_COMM_WORLD_SIZE); 1 when not started by one."""
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 1


def is_available() -> bool:
    """Whether the collectives can be used here (mpi4py is installed)."""
    import importlib.util
    return importlib.util.find_spec("mpi4py") is not None


def init_process_group(backend: str = "mpi", *, timeout=DEFAULT_TIMEOUT, world_size: int = -1,
                       rank: int = -1) -> None:
    """Join the job: ``backend`` 'mpi' (CPU, or any array through the host) or 'nccl' (CuPy
    arrays between GPUs, one GPU per rank). Rank and world size come from the MPI launcher;
    ``world_size`` / ``rank``, if given, are checked against them. ``timeout`` (a timedelta or
    seconds) bounds how long a collective may wait for the other ranks before the job is
    aborted."""
    global _group
    if _group is not None:
        raise RuntimeError("init_process_group(): the default process group is already "
                           "initialized; call destroy_process_group() first")
    name = str(backend).lower()
    if name not in BACKENDS:
        raise ValueError(f"init_process_group(): unknown backend {backend!r}; expected one of "
                         f"{BACKENDS}")
    seconds = timeout.total_seconds() if isinstance(timeout, datetime.timedelta) else float(timeout)
    if not seconds > 0:
        raise ValueError(f"init_process_group(): timeout must be positive, got {timeout!r}")
    from .mpi import MPICommunicator
    comm = MPICommunicator()
    if name == "nccl":
        from .nccl import NCCLCommunicator
        comm = NCCLCommunicator(comm)
    for what, given, actual in (("world_size", world_size, comm.size), ("rank", rank, comm.rank)):
        if given not in (-1, None) and int(given) != actual:
            comm.close()
            raise ValueError(f"init_process_group(): {what}={given} but the launcher started "
                             f"this process as {what} {actual}")
    _group = _Group(comm, seconds)


def destroy_process_group() -> None:
    """Leave the job: stop the watchdog, restore the exception hook, free the communicator."""
    global _group
    group, _group = _group, None
    if group is not None:
        group.close()


def is_initialized() -> bool:
    return _group is not None


def _default():
    if _group is None:
        raise RuntimeError("the default process group has not been initialized: call "
                           "tinygrad_hw.distributed.init_process_group() first")
    return _group


def get_backend() -> str:
    """'mpi' or 'nccl'."""
    return _default().comm.name


def get_rank() -> int:
    """This process's rank, 0 .. world size - 1."""
    return _default().comm.rank


def get_world_size() -> int:
    return _default().comm.size


# -- collectives ----------------------------------------------------------------------------------
def _array_of(tensor, what):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{what}: expected a Tensor, got {type(tensor).__name__}")
    data = tensor.data
    if not data.flags.c_contiguous or not getattr(data.flags, "writeable", True):
        raise ValueError(f"{what}: the tensor must be contiguous and writable (it is written in "
                         f"place); pass a copy, e.g. t = t.contiguous() or t.clone()")
    return data


def all_reduce(tensor, op=ReduceOp.SUM) -> None:
    """Reduce ``tensor`` over all ranks, in place: afterwards every rank holds the sum (or
    'product', 'min', 'max', 'avg': the sum divided by the world size, floating tensors only)."""
    op = str(op).lower()
    if op not in ("sum", "product", "min", "max", "avg"):
        raise ValueError(f"all_reduce: unknown op {op!r}; expected sum, product, min, max or avg")
    data = _array_of(tensor, "all_reduce")
    if op == "avg" and data.dtype.kind != "f":
        raise TypeError(f"all_reduce: op='avg' needs a floating tensor, got {data.dtype}")
    group = _default()
    with group.watch("all_reduce", data):
        group.comm.allreduce(data, "sum" if op == "avg" else op)
    if op == "avg":
        data /= group.comm.size


def broadcast(tensor, src: int = 0) -> None:
    """Copy rank ``src``'s ``tensor`` into ``tensor`` on every rank, in place."""
    data = _array_of(tensor, "broadcast")
    group = _default()
    group.check_rank(src, "broadcast")
    with group.watch("broadcast", data):
        group.comm.broadcast(data, int(src))


def all_gather(tensor_list, tensor) -> None:
    """Fill ``tensor_list`` (one tensor per rank, of ``tensor``'s shape and dtype) with every
    rank's ``tensor``, by rank."""
    group = _default()
    if not isinstance(tensor, Tensor):
        raise TypeError(f"all_gather: expected a Tensor, got {type(tensor).__name__}")
    data = tensor.data
    if len(tensor_list) != group.comm.size:
        raise ValueError(f"all_gather: tensor_list has {len(tensor_list)} tensors for a world "
                         f"of {group.comm.size}")
    for t in tensor_list:
        if not isinstance(t, Tensor) or t.shape != tuple(data.shape) or t.dtype != data.dtype:
            raise ValueError(f"all_gather: every output must be a Tensor of shape "
                             f"{tuple(data.shape)} and dtype {data.dtype}")
    with group.watch("all_gather", data):
        gathered = group.comm.allgather(tensor._be.xp.ascontiguousarray(data))
    for t, part in zip(tensor_list, gathered):
        t.data[...] = part


def all_gather_object(object_list, obj) -> None:
    """Fill ``object_list`` (of world-size length) with every rank's picklable ``obj``."""
    group = _default()
    if len(object_list) != group.comm.size:
        raise ValueError(f"all_gather_object: object_list has {len(object_list)} entries for a "
                         f"world of {group.comm.size}")
    with group.watch("all_gather_object"):
        object_list[:] = group.comm.allgather_object(obj)


def broadcast_object_list(object_list, src: int = 0) -> None:
    """Replace ``object_list``'s entries on every rank with rank ``src``'s, in place."""
    group = _default()
    group.check_rank(src, "broadcast_object_list")
    with group.watch("broadcast_object_list"):
        object_list[:] = group.comm.broadcast_object(list(object_list), int(src))


def barrier() -> None:
    """Wait until every rank has called barrier()."""
    group = _default()
    with group.watch("barrier"):
        group.comm.barrier()


# -- the process group: communicator, watchdog, exception hook -----------------------------------
class _Group:
    def __init__(self, comm, timeout_s: float):
        self.comm, self.timeout_s = comm, timeout_s
        self.calls = 0
        self._inflight = None  # (what, deadline) of the collective now waiting
        self._stop = threading.Event()
        self._previous_hook = None
        if comm.size > 1:
            self._previous_hook = sys.excepthook
            sys.excepthook = self._abort_on_uncaught
            self._dog = threading.Thread(target=self._watchdog, name="tinygrad_hw-distributed-watchdog",
                                         daemon=True)
            self._dog.start()

    def check_rank(self, src, what):
        if not 0 <= int(src) < self.comm.size:
            raise ValueError(f"{what}: src={src} is not a rank of a world of {self.comm.size}")

    def watch(self, what, array=None):
        self.calls += 1
        if array is not None:
            what = f"{what} of a {array.dtype} array of shape {tuple(array.shape)}"
        return _Watch(self, f"{what} (collective call #{self.calls} of this rank)")

    def _watchdog(self):
        while not self._stop.wait(min(1.0, self.timeout_s / 4)):
            inflight = self._inflight
            if inflight is not None and time.monotonic() > inflight[1]:
                print(f"[rank {self.comm.rank}] tinygrad_hw.distributed: {inflight[0]} has waited "
                      f"more than {self.timeout_s:g} s for the other ranks (the timeout of "
                      "init_process_group): a rank died, hung, or did not make the same call. "
                      "Aborting every rank.", file=sys.stderr, flush=True)
                self._abort()

    def _abort_on_uncaught(self, kind, value, tb):
        lines = traceback.format_exception(kind, value, tb)
        text = "".join(f"[rank {self.comm.rank}] {line}" for line in "".join(lines).splitlines(True))
        sys.stderr.write(text)
        sys.stderr.write(f"[rank {self.comm.rank}] tinygrad_hw.distributed: an uncaught "
                         f"{kind.__name__} on rank {self.comm.rank}; aborting every rank.\n")
        sys.stderr.flush()
        self._abort()

    def _abort(self):
        # a moment for the launcher to forward what this rank just printed: the abort kills the
        # processes that would carry it
        time.sleep(0.5)
        self.comm.abort(1)

    def close(self):
        self._stop.set()
        if self._previous_hook is not None and sys.excepthook == self._abort_on_uncaught:
            sys.excepthook = self._previous_hook
        self.comm.close()


class _Watch:
    """The span of one collective, seen by the watchdog."""

    __slots__ = ("group", "what")

    def __init__(self, group, what):
        self.group, self.what = group, what

    def __enter__(self):
        self.group._inflight = (self.what, time.monotonic() + self.group.timeout_s)

    def __exit__(self, *exc):
        self.group._inflight = None
