"""Training-step benchmark of tinygrad_hw against PyTorch, both measured in this one process.

    python -m benchmarks.run [--backend numpy|cupy] [--quick] [--json PATH] [--only NAME,...]
                             [--profile ROW] [--update-report] [--wait-quiet SECONDS] [--threads N]

What it measures, row by row (``docs/benchmarks.md`` has the latest table):

* whole networks: one training step = forward, cross-entropy, backward, SGD (momentum 0.9) step
  and ``zero_grad`` -- the original exercise's CNN ``small_cnn`` (batch 4 and 64), a VGG-style CNN (batch 64
  and 128), ``bn_cnn`` (conv-BatchNorm-ReLU blocks, batch 256), ``resnet9`` (the ``resnet9``
  preset's net, batch 16) and ``fast_cnn``, the ``fast`` preset of the CIFAR-10 example, at its
  training batch size;
* single layers, forward + backward (the input and the parameters need gradients): conv2d 3x3 at
  32->32 on 32x32, 64->64 on 16x16 and 128->128 on 8x8, max_pool2d 2x2, linear 2048->256 and
  cross-entropy, all at batch 64;
* the raw float32 matrix product of each library (N = 1024 and 2048): the machine's limit;
* the per-op overhead of the graph: a chain of 100 small element-wise ops, forward + backward.

Both systems get the same initial weights (ours, copied into PyTorch), the same input batch
(random normal images, random labels; the same batch every step, so no data loading is timed)
and float32. The two are interleaved: each round times ``k`` steps of one, then ``k`` of the
other (the order alternates between rounds), after warm-up steps; a row's time is the median of
all its single-step times, and the ratio ours/PyTorch is the median of the per-round ratios, so
both sides of each ratio ran under the same machine conditions (``--quick``, with its 2 rounds of
one step, gives the ratio of the two ms columns instead).

Columns: ms per step, images per second, achieved GFLOP/s (2 x the multiply-accumulates of the
convolutions and linear layers: forward, weight gradient, and input gradient for every layer
whose input needs one -- not the first layer of a network), that as a fraction of the measured
matrix-product limit (the larger of NumPy's and PyTorch's rate), and peak memory: the most bytes
a step holds at once above what was alive before it (tinygrad_hw on NumPy: tracemalloc, which
sees NumPy's data buffers and Python objects; PyTorch on the CPU: its CPU allocator's running
total as reported to the profiler; CuPy: a memory-pool hook; CUDA: torch.cuda's peak counter).
Memory is measured on one separate, untimed step.
"""
from __future__ import annotations

import argparse
import cProfile
import datetime
import gc
import io
import json
import os
import platform
import pstats
import re
import statistics
import sys
import time
import traceback
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # keep the profiler's start/stop chatter off stderr

import numpy as np

import tinygrad_hw as hw  # noqa: E402
from tinygrad_hw import models  # noqa: E402
from tinygrad_hw import nn as hnn  # noqa: E402
from tinygrad_hw.nn import functional as HF  # noqa: E402

from . import nets  # noqa: E402

REPORT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
REPORT_BEGIN, REPORT_END = "<!-- results:begin -->", "<!-- results:end -->"
MB = 1024.0 * 1024.0


class BenchmarkError(RuntimeError):
    """A benchmark cannot run here (no CuPy, no CUDA...); main() prints it without a traceback."""


# -- the two systems ------------------------------------------------------------------------------
class Ours:
    """tinygrad_hw on one backend."""

    label = "tinygrad_hw"

    def __init__(self, backend: str):
        try:
            self.be = hw.get_backend(backend)
        except RuntimeError as exc:
            raise BenchmarkError(str(exc)) from exc
        hw.set_backend(self.be.name)
        self.xp = self.be.xp

    @property
    def device(self) -> str:
        return self.be.name

    def sync(self):
        self.be.synchronize()

    def tensor(self, array, requires_grad=False):
        return hw.Tensor(self.be.asarray(array), requires_grad=requires_grad)

    def peak_bytes(self, fn) -> int:
        """The most bytes held at once while ``fn()`` runs, above what was alive before it."""
        gc.collect()
        if self.be.name == "numpy":
            # NumPy reports its data buffers to tracemalloc (domain 389047), so the traced peak
            # covers arrays as well as Python objects; allocations from before start() and their
            # frees are not counted, which makes the number a delta over the live baseline.
            tracemalloc.start()
            try:
                fn()
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        return _cupy_peak_bytes(fn, self.sync)


def _cupy_peak_bytes(fn, sync) -> int:
    from cupy.cuda import memory_hook

    class PeakHook(memory_hook.MemoryHook):
        """Tracks the bytes handed out by the memory pool during the hook's lifetime."""

        name = "benchmark_peak"

        def __init__(self):
            self.live, self.current, self.peak = {}, 0, 0

        def malloc_postprocess(self, **kw):
            self.live[kw["mem_ptr"]] = kw["mem_size"]
            self.current += kw["mem_size"]
            self.peak = max(self.peak, self.current)

        def free_preprocess(self, **kw):
            self.current -= self.live.pop(kw["mem_ptr"], 0)

    hook = PeakHook()
    with hook:
        fn()
        sync()
    return hook.peak


