"""Data-parallel step time of the ``fast`` preset's network: 1 rank against 2 ranks, one thread each.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE mpiexec -n 2 python -m benchmarks.bench_distributed \\
        [--batch 256] [--rounds 5] [--steps 3] [--wait-quiet SECONDS] [--json PATH] [--quick]

One ``mpiexec -n 2`` job measures three set-ups in interleaved rounds (their order rotates from
round to round), so all of them run under the same machine conditions:

* ``1 rank x 1 thread``: rank 0 alone trains the net on the global batch, one BLAS thread and one
  tinygrad_hw worker, while rank 1 sleeps (a sleeping wait, not MPI's spinning one);
* ``1 rank x 2 threads``: the same with two threads (the usual one-process set-up on 2 cores);
* ``2 ranks x 1 thread``: both ranks train a DistributedDataParallel copy on half the batch each.

A round during which other processes took more than ``--quiet-cores`` of CPU is thrown away and
measured again (after ``--wait-quiet``), up to ``--max-rounds``; the output says how many were.

A step is forward, cross-entropy, backward (for DDP: with the gradient all-reduce), SGD with
momentum, ``zero_grad``, on the same random batch every step (no data loading), float32. Per
set-up: the median step time, images per second of the global batch, and for DDP the time per
step spent in the gradient reduction (``DistributedDataParallel.comm_seconds``: the copies
into and out of the flat buffers, the wait for the slower rank and the transfer), beside one
all-reduce of the same bytes timed alone right after a barrier (the transfer itself).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

import tinygrad_hw as hw
import tinygrad_hw.distributed as dist
import tinygrad_hw.nn.functional as F
from tinygrad_hw import models, optim
from tinygrad_hw.kernels import parallel
from tinygrad_hw.nn.parallel import DistributedDataParallel

from . import nets
from .run import _busy_seconds, wait_for_quiet

SETUPS = ("1 rank x 1 thread", "1 rank x 2 threads", "2 ranks x 1 thread")


def set_threads(n: int) -> None:
    parallel.WORKERS = n
    parallel.limit_blas_threads(n)


def sleeping_barrier() -> None:
    """A barrier whose waiting rank sleeps between polls, so it leaves the cores to the other."""
    from mpi4py import MPI
    request = MPI.COMM_WORLD.Ibarrier()
    while not request.Test():
        time.sleep(0.002)


def trainer(model, batch, seed):
    rng = np.random.default_rng(seed)
    x = hw.Tensor(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32))
    y = hw.Tensor(rng.integers(0, 10, batch))
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=nets.FAST_PRESET_BATCH, help="global batch")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="steps per set-up and round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="first, and after a disturbed round, wait up to SECONDS for other "
                        "processes to use under --quiet-cores")
    p.add_argument("--quiet-cores", type=float, default=0.2,
                   help="a round during which other processes used more cores is measured again")
    p.add_argument("--max-rounds", type=int, default=None, help="rounds tried at most (default 4x --rounds)")
    p.add_argument("--json", help="write the numbers here (rank 0)")
    p.add_argument("--quick", action="store_true", help="a smoke run (batch 8, one step): not a measurement")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.rounds, args.steps, args.warmup, args.quiet_cores = 8, 1, 1, 0, float("inf")
    args.max_rounds = args.max_rounds or 4 * args.rounds
    dist.init_process_group("mpi", timeout=600 + args.wait_quiet)
    rank, world = dist.get_rank(), dist.get_world_size()
    if world != 2:
        raise SystemExit("run it with mpiexec -n 2")
    # rank 1 sleeps meanwhile: a spinning MPI wait would count as another process's load
    waited = wait_for_quiet(args.wait_quiet, args.quiet_cores) if args.wait_quiet and rank == 0 else 0.0
    sleeping_barrier()
    build = nets.ours_builder("fast_cnn")
    hw.manual_seed(0)
    single = build() if rank == 0 else None
    hw.manual_seed(0)
    ddp = DistributedDataParallel(build())
    steps = {"1 rank x 2 threads": trainer(single, args.batch, 1) if rank == 0 else None,
             "2 ranks x 1 thread": trainer(ddp, args.batch // world, 1 + rank)}
    steps["1 rank x 1 thread"] = steps["1 rank x 2 threads"]
    threads = {"1 rank x 1 thread": 1, "1 rank x 2 threads": 2, "2 ranks x 1 thread": 1}
    times = {s: [] for s in SETUPS}
    comm = []
    start_load = os.getloadavg()

    def run(setup, k, record):
        set_threads(threads[setup])
        if setup.startswith("1 rank"):
            if rank == 0:
                for _ in range(k):
                    t0 = time.perf_counter()
                    steps[setup]()
                    if record:
                        record[setup].append(time.perf_counter() - t0)
            sleeping_barrier()
            return
        dist.barrier()
        for _ in range(k):
            before, t0 = ddp.comm_seconds, time.perf_counter()
            steps[setup]()
            if record:
                record[setup].append(time.perf_counter() - t0)
                record["comm"].append(ddp.comm_seconds - before)
        dist.barrier()

    def others_during(measure):
        """Run ``measure()`` on every rank; the cores' worth of CPU that processes other than the
        ranks took meanwhile (rank 0's reading, given to every rank so that all decide alike)."""
        busy0, cpu0, wall0 = _busy_seconds(), os.times(), time.perf_counter()
        measure()
        cpu1 = os.times()
        ours = [None] * world
        dist.all_gather_object(ours, (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system))
        busy1 = _busy_seconds()
        value = [None if not (busy0 and busy1) else
                 max(0.0, (busy1[0] - busy0[0]) - sum(ours)) / (time.perf_counter() - wall0)]
        dist.broadcast_object_list(value, src=0)
        return value[0]

    for setup in SETUPS:
        run(setup, args.warmup, record=None)
    kept, discarded, others_kept = 0, 0, []
    while kept < args.rounds and kept + discarded < args.max_rounds:
        sample = {s: [] for s in SETUPS + ("comm",)}
        order = SETUPS[kept % 3:] + SETUPS[:kept % 3]
        others = others_during(lambda: [run(setup, args.steps, sample) for setup in order])
        if others is not None and others > args.quiet_cores:  # disturbed: wait, measure again
            discarded += 1
            if rank == 0 and args.wait_quiet:
                wait_for_quiet(args.wait_quiet, args.quiet_cores)
            sleeping_barrier()
            continue
        kept += 1
        others_kept.append(others)
        for s in SETUPS:
            times[s] += sample[s]
        comm.extend(sample["comm"])
    if not kept:
        raise SystemExit(f"every one of {discarded} rounds was disturbed by other processes "
                         f"(over {args.quiet_cores} cores); try --max-rounds or a quieter time")
    others = None if None in others_kept else max(others_kept)
    # one all-reduce of the gradients' bytes alone, both ranks ready
    numel = sum(b.numel for b in ddp.buckets)
    buffer = hw.Tensor(np.ones(numel, np.float32))
    alone = []
    for _ in range(10):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(buffer)
        alone.append(time.perf_counter() - t0)
    comm_all = [None] * world
    dist.all_gather_object(comm_all, comm)
    if rank == 0:
        pools = []
        try:
            import threadpoolctl
            pools = [{k: p.get(k) for k in ("internal_api", "version", "architecture")}
                     for p in threadpoolctl.threadpool_info()]
        except ImportError:
            pass
        result = {
            "batch": args.batch, "rounds": args.rounds, "steps": args.steps,
            "parameters": models.count_parameters(ddp.module), "gradient_bytes": numel * 4,
            "buckets": len(ddp.buckets), "blas": pools, "waited_for_quiet_s": waited,
            "load_average_start": start_load, "load_average_end": os.getloadavg(),
            "rounds_kept": kept, "rounds_discarded": discarded,
            "other_processes_cores_max_in_kept_rounds": others,
            "setups": {s: {"step_ms": 1e3 * statistics.median(times[s]),
                           "images_per_s": args.batch / statistics.median(times[s]),
                           "steps_timed": len(times[s])} for s in SETUPS},
            "allreduce_in_step_ms": {f"rank {r}": 1e3 * statistics.median(c) for r, c in enumerate(comm_all)},
            "allreduce_alone_ms": 1e3 * statistics.median(alone),
        }
        base = result["setups"]["1 rank x 1 thread"]["step_ms"]
        for s in SETUPS:
            result["setups"][s]["speedup_vs_1x1"] = base / result["setups"][s]["step_ms"]
        print(f"fast_cnn ({result['parameters']:,} parameters, {numel * 4 / 1e6:.2f} MB of "
              f"gradients in {len(ddp.buckets)} bucket(s)), global batch {args.batch}, "
              f"{args.rounds} rounds x {args.steps} steps; BLAS {pools}")
        print(f"load average {tuple(round(v, 2) for v in start_load)} -> "
              f"{tuple(round(v, 2) for v in result['load_average_end'])}; {kept} rounds kept, "
              f"{discarded} discarded (other processes over {args.quiet_cores} cores); other "
              f"processes used at most {'?' if others is None else f'{others:.2f}'} cores in a "
              "kept round")
        for s in SETUPS:
            r = result["setups"][s]
            print(f"  {s:20s} {r['step_ms']:8.1f} ms/step  {r['images_per_s']:6.0f} img/s  "
                  f"x{r['speedup_vs_1x1']:.2f}")
        print(f"  all-reduce per DDP step (median): "
              + ", ".join(f"{k} {v:.2f} ms" for k, v in result["allreduce_in_step_ms"].items())
              + f"; alone: {result['allreduce_alone_ms']:.2f} ms")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
