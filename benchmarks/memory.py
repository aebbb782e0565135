"""Peak memory growth of four training steps, each system in a fresh process (issue 16's measure).

``python -m benchmarks.memory [--steps 4] [--nets vgg_style:64,bn_cnn:256]``

For each net, batch and system (tinygrad_hw on NumPy, PyTorch on the CPU) a new Python process
imports the library and makes the input batch; then, from before the net is built, it builds
the net (the same initial weights on both sides: ours, copied into PyTorch's twin), makes an
Adam optimizer and runs ``--steps`` training steps (cross-entropy, float32). Everything the
steps make counts -- weights, gradients, optimizer state, the graph, and caches such as
tinygrad_hw's per-thread kernel scratch memory -- unlike benchmarks/run.py's Peak MB column,
which counts from the start of one step. Before that window each process runs and drops one
step at batch 1, so the libraries' one-time start-up (numba loading its compiled kernels,
PyTorch's oneDNN primitives) is not counted.

Two measures: ``allocated``, the most bytes held at once by the allocator (ours: tracemalloc,
which sees NumPy's buffers and Python objects; PyTorch: its CPU allocator's running total from
the profiler, as in benchmarks/run.py); and ``RSS``, the peak resident set (``VmHWM``, reset
through ``/proc/self/clear_refs`` at the start) minus the resident size at the start, which also
counts what the libraries load on first use (PyTorch's oneDNN/MKL kernels and buffers) and
memory freed but kept by malloc. Linux only (reads /proc).
"""
from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(system, kind, batch, steps):
    import numpy as np

    import tinygrad_hw as hw
    from tinygrad_hw import models
    from tinygrad_hw.nn import functional as HF

    from . import nets

    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, size=batch).astype(np.int64)
    if system == "torch":
        import torch
        torch.manual_seed(0)
        torch.ones(1).sum()  # the library's own start-up allocations happen before the mark
        xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    else:
        xs, ys = hw.Tensor(x), hw.Tensor(y)
    hw.manual_seed(0)

    def work(xs=xs, ys=ys, steps=steps):
        template = nets.ours_builder(kind)()
        if system == "torch":
            model = nets.torch_builder(kind)()
            models.copy_weights(template, model)
            del template
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            loss_fn = torch.nn.functional.cross_entropy
        else:
            model = template
            opt = hw.optim.Adam(model.parameters(), lr=1e-3)
            loss_fn = HF.cross_entropy
        model.train()
        for _ in range(steps):
            loss = loss_fn(model(xs), ys)
            loss.backward()
            opt.step()
            opt.zero_grad()
        float(loss.item())
        work.kept = (model, opt)  # alive at the end, as in a training loop

    # one step at batch 1 first, then dropped: the libraries' one-time start-up (numba loading its
    # compiled kernels, PyTorch's oneDNN primitives) is not training memory
    work(xs[:1], ys[:1], 1)
    work.kept = None
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident size to the current one
    start = _status("VmRSS")
    if system == "torch":
        from .run import _torch_cpu_peak_bytes
        alloc = _torch_cpu_peak_bytes(torch, work)
    else:
        import tracemalloc
        tracemalloc.start()  # NumPy reports its buffers to tracemalloc
        work()
        alloc = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    print(json.dumps({"alloc": alloc, "peak": _status("VmHWM") - start, "kept": _status("VmRSS") - start}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--nets", default="vgg_style:64,bn_cnn:256", help="comma-separated kind:batch")
    ap.add_argument("--repeat", type=int, default=1, help="fresh processes per cell (the median is reported)")
    ap.add_argument("--child", nargs=3, metavar=("SYSTEM", "KIND", "BATCH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        system, kind, batch = args.child
        return child(system, kind, int(batch), args.steps)
    mib = 1 << 20
    print(f"Peak memory growth of {args.steps} training steps (Adam, float32), fresh processes, MiB")
    print("| net | batch | PyTorch allocated | ours allocated | ours / PyTorch | PyTorch RSS | ours RSS | ours / PyTorch (RSS) |")
    print("|---|---|---|---|---|---|---|---|")
    for item in args.nets.split(","):
        kind, batch = item.split(":")
        res = {}
        for system in ("torch", "ours"):
            runs = []
            for _ in range(args.repeat):
                out = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--steps", str(args.steps),
                                      "--child", system, kind, batch], check=True, capture_output=True,
                                     text=True).stdout
                runs.append(json.loads(out.strip().splitlines()[-1]))
            runs.sort(key=lambda r: r["alloc"])
            res[system] = runs[len(runs) // 2]
        t, o = res["torch"], res["ours"]
        print(f"| {kind} | {batch} | {t['alloc'] / mib:.1f} | {o['alloc'] / mib:.1f} | "
              f"{o['alloc'] / t['alloc']:.2f}x | {t['peak'] / mib:.1f} | {o['peak'] / mib:.1f} | "
              f"{o['peak'] / t['peak']:.2f}x |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
