"""Train a CNN on CIFAR-10 with tinygrad_hw.

    python examples/cifar_cnn.py                      # --preset fast: the CPU recipe (~16 min, 2 cores)
    python examples/cifar_cnn.py --preset baseline    # the original exercise's net and recipe (~3 min)
    python examples/cifar_cnn.py --limit 500 --epochs 2 --out runs/quick   # a quick check (~20 s)
    python examples/cifar_cnn.py --resume --out runs/cifar_fast            # continue a run
    python examples/cifar_cnn.py --check-gradients    # loss and gradients against PyTorch
    mpiexec -n 2 python examples/cifar_cnn.py --batch-size 128   # data-parallel on 2 processes

The presets (``baseline``, ``fast``, ``resnet9``) and the factories that build a run's loaders,
network, optimizer and schedule are in :mod:`tinygrad_hw.training.cifar10`; every setting can be
overridden on the command line. Each epoch writes a checkpoint to ``--out``; at the end the
model is saved, loaded into a fresh network, and that copy is evaluated on the test set (overall
and per-class accuracy, confusion matrix); ``metrics.json`` and plots are written beside it. The
test set draws the per-epoch curves and gives the final numbers; nothing is selected on it.

Under ``mpiexec -n R`` every process trains a DistributedDataParallel copy of the network on its
share of each epoch (``--batch-size`` images per rank and step, so the global batch is R times
that) with its share of the cores; rank 0 alone prints, shows the progress bar, writes the
checkpoints, the final model, metrics.json and the plots.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy

import tinygrad_hw as hw
import tinygrad_hw.distributed as dist
from tinygrad_hw import models, nn, training
from tinygrad_hw.data import CIFAR10, CLASSES, DatasetError, fixed_subset
from tinygrad_hw.training import cifar10 as recipe
from tinygrad_hw.training import cli

SHORT_CLASSES = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CHECKPOINT, FINAL_MODEL = "checkpoint.ckpt", "model.ckpt"


def log(*args):
    print(*args, flush=True)


def run(cfg: recipe.Config, out, train_data, test_data, *, resume=False, progress=True,
        stop_after=None, plots=True, log=log) -> dict:
    """Train ``cfg`` on ``train_data`` = (images, labels), checkpointing each epoch to ``out``;
    then save, reload and evaluate the model and write metrics.json and plots."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    saved = training.load_checkpoint(out / CHECKPOINT) if resume else None
    if saved is not None:  # the run continues with the settings it started with
        started = dataclasses.replace(recipe.Config.from_dict(saved["config"]), backend=cfg.backend)
        differ = [f.name for f in dataclasses.fields(cfg) if getattr(started, f.name) != getattr(cfg, f.name)]
        if differ:
            log(f"resuming with the checkpoint's settings; ignoring the command line's {', '.join(differ)}")
        cfg = started
    hw.set_default_dtype(cfg.dtype)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    model = recipe.make_model(cfg, None if saved is not None else train_data[0])
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model)
        log(f"data-parallel on {world} ranks: global batch {world * cfg.batch_size} = "
            f"{world} x {cfg.batch_size}")
    train_loader, test_loader = recipe.make_loaders(cfg, train_data, test_data)
    optimizer = recipe.make_optimizer(cfg, model)
    scheduler = recipe.make_scheduler(cfg, optimizer, len(train_loader))
    log(f"preset {cfg.preset}: {cfg.model} net ({models.count_parameters(model):,} parameters), "
        f"{len(train_data[1])} training / {len(test_data[1])} test images, {cfg.epochs} epochs of "
        f"batch {cfg.batch_size}, {cfg.optimizer} lr {cfg.lr} ({cfg.schedule}), backend "
        f"{cfg.backend}, {cfg.dtype}")
    result = training.fit(model, optimizer, train_loader, test_loader,
                          nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
                          epochs=cfg.epochs, scheduler=scheduler, checkpoint=out / CHECKPOINT,
                          config=cfg.to_dict(), backend=cfg.backend, resume=saved,
                          stop_after=stop_after, progress=progress, log_every=cfg.log_every, log=log)
    history = result["history"]
    if not result["finished"]:
        log(f"stopped after epoch {len(history['epochs'])}; continue with --resume --out {out}")
        return {"finished": False, "config": cfg.to_dict(), "history": history}
    if rank != 0:  # rank 0 alone writes and reports what follows
        return {"finished": True, "config": cfg.to_dict(), "history": history["epochs"]}

    # the exercise's last step: save the model, load it back into a fresh network, evaluate that
    hw.save(training.unwrap(model).state_dict(), out / FINAL_MODEL)
    fresh = models.build(cfg.model, **cfg.model_kwargs()).to(cfg.backend, cfg.dtype)
    fresh.load_state_dict(hw.load(out / FINAL_MODEL))
    log(f"saved the model to {out / FINAL_MODEL} and evaluated a fresh network loaded from it")
    plain = training.evaluate(fresh, test_loader)
    final = training.evaluate(fresh, test_loader, tta=True) if cfg.tta else plain
    log(training.classification_report(final, SHORT_CLASSES, plain if cfg.tta else None))
    metrics = {
        "finished": True, "config": cfg.to_dict(), "command": " ".join(sys.argv),
        "test_accuracy": final["accuracy"], "test_accuracy_no_tta": plain["accuracy"],
        "test_loss": final["loss"], "per_class_accuracy": dict(zip(CLASSES, final["per_class"])),
        "confusion_matrix": final["confusion"], "classes": list(CLASSES),
        "train_seconds": sum(e["train_seconds"] for e in history["epochs"]),
        "wall_seconds": history["wall_seconds"], "history": history["epochs"],
        "loss_trace": history["trace"], "machine": training.machine(),
        "parameters": models.count_parameters(fresh)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    log(f"wrote {out / 'metrics.json'}; {len(history['epochs'])} epochs, "
        f"{metrics['train_seconds']:.0f} s of training, {history['wall_seconds']:.0f} s in all")
    if plots:
        written = training.plot_run(out, metrics, SHORT_CLASSES, log=log)
        if written:
            log("plots: " + ", ".join(str(p) for p in written))
    return metrics


def check_gradients(cfg: recipe.Config, test_data, batch: int = 16, log=log) -> dict:
    """``--check-gradients``: the baseline and fast networks against PyTorch on the user's test
    images (:func:`tinygrad_hw.testing.check_networks`)."""
    mean, std = (numpy.reshape(v, (1, 3, 1, 1)) for v in recipe.normalization(cfg))
    x = numpy.ascontiguousarray((test_data[0].astype(numpy.float64) / 255.0 - mean) / std)
    builds = {}
    for name in ("small_cnn", "fast_cnn"):
        kwargs = cfg.model_kwargs() if name == models.canonical_name(cfg.model) else {}
        builds[name] = lambda lib, name=name, kwargs=kwargs: models.build(name, lib, **kwargs)
    return hw.testing.check_networks(builds, x, test_data[1], batch, cfg.label_smoothing, log=log,
                                     backend=cfg.backend)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(recipe.PRESETS) + sorted(recipe.PRESET_ALIASES),
                   default="fast")
    p.add_argument("--backend", choices=("numpy", "cupy"), default=hw.get_backend().name,
                   help="default: TINYGRAD_HW_BACKEND, else numpy")
    # each value a run cannot use is refused here, with the rule it broke
    for flag, kind in (("--epochs", cli.positive_int), ("--batch-size", cli.positive_int),
                       ("--lr", cli.positive_float), ("--momentum", cli.momentum_value),
                       ("--weight-decay", cli.nonnegative_float), ("--label-smoothing", cli.probability),
                       ("--crop-padding", cli.nonnegative_int), ("--stem", cli.positive_int),
                       ("--log-every", cli.nonnegative_int)):
        p.add_argument(flag, type=kind)
    p.add_argument("--optimizer", choices=("adam", "sgd", "swats"))
    p.add_argument("--schedule", choices=("onecycle", "constant"))
    p.add_argument("--augment", choices=("exercise", "crop_flip", "none"))
    p.add_argument("--widths", type=cli.widths_value,
                   help="channels, comma separated (see tinygrad_hw.models.size_kwargs)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="average the predictions of each test image and its mirror image")
    p.add_argument("--whiten", action=argparse.BooleanOptionalAction, default=None,
                   help="start the first convolution from the training images' patch directions")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--seed", type=cli.nonnegative_int, default=0)
    p.add_argument("--data", help="where CIFAR-10 is (default: searched, see tinygrad_hw.data.CIFAR10)")
    p.add_argument("--out", help="output folder (default runs/cifar_<preset>)")
    p.add_argument("--limit", type=cli.positive_int, help="train on the first N images of a fixed shuffle")
    p.add_argument("--test-limit", type=cli.positive_int, help="test on N images (default: all, or --limit's N)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--stop-after", type=cli.positive_int, help="stop after N epochs, as if interrupted")
    p.add_argument("--blas-threads", type=cli.threads_value, default="auto",
                   help="a number, or 'auto' (1 under batch 64)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--check-gradients", action="store_true",
                   help="compare loss and gradients of two networks with PyTorch, then exit")
    return p.parse_args(argv)


def config_from_args(args) -> recipe.Config:
    given = {key: getattr(args, key) for key in (
        "epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "schedule",
        "label_smoothing", "widths", "augment", "crop_padding", "tta", "log_every", "whiten", "stem")
        if getattr(args, key) is not None}
    cfg = recipe.preset(args.preset, seed=args.seed, limit=args.limit, test_limit=args.test_limit,
                        dtype=args.dtype, backend=args.backend, **given)
    if args.batch_size is None and cfg.limit is not None:  # a tiny run takes smaller batches
        cfg.batch_size = recipe.batch_size_for(cfg.batch_size, cfg.limit)
    return cfg


def quiet(*args):
    pass


def _resumed_config(cfg, out, say=log):
    """``--resume``: the checkpoint must exist, and its training and test subsets are used, so
    that the data the loaders' saved positions refer to is the same (a changed --limit on the
    command line is reported and ignored, with the run's other settings, in :func:`run`)."""
    path = out / CHECKPOINT
    try:  # a collective under mpiexec: rank 0 reads (no shared disk needed), every rank learns
        saved = recipe.Config.from_dict(training.load_checkpoint(path)["config"])
    except FileNotFoundError:
        raise cli.UsageError(f"--resume: no checkpoint at {path} (start without --resume, or give "
                             "the --out of the run to continue)") from None
    except hw.CheckpointError as exc:
        raise cli.UsageError(f"--resume: {exc}") from None
    for flag, mine, theirs in (("--limit", cfg.limit, saved.limit), ("--test-limit", cfg.test_limit, saved.test_limit)):
        if mine is not None and mine != theirs:
            say(f"resuming on the checkpoint's data: {flag} {theirs if theirs is not None else 'all'}, "
                f"not the command line's {mine}")
    return dataclasses.replace(cfg, limit=saved.limit, test_limit=saved.test_limit)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = config_from_args(args)
    world = dist.launcher_world_size()
    if world > 1:  # started by mpiexec: one data-parallel rank of `world`
        dist.init_process_group("nccl" if args.backend == "cupy" else "mpi")
    try:
        return _main(args, cfg, dist.get_rank() if world > 1 else 0, world)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _main(args, cfg, rank, world) -> int:
    say = log if rank == 0 else quiet
    out = Path(args.out or f"runs/cifar_{cfg.preset}")
    # the user's mistakes are found before any work: one line each (see training.cli)
    cli.check_backend(args.backend)
    cli.check_data_path(args.data)
    cli.check_output_dir(out)
    if args.resume:
        cfg = _resumed_config(cfg, out, say)
    # small batches: matrices too small to share between cores, and a multi-threaded OpenBLAS
    # loses milliseconds per call synchronising its threads (3.5x slower at batch 4 on 2 cores);
    # several ranks on one machine share its cores
    threads = 1 if args.blas_threads == "auto" and cfg.batch_size < 64 else args.blas_threads
    if threads == "auto" and world > 1:
        threads = max(1, len(os.sched_getaffinity(0)) // world)
    if world > 1:
        hw.kernels.parallel.WORKERS = int(threads)
    if threads != "auto" and hw.kernels.parallel.limit_blas_threads(int(threads)):
        say(f"BLAS limited to {threads} thread(s) per process (--blas-threads)")
    if args.backend != "numpy":
        hw.set_backend(args.backend)
    start = time.perf_counter()
    if rank > 0:
        dist.barrier()  # rank 0 first: it builds the cache the others then read
    try:
        train, test = CIFAR10(root=args.data, train=True), CIFAR10(root=args.data, train=False)
    except (FileNotFoundError, DatasetError) as exc:  # no data, a corrupt or truncated copy
        raise cli.UsageError(str(exc)) from None
    if rank == 0 and world > 1:
        dist.barrier()
    train_data = fixed_subset(train.images, train.labels, cfg.limit)
    test_data = fixed_subset(test.images, test.labels,
                             cfg.limit if cfg.test_limit is None else cfg.test_limit)
    say(f"data loaded in {time.perf_counter() - start:.1f} s")
    if args.check_gradients:
        return 0 if check_gradients(cfg, test_data, log=say)["ok"] else 1
    try:
        run(cfg, out, train_data, test_data, resume=args.resume,
            progress=not args.no_progress and rank == 0, stop_after=args.stop_after,
            plots=not args.no_plots, log=say)
    except training.NonFiniteLossError as exc:
        print(f"\nstopped: {exc}\nthe last good checkpoint (if an epoch finished) is "
              f"{out / CHECKPOINT}", file=sys.stderr, flush=True)
        if world > 1:
            raise  # the other ranks wait in a collective: the uncaught error aborts the job
        return 3
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue from the last finished epoch with: --resume --out {out}",
              file=sys.stderr, flush=True)
        return 130
    say(f"total wall time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
