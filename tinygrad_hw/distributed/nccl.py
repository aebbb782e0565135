"""The NCCL communicator: collectives between GPUs, on CuPy arrays in device memory.

NCCL needs one GPU per rank (it refuses two ranks on one device), so rank ``r`` uses the GPU
numbered by its place among the ranks on its machine. MPI still launches the processes, hands
NCCL its unique id from rank 0, carries Python objects and host (NumPy) arrays, and aborts the
job on errors. CuPy is reached through the ``cupy`` backend object (:mod:`tinygrad_hw.backend`
is the only module that imports it). Each collective is synchronised before it returns, so a
tensor is final when the call returns and a stuck peer shows up in the timeout watchdog.
"""
from __future__ import annotations

import numpy

from ..backend import get_backend
from .mpi import MPICommunicator

__all__ = ["NCCLCommunicator"]


class NCCLCommunicator:
    name = "nccl"

    def __init__(self, mpi: MPICommunicator):
        self.mpi = mpi
        self.rank, self.size = mpi.rank, mpi.size
        # Python objects, the place on the machine and aborting the job are MPI's
        self.broadcast_object, self.allgather_object = mpi.broadcast_object, mpi.allgather_object
        self.local_rank, self.abort = mpi.local_rank, mpi.abort
        self.be = get_backend("cupy")  # a clear error without CuPy or a GPU
        nccl = self.be.nccl()
        cupy = self.be.xp
        devices = cupy.cuda.runtime.getDeviceCount()
        local = mpi.local_rank()
        if local >= devices:
            raise RuntimeError(f"rank {self.rank} is rank {local} on its machine, which has "
                               f"{devices} GPU(s): the nccl backend needs one GPU per rank")
        self.be.use_device(local)
        unique_id = mpi.broadcast_object(nccl.get_unique_id() if self.rank == 0 else None, 0)
        self.comm = nccl.NcclCommunicator(self.size, unique_id, self.rank)
        self.types = {numpy.dtype(k): v for k, v in (
            (numpy.float16, nccl.NCCL_FLOAT16), (numpy.float32, nccl.NCCL_FLOAT32),
            (numpy.float64, nccl.NCCL_FLOAT64), (numpy.int8, nccl.NCCL_INT8),
            (numpy.uint8, nccl.NCCL_UINT8), (numpy.int32, nccl.NCCL_INT32),
            (numpy.int64, nccl.NCCL_INT64))}
        self.ops = {"sum": nccl.NCCL_SUM, "product": nccl.NCCL_PROD, "min": nccl.NCCL_MIN,
                    "max": nccl.NCCL_MAX}

    def _type(self, array):
        dtype = numpy.dtype(array.dtype)
        if dtype not in self.types:
            raise TypeError(f"the nccl backend cannot communicate arrays of dtype {dtype}")
        return self.types[dtype]

    def _stream(self):
        return self.be.xp.cuda.get_current_stream()

    # -- arrays: device arrays through NCCL, host arrays through MPI ----------------------------
    def allreduce(self, array, op: str) -> None:
        if isinstance(array, numpy.ndarray):
            return self.mpi.allreduce(array, op)
        stream = self._stream()
        self.comm.allReduce(array.data.ptr, array.data.ptr, array.size, self._type(array),
                            self.ops[op], stream.ptr)
        stream.synchronize()

    def broadcast(self, array, src: int) -> None:
        if isinstance(array, numpy.ndarray):
            return self.mpi.broadcast(array, src)
        stream = self._stream()
        self.comm.bcast(array.data.ptr, array.size, self._type(array), src, stream.ptr)
        stream.synchronize()

    def allgather(self, array):
        if isinstance(array, numpy.ndarray):
            return self.mpi.allgather(array)
        out = self.be.xp.empty((self.size,) + array.shape, dtype=array.dtype)
        stream = self._stream()
        self.comm.allGather(array.data.ptr, out.data.ptr, array.size, self._type(array), stream.ptr)
        stream.synchronize()
        return out

    def barrier(self) -> None:
        self._stream().synchronize()
        self.mpi.barrier()

    def close(self) -> None:
        self.comm.destroy()
        self.mpi.close()
