"""Checkpoints of a whole training run, for an exact resume.

A run checkpoint holds everything the next epoch depends on: the model, the optimizer, the
schedule, the epoch, the data loader's position and random stream, the library's random states
(parameter initialisation, dropout, augmentation) and the history so far, plus the caller's
``config``. It is written with :func:`tinygrad_hw.save` (atomic, SHA-256 checked), so a crash
while writing leaves the previous checkpoint intact. On the NumPy backend a resumed run ends bit
for bit where an uninterrupted one ends.
"""
from __future__ import annotations

from pathlib import Path

from ..backend import get_backend, host_rng
from ..serialization import load, save

__all__ = ["random_state", "set_random_state", "save_checkpoint", "load_checkpoint"]


def random_state(backend_name: str) -> dict:
    """The host generator's state and, where the backend can export it, the backend's."""
    state = {"host": host_rng().bit_generator.state}
    be = get_backend(backend_name)
    if be.name == "numpy":
        state["backend"] = be.rng.bit_generator.state
    return state


def set_random_state(state: dict, backend_name: str) -> None:
    """Restore what :func:`random_state` returned."""
    host_rng().bit_generator.state = state["host"]
    be = get_backend(backend_name)
    if be.name == "numpy" and "backend" in state:
        be.rng.bit_generator.state = state["backend"]


def save_checkpoint(path, *, config, model, optimizer, scheduler, train_loader, epoch: int,
                    history: dict, backend: str) -> None:
    """Everything needed to continue after ``epoch``, written atomically to ``path``."""
    save({"config": config, "epoch": epoch, "model": model.state_dict(),
          "optimizer": optimizer.state_dict(),
          "scheduler": None if scheduler is None else scheduler.state_dict(),
          "loader": train_loader.state_dict(), "random": random_state(backend),
          "history": history}, path)


def load_checkpoint(path) -> dict:
    """The checkpoint at ``path`` (FileNotFoundError naming the path where there is none)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return load(path)
