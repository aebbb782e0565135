"""One epoch of training and one evaluation pass, for any model, loader, optimizer and loss."""
from __future__ import annotations

import math
import time

import numpy

from .. import distributed as dist
from ..autograd import AnomalyError, detect_anomaly, no_grad
from ..nn import functional as F
from ..nn.parallel import DistributedDataParallel
from ..tensor import Tensor
from .progress import Progress

__all__ = ["NonFiniteLossError", "nonfinite_parameters", "diagnose_nonfinite", "train_one_epoch",
           "evaluate"]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message says where and, if found, which op."""


def nonfinite_parameters(model) -> list:
    """Names of the parameters of ``model`` that hold a NaN or an infinity."""
    bad = []
    for name, p in model.named_parameters():
        if not bool(p._be.xp.isfinite(p.data).all()):
            bad.append(name)
    return bad


def _ranks_of(model) -> tuple:
    """(rank, world size) over which ``model`` is trained data-parallel; (0, 1) otherwise."""
    if isinstance(model, DistributedDataParallel) and model.world_size > 1:
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _sum_over_ranks(values, dtype):
    """``values`` (numbers or an array) summed over the ranks, as a NumPy array."""
    total = Tensor(numpy.array(values, dtype=dtype))
    dist.all_reduce(total)
    return total.numpy()


def diagnose_nonfinite(model, loss_fn, x, y, step_desc: str) -> str:
    """Re-run one batch under ``detect_anomaly()`` and describe where NaN/Inf first appears."""
    lines = [f"the training loss is not finite at {step_desc}."]
    if not bool(x._be.xp.isfinite(x.data).all()):
        lines.append("the input batch itself contains NaN or Inf: check the data")
    bad = nonfinite_parameters(model)
    if bad:
        lines.append(f"parameters already non-finite before this batch: {', '.join(bad)} "
                     "(an earlier step's update blew up: lower --lr)")
    try:
        with detect_anomaly():
            loss = loss_fn(model(x), y)
            loss.backward()
        lines.append("re-running the batch under detect_anomaly() found no NaN/Inf "
                     "(the failure depends on random draws such as dropout)")
    except AnomalyError as exc:
        lines.append(f"detect_anomaly() on this batch: {exc}")
    finally:
        for p in model.parameters():
            p.grad = None
    return "\n".join(lines)


def _default_sync_every(model) -> int:
    """1 on the CPU (reading a number costs nothing there); on a GPU the host reads the losses
    every 20 steps, so that it never waits for the device inside a step."""
    first = next(iter(model.parameters()), None)
    return 1 if first is None or first.backend == "numpy" else 20


def train_one_epoch(model, loader, optimizer, scheduler, loss_fn, *, epoch: int = 1,
                    progress: bool = True, log_every: int = 0, trace_every: int = 0,
                    desc: str | None = None, log=print, sync_every: int | None = None):
    """One pass over ``loader``: forward, loss, backward, optimizer step and (per batch)
    ``scheduler.step()`` when a scheduler is given.

    Returns ``{'loss', 'accuracy', 'images', 'steps', 'seconds', 'images_per_second', 'lr',
    'trace'}``: the mean training loss and accuracy over the epoch (of the augmented batches, in
    training mode), and ``trace``, the mean loss of every ``trace_every`` consecutive batches
    as (step within the epoch, loss) pairs. ``log_every`` > 0 prints the running loss every
    that many batches, as the PyTorch tutorial does (``[epoch, batch] loss: ...``), through the
    progress bar or, without one, through ``log``.
    Raises :class:`NonFiniteLossError` when the loss becomes NaN/Inf. For a data-parallel model
    the returned loss, accuracy, images and rate are those of all ranks together (the progress
    bar and the trace are this rank's).

    ``sync_every`` (default: 1 on NumPy, 20 on a GPU backend): how many steps' losses and
    correct counts stay on the device before the host reads them, all at once (one host
    synchronisation, and the progress bar then advances). With 1 the loss is checked before
    ``backward()``, so a non-finite batch is never applied; with more, a non-finite loss is
    found up to that many steps late (the error names its batch; the parameters may then
    already be non-finite, which the message says).
    """
    if sync_every is None:
        sync_every = _default_sync_every(model)
    sync_every = max(1, int(sync_every))
    model.train()
    total = len(loader)
    bar = Progress(total, desc or f"epoch {epoch}", progress, log)
    loss_sum = correct = seen = steps = 0
    running, window, window_steps = 0.0, 0.0, 0
    trace = []
    # (loss, correct count, x, y) of the steps the host has not read yet (the batches kept for a
    # diagnosis: at most sync_every of them)
    pending = []
    start = time.perf_counter()

    def read_pending(applied):
        """Read the pending steps' numbers in one transfer; update the sums, log, trace, bar."""
        nonlocal loss_sum, correct, seen, steps, running, window, window_steps
        be = pending[0][0]._be
        xp = be.xp
        host = be.to_numpy(xp.concatenate([xp.stack([p[0].data for p in pending]).astype(xp.float64),
                                           xp.stack([p[1] for p in pending]).astype(xp.float64)]))
        values, counts = host[:len(pending)].tolist(), host[len(pending):].tolist()
        for value, count, (_, _, x, y) in zip(values, counts, pending):
            n = y.shape[0]
            if not math.isfinite(value):
                optimizer.zero_grad()
                where = f"epoch {epoch}, batch {steps + 1} of {total}"
                if applied:
                    where += (f" (found after the update: the host reads the loss every "
                              f"{sync_every} steps)")
                raise NonFiniteLossError(diagnose_nonfinite(model, loss_fn, x, y, where))
            steps += 1
            seen += n
            loss_sum += value * n
            correct += int(count)
            running += value
            window += value
            window_steps += 1
            if log_every and steps % log_every == 0:
                bar.write(f"[{epoch}, {steps:5d}] loss: {running / log_every:.3f}")
                running = 0.0
            if trace_every and window_steps == trace_every:
                trace.append((steps, window / window_steps))
                window, window_steps = 0.0, 0
        elapsed = time.perf_counter() - start
        bar.update(len(pending), loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}%",
                   img_s=f"{seen / max(elapsed, 1e-9):.0f}")
        pending.clear()

    try:
        for x, y in loader:
            logits = model(x)
            loss = loss_fn(logits, y)
            # the correct count stays on the device: no host synchronisation inside the step
            pending.append((loss.detach(), (logits.data.argmax(1) == y.data).sum(), x, y))
            if sync_every == 1:  # checked before the update, as PyTorch's loops do with .item()
                read_pending(applied=False)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            if len(pending) >= sync_every:
                read_pending(applied=True)
        if pending:
            read_pending(applied=True)
    finally:
        bar.close()
    if window_steps:
        trace.append((steps, window / window_steps))
    if _ranks_of(model)[1] > 1:
        loss_sum, correct, seen = _sum_over_ranks([loss_sum, correct, seen], numpy.float64).tolist()
        correct, seen = int(correct), int(seen)
    seconds = time.perf_counter() - start
    return {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1), "images": seen,
            "steps": steps, "seconds": seconds, "images_per_second": seen / max(seconds, 1e-9),
            "lr": [g["lr"] for g in optimizer.param_groups], "trace": trace}


