"""Data-parallel training across processes and machines, with ``torch.distributed``'s names.

Launch the same script once per rank with MPI (``mpiexec -n 2 python train.py``); in it::

    import tinygrad_hw.distributed as dist
    dist.init_process_group("mpi")          # or "nccl" between GPUs (CuPy), one GPU per rank
    model = nn.parallel.DistributedDataParallel(model)    # gradients averaged over the ranks
    sampler = data.DistributedSampler(len(train_images), shuffle=True, seed=0)

* :mod:`.group`: the process group (``init_process_group``, ``get_rank``, ``get_world_size``,
  ``is_initialized``, ``destroy_process_group``) and the collectives on Tensors (``all_reduce``
  in place, ``broadcast``, ``all_gather``, ``barrier``, and the object versions);
* :mod:`.mpi`: the MPI communicator (mpi4py; ``pip install "tinygrad_hw[distributed]"`` brings
  mpi4py and MPICH's ``mpiexec``);
* :mod:`.nccl`: the NCCL communicator (CuPy's NCCL bindings), on device arrays.

The layers that use it: :class:`tinygrad_hw.nn.parallel.DistributedDataParallel`,
:class:`tinygrad_hw.nn.SyncBatchNorm`, :class:`tinygrad_hw.data.DistributedSampler`, and the
rank-aware checkpoints of :mod:`tinygrad_hw.training`.
"""
from .group import (DEFAULT_TIMEOUT, ReduceOp, all_gather, all_gather_object, all_reduce, barrier,
                    broadcast, broadcast_object_list, destroy_process_group, get_backend, get_rank,
                    get_world_size, init_process_group, is_available, is_initialized,
                    launcher_world_size)

__all__ = ["init_process_group", "destroy_process_group", "is_initialized", "is_available",
           "get_backend", "get_rank", "get_world_size", "launcher_world_size", "barrier",
           "all_reduce", "broadcast", "all_gather", "all_gather_object", "broadcast_object_list",
           "ReduceOp", "DEFAULT_TIMEOUT"]
