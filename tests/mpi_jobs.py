"""Jobs that tests/test_distributed.py runs under ``mpiexec -n 2`` (one per scenario, named on the
command line). Each checks what it can on its ranks and prints ``ok <scenario>`` on rank 0 when
every check passed; any failure raises, which aborts the whole job (tinygrad_hw.distributed's
exception hook). Run one by hand with ``mpiexec -n 2 python tests/mpi_jobs.py exactness``."""
import hashlib
import sys

import numpy as np

import tinygrad_hw as hw
import tinygrad_hw.distributed as dist
import tinygrad_hw.nn.functional as F
from tinygrad_hw import nn, optim
from tinygrad_hw.kernels import parallel
from tinygrad_hw.nn.parallel import DistributedDataParallel as DDP

parallel.WORKERS = 1  # one thread per rank: the 2-rank job and its references use the same kernels
parallel.limit_blas_threads(1)


def digest(module):
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(np.ascontiguousarray(t.numpy()).tobytes())
    return h.hexdigest()


def same_on_every_rank(value, what):
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    assert all(v == values[0] for v in values), f"{what} differs between the ranks: {values}"


def batches(steps, batch, dtype, seed=7):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((batch, 3, 8, 8)).astype(dtype), rng.integers(0, 10, batch))
            for _ in range(steps)]


def plain_net(dtype):
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(6 * 4 * 4, 16), nn.Tanh(), nn.Linear(16, 10)).to(dtype=dtype)


def bn_net(dtype, norm):
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), norm(6), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(6 * 4 * 4, 10)).to(dtype=dtype)


def sgd(params):
    return optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)


def train_ddp(build, data, seed_of_rank):
    """A DDP run: each rank trains on its half of every batch. Every rank builds its model from a
    different seed: the broadcast at construction must make them rank 0's."""
    rank, world = dist.get_rank(), dist.get_world_size()
    hw.manual_seed(seed_of_rank(rank))
    model = DDP(build())
    opt = sgd(model.parameters())
    for x, y in data:
        half = len(y) // world
        xs, ys = hw.Tensor(x[rank * half:(rank + 1) * half]), hw.Tensor(y[rank * half:(rank + 1) * half])
        loss = F.cross_entropy(model(xs), ys)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def train_reference(build, data, parts, seed=0):
    """One process: each batch as ``parts`` pieces whose gradients accumulate, then divided by
    ``parts`` (what DDP computes with ``parts`` ranks); parts=1 is the whole batch at once.
    ``seed``: rank 0's, whose model DDP broadcast."""
    hw.manual_seed(seed)
    model = build()
    opt = sgd(model.parameters())
    for x, y in data:
        opt.zero_grad()
        size = len(y) // parts
        for k in range(parts):
            loss = F.cross_entropy(model(hw.Tensor(x[k * size:(k + 1) * size])),
                                   hw.Tensor(y[k * size:(k + 1) * size]))
            loss.backward()
        if parts > 1:
            for p in model.parameters():
                p.grad.data /= parts
        opt.step()
    return model


def assert_states(a, b, exact, rtol=0.0, atol=0.0, what=""):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        x, y = sa[key].numpy(), sb[key].numpy()
        if exact:
            assert np.array_equal(x, y), f"{what}: {key} differs (max {np.abs(x - y).max()})"
        else:
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=f"{what}: {key}")


def exactness():
    world = dist.get_world_size()
    data = batches(5, 8, np.float32)
    build = lambda: plain_net(np.float32)  # noqa: E731
    ddp = train_ddp(build, data, seed_of_rank=lambda r: 100 + r)
    same_on_every_rank(digest(ddp.module), "the DDP model")
    # bit for bit: one process accumulating the ranks' half-batches
    assert_states(ddp.module, train_reference(build, data, parts=world, seed=100), exact=True,
                  what="DDP against accumulated half-batches")
    # within float rounding: one process with the whole batch
    assert_states(ddp.module, train_reference(build, data, parts=1, seed=100), exact=False, rtol=2e-5,
                  atol=2e-6, what="DDP against the whole batch")
    # the same holds bit for bit with per-rank BatchNorm (each half normalised on its own)
    build_bn = lambda: bn_net(np.float32, nn.BatchNorm2d)  # noqa: E731
    ddp_bn = train_ddp(build_bn, data, seed_of_rank=lambda r: 0)
    ref_bn = train_reference(build_bn, data, parts=world)
    for (name, p), q in zip(ddp_bn.module.named_parameters(), ref_bn.parameters()):
        assert np.array_equal(p.numpy(), q.numpy()), f"per-rank BatchNorm: {name} differs"
    # running statistics: per rank while training, averaged when the wrapper goes to eval
    means = [None] * world
    dist.all_gather_object(means, ddp_bn.module[1].running_mean.numpy())
    assert not np.array_equal(means[0], means[1])
    ddp_bn.eval()
    np.testing.assert_allclose(ddp_bn.module[1].running_mean.numpy(), (means[0] + means[1]) / 2, rtol=1e-6)
    same_on_every_rank(digest(ddp_bn.module), "the model after average_buffers")
    print("ok exactness")


