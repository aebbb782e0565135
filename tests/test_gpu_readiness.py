"""The CuPy backend before it meets a GPU, on the CPU stand-in for CuPy (tests/cupy_standin,
put on PYTHONPATH by make test's second run; these tests skip in the first): the stand-in's own
restrictions, a training step of every CIFAR-10 preset with no host synchronisation and no
host-to-device copy inside it (its counts of device operations per step printed), bad labels
without a host check, the generator's state across a resume. None of this proves a CUDA kernel:
that is the GPU run's job (benchmarks/gpu_check.sh)."""
import numpy as np
import pytest

import tinygrad_hw as hw
from helpers import on_cupy_standin
from tinygrad_hw import nn

pytestmark = pytest.mark.skipif(not on_cupy_standin(), reason=(
    "needs the CPU stand-in for CuPy: PYTHONPATH=tests/cupy_standin TINYGRAD_HW_BACKEND=cupy "
    "(the second run of make test)"))


@pytest.fixture
def cupy():
    import cupy
    return cupy


@pytest.fixture
def cuda():
    previous = hw.get_backend().name
    hw.set_backend("cupy")
    yield hw.get_backend("cupy")
    hw.set_backend(previous)


# -- the stand-in's restrictions: what CuPy refuses, the stand-in refuses ----------------------------
def test_standin_has_cupys_restrictions(cupy):
    a = cupy.arange(6, dtype=cupy.float32).reshape(2, 3)
    assert not hasattr(a.flags, "writeable")
    assert (a.flags.c_contiguous, a.flags.owndata) == (True, False)  # a view of the arange
    for value in (a.sum(), a.max(), a[0, 1], a[1][2], a.sum(axis=None)):
        assert type(value) is cupy.ndarray and value.shape == ()
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(a)
    with pytest.raises(TypeError, match="Unsupported type"):
        a + np.ones(3, np.float32)
    with pytest.raises(TypeError):
        np.ones(3, np.float32) + a
    assert type(np.exp(a)) is cupy.ndarray  # NumPy's functions dispatch to the device
    assert type(a * np.float32(2) + 1.5) is cupy.ndarray  # scalars are fine
    np.testing.assert_array_equal(a.get(), np.arange(6).reshape(2, 3))
    with pytest.raises(NotImplementedError, match="cannot run the CUDA kernel"):
        cupy.ElementwiseKernel("T x", "T y", "y = x", "copy")(a)


def test_standin_counts_by_source_line(cupy):
    from cupy import _standin
    host = np.ones(4, np.float32)
    with _standin.counting() as counts:
        x = cupy.asarray(host)            # a host-to-device copy
        y = (x * 2 + 1).sum()             # three kernels
        float(y)                          # a host synchronisation
    assert counts.totals() == {"kernels": 3, "syncs": 1, "h2d": 1}
    assert all(key.startswith("tests/test_gpu_readiness.py:") for key in counts.kernels)
    with pytest.raises(AssertionError, match="host synchronisation"), _standin.forbid_host_transfers():
        bool(y > 0)


# -- a training step: no host synchronisation, no host-to-device copy --------------------------------
# Widths small enough for the CPU (the ops per step hardly depend on the width; the presets'
# own widths are counted by benchmarks/step_counts.py).
PRESET_SIZES = {"baseline": {}, "fast": {"widths": (8, 16, 16)}, "resnet9": {"widths": (4,)}}


@pytest.mark.parametrize("preset", sorted(PRESET_SIZES))
def test_a_training_step_never_waits_for_the_device(preset, cuda, capsys):
    """forbid_host_transfers() raises at the offending line; the counts are printed (-s) for
    docs/benchmarks.md."""
    batch = 4 if preset == "baseline" else 8
    from benchmarks.step_counts import count_step
    # the step train_one_epoch runs, after a first step has made the optimizer's state
    totals = count_step(preset, batch, forbid_host_transfers=True, **PRESET_SIZES[preset])["total"]
    assert totals["syncs"] == 0 and totals["h2d"] == 0
    assert totals["kernels"] > 0
    with capsys.disabled():
        print(f"\n{preset} (batch {batch}): {totals['kernels']} device operations per training step, "
              f"0 host syncs, 0 host-to-device copies")