class Torch:
    """PyTorch on the CPU, or on CUDA."""

    label = "torch"

    def __init__(self, device: str):
        import torch
        self.torch = torch
        if device == "cuda" and not torch.cuda.is_available():
            raise BenchmarkError(f"--backend cupy compares against PyTorch on CUDA, but this torch "
                                 f"({torch.__version__}) has no usable CUDA device")
        self.device = device

    def sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def tensor(self, array, requires_grad=False):
        t = self.torch.from_numpy(np.array(array, copy=True)).to(self.device)
        return t.requires_grad_(requires_grad) if requires_grad else t

    def peak_bytes(self, fn) -> int:
        torch = self.torch
        gc.collect()
        if self.device == "cuda":
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            fn()
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - base
        return _torch_cpu_peak_bytes(torch, fn)


class _quiet_stderr:
    """Silence file descriptor 2 (C++ code writes there directly, bypassing sys.stderr)."""

    def __enter__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)

    def __exit__(self, *exc):
        os.dup2(self.saved, 2)
        os.close(self.saved)


def _torch_cpu_peak_bytes(torch, fn) -> int:
    """Peak of the CPU allocator's running total during ``fn()``, from the profiler's memory events.

    While memory profiling is on, c10's CPU allocator keeps a running total of the bytes it
    allocated (and frees of those) and reports it with every event; like tracemalloc, blocks
    allocated before the profiler started do not count, so peak minus the total before the first
    event is the step's working memory."""
    # the autograd profiler, not torch.profiler: the latter imports torch._dynamo (seconds)
    from torch.autograd.profiler import profile
    prof = profile(profile_memory=True, use_kineto=True)
    with _quiet_stderr():  # kineto prints start/stop lines from C++
        prof.__enter__()
    try:
        fn()
    finally:
        with _quiet_stderr():
            prof.__exit__(None, None, None)
    events = []

    def walk(node):
        extra = node.extra_fields
        if hasattr(extra, "total_allocated") and hasattr(extra, "alloc_size"):
            events.append((node.start_time_ns, extra.alloc_size, extra.total_allocated))
        for child in node.children:
            walk(child)

    for root in prof.kineto_results.experimental_event_tree():
        walk(root)
    if not events:
        return 0
    events.sort(key=lambda e: e[0])
    _, first_size, first_total = events[0]
    base = first_total - first_size
    return max(total for _, _, total in events) - base


# -- rows -----------------------------------------------------------------------------------------
@dataclass
class Case:
    """One side of a row: ``step()`` runs one timed unit of work."""

    step: Callable[[], object]
    peak: Callable[[], int] | None = None


@dataclass
class Row:
    name: str
    group: str  # 'net', 'layer', 'matmul', 'overhead'
    batch: int
    setup: Callable  # (system) -> Case
    macs: int = 0  # multiply-accumulates of one step (training: forward + backward)
    images: int = 0  # images (samples) per step, 0 where it means nothing
    ops: int = 0  # recorded ops per step (overhead row)
    note: str = ""
    extra: dict = field(default_factory=dict)


def count_training_macs(torch_model, x_shape, torch) -> tuple[int, int]:
    """(forward MACs, training MACs) of the convolutions and linear layers of ``torch_model``.

    Training = forward + weight gradient (same MACs as forward, where the weight needs a
    gradient) + input gradient (same again, only where the layer's input needs a gradient: the
    first layer's input is data and needs none). Counted with forward hooks on a CPU copy."""
    counts = {"fwd": 0, "train": 0}

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            cin = module.in_channels // module.groups
            kh, kw = module.kernel_size
            macs = output.numel() * cin * kh * kw
        else:
            macs = output.numel() * module.in_features
        counts["fwd"] += macs
        counts["train"] += macs
        if module.weight.requires_grad:
            counts["train"] += macs
        if inputs[0].requires_grad:
            counts["train"] += macs

    handles = [m.register_forward_hook(hook) for m in torch_model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        was_training = torch_model.training
        torch_model.eval()
        torch_model(torch.zeros(x_shape))
        torch_model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return counts["fwd"], counts["train"]


def net_row(name, batch, build_ours, build_torch, torch, image_shape=(3, 32, 32), classes=10,
            lr=0.01, note=""):
    """A whole-network training-step row. ``build_ours()``/``build_torch()`` make the twin nets."""
    hw.manual_seed(0)
    torch.manual_seed(0)
    template = build_ours()  # our initial weights, shared by both sides
    twin = build_torch()
    models.copy_weights(template, twin)
    _, macs = count_training_macs(twin, (batch,) + tuple(image_shape), torch)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch,) + tuple(image_shape)).astype(np.float32)
    y = rng.integers(0, classes, size=batch).astype(np.int64)
    state = {k: np.array(v.numpy(), copy=True) for k, v in template.state_dict().items()}
    checks = {}

    def setup(system):
        if isinstance(system, Ours):
            hw.manual_seed(0)
            model = build_ours()
            model.load_state_dict(state)
            model.to(system.device)
            xs, ys = system.tensor(x), system.tensor(y)
            opt = hw.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
            model.eval()
            with hw.no_grad():
                checks["eval_loss_ours"] = float(HF.cross_entropy(model(xs), ys).item())
            model.train()

            def step():
                loss = HF.cross_entropy(model(xs), ys)
                loss.backward()
                opt.step()
                opt.zero_grad()
                return loss
        else:
            torch.manual_seed(0)
            model = build_torch()
            model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
            model.to(system.device)
            xs, ys = system.tensor(x), system.tensor(y)
            opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
            model.eval()
            with torch.no_grad():
                checks["eval_loss_torch"] = float(torch.nn.functional.cross_entropy(model(xs), ys).item())
            model.train()

            def step():
                loss = torch.nn.functional.cross_entropy(model(xs), ys)
                loss.backward()
                opt.step()
                opt.zero_grad()
                return loss
        return Case(step)

    return Row(name, "net", batch, setup, macs=macs, images=batch, note=note, extra=checks)


