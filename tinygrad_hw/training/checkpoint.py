"""Checkpoints of a whole training run, for an exact resume.

A run checkpoint holds everything the next epoch depends on: the model, the optimizer, the
schedule, the epoch, the data loader's position and random stream, the library's random states
(parameter initialisation, dropout, augmentation) and the history so far, plus the caller's
``config``. It is written with :func:`tinygrad_hw.save` (atomic, SHA-256 checked), so a crash
while writing leaves the previous checkpoint intact. On the NumPy backend a resumed run ends bit
for bit where an uninterrupted one ends.

In data-parallel training every rank calls :func:`save_checkpoint` and :func:`load_checkpoint`:
the ranks' random states and loader positions are gathered into the one file, with the world
size; rank 0 writes it (the model is the one every rank holds, its BatchNorm statistics averaged
first), and on resume rank 0 reads it and sends it to the others (no shared disk needed), each
taking its own part back (:func:`restore_rank_state`).
"""
from __future__ import annotations

from pathlib import Path

from .. import distributed as dist
from ..backend import get_backend, host_rng
from ..nn.parallel import DistributedDataParallel
from ..serialization import load, save

__all__ = ["random_state", "set_random_state", "save_checkpoint", "load_checkpoint",
           "restore_rank_state", "unwrap"]


def random_state(backend_name: str) -> dict:
    """The host generator's state and the backend's (on CuPy: its seed and number of draws)."""
    return {"host": host_rng().bit_generator.state, "backend": get_backend(backend_name).rng_state()}


def set_random_state(state: dict, backend_name: str) -> None:
    """Restore what :func:`random_state` returned."""
    host_rng().bit_generator.state = state["host"]
    if state.get("backend") is not None:  # None: a checkpoint of an earlier CuPy version
        get_backend(backend_name).set_rng_state(state["backend"])


def unwrap(model):
    """The model inside a DistributedDataParallel wrapper (its state dict has no ``module.``
    prefix, so it loads into a plain model too); any other model itself."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def _world() -> tuple:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def save_checkpoint(path, *, config, model, optimizer, scheduler, train_loader, epoch: int,
                    history: dict, backend: str) -> None:
    """Everything needed to continue after ``epoch``, written atomically to ``path`` (by rank 0;
    with several ranks a collective: every rank calls it, and it returns once the file is
    written)."""
    rank, world = _world()
    mine = {"loader": train_loader.state_dict(), "random": random_state(backend)}
    ranks = [mine]
    if world > 1:
        if isinstance(model, DistributedDataParallel):
            model.average_buffers()
        ranks = [None] * world
        dist.all_gather_object(ranks, mine)
    if rank == 0:
        save({"config": config, "epoch": epoch, "model": unwrap(model).state_dict(),
              "optimizer": optimizer.state_dict(),
              "scheduler": None if scheduler is None else scheduler.state_dict(),
              "world_size": world, "ranks": ranks, "history": history}, path)
    if world > 1:
        dist.barrier()


def load_checkpoint(path) -> dict:
    """The checkpoint at ``path`` (FileNotFoundError naming the path where there is none). With
    several ranks a collective: rank 0 reads the file and every rank gets its contents."""
    rank, world = _world()
    path = Path(path)
    found = [path.exists() if rank == 0 else None]
    if world > 1:
        dist.broadcast_object_list(found, src=0)
    if not found[0]:
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = [load(path) if rank == 0 else None]
    if world > 1:
        dist.broadcast_object_list(state, src=0)
    return state[0]


def restore_rank_state(checkpoint: dict, train_loader, backend: str) -> None:
    """Put this rank's loader position and random states back from ``checkpoint``. A run with
    another number of ranks cannot continue exactly (each rank has its own data share and random
    streams): that is a ValueError saying how many ranks to launch."""
    rank, world = _world()
    saved = int(checkpoint.get("world_size", 1))
    if saved != world:
        raise ValueError(f"the checkpoint was written by a run of {saved} rank(s) and this run has "
                         f"{world}: the data shares and random streams of the ranks would not "
                         f"line up. Resume it with the same number of ranks (mpiexec -n {saved}), "
                         "or start a new run from its model (checkpoint['model']).")
    # checkpoints written before data parallelism held one rank's state at the top level
    mine = checkpoint["ranks"][rank] if "ranks" in checkpoint else checkpoint
    train_loader.load_state_dict(mine["loader"])
    set_random_state(mine["random"], backend)
