"""Data-parallel training (tinygrad_hw.distributed, nn.parallel.DistributedDataParallel,
nn.SyncBatchNorm, data.DistributedSampler, rank-aware checkpoints).

The jobs of tests/mpi_jobs.py run under ``mpiexec -n 2`` (each with a deadline, so a hang fails
the test instead of stalling the suite): exactness against one process, SyncBatchNorm against
one process with the whole batch, resume of the CIFAR-10 example bit for bit, and ranks that
fail. The rest runs in this process, without MPI."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_hw as hw
import tinygrad_hw.distributed as dist
from tinygrad_hw import nn, training
from tinygrad_hw.autograd import engine
from tinygrad_hw.data import DataLoader, DistributedSampler
from tinygrad_hw.testing import compare_with_torch
from helpers import on_cupy_standin

JOBS = Path(__file__).with_name("mpi_jobs.py")
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
needs_mpi = pytest.mark.skipif(not (dist.is_available() and MPIEXEC),
                               reason='needs mpi4py and mpiexec: pip install "tinygrad_hw[distributed]"')


def mpiexec(*args, ranks=2, collective_timeout=60, deadline=240):
    """Run tests/mpi_jobs.py under mpiexec; the job's collectives time out after
    ``collective_timeout`` s, the whole command after ``deadline`` s."""
    command = [MPIEXEC, "-n", str(ranks)] if ranks else []
    command += [sys.executable, str(JOBS), str(collective_timeout), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=deadline, cwd=JOBS.parent,
                          stdin=subprocess.DEVNULL)


def assert_ok(result, name):
    assert result.returncode == 0 and f"ok {name}" in result.stdout, result.stdout + result.stderr


# -- 2-rank jobs ------------------------------------------------------------------------------------
@needs_mpi
def test_two_ranks_match_one_process_and_sync_batchnorm_matches_the_whole_batch():
    """2 ranks x B/2: bit for bit one process accumulating the half-batches (plain and per-rank
    BatchNorm nets), within rounding one process with batch B; SyncBatchNorm (forward, input
    and parameter gradients, running statistics, 4 training steps) within 1e-9 of BatchNorm
    on the whole batch in float64; no_sync, bucket order, the unused-parameter error."""
    result = mpiexec("exactness", "sync_batchnorm", "ddp_api")
    for name in ("exactness", "sync_batchnorm", "ddp_api"):
        assert_ok(result, name)


@needs_mpi
def test_two_rank_example_resumed_ends_bit_for_bit_where_an_uninterrupted_run_ends(tmp_path):
    assert_ok(mpiexec("resume", tmp_path), "resume")


@needs_mpi
@pytest.mark.parametrize("how", ["raise", "kill", "hang"])
def test_a_failing_rank_stops_the_job_with_a_clear_error(how):
    """Rank 1 raises, is killed, or hangs while rank 0 waits in an all_reduce: the job ends
    (non-zero) well before the deadline, saying why."""
    result = mpiexec("die", how, collective_timeout=3, deadline=60)
    assert result.returncode != 0
    assert "rank 0 was not stopped" not in result.stdout
    expected = {"raise": "[rank 1] ValueError: rank 1 failed on purpose",
                "kill": "BAD TERMINATION",
                "hang": "has waited more than 3 s for the other ranks"}[how]
    assert expected in result.stdout + result.stderr, result.stdout + result.stderr


@needs_mpi
def test_one_process_without_a_launcher_is_a_world_of_one():
    assert_ok(mpiexec("single", ranks=0), "single")


@needs_mpi
def test_nccl_backend_on_one_gpu():
    if on_cupy_standin():
        pytest.skip("NCCL needs a real GPU: cupy here is the CPU stand-in of tests/cupy_standin")
    try:
        hw.get_backend("cupy")
    except RuntimeError as exc:
        pytest.skip(f"the nccl backend needs an NVIDIA GPU and CuPy: {exc}")
    assert_ok(mpiexec("nccl", ranks=0), "nccl")


# -- in this process, no MPI --------------------------------------------------------------------------
def test_without_mpi4py_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # makes `from mpi4py import MPI` fail
    with pytest.raises(RuntimeError, match=r'pip install "tinygrad_hw\[distributed\]"'):
        dist.init_process_group("mpi")
    assert not dist.is_initialized()


def test_process_group_arguments_and_state_are_checked():
    with pytest.raises(ValueError, match="unknown backend 'gloo'"):
        dist.init_process_group("gloo")
    with pytest.raises(ValueError, match="timeout must be positive"):
        dist.init_process_group("mpi", timeout=0)
    for call in (dist.get_rank, dist.get_world_size, dist.barrier, lambda: dist.all_reduce(hw.ones(2))):
        with pytest.raises(RuntimeError, match="init_process_group"):
            call()
    with pytest.raises(RuntimeError, match="init_process_group"):
        nn.parallel.DistributedDataParallel(nn.Linear(2, 2))
    dist.destroy_process_group()  # a no-op without a group


def test_launcher_world_size_comes_from_the_environment(monkeypatch):
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert dist.launcher_world_size() == 1
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert dist.launcher_world_size() == 4
    monkeypatch.setenv("PMI_SIZE", "3")
    assert dist.launcher_world_size() == 3


@given(length=st.integers(0, 40), ranks=st.integers(1, 5), drop_last=st.booleans(), data=st.data())
def test_distributed_sampler_shares_match_pytorch(length, ranks, drop_last, data):
    """Unshuffled, the shares are PyTorch's exactly; shuffled, the ranks' shares together are
    one permutation (padded or cut as PyTorch does), the same length on every rank."""
    torch_sampler = pytest.importorskip("torch.utils.data.distributed").DistributedSampler
    rank = data.draw(st.integers(0, ranks - 1))
    ours = DistributedSampler(length, ranks, rank, shuffle=False, drop_last=drop_last)
    theirs = torch_sampler(range(length), ranks, rank, shuffle=False, drop_last=drop_last)
    assert list(ours) == list(theirs) and len(ours) == len(theirs)
    shares = [DistributedSampler(list(range(length)), ranks, r, seed=5, drop_last=drop_last)
              for r in range(ranks)]
    for s in shares:
        s.set_epoch(2)
    lists = [list(s) for s in shares]
    assert all(len(x) == len(ours) for x in lists)
    dealt = [lists[i % ranks][i // ranks] for i in range(len(ours) * ranks)]
    if length:
        one_epoch = np.random.default_rng(np.random.SeedSequence([5, 2])).permutation(length)
        assert dealt == list(np.resize(one_epoch, len(dealt)))[:len(dealt)]


def test_distributed_sampler_epochs_and_seeds():
    a, b = DistributedSampler(50, 2, 0, seed=1), DistributedSampler(50, 2, 0, seed=1)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    assert list(DistributedSampler(50, 2, 0, seed=2)) != list(a)
    with pytest.raises(ValueError, match="invalid rank 2"):
        DistributedSampler(10, 2, 2)


def test_data_loader_serves_its_samplers_share_and_sets_its_epoch():
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1).repeat(2, 2).repeat(2, 3)
    labels = np.arange(10)
    sampler = DistributedSampler(10, 3, 1, shuffle=True, seed=4)
    loader = DataLoader(images, labels, batch_size=2, sampler=sampler, prefetch=0, seed=0)
    assert len(loader) == 2  # 4 indices for rank 1 of 3
    for epoch in range(2):
        served = [int(i) for _, y in loader for i in y.numpy()]
        sampler.set_epoch(epoch)
        assert served == list(sampler)
    state = loader.state_dict()
    again = DataLoader(images, labels, batch_size=2, prefetch=0, seed=0,
                       sampler=DistributedSampler(10, 3, 1, shuffle=True, seed=4))
    again.load_state_dict(state)
    assert [int(i) for _, y in again for i in y.numpy()] == [int(i) for _, y in loader for i in y.numpy()]
    with pytest.raises(ValueError, match="mutually exclusive"):
        DataLoader(images, labels, sampler=sampler, shuffle=True)


def test_post_accumulate_grad_hooks_and_queued_callbacks():
    """Hooks run once .grad is stored (every leaf's), in backward() only; a queued callback runs
    after all of them; removing a handle stops its hook."""
    w, v = hw.Tensor([1.0, 2.0], requires_grad=True), hw.Tensor([3.0], requires_grad=True)
    calls = []

    def hook(t):
        calls.append(("hook", t.grad.tolist(), None if v.grad is None else v.grad.tolist()))
        if len(calls) == 1:
            engine.queue_callback(lambda: calls.append(("end",)))

    handle = w.register_post_accumulate_grad_hook(hook)
    ((w * v).sum() * 2).backward()
    assert calls == [("hook", [6.0, 6.0], [6.0]), ("end",)]  # v's grad was stored before the hook
    hw.grad((w * w).sum(), w)  # stores no .grad: no hook
    assert len(calls) == 2
    handle.remove()
    (w * 1.0).sum().backward()
    assert len(calls) == 2
    with pytest.raises(RuntimeError, match="during a backward"):
        engine.queue_callback(lambda: None)
    with pytest.raises(RuntimeError, match="leaf tensors"):
        (w * 2).register_post_accumulate_grad_hook(hook)


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5, 5), (4, 3, 2, 2, 2)])
def test_sync_batchnorm_without_a_process_group_is_pytorchs_batchnorm(shape):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal(shape)
    ours, theirs = nn.SyncBatchNorm(3, dtype="float64"), torch.nn.SyncBatchNorm(3).double()
    ours.weight.data[:] = theirs.weight.detach().numpy()[:] = [0.5, 1.5, 2.0]
    compare_with_torch(lambda t: ours(t), lambda t: torch.nn.functional.batch_norm(
        t, theirs.running_mean, theirs.running_var, theirs.weight, theirs.bias, True, 0.1, 1e-5),
        [x])
    np.testing.assert_allclose(ours.running_var.numpy(), theirs.running_var.numpy(), rtol=1e-12)


def test_convert_sync_batchnorm_keeps_parameters_and_buffers():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm1d(5)))
    weight = model[1].weight
    model[1].running_mean.data[:] = 7.0
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert [type(m).__name__ for m in converted.modules()].count("SyncBatchNorm") == 2
    assert converted[1].weight is weight and converted[1].running_mean.tolist() == [7.0] * 4
    assert list(converted.state_dict()) == list(model.state_dict())


def test_resuming_with_another_number_of_ranks_is_a_clear_error():
    loader = DataLoader(np.zeros((4, 1, 2, 2), np.uint8), np.zeros(4), batch_size=2)
    checkpoint = {"world_size": 2, "ranks": [{"loader": loader.state_dict(),
                                              "random": training.random_state("numpy")}] * 2}
    with pytest.raises(ValueError, match=r"written by a run of 2 rank\(s\) and this run has 1.*mpiexec -n 2"):
        training.restore_rank_state(checkpoint, loader, "numpy")
    checkpoint["world_size"] = 1
    training.restore_rank_state(checkpoint, loader, "numpy")