def conv_row(batch, cin, cout, size, torch):
    name = f"conv2d 3x3 {cin}->{cout} @{size}x{size}"
    macs_fwd = batch * cout * size * size * cin * 9
    rng = np.random.default_rng(2)
    x = rng.standard_normal((batch, cin, size, size)).astype(np.float32)
    g = rng.standard_normal((batch, cout, size, size)).astype(np.float32)
    hw.manual_seed(0)
    layer = hnn.Conv2d(cin, cout, 3, padding=1)
    w, b = layer.weight.numpy().copy(), layer.bias.numpy().copy()

    def setup(system):
        xs, gs = system.tensor(x, requires_grad=True), system.tensor(g)
        if isinstance(system, Ours):
            conv = hnn.Conv2d(cin, cout, 3, padding=1)
            conv.load_state_dict({"weight": w, "bias": b})
            conv.to(system.device)
        else:
            conv = torch.nn.Conv2d(cin, cout, 3, padding=1)
            conv.load_state_dict({"weight": torch.from_numpy(w), "bias": torch.from_numpy(b)})
            conv.to(system.device)
        return Case(_layer_step(conv, xs, gs, list(conv.parameters())))

    return Row(name, "layer", batch, setup, macs=3 * macs_fwd, images=batch)


def _layer_step(fn, x, g, params):
    """Forward + backward of ``fn(x)`` against the fixed output gradient ``g``; grads reset."""
    def step():
        out = fn(x)
        out.backward(g)
        x.grad = None
        for p in params:
            p.grad = None
        return out
    return step