def test_train_one_epoch_reads_the_host_every_sync_every_steps(cuda):
    """On a GPU backend the loop reads the losses every 20 steps (one transfer); the numbers it
    reports are those of a loop that reads every step."""
    from cupy import _standin
    from tinygrad_hw import training
    from tinygrad_hw.data import DataLoader
    rng = np.random.default_rng(1)
    images, labels = rng.integers(0, 256, (96, 3, 8, 8), dtype=np.uint8), rng.integers(0, 10, 96)

    def run(sync_every):
        hw.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 10))
        model.to("cupy")
        loader = DataLoader(images, labels, batch_size=4, shuffle=False, backend="cupy", prefetch=0)
        opt = hw.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        with _standin.counting() as counts:
            stats = training.train_one_epoch(model, loader, opt, None, nn.CrossEntropyLoss(),
                                             progress=False, trace_every=6, sync_every=sync_every)
        return stats, counts

    every_step, counts_1 = run(1)
    default, counts_20 = run(None)  # the default on a GPU backend: 20
    for key in ("loss", "accuracy", "images", "steps", "trace"):
        assert default[key] == every_step[key], key
    assert sum(counts_1.syncs.values()) == 24       # one per step
    assert sum(counts_20.syncs.values()) == 2       # steps 1-20, then 21-24


def test_bad_labels_make_the_loss_nan_without_a_host_check(cuda):
    from cupy import _standin
    logits = hw.randn(3, 4, requires_grad=True)
    labels = hw.tensor([0, 7, 1])
    with _standin.forbid_host_transfers():
        losses = [hw.nn.functional.cross_entropy(logits, labels),
                  hw.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1),
                  hw.nn.functional.nll_loss(logits.log_softmax(1), labels)]
        losses[0].backward()
    assert all(np.isnan(loss.item()) for loss in losses)
    assert np.isnan(logits.grad.numpy()).all()
    good = hw.nn.functional.cross_entropy(logits, hw.tensor([0, -100, 1]))  # ignore_index is fine
    assert np.isfinite(good.item())
    with pytest.raises(ValueError, match="label 7 is out of range"), hw.detect_anomaly():
        hw.nn.functional.cross_entropy(logits, labels)


# -- the generator across a resume ----------------------------------------------------------------
def test_cupy_generator_state_is_saved_and_restored(cuda):
    """CuPy's generators cannot export their state: the backend's is (seed, draws), so a resumed
    run draws what the uninterrupted one draws (dropout masks are not repeated)."""
    hw.manual_seed(5)
    first = cuda.rand((3,), np.float32).get()
    state = hw.get_rng_state()
    assert state["backends"]["cupy"] == {"seed": 5, "draws": 1}
    uninterrupted = [cuda.randn((2, 2), np.float64).get(), cuda.randint(0, 9, (4,)).get(),
                     cuda.permutation(6).get()]
    hw.manual_seed(123)  # anything in between
    cuda.rand((7,), np.float32)
    hw.set_rng_state(state)
    resumed = [cuda.randn((2, 2), np.float64).get(), cuda.randint(0, 9, (4,)).get(),
               cuda.permutation(6).get()]
    for a, b in zip(uninterrupted, resumed):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first, cuda.rand((3,), np.float32).get())  # a new draw, not a repeat
    dropout = nn.Dropout(0.5)
    masks = [dropout(hw.ones(64)).numpy() for _ in range(2)]
    assert not np.array_equal(masks[0], masks[1])


# -- the prefetching loader -----------------------------------------------------------------------
def test_loader_thread_prepares_batches_on_a_non_blocking_stream_of_its_own(cuda, cupy):
    """The worker's synchronize() then waits for its own copies only, not for the training
    step queued on the main thread's stream; the consumer never waits on the host."""
    from cupy import _standin
    from tinygrad_hw.data import DataLoader
    seen = []

    def transform(x):  # runs where the batch is made: the worker thread
        seen.append((cupy.cuda.get_current_stream(), cupy.cuda.get_device_id()))
        return x
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (12, 3, 4, 4), dtype=np.uint8), rng.integers(0, 10, 12)
    loader = DataLoader(images, labels, batch_size=4, backend="cupy", transform=transform, prefetch=2)
    main_stream = cupy.cuda.get_current_stream()
    with _standin.counting() as counts:
        batches = [(x.numpy(), y.numpy()) for x, y in loader]
    assert len(batches) == 3 and len(seen) == 3
    for stream, device in seen:
        assert stream is not main_stream and stream.non_blocking and device == 0
    assert cupy.cuda.get_current_stream() is main_stream
    assert sum(counts.syncs.values()) == 6  # only the test's own .numpy() reads
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]),
                                  labels[loader.order(0)])


def test_swats_reads_every_group_in_one_transfer_per_step(cuda):
    """SWATS decides its switch on the host: one synchronisation per step for all groups."""
    from cupy import _standin
    hw.manual_seed(0)
    ps = [nn.Parameter(hw.randn(5)), nn.Parameter(hw.randn(3)), nn.Parameter(hw.randn(2))]
    opt = hw.optim.SWATS([{"params": ps[:1]}, {"params": ps[1:2]}, {"params": ps[2:]}], lr=0.01)
    for _ in range(3):
        for p in ps:
            p.grad = hw.randn(*p.shape)
        with _standin.counting() as counts:
            opt.step()
        assert sum(counts.syncs.values()) == 1
