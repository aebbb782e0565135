"""The MPI communicator (through ``mpi4py``): collectives on host arrays, Python objects, abort.

``mpi4py`` is imported only when a process group is made, never by ``import tinygrad_hw``: importing
it initialises MPI. It runs as a single process of world size 1 when not started by ``mpiexec``.
Arrays of another backend (CuPy) travel through a host copy, since an MPI library from pip is not
CUDA-aware; on GPUs the NCCL communicator (:mod:`.nccl`) is the fast path.
"""
from __future__ import annotations

import numpy

from ..backend import backend_of

__all__ = ["load_mpi", "MPICommunicator"]

INSTALL_HINT = ('pip install "tinygrad_hw[distributed]" (mpi4py with the MPICH wheel, which '
                'brings mpiexec), or mpi4py built against your cluster\'s MPI')


def load_mpi():
    """The ``mpi4py.MPI`` module; a RuntimeError naming the extra to install where it is missing."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise RuntimeError(f"tinygrad_hw.distributed needs mpi4py and an MPI library ({exc}); "
                           f"install them with: {INSTALL_HINT}") from exc
    return MPI


class MPICommunicator:
    """Collectives over a private duplicate of ``MPI.COMM_WORLD`` (user MPI traffic on
    COMM_WORLD cannot interleave with ours). Array collectives work in place on C-contiguous
    arrays; the reductions of two ranks are exact (``a + b`` is ``b + a``)."""

    name = "mpi"

    def __init__(self):
        self.MPI = load_mpi()
        self.world = self.MPI.COMM_WORLD
        self.comm = self.world.Dup()
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.ops = {"sum": self.MPI.SUM, "product": self.MPI.PROD, "min": self.MPI.MIN,
                    "max": self.MPI.MAX}

    def local_rank(self) -> int:
        """This process's index among the ranks on its own machine (to pick a GPU)."""
        local = self.world.Split_type(self.MPI.COMM_TYPE_SHARED)
        try:
            return local.Get_rank()
        finally:
            local.Free()

    # -- arrays -----------------------------------------------------------------------------
    def allreduce(self, array, op: str) -> None:
        host, back = _on_host(array)
        self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.ops[op])
        back(host)

    def broadcast(self, array, src: int) -> None:
        host, back = _on_host(array)
        self.comm.Bcast(host, root=src)
        back(host)

    def allgather(self, array):
        """``(world_size,) + array.shape``: every rank's array, by rank."""
        host, _ = _on_host(array)
        out = numpy.empty((self.size,) + host.shape, dtype=host.dtype)
        self.comm.Allgather(host, out)
        be = backend_of(array)
        return out if be.name == "numpy" else be.asarray(out)

    def barrier(self) -> None:
        self.comm.Barrier()

    # -- Python objects (pickled) -------------------------------------------------------------
    def broadcast_object(self, obj, src: int):
        return self.comm.bcast(obj, root=src)

    def allgather_object(self, obj) -> list:
        return self.comm.allgather(obj)

    # -- failures -----------------------------------------------------------------------------
    def abort(self, code: int) -> None:
        """End every rank of the job now (MPI_Abort); used on errors and timeouts."""
        self.world.Abort(code)

    def close(self) -> None:
        self.comm.Free()


def _on_host(array):
    """``array`` as a host array MPI can read and write, and how to write a result back."""
    if isinstance(array, numpy.ndarray):
        return array, lambda host: None
    be = backend_of(array)
    host = be.to_numpy(array)

    def back(result):
        array[...] = be.asarray(result)
    return host, back