def pool_row(batch, channels, size, torch):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((batch, channels, size, size)).astype(np.float32)
    g = rng.standard_normal((batch, channels, size // 2, size // 2)).astype(np.float32)

    def setup(system):
        xs, gs = system.tensor(x, requires_grad=True), system.tensor(g)
        fn = (lambda t: HF.max_pool2d(t, 2)) if isinstance(system, Ours) else \
            (lambda t: torch.nn.functional.max_pool2d(t, 2))
        return Case(_layer_step(fn, xs, gs, []))

    return Row(f"max_pool2d 2x2 {channels}ch @{size}x{size}", "layer", batch, setup, images=batch)


def linear_row(batch, fin, fout, torch):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((batch, fin)).astype(np.float32)
    g = rng.standard_normal((batch, fout)).astype(np.float32)
    hw.manual_seed(0)
    layer = hnn.Linear(fin, fout)
    w, b = layer.weight.numpy().copy(), layer.bias.numpy().copy()

    def setup(system):
        xs, gs = system.tensor(x, requires_grad=True), system.tensor(g)
        if isinstance(system, Ours):
            lin = hnn.Linear(fin, fout)
            lin.load_state_dict({"weight": w, "bias": b})
            lin.to(system.device)
        else:
            lin = torch.nn.Linear(fin, fout)
            lin.load_state_dict({"weight": torch.from_numpy(w), "bias": torch.from_numpy(b)})
            lin.to(system.device)
        return Case(_layer_step(lin, xs, gs, list(lin.parameters())))

    return Row(f"linear {fin}->{fout}", "layer", batch, setup, macs=3 * batch * fin * fout, images=batch)


def cross_entropy_row(batch, classes, torch):
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((batch, classes)).astype(np.float32)
    labels = rng.integers(0, classes, size=batch).astype(np.int64)

    def setup(system):
        xs, ys = system.tensor(logits, requires_grad=True), system.tensor(labels)
        if isinstance(system, Ours):
            def step():
                loss = HF.cross_entropy(xs, ys)
                loss.backward()
                xs.grad = None
                return loss
        else:
            def step():
                loss = torch.nn.functional.cross_entropy(xs, ys)
                loss.backward()
                xs.grad = None
                return loss
        return Case(step)

    return Row(f"cross_entropy {classes} classes", "layer", batch, setup, images=batch)


def matmul_row(n, torch):
    rng = np.random.default_rng(6)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)

    def setup(system):
        if isinstance(system, Ours):  # the raw array library under tinygrad_hw: the limit it can reach
            xp = system.xp
            aa, bb = system.be.asarray(a), system.be.asarray(b)
            out = xp.empty((n, n), dtype=np.float32)
            return Case(lambda: xp.matmul(aa, bb, out=out))
        aa, bb = system.tensor(a), system.tensor(b)
        out = torch.empty((n, n), dtype=torch.float32, device=system.device)
        return Case(lambda: torch.mm(aa, bb, out=out))

    return Row(f"matmul float32 {n}x{n}", "matmul", n, setup, macs=n ** 3,
               note="ours = the backend's array library (NumPy/CuPy) directly")


def overhead_row(torch, chain=100, size=8):
    """A chain of ``chain`` tiny element-wise ops and a sum, forward + backward: time per op is
    (almost) pure per-op cost of building and walking the graph."""
    x0 = np.linspace(0.5, 1.5, size, dtype=np.float32)

    def setup(system):
        x = system.tensor(x0, requires_grad=True)

        def step():
            y = x
            for i in range(chain // 2):
                y = y * 1.0001
                y = y + 0.001
            loss = y.sum()
            loss.backward()
            x.grad = None
            return loss
        return Case(step)

    return Row(f"op overhead ({chain} ops of {size} elements)", "overhead", 1, setup, ops=chain + 1,
               note="us per recorded op, forward + backward")


# -- networks ------------------------------------------------------------------------------------
def build_rows(args, torch, only=None) -> list[Row]:
    quick = args.quick
    rows = []

    def want(name):
        return not only or any(o.lower() in name.lower() for o in only)

    def add(name, make):
        if want(name):
            rows.append(make())

    # resnet9 (the resnet9 preset's net) at a CPU-sized batch, not its GPU batch of 512
    net_batches = {"small_cnn": (4, 64), "vgg_style": (64, 128), "bn_cnn": (256,), "resnet9": (16,)}
    if quick:
        net_batches = {"small_cnn": (2,), "vgg_style": (2,), "bn_cnn": (2,), "resnet9": (2,)}
    for kind, batches in net_batches.items():
        for b in batches:
            add(f"{kind} net", lambda b=b, kind=kind: net_row(
                f"{kind} net", b, nets.ours_builder(kind), nets.torch_builder(kind), torch,
                note=nets.DESCRIPTIONS[kind]))
    add("fast_cnn net", lambda: net_row("fast_cnn net", 2 if quick else nets.FAST_PRESET_BATCH,
                                        nets.ours_builder("fast_cnn"), nets.torch_builder("fast_cnn"), torch,
                                        note=nets.DESCRIPTIONS["fast_cnn"]))
    lb = 2 if quick else 64
    for cin, size in ((32, 32), (64, 16), (128, 8)):
        if quick:
            size = 8
        add(f"conv2d 3x3 {cin}->{cin} @{size}x{size}", lambda cin=cin, size=size: conv_row(lb, cin, cin, size, torch))
    add("max_pool2d", lambda: pool_row(lb, 32, 8 if quick else 32, torch))
    add("linear 2048->256", lambda: linear_row(lb, 2048, 256, torch))
    add("cross_entropy", lambda: cross_entropy_row(lb, 10, torch))
    for n in ((512,) if quick else (1024, 2048)):  # 512: near the machine's rate, so "% limit" means it
        add(f"matmul float32 {n}x{n}", lambda n=n: matmul_row(n, torch))
    add("op overhead", lambda: overhead_row(torch, chain=20 if quick else 100))
    return rows


# -- timing ---------------------------------------------------------------------------------------
def _time_steps(step, sync, k) -> list[float]:
    times = []
    for _ in range(k):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def _busy_seconds():
    """(CPU-seconds all processes spent busy, CPU-seconds this process used) so far; None
    off Linux. Their difference over a row is the CPU time other processes took from it."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        ticks = [int(v) for v in fields]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        busy = (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    t = os.times()
    return busy, t.user + t.system


def measure(row: Row, ours: Ours, theirs: Torch, cfg) -> dict:
    """Interleaved timing of one row; returns its JSON record."""
    started = time.perf_counter()
    busy_start = _busy_seconds()
    sides = {"ours": (ours, row.setup(ours)), "torch": (theirs, row.setup(theirs))}
    # warm-up (scratch buffers, BLAS threads, allocator caches), alternating
    warm = {"ours": [], "torch": []}
    for _ in range(cfg.warmup):
        for key, (system, case) in sides.items():
            warm[key] += _time_steps(case.step, system.sync, 1)
    slowest = max(min(v) for v in warm.values())
    k = max(1, min(cfg.max_steps, int(cfg.round_seconds / max(slowest, 1e-6))))
    gc.collect()
    times = {"ours": [], "torch": []}
    ratios = []
    for r in range(cfg.rounds):
        order = ("ours", "torch") if r % 2 == 0 else ("torch", "ours")
        this_round = {}
        for key in order:
            system, case = sides[key]
            this_round[key] = _time_steps(case.step, system.sync, k)
            times[key] += this_round[key]
        ratios.append(statistics.median(this_round["ours"]) / statistics.median(this_round["torch"]))
    record = {"name": row.name, "group": row.group, "batch": row.batch, "steps_per_round": k,
              "rounds": cfg.rounds, "warmup": cfg.warmup, "macs_per_step": row.macs or None,
              "images_per_step": row.images or None, "note": row.note}
    for key, (system, case) in sides.items():
        med = statistics.median(times[key])
        side = {"median_ms": med * 1e3, "min_ms": min(times[key]) * 1e3, "steps_timed": len(times[key]),
                "images_per_s": row.images / med if row.images else None,
                "gflops": 2 * row.macs / med / 1e9 if row.macs else None}
        if row.ops:
            side["us_per_op"] = med / row.ops * 1e6
        if cfg.memory:
            side["peak_mem_mb"] = system.peak_bytes(lambda: (case.step(), system.sync())) / MB
        else:
            side["peak_mem_mb"] = None
        record[key] = side
    record["ratio"] = statistics.median(ratios)  # ours / torch, paired round by round
    if cfg.rounds < 3:  # --quick: a median of 2 noisy ratios says little; the ms columns' ratio
        record["ratio"] = record["ours"]["median_ms"] / record["torch"]["median_ms"]
    record["round_ratios"] = ratios
    record.update(row.extra)
    wall = time.perf_counter() - started
    record["wall_s"] = round(wall, 2)
    busy_end = _busy_seconds()
    if busy_start and busy_end:
        # cores' worth of CPU that other processes used while this row ran (0 on a quiet machine)
        others = (busy_end[0] - busy_start[0]) - (busy_end[1] - busy_start[1])
        record["other_processes_cpu"] = round(max(0.0, others) / wall, 2)
    return record


def others_cpu(window: float = 1.0):
    """Cores' worth of CPU that other processes use, sampled over ``window`` seconds (None off Linux)."""
    a = _busy_seconds()
    time.sleep(window)
    b = _busy_seconds()
    if not a or not b:
        return None
    return max(0.0, (b[0] - a[0]) - (b[1] - a[1])) / window


def wait_for_quiet(limit_s: float, max_cores: float) -> float:
    """Sleep until other processes use under ``max_cores`` for 3 s in a row, or ``limit_s`` passed.
    Returns the seconds waited."""
    start = time.perf_counter()
    calm = 0
    while time.perf_counter() - start < limit_s:
        load = others_cpu(1.0)
        if load is None:
            break
        calm = calm + 1 if load < max_cores else 0
        if calm >= 3:
            break
    return time.perf_counter() - start


def measure_when_quiet(row, ours, theirs, cfg, wait_s: float, max_cores: float, retries: int = 2) -> dict:
    """``measure(row)``; with ``wait_s`` > 0 each attempt first waits (up to ``wait_s``) for other
    processes to go quiet, and a row they disturbed anyway (used over ``max_cores``) is measured
    again, up to ``retries`` times; the least disturbed attempt is kept."""
    if wait_s <= 0:
        return measure(row, ours, theirs, cfg)
    best = None
    waited = 0.0
    for attempt in range(retries + 1):
        waited += wait_for_quiet(wait_s, max_cores)
        rec = measure(row, ours, theirs, cfg)
        rec["attempt"] = attempt + 1
        disturbed = rec.get("other_processes_cpu") or 0.0
        if best is None or disturbed < (best.get("other_processes_cpu") or 0.0):
            best = rec
        if disturbed <= max_cores or attempt == retries:
            break
        print(f"  ({row.name}: other processes used {disturbed:.2f} cores; measuring again)", flush=True)
    best["waited_for_quiet_s"] = round(waited, 1)
    return best


def apply_limit(records, limit_gflops):
    for rec in records:
        for key in ("ours", "torch"):
            g = rec[key]["gflops"]
            rec[key]["frac_of_limit"] = g / limit_gflops if (g is not None and limit_gflops) else None


# -- environment report ---------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb():
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        return None


def configure_threads(torch, threads: int) -> dict:
    """Give both libraries ``threads`` threads; return what each reports (threadpoolctl)."""
    info = {"threads": threads}
    # tinygrad_hw's NumPy convolutions run chunks in their own worker threads (one per usable
    # core unless told otherwise): hold them to the same count.
    from tinygrad_hw.kernels import parallel as hw_parallel
    hw_parallel.WORKERS = threads
    info["tinygrad_hw_conv_workers"] = threads
    torch.set_num_threads(threads)
    info["torch_threads"] = torch.get_num_threads()
    try:
        import threadpoolctl
        # keep a reference: the limits hold while the object lives (and we never restore them)
        info["_limiter"] = threadpoolctl.threadpool_limits(limits=threads, user_api="blas")
        pools = threadpoolctl.threadpool_info()
        info["threadpools"] = [{k: p.get(k) for k in ("user_api", "internal_api", "prefix", "version",
                                                       "architecture", "threading_layer", "num_threads",
                                                       "filepath")} for p in pools]
    except ImportError:
        info["threadpools"] = None
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        info["numpy_blas"] = {k: blas.get(k) for k in ("name", "version", "openblas configuration")}
    except Exception:  # older NumPy without mode='dicts'
        info["numpy_blas"] = None
    torch_cfg = torch.__config__.show()
    m = re.search(r"BLAS_INFO=(\w+)", torch_cfg)
    info["torch_blas"] = m.group(1) if m else None
    m = re.search(r"CPU capability usage: (\w+)", torch_cfg)
    info["torch_cpu_capability"] = m.group(1) if m else None
    return info


def environment(args, torch, threads_info) -> dict:
    env = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "python -m benchmarks.run " + " ".join(args.argv),
        "backend": args.backend,
        "torch_device": "cuda" if args.backend == "cupy" else "cpu",
        "quick": args.quick,
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "memory_gb": _memory_gb(),
                    "platform": platform.platform(), "python": platform.python_version()},
        "versions": {"numpy": np.__version__, "torch": torch.__version__, "tinygrad_hw": hw.__version__},
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                                               "OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        "threads": {k: v for k, v in threads_info.items() if not k.startswith("_")},
        "loadavg_start": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "compiled": compiled_kernels(args.backend),
    }
    if args.backend == "cupy":
        try:
            import cupy
            props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
            env["gpu"] = {"name": props["name"].decode() if isinstance(props["name"], bytes) else props["name"],
                          "cupy": cupy.__version__, "torch_cuda": torch.version.cuda}
        except Exception as exc:  # report, don't fail: the timings are still valid
            env["gpu"] = {"error": str(exc)}
    return env


