"""Device operations, host synchronisations and host-to-device copies of one training step of
each CIFAR-10 preset, counted on the CPU stand-in for CuPy (tests/cupy_standin) by phase:

    PYTHONPATH=tests/cupy_standin python -m benchmarks.step_counts [--json PATH] [--top N]

A count, not a time: each NumPy function, method or operator the step calls on a device array
is one "kernel-like operation" (on a GPU, one or more kernel launches); a sync is a read of a
device value on the host (``.item()``, ``float()``, ``bool()``, ``.get()``); a host-to-device
copy is an array made from host data. The step is the one train_one_epoch runs (forward, loss,
the on-device correct count, zero_grad, backward, optimizer step, schedule step), measured after
a first step has made the optimizer's state. The loop's reads of the losses (one every
``sync_every`` steps) are not part of it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import tinygrad_hw as hw
from tinygrad_hw import nn
from tinygrad_hw.training import cifar10 as recipe

# The presets at their own widths, batch 4 for the exercise's net, 8 for the others (the counts
# hardly depend on the batch or the width).
PRESETS = {"baseline": 4, "fast": 8, "resnet9": 8}


def count_step(preset: str, batch: int, top: int = 8, forbid_host_transfers: bool = False,
               **overrides) -> dict:
    """The counts of one step of ``preset`` (``overrides`` go to the preset, e.g. smaller
    ``widths``); with ``forbid_host_transfers`` a sync or host-to-device copy in the counted step
    raises at its line (tests/test_gpu_readiness.py)."""
    import contextlib

    import cupy
    standin = getattr(cupy, "_standin", None)
    if standin is None or not getattr(cupy, "STANDIN", False):
        raise SystemExit("step_counts needs the CPU stand-in for CuPy: "
                         "PYTHONPATH=tests/cupy_standin python -m benchmarks.step_counts")
    cfg = recipe.preset(preset, backend="cupy", batch_size=batch, **overrides)
    model = recipe.make_model(cfg)
    optimizer = recipe.make_optimizer(cfg, model)
    scheduler = recipe.make_scheduler(cfg, optimizer, steps_per_epoch=100)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    rng = np.random.default_rng(0)
    x = hw.Tensor(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32), backend="cupy")
    y = hw.Tensor(rng.integers(0, 10, batch), backend="cupy")
    phases = {}

    def step(record):
        def phase(name, fn):
            if not record:
                return fn()
            with standin.counting() as counts:
                out = fn()
            phases[name] = counts
            return out
        logits = phase("forward", lambda: model(x))
        loss = phase("loss", lambda: loss_fn(logits, y))
        phase("bookkeeping", lambda: (logits.data.argmax(1) == y.data).sum())
        phase("backward", lambda: (optimizer.zero_grad(), loss.backward()))
        phase("optimizer", lambda: (optimizer.step(), scheduler.step() if scheduler else None))

    step(False)
    with standin.forbid_host_transfers() if forbid_host_transfers else contextlib.nullcontext():
        step(True)
    result = {"preset": preset, "batch": batch, "optimizer": cfg.optimizer, "phases": {}}
    total = {"kernels": 0, "syncs": 0, "h2d": 0}
    lines = {"kernels": {}, "syncs": {}, "h2d": {}}
    for name, counts in phases.items():
        result["phases"][name] = counts.totals()
        for key in total:
            total[key] += counts.totals()[key]
            for line, n in getattr(counts, key).items():
                lines[key][line] = lines[key].get(line, 0) + n
    result["total"] = total
    result["top_lines"] = {key: sorted(v.items(), key=lambda kv: -kv[1])[:top] for key, v in lines.items()}
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", help="write the counts here")
    p.add_argument("--top", type=int, default=8, help="source lines listed per counter")
    args = p.parse_args(argv)
    hw.set_backend("cupy")
    results = [count_step(name, batch, args.top) for name, batch in PRESETS.items()]
    print(f"{'preset':<9} {'batch':>5} {'forward':>8} {'loss':>6} {'book':>5} {'backward':>9} "
          f"{'optim':>6} {'total':>6} {'syncs':>6} {'h2d':>5}")
    for r in results:
        ph = r["phases"]
        print(f"{r['preset']:<9} {r['batch']:>5} {ph['forward']['kernels']:>8} {ph['loss']['kernels']:>6} "
              f"{ph['bookkeeping']['kernels']:>5} {ph['backward']['kernels']:>9} "
              f"{ph['optimizer']['kernels']:>6} {r['total']['kernels']:>6} {r['total']['syncs']:>6} "
              f"{r['total']['h2d']:>5}")
    for r in results:
        for key in ("syncs", "h2d"):
            for line, n in r["top_lines"][key]:
                print(f"  {r['preset']}: {key} {n} at {line}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
