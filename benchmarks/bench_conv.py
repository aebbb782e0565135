"""Time conv2d forward+backward (and max-pool) of tinygrad_hw against torch.nn.functional.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_conv.py [--profile]
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_conv.py --algorithms

``--algorithms`` times every 3x3 layer shape of the benchmark's networks (batch as they are
timed) through each algorithm of the NumPy backend -- im2col, Winograd F(2x2, 3x3) and, with the
compiled kernels, F(4x4, 3x3) -- interleaved, with PyTorch beside them: the measurements behind
the per-shape choice in ``tinygrad_hw.kernels.winograd`` (``MIN_CHANNELS``, ``MIN_SIZE``,
``FOUR_FROM`` and their compiled counterparts).

Each case runs both libraries in this process, alternating, and reports the best and the median
of the repeats (the machine is shared, so the best is the steadier number).
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time

import numpy as np
import torch
import torch.nn.functional as F

import tinygrad_hw as hw  # noqa: E402
from tinygrad_hw.kernels import winograd  # noqa: E402
from tinygrad_hw.kernels import compiled, parallel  # noqa: E402
import tinygrad_hw.nn.functional as hwF  # noqa: E402

CASES = [  # (batch, in channels, out channels, size) with 3x3 kernels, padding 1
    (64, 64, 64, 16),
    (64, 32, 32, 32),
    (64, 3, 32, 32),
    (64, 128, 128, 8),
    (64, 256, 256, 4),
]


def timed_pair(ours, theirs, repeats):
    """Best and median milliseconds of each function, run alternately."""
    ours(), theirs()  # warm up (scratch buffers, thread pools)
    times = ([], [])
    for _ in range(repeats):
        for fn, acc in zip((ours, theirs), times):
            start = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - start)
    out = []
    for acc in times:
        acc.sort()
        out.append((acc[0] * 1e3, acc[len(acc) // 2] * 1e3))
    return out


def conv_case(n, cin, cout, size, repeats, input_grad=True):
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((n, cin, size, size)).astype(np.float32)
    w0 = (rng.standard_normal((cout, cin, 3, 3)) * 0.1).astype(np.float32)
    g0 = rng.standard_normal((n, cout, size, size)).astype(np.float32)
    x = hw.Tensor(x0, requires_grad=input_grad)
    w = hw.Tensor(w0, requires_grad=True)
    g = hw.Tensor(g0)
    xt = torch.from_numpy(x0).requires_grad_(input_grad)
    wt = torch.from_numpy(w0).requires_grad_()
    gt = torch.from_numpy(g0)

    def ours():
        x.grad = w.grad = None
        hwF.conv2d(x, w, padding=1).backward(g)

    def theirs():
        xt.grad = wt.grad = None
        F.conv2d(xt, wt, padding=1).backward(gt)

    def ours_fwd():
        with hw.no_grad():
            hwF.conv2d(x, w, padding=1)

    def theirs_fwd():
        with torch.no_grad():
            F.conv2d(xt, wt, padding=1)

    return {"fwd+bwd": timed_pair(ours, theirs, repeats), "fwd": timed_pair(ours_fwd, theirs_fwd, repeats)}


# (batch, in, out, size, input needs a gradient) of the 3x3 / padding-1 layers of the networks
# that benchmarks.run times: vgg_style at 64, fast_cnn at 256, small_cnn at 64
NET_LAYERS = {
    "vgg_style": [(64, 3, 32, 32, False), (64, 32, 32, 32, True), (64, 32, 64, 16, True),
                  (64, 64, 64, 16, True), (64, 64, 128, 8, True), (64, 128, 128, 8, True)],
    "fast_cnn": [(256, 3, 16, 32, False), (256, 16, 32, 32, True), (256, 32, 32, 16, True),
                 (256, 32, 64, 16, True), (256, 64, 64, 8, True), (256, 64, 128, 8, True),
                 (256, 128, 128, 4, True)],
    "small_cnn": [(64, 3, 6, 32, False), (64, 6, 12, 16, True), (64, 12, 24, 8, True)],
}


def algorithm_table(repeats):
    """Median fwd+bwd ms of each layer shape per algorithm, the algorithms interleaved."""
    algorithms = {"im2col": dict(winograd=False, numba=compiled.AVAILABLE, four=None)}
    algorithms["F2 numpy"] = dict(winograd=True, numba=False, four=None)
    if compiled.AVAILABLE:
        algorithms["F2 numba"] = dict(winograd=True, numba=True, four=10**9)
        algorithms["F4 numba"] = dict(winograd=True, numba=True, four=1)
    saved = (winograd.ENABLED, winograd.MIN_CHANNELS, winograd.MIN_SIZE, winograd.FOUR_FROM,
             winograd.FOUR_MIN_CHANNELS, compiled.ENABLED)
    print(f"{'net':<10} {'layer':<24} " + " ".join(f"{name:>9}" for name in algorithms) + f" {'torch':>9}  best")
    try:
        for net, layers in NET_LAYERS.items():
            for n, cin, cout, size, input_grad in layers:
                rng = np.random.default_rng(0)
                x0 = rng.standard_normal((n, cin, size, size)).astype(np.float32)
                w0 = (rng.standard_normal((cout, cin, 3, 3)) * 0.1).astype(np.float32)
                g0 = rng.standard_normal((n, cout, size, size)).astype(np.float32)
                x, w, g = hw.Tensor(x0, requires_grad=input_grad), hw.Tensor(w0, requires_grad=True), hw.Tensor(g0)
                xt, wt = torch.from_numpy(x0).requires_grad_(input_grad), torch.from_numpy(w0).requires_grad_()
                gt = torch.from_numpy(g0)

                def ours():
                    x.grad = w.grad = None
                    hwF.conv2d(x, w, padding=1).backward(g)

                def theirs():
                    xt.grad = wt.grad = None
                    F.conv2d(xt, wt, padding=1).backward(gt)

                def configure(cfg):
                    winograd.ENABLED, compiled.ENABLED = cfg["winograd"], cfg["numba"]
                    winograd.MIN_CHANNELS = winograd.MIN_SIZE = winograd.FOUR_MIN_CHANNELS = 1
                    if cfg["four"] is not None:
                        winograd.FOUR_FROM = cfg["four"]

                times = {name: [] for name in list(algorithms) + ["torch"]}
                for name, cfg in algorithms.items():  # warm-up
                    configure(cfg)
                    ours()
                theirs()
                for _ in range(repeats):
                    for name, cfg in algorithms.items():
                        configure(cfg)
                        t0 = time.perf_counter()
                        ours()
                        times[name].append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    theirs()
                    times["torch"].append(time.perf_counter() - t0)
                med = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in times.items()}
                best = min(algorithms, key=med.get)
                print(f"{net:<10} N={n:<3} {cin:3d}->{cout:<3d} @{size:<2d}x{size:<2d}   "
                      + " ".join(f"{med[k]:9.2f}" for k in times) + f"  {best}", flush=True)
    finally:
        (winograd.ENABLED, winograd.MIN_CHANNELS, winograd.MIN_SIZE, winograd.FOUR_FROM,
         winograd.FOUR_MIN_CHANNELS, compiled.ENABLED) = saved


def pool_case(n, c, size, repeats):
    x0 = np.random.default_rng(0).standard_normal((n, c, size, size)).astype(np.float32)
    x = hw.Tensor(x0, requires_grad=True)
    xt = torch.from_numpy(x0).requires_grad_()
    g = hw.Tensor(np.ones((n, c, size // 2, size // 2), np.float32))
    gt = torch.ones(n, c, size // 2, size // 2)

    def ours():
        hwF.max_pool2d(x, 2).backward(g)

    def theirs():
        F.max_pool2d(xt, 2).backward(gt)

    return timed_pair(ours, theirs, repeats)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--profile", action="store_true", help="cProfile our fwd+bwd of the first two cases")
    parser.add_argument("--threads", type=int, default=None,
                        help="1: torch, BLAS and our chunk workers single-threaded (steadier on a busy machine)")
    parser.add_argument("--no-winograd", action="store_true", help="im2col for every convolution")
    parser.add_argument("--algorithms", action="store_true",
                        help="every 3x3 layer of the benchmark's networks through each algorithm")
    args = parser.parse_args()
    winograd.ENABLED = not args.no_winograd
    if args.threads == 1:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1, user_api="blas")
        torch.set_num_threads(1)
        parallel.WORKERS = 1
    print(f"torch threads {torch.get_num_threads()}, our chunk workers {parallel.worker_count()}, float32, "
          f"3x3 pad 1, winograd {winograd.ENABLED}; times in ms as best/median; load average {os.getloadavg()[0]:.2f}")
    if args.algorithms:
        print(f"compiled kernels: {'numba ' + compiled.numba.__version__ if compiled.AVAILABLE else 'none'}; "
              f"fwd+bwd median ms of {args.repeats} interleaved repeats")
        algorithm_table(args.repeats)
        print(f"load average at end {os.getloadavg()[0]:.2f}")
        return
    for case in CASES:
        res = conv_case(*case, args.repeats, input_grad=case[1] != 3)
        line = []
        for what, ((ob, om), (tb, tm)) in res.items():
            line.append(f"{what}: ours {ob:6.1f}/{om:6.1f}  torch {tb:6.1f}/{tm:6.1f}")
        print(f"conv N={case[0]} {case[1]:3d}->{case[2]:3d} {case[3]:2d}x{case[3]:<2d} | " + " | ".join(line))
    (ob, om), (tb, tm) = pool_case(64, 64, 32, args.repeats)
    print(f"max_pool2d 2x2 N=64 C=64 32x32 fwd+bwd: ours {ob:.1f}/{om:.1f}  torch {tb:.1f}/{tm:.1f}")
    if args.profile:
        # profile on one thread: cProfile sees only the calling thread, so the chunk workers
        # are turned off for this part
        parallel.WORKERS = 1
        from threadpoolctl import threadpool_limits
        threadpool_limits(1, user_api="blas")
        # numpy.matmul is a ufunc, invisible to cProfile: a Python wrapper makes it show up
        blas_matmul = np.matmul

        def matmul(*a, **k):
            return blas_matmul(*a, **k)

        np.matmul = matmul
        for n, cin, cout, size in CASES[:2]:
            x = hw.Tensor(np.random.default_rng(0).standard_normal((n, cin, size, size)).astype(np.float32),
                          requires_grad=True)
            w = hw.Tensor(np.random.default_rng(1).standard_normal((cout, cin, 3, 3)).astype(np.float32),
                          requires_grad=True)
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(5):
                hwF.conv2d(x, w, padding=1).sum().backward()
            prof.disable()
            print(f"\nprofile N={n} {cin}->{cout} {size}x{size}, 5 x fwd+bwd, one thread")
            pstats.Stats(prof).sort_stats("tottime").print_stats(10)


if __name__ == "__main__":
    main()