def compiled_kernels(backend: str) -> dict:
    """The compiled (numba) kernels: whether they run, and the seconds their first calls took in
    this process (compiling, or loading numba's on-disk cache), spent here, before any row: so
    never in a timed step (the rows' warm-up steps would absorb it anyway)."""
    from tinygrad_hw.kernels import compiled, compiled_optim
    info = {"numba": compiled.numba.__version__ if compiled.AVAILABLE else None,
            "enabled": bool(compiled.AVAILABLE and compiled.ENABLED and backend == "numpy")}
    if info["enabled"]:
        start = time.perf_counter()
        compiled.warm_up()
        compiled_optim.warm_up()
        info["first_calls_s"] = round(time.perf_counter() - start, 3)
    else:
        info["first_calls_s"] = None
    return info


def print_environment(env):
    t = env["threads"]
    print(f"machine: {env['machine']['cpu']}, {env['machine']['cores']} cores, "
          f"{env['machine']['memory_gb']} GB; {env['machine']['platform']}; Python {env['machine']['python']}")
    if "gpu" in env:
        print(f"gpu: {env['gpu']}")
    print(f"versions: numpy {env['versions']['numpy']}, torch {env['versions']['torch']}, "
          f"tinygrad_hw {env['versions']['tinygrad_hw']}; backend {env['backend']} vs torch on {env['torch_device']}")
    print(f"threads: numpy BLAS {t['threads']}, tinygrad_hw workers {t.get('tinygrad_hw_conv_workers')}, "
          f"torch {t['torch_threads']} (torch BLAS: {t['torch_blas']}, "
          f"CPU capability {t['torch_cpu_capability']})")
    for p in t.get("threadpools") or []:
        print(f"  threadpoolctl: {p['user_api']}/{p['internal_api']} {p['prefix']} {p['version'] or ''} "
              f"kernel={p['architecture']} threads={p['num_threads']} ({Path(p['filepath']).name})")
    set_env = {k: v for k, v in env["env"].items() if v is not None}
    print(f"env: {set_env or 'no OPENBLAS_/OMP_/MKL_ variables set'}; load average at start "
          f"{env['loadavg_start']}")
    print(f"compiled kernels: {_compiled_text(env)}")