def _flip(x):
    """The batch mirrored left to right."""
    return Tensor(x._be.xp.ascontiguousarray(x.data[..., ::-1]), backend=x._be)


def evaluate(model, loader, *, tta: bool = False, num_classes: int = 10, progress: bool = False):
    """Accuracy of ``model`` (in eval mode, no graph) on ``loader``.

    With ``tta`` the logits of each image and of its mirror image are averaged. Returns
    ``{'loss', 'accuracy', 'correct', 'total', 'per_class', 'confusion', 'seconds'}``: the mean
    cross-entropy (no label smoothing), overall and per-class accuracy, and the confusion matrix
    (rows: true class, columns: predicted class) as nested lists.

    A data-parallel model (every rank calls this) evaluates batch ``b`` on rank ``b mod R`` and
    the counts are summed over the ranks: every rank returns the numbers of the whole loader.
    """
    rank, world = _ranks_of(model)
    was_training = model.training
    model.eval()
    confusion = numpy.zeros((num_classes, num_classes), dtype=numpy.int64)
    loss_sum, total = 0.0, 0
    bar = Progress(len(loader), "test", progress)
    start = time.perf_counter()
    try:
        with no_grad():
            for b, (x, y) in enumerate(loader):
                if b % world != rank:
                    continue
                logits = model(x)
                if tta:
                    logits = (logits + model(_flip(x))) * 0.5
                loss_sum += float(F.cross_entropy(logits, y, reduction="sum").item())
                pred = logits.numpy().argmax(1)
                truth = y.numpy()
                numpy.add.at(confusion, (truth, pred), 1)
                total += len(truth)
                bar.update(1)
    finally:
        bar.close()
        model.train(was_training)
    if world > 1:
        confusion = _sum_over_ranks(confusion, numpy.int64)
        loss_sum, total = _sum_over_ranks([loss_sum, total], numpy.float64).tolist()
        total = int(total)
    per_class_total = confusion.sum(1)
    correct = int(numpy.trace(confusion))
    return {"loss": loss_sum / max(total, 1), "accuracy": correct / max(total, 1),
            "correct": correct, "total": total,
            "per_class": [float(confusion[i, i] / per_class_total[i]) if per_class_total[i] else
                          float("nan") for i in range(num_classes)],
            "confusion": confusion.tolist(), "seconds": time.perf_counter() - start}
