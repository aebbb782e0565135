"""The epoch loop of a training run: train, evaluate, record, checkpoint; resume exactly."""
from __future__ import annotations

import time
from pathlib import Path

from .checkpoint import restore_rank_state, save_checkpoint, unwrap
from .loop import NonFiniteLossError, evaluate, nonfinite_parameters, train_one_epoch

__all__ = ["new_history", "fit"]


def new_history() -> dict:
    """An empty run history: per-epoch records, the loss trace, wall-clock seconds."""
    return {"epochs": [], "trace": [], "wall_seconds": 0.0}


def fit(model, optimizer, train_loader, test_loader, loss_fn, *, epochs: int, scheduler=None,
        checkpoint=None, config=None, backend: str = "numpy", resume: dict | None = None,
        stop_after: int | None = None, progress: bool = True, log_every: int = 0,
        log=print) -> dict:
    """Train ``model`` for ``epochs`` epochs (counted from the start of the run), evaluating on
    ``test_loader`` after each, and write a checkpoint to ``checkpoint`` (a path, or None for
    none) after every epoch with ``config`` (any plain data) in it.

    ``resume``: a checkpoint that :func:`~tinygrad_hw.training.load_checkpoint` read: the model,
    optimizer, schedule, loader position, random states and history are restored from it and
    training continues with the next epoch. ``stop_after`` stops (as if interrupted) after that
    many epochs of this call. ``scheduler.step()`` runs after every batch.

    Returns ``{'finished': bool, 'history': ...}``; the history has one record per epoch
    (``epoch``, ``train_loss``, ``train_accuracy``, ``test_loss``, ``test_accuracy``,
    ``lr_end``, ``train_seconds``, ``eval_seconds``, ``images_per_second``), the training loss
    traced about 50 times an epoch as ``[global step, loss]`` pairs, and ``wall_seconds``.
    Raises :class:`~tinygrad_hw.training.NonFiniteLossError` when the loss or a parameter stops
    being finite; the last checkpoint written is then the last good one.

    Data-parallel: give the :class:`~tinygrad_hw.nn.parallel.DistributedDataParallel` model and
    call ``fit`` on every rank (with ``progress`` and ``log`` on rank 0 only); the metrics are
    those of all ranks together, and the checkpoints gather every rank's state (rank 0 writes)."""
    wall_start = time.perf_counter()
    start_epoch, history = 0, new_history()
    if resume is not None:
        unwrap(model).load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(resume["scheduler"])
        restore_rank_state(resume, train_loader, backend)
        start_epoch, history = int(resume["epoch"]), resume["history"]
        log(f"resumed from {checkpoint} after epoch {start_epoch}")
    trace_every = max(1, len(train_loader) // 50)
    finished = True
    for epoch in range(start_epoch + 1, epochs + 1):
        if stop_after is not None and epoch > start_epoch + stop_after:
            finished = False
            break
        stats = train_one_epoch(model, train_loader, optimizer, scheduler, loss_fn, epoch=epoch,
                                progress=progress, log_every=log_every, trace_every=trace_every,
                                desc=f"epoch {epoch}/{epochs}", log=log)
        bad = nonfinite_parameters(model)
        if bad:
            raise NonFiniteLossError(f"after epoch {epoch} these parameters are not finite: "
                                     f"{', '.join(bad)}; the last good checkpoint is {checkpoint}")
        test = evaluate(model, test_loader)
        base = (epoch - 1) * len(train_loader)
        history["trace"].extend([base + s, v] for s, v in stats["trace"])
        history["epochs"].append({
            "epoch": epoch, "train_loss": stats["loss"], "train_accuracy": stats["accuracy"],
            "test_loss": test["loss"], "test_accuracy": test["accuracy"],
            "lr_end": stats["lr"][0], "train_seconds": stats["seconds"],
            "eval_seconds": test["seconds"], "images_per_second": stats["images_per_second"]})
        log(f"epoch {epoch}/{epochs}: train loss {stats['loss']:.4f} acc "
            f"{100 * stats['accuracy']:.2f}% | test loss {test['loss']:.4f} acc "
            f"{100 * test['accuracy']:.2f}% | {stats['seconds']:.1f} s train "
            f"({stats['images_per_second']:.0f} img/s), {test['seconds']:.1f} s eval")
        history["wall_seconds"] += time.perf_counter() - wall_start
        wall_start = time.perf_counter()
        if checkpoint is not None:
            save_checkpoint(Path(checkpoint), config=config, model=model, optimizer=optimizer,
                            scheduler=scheduler, train_loader=train_loader, epoch=epoch,
                            history=history, backend=backend)
    history["wall_seconds"] += time.perf_counter() - wall_start
    return {"finished": finished, "history": history}