def _compiled_text(env) -> str:
    c = env.get("compiled") or {}
    if not c.get("enabled"):
        return f"off (numba {c.get('numba') or 'not installed'}; the NumPy kernels run)"
    return (f"numba {c['numba']}, first calls (compile or cache load) {c['first_calls_s']:.2f} s "
            f"before the rows, not timed")


# -- output ---------------------------------------------------------------------------------------
def _fmt(value, spec, none="-"):
    return none if value is None else format(value, spec)


def markdown_table(result) -> str:
    limit = result["matmul_limit"]
    lines = ["| row | batch | ours ms | torch ms | ours/torch | rounds' range | ours img/s | torch img/s | ours GFLOP/s "
             "| torch GFLOP/s | ours % limit | torch % limit | ours peak MB | torch peak MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for rec in result["rows"]:
        o, t = rec["ours"], rec["torch"]
        if rec["group"] == "overhead":
            ms = (f"{o['us_per_op']:.1f} us/op", f"{t['us_per_op']:.1f} us/op")
        else:
            ms = (_fmt(o["median_ms"], ".3g" if o["median_ms"] < 10 else ".1f"),
                  _fmt(t["median_ms"], ".3g" if t["median_ms"] < 10 else ".1f"))
        pct = lambda s: None if s["frac_of_limit"] is None else 100 * s["frac_of_limit"]  # noqa: E731
        rr = rec.get("round_ratios") or [rec["ratio"]]
        spread = f"{min(rr):.2f}-{max(rr):.2f}"
        lines.append(
            f"| {rec['name']} | {rec['batch']} | {ms[0]} | {ms[1]} | {rec['ratio']:.2f} | {spread} "
            f"| {_fmt(o['images_per_s'], '.0f')} | {_fmt(t['images_per_s'], '.0f')} "
            f"| {_fmt(o['gflops'], '.1f')} | {_fmt(t['gflops'], '.1f')} "
            f"| {_fmt(pct(o), '.0f')} | {_fmt(pct(t), '.0f')} "
            f"| {_fmt(o['peak_mem_mb'], '.1f')} | {_fmt(t['peak_mem_mb'], '.1f')} |")
    lines.append("")
    if limit["gflops"]:
        lines.append(f"Matrix-product limit: {limit['gflops']:.1f} GFLOP/s (float32; NumPy/CuPy "
                     f"{limit['ours_gflops']:.1f}, torch {limit['torch_gflops']:.1f}).")
    else:
        lines.append("Matrix-product limit: not measured (no matmul row in this run).")
    others = [r["other_processes_cpu"] for r in result["rows"] if r.get("other_processes_cpu") is not None]
    if others:
        lines.append(f"Other processes used {statistics.mean(others):.2f} cores on average during "
                     f"the rows (at most {max(others):.2f} in one row; 0 on a quiet machine).")
        if max(others) > 0.25:
            lines.append("**Measured on a busy machine: the numbers are provisional; re-run on a quiet one.**")
    return "\n".join(lines)


def update_report(result, table, path=REPORT):
    env = result["environment"]
    m = env["machine"]
    pools = env["threads"].get("threadpools") or []
    kernels = ", ".join(f"{p['internal_api']} {p['version']} kernel {p['architecture']}" for p in pools
                        if p["user_api"] == "blas") or "unknown"
    block = "\n".join([
        REPORT_BEGIN,
        f"Command: `{env['command']}` ({env['date']}).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, {m['platform']}, "
        f"Python {m['python']}; numpy {env['versions']['numpy']} (BLAS: {kernels}), torch "
        f"{env['versions']['torch']} ({env['threads']['torch_blas']}, {env['threads']['torch_cpu_capability']}); "
        f"threads: {env['threads']['threads']} BLAS / {env['threads'].get('tinygrad_hw_conv_workers')} "
        f"tinygrad_hw workers / {env['threads']['torch_threads']} torch; "
        f"{', '.join(f'{k}={v}' for k, v in env['env'].items() if v is not None) or 'no OPENBLAS_/OMP_/MKL_ variables set'}; "
        f"load average at start {env['loadavg_start']}; compiled kernels: {_compiled_text(env)}."
        + (f" GPU: {env['gpu']}." if "gpu" in env else ""),
        "",
        table,
        REPORT_END,
    ])
    text = path.read_text() if path.exists() else ""
    if REPORT_BEGIN in text and REPORT_END in text:
        head, rest = text.split(REPORT_BEGIN, 1)
        tail = rest.split(REPORT_END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def op_breakdown(case: Case, system: Ours, steps: int) -> tuple[float, dict]:
    """Wall time of ``steps`` steps and the part of it spent in each op class (the ``forward`` of
    the op, including the ops that backward passes record), timed around every ``forward`` of the
    subclasses of ``Function``. Each op's forward works on arrays and records no ops itself, so the
    parts do not overlap (an outer forward alone is counted); the rest -- the engine, the Python
    layers, the array-level first-order backwards (Linear, BatchNorm, cross-entropy) and the
    optimizer -- is "outside ops"."""
    from tinygrad_hw.autograd.function import Function
    spent: dict[str, list] = {}
    depth = [0]

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    def timed(forward):
        def wrapper(self, *arrays):
            if depth[0]:
                return forward(self, *arrays)
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                out = forward(self, *arrays)
                system.sync()
            finally:
                depth[0] -= 1
            entry = spent.setdefault(type(self).__name__, [0.0, 0])
            entry[0] += time.perf_counter() - t0
            entry[1] += 1
            return out
        return wrapper

    originals = {cls: cls.__dict__["forward"] for cls in set(subclasses(Function)) if "forward" in cls.__dict__}
    for cls, forward in originals.items():
        cls.forward = timed(forward)
    try:
        t0 = time.perf_counter()
        for _ in range(steps):
            case.step()
        system.sync()
        total = time.perf_counter() - t0
    finally:
        for cls, forward in originals.items():
            cls.forward = forward
    return total, spent


def profile_row(row: Row, ours: Ours, steps: int, top: int = 25) -> str:
    """Our side of ``row`` after a warm-up: time per op class, then cProfile's top functions.

    cProfile sees only the main thread: time the kernels spend waiting on worker threads shows
    up as lock acquisition, which is why the op table comes first."""
    case = row.setup(ours)
    for _ in range(2):
        case.step()
    ours.sync()
    out = io.StringIO()
    total, spent = op_breakdown(case, ours, steps)
    in_ops = sum(v[0] for v in spent.values())
    out.write(f"time per op class over {steps} steps ({total / steps * 1e3:.1f} ms per step):\n")
    out.write(f"  {'op':<24} {'ms/step':>9} {'share':>6} {'calls/step':>10}\n")
    for name, (sec, calls) in sorted(spent.items(), key=lambda kv: -kv[1][0]):
        out.write(f"  {name:<24} {sec / steps * 1e3:>9.2f} {sec / total:>6.1%} {calls / steps:>10.0f}\n")
    out.write(f"  {'(outside ops)':<24} {(total - in_ops) / steps * 1e3:>9.2f} {(total - in_ops) / total:>6.1%}\n\n")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        case.step()
    ours.sync()
    prof.disable()
    stats = pstats.Stats(prof, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


# -- main -----------------------------------------------------------------------------------------
@dataclass
class Config:
    warmup: int
    rounds: int
    round_seconds: float
    max_steps: int
    memory: bool


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy",
                   help="tinygrad_hw's backend; PyTorch runs on the CPU for numpy, on CUDA for cupy")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes, one warm-up step, two rounds of one step: a smoke test, not a measurement")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    p.add_argument("--only", metavar="NAMES", help="comma-separated substrings: run only matching rows")
    p.add_argument("--rounds", type=int, help="interleaved rounds per row (default 7; quick: 2)")
    p.add_argument("--round-seconds", type=float, default=0.5,
                   help="target length of one side's part of a round (sets the steps per round)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory step")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="on a shared machine: before each row wait up to SECONDS for other processes "
                        "to go quiet, and measure a row again (twice at most) when they disturbed it")
    p.add_argument("--quiet-cores", type=float, default=0.2,
                   help="what counts as quiet for --wait-quiet: other processes using under this many cores")
    p.add_argument("--threads", type=int,
                   help="threads for both libraries (default: all cores; quick: 1, which keeps the smoke "
                        "test fast on a busy machine where spinning thread pools thrash)")
    p.add_argument("--profile", metavar="ROW", help="cProfile our side of the first row matching ROW and exit")
    p.add_argument("--profile-steps", type=int, default=5)
    p.add_argument("--update-report", "--update-readme", dest="update_report", action="store_true",
                   help="write the table into docs/benchmarks.md between the results markers")
    args = p.parse_args(argv)
    args.argv = list(argv)
    if args.threads is None:
        args.threads = 1 if args.quick else (os.cpu_count() or 1)
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        ours = Ours(args.backend)  # first: a missing CuPy fails fast, before torch's slow import
        try:
            import torch
        except ImportError as exc:
            raise BenchmarkError("the benchmark compares against PyTorch: pip install torch") from exc
        theirs = Torch("cuda" if args.backend == "cupy" else "cpu")
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    threads_info = configure_threads(torch, args.threads)
    # Move everything imported so far (torch's large object graph) out of the collector's reach:
    # collections during the timed steps and the gc.collect() between rows stay cheap.
    gc.collect()
    gc.freeze()
    env = environment(args, torch, threads_info)
    print_environment(env)
    if env["loadavg_start"] and env["loadavg_start"][0] > 0.5 * (os.cpu_count() or 1) and not args.quick:
        print(f"warning: the machine is busy (1-minute load {env['loadavg_start'][0]:.2f} on "
              f"{os.cpu_count()} cores); timings will be noisy", file=sys.stderr)
    only = [s.strip() for s in args.only.split(",")] if args.only else None

    if args.profile:
        rows = build_rows(args, torch, only=[args.profile])
        if not rows:
            print(f"error: no row matches {args.profile!r}", file=sys.stderr)
            return 2
        print(f"\ncProfile of tinygrad_hw, {args.profile_steps} steps of '{rows[0].name}' "
              f"(batch {rows[0].batch}):")
        print(profile_row(rows[0], ours, args.profile_steps))
        return 0

    cfg = Config(warmup=1 if args.quick else 3,
                 rounds=args.rounds or (2 if args.quick else 7),
                 round_seconds=0.0 if args.quick else args.round_seconds,
                 max_steps=1 if args.quick else 50,
                 memory=not args.no_memory)
    rows = build_rows(args, torch, only=only)
    records = []
    started = time.perf_counter()
    header = (f"{'row':<34} {'batch':>5} {'ours ms':>9} {'torch ms':>9} {'ratio':>6} {'ours GF/s':>9} "
              f"{'torch GF/s':>10} {'others':>6}")
    print("\n" + header)
    failed = []
    for row in rows:
        try:
            rec = measure_when_quiet(row, ours, theirs, cfg, args.wait_quiet, args.quiet_cores)
        except Exception as exc:  # one failing row (a GPU out of memory, a missing kernel) must
            # not lose the others: it is recorded with its error, and the exit status says so
            failed.append({"name": row.name, "group": row.group, "batch": row.batch,
                           "error": f"{type(exc).__name__}: {exc}",
                           "traceback": traceback.format_exc(limit=-8)})
            print(f"{row.name:<34} {row.batch:>5} FAILED: {type(exc).__name__}: {exc}", flush=True)
            gc.collect()  # what the failed row held (on a GPU: its memory-pool blocks)
            continue
        records.append(rec)
        o, t = rec["ours"], rec["torch"]
        print(f"{row.name:<34} {row.batch:>5} {o['median_ms']:>9.3f} {t['median_ms']:>9.3f} "
              f"{rec['ratio']:>6.2f} {_fmt(o['gflops'], '9.1f', ' ' * 8 + '-')} "
              f"{_fmt(t['gflops'], '10.1f', ' ' * 9 + '-')} {_fmt(rec.get('other_processes_cpu'), '6.2f', '     -')}",
              flush=True)

    mm = [r for r in records if r["group"] == "matmul"]
    ours_limit = max((r["ours"]["gflops"] for r in mm), default=0.0)
    torch_limit = max((r["torch"]["gflops"] for r in mm), default=0.0)
    limit = max(ours_limit, torch_limit)
    apply_limit(records, limit)
    env["loadavg_end"] = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    env["seconds"] = round(time.perf_counter() - started, 1)
    result = {
        "environment": env,
        "matmul_limit": {"gflops": limit, "ours_gflops": ours_limit, "torch_gflops": torch_limit},
        "memory_method": ("peak bytes held during one untimed step above the live baseline: "
                          + ("tracemalloc (NumPy buffers + Python objects)" if args.backend == "numpy"
                             else "CuPy memory-pool hook")
                          + " for tinygrad_hw; "
                          + ("the CPU allocator's running total from the PyTorch profiler's memory events"
                             if args.backend == "numpy" else "torch.cuda.max_memory_allocated")
                          + " for torch"),
        "rows": records,
        "failed": failed,
    }
    table = markdown_table(result)
    print("\n" + table)
    print(f"\n{len(records)} rows in {env['seconds']} s; load average at end {env['loadavg_end']}"
          + (f"; {len(failed)} FAILED: {', '.join(f['name'] for f in failed)}" if failed else ""))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1, default=float) + "\n")
        print(f"wrote {path}")
    if args.update_report:
        update_report(result, table)
        print(f"updated {REPORT}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
