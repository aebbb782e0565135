"""The NumPy backend's worker threads: large products split into row blocks give NumPy's
result, errors in a worker reach the caller, and BLAS gets its thread count back."""
import numpy as np
import pytest

from tinygrad_hw.kernels import parallel
from tinygrad_hw.backend import get_backend


@pytest.mark.parametrize("shape", [(64, 2048, 256), (3, 4096, 1024), (257, 300, 129)])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_split_matmul_equals_numpy(monkeypatch, shape, workers):
    monkeypatch.setattr(parallel, "WORKERS", workers)
    monkeypatch.setattr(parallel, "MATMUL_SPLIT_MACS", 1)  # split even the smallest of these
    m, k, n = shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((n, k)).astype(np.float32).T  # a transposed view, as linear uses
    out = parallel.matmul(get_backend("numpy"), a, b)
    assert out.dtype == np.float32 and out.shape == (m, n)
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("count,shape", [(1, (3, 4)), (2, (5,)), (7, (36, 33, 17)), (5, (2, 3))])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_map_sum_sums_fixed_shares_bit_for_bit(monkeypatch, count, shape, workers):
    """map_sum is sum over k of (the chunks k, k + W, k + 2W ... summed in order), the shares
    added in order: bit for bit that, whichever thread runs which share; each chunk's fn once."""
    monkeypatch.setattr(parallel, "WORKERS", workers)
    monkeypatch.setattr(parallel, "SPLIT_BYTES", 1)  # split even the smallest of these
    rng = np.random.default_rng(count)
    parts = [(rng.standard_normal(shape) * 10.0 ** rng.integers(-4, 4)).astype(np.float32) for _ in range(count)]
    shares = []
    for k in range(min(workers, count)):
        share = parts[k].copy()
        for part in parts[k + workers::workers]:
            share += part
        shares.append(share)
    expected = shares[0]
    for share in shares[1:]:
        expected += share
    calls = []

    def fn(i):
        calls.append(i)
        return parts[i].copy()  # fresh, as the contract says

    for _ in range(3):  # the same bits every time
        calls.clear()
        np.testing.assert_array_equal(parallel.map_sum(get_backend("numpy"), fn, list(range(count))), expected)
        assert sorted(calls) == list(range(count))


def test_blas_threads_are_restored_after_a_kernel(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    monkeypatch.setattr(parallel, "WORKERS", 2)
    be = get_backend("numpy")
    libs = threadpoolctl.ThreadpoolController().select(user_api="blas").lib_controllers
    if not libs:
        pytest.skip("no BLAS library found by threadpoolctl")
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        seen = parallel.map_chunks(be, lambda span: libs[0].get_num_threads(), [(0, 1), (1, 2), (2, 3)])
        assert seen == [1, 1, 1]  # every chunk ran with one BLAS thread
        assert libs[0].get_num_threads() == 2


def test_worker_errors_reach_the_caller(monkeypatch):
    monkeypatch.setattr(parallel, "WORKERS", 2)

    def chunk(span):
        if span[0] == 3:
            raise RuntimeError("chunk 3 failed")
        return span[0]

    be = get_backend("numpy")
    with pytest.raises(RuntimeError, match="chunk 3 failed"):
        parallel.map_chunks(be, chunk, [(i, i + 1) for i in range(6)])
    assert parallel.map_chunks(be, lambda s: s[0], [(i, i + 1) for i in range(6)]) == list(range(6))