def sync_batchnorm():
    """SyncBatchNorm on 2 ranks x B/2 == BatchNorm on one process with batch B (float64)."""
    world = dist.get_world_size()
    data = batches(4, 8, np.float64)
    ddp = train_ddp(lambda: bn_net(np.float64, nn.SyncBatchNorm), data, seed_of_rank=lambda r: r)
    whole = train_reference(lambda: bn_net(np.float64, nn.BatchNorm2d), data, parts=1)
    assert_states(ddp.module, whole, exact=False, rtol=1e-9, atol=1e-12,
                  what="SyncBatchNorm against the whole batch")  # running stats included
    # forward and input gradient of the layer alone, against the whole batch
    rng = np.random.default_rng(3)
    x, g = rng.standard_normal((2, 8, 5, 3, 3)), rng.standard_normal((2, 8, 5, 3, 3))
    x, g = x.reshape(16, 5, 3, 3), g.reshape(16, 5, 3, 3)
    rank, half = dist.get_rank(), 16 // world
    layer, ref = nn.SyncBatchNorm(5, dtype="float64"), nn.BatchNorm2d(5, dtype="float64")
    for m in (layer, ref):
        m.weight.data[:] = np.linspace(0.5, 2.0, 5)
    xs = hw.Tensor(x[rank * half:(rank + 1) * half], requires_grad=True)
    out = layer(xs)
    out.backward(hw.Tensor(g[rank * half:(rank + 1) * half]))
    xr = hw.Tensor(x, requires_grad=True)
    whole_out = ref(xr)
    whole_out.backward(hw.Tensor(g))
    mine = slice(rank * half, (rank + 1) * half)
    np.testing.assert_allclose(out.numpy(), whole_out.numpy()[mine], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.running_var.numpy(), ref.running_var.numpy(), rtol=1e-12)
    np.testing.assert_allclose(xs.grad.numpy(), xr.grad.numpy()[mine], rtol=1e-10, atol=1e-12)
    for name in ("weight", "bias"):  # this rank's share; the sum over ranks is the whole batch's
        total = hw.Tensor(getattr(layer, name).grad.numpy().copy())
        dist.all_reduce(total)
        np.testing.assert_allclose(total.numpy(), getattr(ref, name).grad.numpy(), rtol=1e-10)
    print("ok sync_batchnorm")


