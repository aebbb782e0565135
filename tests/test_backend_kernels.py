"""Backend helpers written once for every array module (the reference the GPU's faster paths are
checked against): the ordered scatter-add of the deterministic mode, bit for bit numpy.add.at's
sums, on NumPy and on the default backend."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import tinygrad_hw as hw
from tinygrad_hw.backend import get_backend, ordered_scatter_add


@given(size=st.integers(1, 12), count=st.integers(0, 40), seed=st.integers(0, 2**16),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_ordered_scatter_add_is_numpy_add_at_bit_for_bit(backend, size, count, seed, dtype):
    rng = np.random.default_rng(seed)
    target = rng.standard_normal(size).astype(dtype)
    index = rng.integers(0, size, count)
    values = (rng.standard_normal(count) * 10.0 ** rng.integers(-6, 6, count)).astype(dtype)
    expected = target.copy()
    np.add.at(expected, index, values)
    be = get_backend(backend)
    ours = be.asarray(target)
    ordered_scatter_add(be.xp, ours, be.asarray(index), be.asarray(values))
    np.testing.assert_array_equal(be.to_numpy(ours), expected)


def test_ordered_scatter_add_with_tuples_of_indices_and_a_view(backend):
    be = get_backend(backend)
    rng = np.random.default_rng(3)
    target = rng.standard_normal((4, 5))
    rows, cols = rng.integers(0, 4, 30), rng.integers(0, 5, 30)
    values = rng.standard_normal(30)
    expected = target.copy()
    np.add.at(expected, (rows, cols), values)
    ours = be.asarray(target)
    ordered_scatter_add(be.xp, ours, (be.asarray(rows), be.asarray(cols)), be.asarray(values))
    np.testing.assert_array_equal(be.to_numpy(ours), expected)
    # a non-contiguous target is updated in place too
    expected_t = target.T.copy()
    np.add.at(expected_t, (cols, rows), values)
    ours_t = be.asarray(target).T
    ordered_scatter_add(be.xp, ours_t, (be.asarray(cols), be.asarray(rows)), be.asarray(values))
    np.testing.assert_array_equal(be.to_numpy(ours_t), expected_t)


def test_deterministic_mode_makes_gradients_of_repeated_indices_reproducible(backend):
    """x[idx] with repeated idx, and overlapping max-pool windows: with
    use_deterministic_algorithms(True) the gradients are numpy.add.at's, on every backend."""
    rng = np.random.default_rng(0)
    x_host = rng.standard_normal(50).astype(np.float32)
    index = rng.integers(0, 50, 400)
    up = rng.standard_normal(400).astype(np.float32)
    expected = np.zeros(50, np.float32)
    np.add.at(expected, index, up)
    assert not hw.are_deterministic_algorithms_enabled()
    hw.use_deterministic_algorithms(True)
    try:
        x = hw.Tensor(x_host, backend=backend, requires_grad=True)
        x[hw.Tensor(index, backend=backend)].backward(hw.Tensor(up, backend=backend))
        np.testing.assert_array_equal(x.grad.numpy(), expected)
        img = hw.Tensor(rng.standard_normal((2, 3, 9, 9)).astype(np.float32), backend=backend,
                        requires_grad=True)
        grads = []
        for _ in range(2):
            img.grad = None
            hw.nn.functional.max_pool2d(img, 3, stride=1).sum().backward()
            grads.append(img.grad.numpy())
        np.testing.assert_array_equal(grads[0], grads[1])
    finally:
        hw.use_deterministic_algorithms(False)


_FAULTS_OF_A_FRESH_ARRAY = """
import platform, resource, sys
import numpy as np
import tinygrad_hw as hw
hw.backend.get_backend("numpy")  # the NumPy backend, made on first use
from tinygrad_hw import backend
a = np.ones(64 << 18, np.float32)  # 64 MiB, allocated and freed once
del a
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.ones(64 << 18, np.float32)  # ... and again: faulted in again unless malloc kept it
print(backend.keep_freed_memory(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="glibc's malloc only")
@pytest.mark.parametrize("keep", ["1", "0"])
def test_numpy_backend_keeps_freed_memory_in_the_process(keep):
    """A step's activations, freed and allocated again, are not page-faulted back in every step
    (glibc's mallopt), unless TINYGRAD_HW_KEEP_FREED_MEMORY=0 leaves malloc as it is."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, TINYGRAD_HW_KEEP_FREED_MEMORY=keep)
    out = subprocess.run([sys.executable, "-c", _FAULTS_OF_A_FRESH_ARRAY], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    tuned, faults = out[0] == "True", int(out[1])
    assert tuned == (keep == "1")
    if tuned:
        assert faults < 16  # kept: at most a few pages of bookkeeping
    else:
        assert faults > 16  # 64 MiB mapped anew: hundreds of faults (huge pages) or thousands