def ddp_api():
    """no_sync, the bucket layout, and the error for a parameter that gets no gradient."""
    rank, world = dist.get_rank(), dist.get_world_size()
    data = batches(2, 8, np.float32)
    hw.manual_seed(0)
    model = DDP(plain_net(np.float32), bucket_cap_mb=0.0005)  # 524 bytes: 3 buckets
    params = [p for p in model.parameters()]
    order = [p for b in model.buckets for p in b.params]
    assert [id(p) for p in order] == [id(p) for p in reversed(params)], "buckets: reverse order"
    assert len(model.buckets) == 3 and all(b.nbytes >= 524 for b in model.buckets)
    x, y = data[0]
    half = len(y) // world
    mine = [(hw.Tensor(x[rank * half + k * half // 2:rank * half + (k + 1) * half // 2]),
             hw.Tensor(y[rank * half + k * half // 2:rank * half + (k + 1) * half // 2])) for k in (0, 1)]
    with model.no_sync():  # accumulate locally: the ranks' gradients differ
        F.cross_entropy(model(mine[0][0]), mine[0][1]).backward()
    local = [None] * world
    dist.all_gather_object(local, params[0].grad.numpy())
    assert not np.array_equal(local[0], local[1]), "no_sync must not communicate"
    F.cross_entropy(model(mine[1][0]), mine[1][1]).backward()  # averages everything accumulated
    same_on_every_rank(hashlib.sha256(b"".join(p.grad.numpy().tobytes() for p in params)).hexdigest(),
                       "the gradients after the synchronised backward")
    # a parameter left out of the loss: a clear error on every rank, no hang
    hw.manual_seed(0)
    unused = DDP(nn.ModuleDict({"used": nn.Linear(4, 2), "unused": nn.Linear(4, 2)}))
    try:
        unused.module["used"](hw.randn(3, 4)).sum().backward()
    except RuntimeError as exc:
        assert "unused.weight" in str(exc) and "received no gradient" in str(exc), exc
    else:
        raise AssertionError("an unused parameter must be an error")
    print("ok ddp_api")


def resume(out):
    """examples/cifar_cnn.py on 2 ranks (small random images): 2 epochs in one go == 1 epoch,
    stop, --resume for the second, bit for bit; for the fast preset (BatchNorm, crops and
    flips, one-cycle) and the baseline (dropout, Adam)."""
    from pathlib import Path

    from helpers import load_example
    cifar_cnn = load_example("cifar_cnn")
    rank = dist.get_rank()
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (100, 3, 32, 32), dtype=np.uint8), np.arange(100) % 10
    test = rng.integers(0, 256, (30, 3, 32, 32), dtype=np.uint8), np.arange(30) % 10
    quiet = cifar_cnn.quiet
    for preset in ("fast", "baseline"):
        cfg = cifar_cnn.config_from_args(cifar_cnn.parse_args(["--preset", preset, "--epochs", "2",
                                                               "--seed", "3"]))
        cfg.widths = (8, 16, 16) if preset == "fast" else None
        cfg.batch_size, cfg.eval_batch_size, cfg.log_every, cfg.whiten = 16, 10, 0, False
        base = Path(out) / preset
        whole = cifar_cnn.run(cfg, base / "whole", train, test, progress=False, plots=False, log=quiet)
        part = cifar_cnn.run(cfg, base / "split", train, test, progress=False, plots=False,
                             stop_after=1, log=quiet)
        assert part["finished"] is False
        hw.manual_seed(999 + rank)  # another process state before resuming must not matter
        hw.randn(5)
        resumed = cifar_cnn.run(cfg, base / "split", train, test, resume=True, progress=False,
                                plots=False, log=quiet)
        for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr_end"):
            assert ([e[key] for e in whole["history"]]
                    == [e[key] for e in resumed["history"]]), f"{preset}: {key}"
        if rank == 0:
            a, b = hw.load(base / "whole" / cifar_cnn.FINAL_MODEL), hw.load(base / "split" / cifar_cnn.FINAL_MODEL)
            assert list(a) == list(b)
            for key in a:
                assert np.array_equal(a[key].numpy(), b[key].numpy()), f"{preset}: {key}"
            assert whole["confusion_matrix"] == resumed["confusion_matrix"]
            saved = hw.load(base / "split" / cifar_cnn.CHECKPOINT)
            assert saved["world_size"] == 2 and len(saved["ranks"]) == 2
            # each rank augments and drops out from its own stream
            assert saved["ranks"][0]["loader"]["seed"] != saved["ranks"][1]["loader"]["seed"]
            assert saved["ranks"][0]["random"]["backend"] != saved["ranks"][1]["random"]["backend"]
    print("ok resume")


def single():
    """One process, no launcher: a world of one, where every collective is the identity."""
    assert (dist.get_rank(), dist.get_world_size(), dist.get_backend()) == (0, 1, "mpi")
    t = hw.Tensor([1.0, 2.0])
    dist.all_reduce(t)
    dist.broadcast(t)
    out = [hw.zeros(2)]
    dist.all_gather(out, t)
    dist.barrier()
    assert t.tolist() == [1.0, 2.0] and out[0].tolist() == [1.0, 2.0]
    model = DDP(plain_net(np.float32))
    F.cross_entropy(model(hw.randn(2, 3, 8, 8)), hw.Tensor([1, 2])).backward()
    assert all(p.grad is not None for p in model.parameters())
    try:
        dist.init_process_group("mpi")
    except RuntimeError as exc:
        assert "already initialized" in str(exc)
    else:
        raise AssertionError("a second init_process_group must be an error")
    print("ok single")


def nccl():
    """The nccl backend on one GPU (NCCL refuses two ranks on one device): every collective on
    CuPy tensors, and a DDP step, through NCCL."""
    assert dist.get_backend() == "nccl"
    hw.set_backend("cupy")
    t = hw.Tensor(np.arange(4, dtype=np.float32))
    dist.all_reduce(t, "avg")
    dist.broadcast(t, src=0)
    out = [hw.zeros(4)]
    dist.all_gather(out, t)
    dist.barrier()
    assert t.numpy().tolist() == [0.0, 1.0, 2.0, 3.0] and out[0].numpy().tolist() == t.numpy().tolist()
    host = hw.Tensor(np.ones(3), backend="numpy")  # host tensors go through MPI
    dist.all_reduce(host)
    model = DDP(plain_net(np.float32).to("cupy"))
    F.cross_entropy(model(hw.randn(2, 3, 8, 8)), hw.Tensor([1, 2])).backward()
    assert all(p.grad is not None and p.grad.backend == "cupy" for p in model.parameters())
    print("ok nccl")


def die(how):
    """Rank 1 fails while rank 0 waits in an all_reduce."""
    import os
    import time
    t = hw.Tensor(np.ones(4, np.float32))
    dist.all_reduce(t)  # both ranks are up
    if dist.get_rank() == 1:
        if how == "raise":
            raise ValueError("rank 1 failed on purpose")
        if how == "kill":
            os.kill(os.getpid(), 9)
        time.sleep(120)  # "hang": never reaches the next collective
    dist.all_reduce(t)
    print("rank 0 was not stopped", flush=True)


MAIN = {"exactness": exactness, "sync_batchnorm": sync_batchnorm, "ddp_api": ddp_api,
        "single": single, "nccl": nccl}

if __name__ == "__main__":
    dist.init_process_group("nccl" if sys.argv[2] == "nccl" else "mpi", timeout=float(sys.argv[1]))
    name, args = sys.argv[2], sys.argv[3:]
    {"resume": resume, "die": die}.get(name, lambda *a: [MAIN[n]() for n in [name] + list(a)])(*args)
    dist.destroy_process_group()
