"""Fast paths that must not change a result: the array-level first-order backward of the
convolution family (``Function.compute``, used by ``_ConvFamily.backward`` when
``first_order()``), and the ``(w @ x.T).T`` form of a small float32 ``Linear`` forward
(``ops/linalg._x_times_wt``).

Each fast path is checked three ways: against PyTorch, bit for bit against the path it replaces
(the recorded backward with ``create_graph=True``; NumPy's ``x @ w.T``), and that it is taken
exactly where its conditions say (a spy on the calls), so a test cannot pass by never reaching
it. (The compiled_nn kernels below ``parallel.SPLIT_BYTES`` are covered by test_compiled_nn.py:
its even seeds keep the default SPLIT_BYTES, so every drawn input there takes the direct call.)
"""
import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_hw as hw
import tinygrad_hw.nn.functional as hwF
from tinygrad_hw.autograd.function import Function, first_order
from tinygrad_hw.backend import get_backend
from tinygrad_hw.kernels import parallel
from tinygrad_hw.ops import conv as conv_ops
from tinygrad_hw.ops import linalg
from tinygrad_hw.testing import assert_close, compare_with_torch

from helpers import second_order_against_torch

DTYPES = [np.float64, np.float32]
TOL = {np.float64: 1e-9, np.float32: 1e-4}


def _rng(seed):
    return np.random.default_rng(seed)


@contextlib.contextmanager
def _spy_makers(monkeypatch):
    """Count ``compute`` and ``apply`` calls of the two gradient makers of the conv family."""
    counts = {"compute": 0, "apply": 0}
    with monkeypatch.context() as m:
        for cls in (conv_ops.Conv2dInputGrad, conv_ops.Conv2dWeightGrad):
            for name in ("compute", "apply"):
                real = getattr(cls, name)  # bound to cls

                def spy(klass, *args, _real=real, _name=name, **kwargs):
                    counts[_name] += 1
                    return _real(*args, **kwargs)

                m.setattr(cls, name, classmethod(spy))
        yield counts


# --------------------------------------------------------------------------------------------------
# convolution: first-order gradients through Function.compute
# --------------------------------------------------------------------------------------------------
@st.composite
def conv_cases(draw):
    groups = draw(st.integers(1, 3))
    cin, cout = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 8))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 8))
    # which of x and w need a gradient (at least one): the makers run only for those
    needs = draw(st.sampled_from([(True, True), (True, True), (True, False), (False, True)]))
    return dict(n=draw(st.integers(1, 3)), cin=cin, cout=cout, groups=groups, h=h, w=w, kernel=(kh, kw),
                geom=dict(stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), groups=groups),
                bias=draw(st.booleans()), needs=needs, dtype=draw(st.sampled_from(DTYPES)),
                seed=draw(st.integers(0, 2**16)))


def _conv_arrays(case):
    rng = _rng(case["seed"])
    kh, kw = case["kernel"]
    dt = case["dtype"]
    x = rng.standard_normal((case["n"], case["cin"], case["h"], case["w"])).astype(dt)
    w = rng.standard_normal((case["cout"], case["cin"] // case["groups"], kh, kw)).astype(dt)
    b = rng.standard_normal(case["cout"]).astype(dt)
    return [x, w, b] if case["bias"] else [x, w]


def _conv_grads(backend, case, arrays, upstream, mode):
    """The gradients of <conv(x, w, b), upstream> in the inputs that need one (None elsewhere) and
    the tensors they came as: ``mode`` 'backward' (a plain .backward()), 'grad' (hw.grad) or
    'create_graph' (hw.grad(..., create_graph=True): every maker recorded with apply)."""
    needs = list(case["needs"]) + [True] * (len(arrays) - 2)
    xs = [hw.Tensor(a, backend=backend, requires_grad=r) for a, r in zip(arrays, needs)]
    out = hwF.conv2d(*xs, **case["geom"])
    # the upstream gradient a variable when recording: every maker's output then has a graph
    up = hw.Tensor(upstream, backend=backend, requires_grad=mode == "create_graph")
    if mode == "backward":
        out.backward(up)
        tensors = [t.grad if r else None for t, r in zip(xs, needs)]
    else:
        wanted = [t for t, r in zip(xs, needs) if r]
        got = iter(hw.grad([out], wanted, [up], create_graph=mode == "create_graph"))
        tensors = [next(got) if r else None for r in needs]
    return [None if t is None else t.numpy() for t in tensors], tensors


@settings(max_examples=25, deadline=None)
@given(case=conv_cases())
def test_conv2d_first_order_gradients_fast_path_equals_recorded_and_torch(backend, monkeypatch, case):
    """Plain first-order gradients of conv2d (made by Function.compute: the spy must see compute
    calls and no apply) equal PyTorch's, and the input and weight gradients are bit for bit those
    of the recorded path (create_graph=True: apply calls only, no compute). The fast path's
    gradient tensors record nothing (no op, no requires_grad); the recorded ones do."""
    arrays = _conv_arrays(case)
    dt = case["dtype"]
    upstream = _rng(case["seed"] + 1).standard_normal(
        hwF.conv2d(*[hw.Tensor(a, backend=backend) for a in arrays], **case["geom"]).shape).astype(dt)
    n_makers = sum(case["needs"])

    with _spy_makers(monkeypatch) as counts:
        fast, fast_t = _conv_grads(backend, case, arrays, upstream, "backward")
        assert counts == {"compute": n_makers, "apply": 0}, counts
        counts.update(compute=0, apply=0)
        fast_g, _ = _conv_grads(backend, case, arrays, upstream, "grad")
        assert counts == {"compute": n_makers, "apply": 0}, counts
        counts.update(compute=0, apply=0)
        rec, rec_t = _conv_grads(backend, case, arrays, upstream, "create_graph")
        assert counts == {"compute": 0, "apply": n_makers}, counts

    # PyTorch
    ts = [torch.from_numpy(a.copy()).requires_grad_(r)
          for a, r in zip(arrays, list(case["needs"]) + [True] * (len(arrays) - 2))]
    F.conv2d(*ts, **case["geom"]).backward(torch.from_numpy(upstream))
    for i, (ours, t) in enumerate(zip(fast, ts)):
        if t.requires_grad:
            assert ours.dtype == np.dtype(dt), f"gradient {i} dtype {ours.dtype}"
            assert_close(ours, t.grad, TOL[dt], f"fast-path gradient of input {i} vs torch")
            assert_close(rec[i], t.grad, TOL[dt], f"recorded gradient of input {i} vs torch")
        else:
            assert ours is None and rec[i] is None

    # bit for bit: the array-level makers are the recorded makers' forwards (x and w; the bias
    # gradient may take the compiled channel sums instead of g.sum, so only to rounding above)
    for i in range(2):
        if case["needs"][i]:
            assert fast[i].dtype == rec[i].dtype
            np.testing.assert_array_equal(fast[i], rec[i], err_msg=f"gradient of input {i}: fast vs recorded")
            np.testing.assert_array_equal(fast[i], fast_g[i], err_msg=f"gradient of input {i}: backward vs grad")
            assert not fast_t[i].requires_grad and fast_t[i]._ctx is None and fast_t[i].is_leaf
            assert rec_t[i].requires_grad and rec_t[i]._ctx is not None


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_first_order_under_anomaly_mode_takes_the_recorded_makers(backend, monkeypatch, dtype):
    """detect_anomaly: first_order() is False, so the makers go through apply (checked), with the
    same gradients bit for bit as the fast path outside it."""
    rng = _rng(7)
    x, w = rng.standard_normal((2, 4, 6, 5)).astype(dtype), rng.standard_normal((6, 2, 3, 2)).astype(dtype)
    up = rng.standard_normal((2, 6, 3, 6)).astype(dtype)
    geom = dict(stride=(2, 1), padding=1, groups=2)

    def run():
        xt, wt = hw.Tensor(x, backend=backend, requires_grad=True), hw.Tensor(w, backend=backend, requires_grad=True)
        hwF.conv2d(xt, wt, **geom).backward(hw.Tensor(up, backend=backend))
        return xt.grad.numpy(), wt.grad.numpy()

    with _spy_makers(monkeypatch) as counts:
        fast = run()
        assert counts == {"compute": 2, "apply": 0}
        counts.update(compute=0, apply=0)
        with hw.detect_anomaly():
            checked = run()
        assert counts == {"compute": 0, "apply": 2}
    for a, b in zip(fast, checked):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------------
# convolution: second order (create_graph keeps the recorded makers)
# --------------------------------------------------------------------------------------------------
@settings(max_examples=10, deadline=None)
@given(case=conv_cases())
def test_conv2d_second_order_after_the_fast_path(backend, case):
    """create_graph=True still records the backward (second-order gradients of conv -> tanh equal
    PyTorch's in x, w, b and the upstream gradient), also right after a plain first-order
    backward of the same layer took the fast path."""
    case = dict(case, dtype=np.float64, bias=True)
    x, w, b = _conv_arrays(case)
    geom = case["geom"]
    # a plain backward first (fast path), then the second order on the same arrays
    xt, wt = hw.Tensor(x, backend=backend, requires_grad=True), hw.Tensor(w, backend=backend, requires_grad=True)
    hwF.conv2d(xt, wt, **geom).tanh().sum().backward()
    assert not xt.grad.requires_grad and not wt.grad.requires_grad
    second_order_against_torch(backend, lambda x, w, b: hwF.conv2d(x, w, b, **geom).tanh(),
                  lambda x, w, b: F.conv2d(x, w, b, **geom).tanh(), [x, w, b], case["seed"])


# --------------------------------------------------------------------------------------------------
# Function.compute and first_order themselves
# --------------------------------------------------------------------------------------------------
def _conv_member_inputs(backend, dtype=np.float64):
    be = get_backend(backend)
    rng = _rng(11)
    x = rng.standard_normal((2, 4, 7, 6)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 3)).astype(dtype)
    geom = dict(stride=(2, 1), padding=(1, 0, 2, 1), dilation=(1, 2), groups=2)
    y = conv_ops.Conv2d.compute(be, be.asarray(x), be.asarray(w), out_hw=None, **geom)
    g = rng.standard_normal(tuple(y.shape)).astype(dtype)
    return be, x, w, g, geom


@pytest.mark.parametrize("dtype", DTYPES)
def test_compute_returns_forwards_array_without_recording(backend, dtype):
    """Function.compute is ``forward`` on arrays: it returns a backend array (not a Tensor), bit
    for bit the array of ``apply`` on tensors of the same arrays, for each member of the conv
    family; and it leaves its input arrays unchanged."""
    be, x, w, g, geom = _conv_member_inputs(backend, dtype)
    cases = [(conv_ops.Conv2d, (x, w), dict(out_hw=None)),
             (conv_ops.Conv2dInputGrad, (g, w), dict(input_hw=x.shape[2:])),
             (conv_ops.Conv2dWeightGrad, (x, g), dict(kernel_hw=w.shape[2:]))]
    for cls, (a, b), size in cases:
        arrays = [be.asarray(a.copy()), be.asarray(b.copy())]
        got = cls.compute(be, *arrays, **size, **geom)
        assert isinstance(got, be.xp.ndarray) and not isinstance(got, hw.Tensor), type(got)
        ta, tb = hw.Tensor(a, backend=backend, requires_grad=True), hw.Tensor(b, backend=backend, requires_grad=True)
        ref = cls.apply(ta, tb, **size, **geom)
        assert ref._ctx is not None  # apply recorded; compute has nothing to record into
        got_np = hw.Tensor(got, backend=backend).numpy()
        assert got_np.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got_np, ref.numpy(), err_msg=cls.__name__)
        for arr, orig in zip(arrays, (a, b)):
            np.testing.assert_array_equal(hw.Tensor(arr, backend=backend).numpy(), orig)


def test_compute_does_not_check_anomalies(backend):
    """'no checks': under detect_anomaly, apply raises on an Inf made from finite inputs; compute
    on the same arrays returns the Inf."""
    be = get_backend(backend)
    x = np.full((1, 1, 2, 2), 1e30, np.float32)
    w = np.full((1, 1, 2, 2), 1e30, np.float32)
    with hw.detect_anomaly(), np.errstate(over="ignore", invalid="ignore"):
        with pytest.raises(hw.AnomalyError):
            conv_ops.Conv2d.apply(hw.Tensor(x, backend=backend), hw.Tensor(w, backend=backend),
                                  stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1, out_hw=None)
        y = conv_ops.Conv2d.compute(be, be.asarray(x), be.asarray(w), stride=(1, 1), padding=(0, 0, 0, 0),
                                    dilation=(1, 1), groups=1, out_hw=None)
    assert np.isinf(hw.Tensor(y, backend=backend).numpy()).all()


class _Scale(Function):
    """An op with its own __init__ (compute takes the ``cls(backend, **params)`` branch) that
    records what forward saw."""
    seen = []

    def __init__(self, backend, factor=1.0):
        super().__init__(backend)
        self.factor = factor

    def forward(self, *arrays):
        _Scale.seen.append((type(self.backend).__name__, self.xp, tuple(self.needs_input_grad), self.factor))
        return sum(arrays) * self.factor


class _PlainScale(Function):
    seen = []

    def forward(self, *arrays):
        _PlainScale.seen.append((self.xp, tuple(self.needs_input_grad), self.factor))
        return sum(arrays) * self.factor


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_compute_sets_the_op_up_as_apply_does_with_no_gradients(backend, n):
    """compute builds the op like apply (params as attributes, backend and xp set, a subclass's
    own __init__ called) with needs_input_grad all False for any number of inputs: forward then
    saves nothing for a backward that will never run."""
    be = get_backend(backend)
    arrays = [be.asarray(np.full(3, float(i + 1))) for i in range(n)]
    for cls in (_Scale, _PlainScale):
        cls.seen.clear()
        out = cls.compute(be, *arrays, factor=2.0)
        assert not isinstance(out, hw.Tensor)
        np.testing.assert_array_equal(hw.Tensor(out, backend=backend).numpy(), np.full(3, n * (n + 1.0)))
        assert len(cls.seen) == 1
        seen = cls.seen[0]
        assert seen[-2] == (False,) * n and seen[-1] == 2.0
        assert be.xp in seen


def test_first_order_is_true_only_in_a_plain_backward(backend):
    """first_order(): False in a forward (grad mode on), True in a plain backward, False in a
    create_graph backward and in a backward under detect_anomaly."""
    seen = []

    class Probe(Function):
        def forward(self, x):
            seen.append(("forward", first_order()))
            return x * 1

        def backward(self, g):
            seen.append(("backward", first_order()))
            return (g,)

    def run(**kw):
        x = hw.Tensor(np.ones(3), backend=backend, requires_grad=True)
        y = Probe.apply(x)
        hw.grad([y], [x], [hw.Tensor(np.ones(3), backend=backend)], **kw)

    run()
    run(create_graph=True)
    with hw.detect_anomaly():
        run()
    assert seen == [("forward", False), ("backward", True), ("forward", False), ("backward", False),
                    ("forward", False), ("backward", False)]
    with hw.no_grad():
        assert first_order()
    assert not first_order()


# --------------------------------------------------------------------------------------------------
# Linear: x @ w.T as (w @ x.T).T for small float32 batches
# --------------------------------------------------------------------------------------------------
def _takes_fast_path(m, k, n, dtype, contiguous=True):
    """The conditions of linalg._x_times_wt, restated (NumPy backend)."""
    return (2 < m <= 32 and n >= 128 and np.dtype(dtype) == np.float32
            and m * k * n < parallel.MATMUL_SPLIT_MACS and contiguous)


@st.composite
def linear_shapes(draw):
    """(m, k, n) on and around the fast path's boundaries: m in 1..40 (2 | 3, 32 | 33), n around
    128 (127 | 128) or wider, k small or at the MACs limit (m * k * n just below / at / above
    MATMUL_SPLIT_MACS)."""
    m = draw(st.one_of(st.sampled_from([1, 2, 3, 4, 31, 32, 33]), st.integers(1, 40)))
    n = draw(st.one_of(st.sampled_from([127, 128, 129]), st.integers(100, 160), st.sampled_from([256, 512])))
    if draw(st.booleans()):
        k = draw(st.integers(1, 96))
    else:
        limit = -(-parallel.MATMUL_SPLIT_MACS // (m * n))  # the smallest k at or above the limit
        k = max(1, limit + draw(st.integers(-1, 1)))
    return m, k, n


@contextlib.contextmanager
def _spy_matmul(monkeypatch):
    """Record the calls of parallel.matmul (the plain path of _x_times_wt; the fast one skips it)."""
    calls = []
    real = parallel.matmul

    def spy(be, a, b):
        calls.append((a.shape, b.shape))
        return real(be, a, b)

    with monkeypatch.context() as m:
        m.setattr(parallel, "matmul", spy)
        yield calls


@settings(max_examples=25, deadline=None)
@given(shape=linear_shapes(), dtype=st.sampled_from([np.float32, np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_x_times_wt_equals_numpy(monkeypatch, shape, dtype, seed):
    """linalg._x_times_wt(x, w) is x @ w.T: bit for bit NumPy's for every shape BLAS runs as one
    product, except on the fast path's shapes (which must skip parallel.matmul exactly where the
    conditions say), where it is (w @ x.T).T bit for bit and x @ w.T to rounding; to rounding
    where parallel.matmul splits it over the workers. The result is a fresh C-contiguous array of
    the input dtype."""
    m, k, n = shape
    be = get_backend("numpy")
    rng = _rng(seed)
    x = rng.standard_normal((m, k)).astype(dtype)
    w = rng.standard_normal((n, k)).astype(dtype)
    with _spy_matmul(monkeypatch) as calls:
        out = linalg._x_times_wt(be, x, w)
    fast = _takes_fast_path(m, k, n, dtype)
    assert (not calls) == fast, (shape, np.dtype(dtype).name, calls)
    assert out.dtype == np.dtype(dtype) and out.shape == (m, n) and out.flags.c_contiguous
    ref = x @ w.T
    if fast:  # exactly the swapped product, which is x @ w.T to rounding (bit for bit with some
        # BLAS kernels, e.g. OpenBLAS's SkylakeX sgemm, not with others, e.g. its Haswell one)
        np.testing.assert_array_equal(out, (w @ x.T).T)
        assert_close(out, ref, TOL[dtype], "swapped product")
    elif m * k * n < parallel.MATMUL_SPLIT_MACS:
        np.testing.assert_array_equal(out, ref)
    else:
        assert_close(out, ref, TOL[dtype], "split product")
        np.testing.assert_array_equal(out, parallel.matmul(be, x, w.T))  # what the plain path is


@pytest.mark.parametrize("layout", ["x_view", "w_view", "x_fortran"])
def test_x_times_wt_non_contiguous_inputs_take_the_plain_product(monkeypatch, layout):
    """Non-C-contiguous operands of a fast-path shape take parallel.matmul, still x @ w.T."""
    be = get_backend("numpy")
    rng = _rng(3)
    m, k, n = 8, 40, 256
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    if layout == "x_view":
        x = rng.standard_normal((m, 2 * k)).astype(np.float32)[:, ::2]
    elif layout == "w_view":
        w = np.ascontiguousarray(w.T).T
    else:
        x = np.asfortranarray(x)
    with _spy_matmul(monkeypatch) as calls:
        out = linalg._x_times_wt(be, x, w)
    assert calls, "a non-contiguous operand took the fast path"
    np.testing.assert_array_equal(out, x @ w.T)


@settings(max_examples=25, deadline=None)
@given(shape=linear_shapes(), lead=st.sampled_from([(), (1,), (2,), (3,)]), bias=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_linear_forward_bit_for_bit_numpy(monkeypatch, shape, lead, bias, dtype, seed):
    """hwF.linear on the NumPy backend, any leading dims: x @ w.T (+ b) bit for bit NumPy's
    where BLAS runs it as one product ((w @ x.T).T on the fast path, taken exactly on its shapes:
    the flattened batch's rows are m)."""
    m, k, n = shape
    if lead and m % lead[0]:
        lead = ()
    xshape = (lead[0], m // lead[0], k) if lead else (m, k)
    rng = _rng(seed)
    x = rng.standard_normal(xshape).astype(dtype)
    w = rng.standard_normal((n, k)).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    args = [hw.Tensor(x, backend="numpy", requires_grad=True), hw.Tensor(w, backend="numpy", requires_grad=True)]
    if bias:
        args.append(hw.Tensor(b, backend="numpy", requires_grad=True))
    with _spy_matmul(monkeypatch) as calls:
        out = hwF.linear(*args)
    fast = _takes_fast_path(m, k, n, dtype)
    assert (not calls) == fast
    # the 2-D product of the flattened batch (NumPy's own x @ w.T on a 3-D x is a batch of
    # products, which sums differently in float32); the fast path's is the swapped product
    x2 = x.reshape(m, k)
    ref = ((w @ x2.T).T if fast else x2 @ w.T).reshape(xshape[:-1] + (n,))
    if bias:
        ref = ref + b
    assert out.shape == ref.shape and out.dtype == np.dtype(dtype)
    if m * k * n < parallel.MATMUL_SPLIT_MACS:
        np.testing.assert_array_equal(out.numpy(), ref)
    else:
        assert_close(out, ref, TOL[dtype], "linear forward")
    if fast:
        plain = (x2 @ w.T).reshape(ref.shape) + (b if bias else 0)
        assert_close(out, plain, TOL[dtype], "linear forward against x @ w.T")


@settings(max_examples=25, deadline=None)
@given(m=st.sampled_from([1, 2, 3, 5, 32, 33]), k=st.integers(1, 40), n=st.sampled_from([3, 127, 128, 130]),
       lead=st.sampled_from([(), (2,)]), bias=st.booleans(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_linear_matches_torch(backend, m, k, n, lead, bias, dtype, seed):
    """hwF.linear's forward, dtype and gradients (x, w, b) equal PyTorch's, on shapes on both
    sides of the fast path's boundaries (any backend)."""
    rng = _rng(seed)
    x = rng.standard_normal(lead + (m, k)).astype(dtype)
    w = rng.standard_normal((n, k)).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    arrays = [x, w, b] if bias else [x, w]
    compare_with_torch(hwF.linear, F.linear, arrays, backend=backend, rtol=TOL[dtype], seed=seed)


def test_linear_fast_path_gradients_and_second_order_match_torch(backend):
    """A fast-path shape (float32, m = 4, n = 256) through linear -> tanh: first-order gradients
    and, in float64 on the same shape, second-order ones as in PyTorch."""
    from tinygrad_hw.testing import compare_second_order
    rng = _rng(5)
    x, w, b = rng.standard_normal((4, 24)), rng.standard_normal((256, 24)), rng.standard_normal(256)
    f32 = [a.astype(np.float32) for a in (x, w, b)]
    compare_with_torch(lambda *t: hwF.linear(*t).tanh(), lambda *t: F.linear(*t).tanh(), f32, backend=backend,
                       rtol=1e-4)
    compare_second_order(lambda *t: hwF.linear(*t).tanh(), lambda *t: F.linear(*t).tanh(), [x, w, b], backend)


_MACS = parallel.MATMUL_SPLIT_MACS


@pytest.mark.parametrize("m,k,n,fast", [
    (3, 17, 128, True), (2, 17, 128, False), (32, 17, 128, True), (33, 17, 128, False),
    (4, 17, 127, False), (4, 384, 512, True), (1, 64, 256, False),
    # m * k * n just below and at MATMUL_SPLIT_MACS
    (32, (_MACS - 1) // (32 * 128), 128, True), (32, -(-_MACS // (32 * 128)), 128, False),
    (5, (_MACS - 1) // (5 * 200), 200, True), (5, -(-_MACS // (5 * 200)), 200, False),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_x_times_wt_boundaries(monkeypatch, m, k, n, fast, dtype):
    """The fast path's edges, named: taken exactly for float32 with 2 < m <= 32, n >= 128 and
    m * k * n < MATMUL_SPLIT_MACS ((w @ x.T).T there), bit for bit x @ w.T elsewhere wherever
    BLAS runs one product."""
    be = get_backend("numpy")
    rng = _rng(m * 1000 + n)
    x = rng.standard_normal((m, k)).astype(dtype)
    w = rng.standard_normal((n, k)).astype(dtype)
    with _spy_matmul(monkeypatch) as calls:
        out = linalg._x_times_wt(be, x, w)
    taken = fast and dtype == np.float32
    assert (not calls) == taken
    if taken:  # exactly the swapped product; x @ w.T to rounding (see above)
        np.testing.assert_array_equal(out, (w @ x.T).T)
        assert_close(out, x @ w.T, TOL[dtype], "swapped product")
    elif m * k * n < _MACS:
        np.testing.assert_array_equal(out, x @ w.T)
    else:
        assert_close(out, x @ w.T, TOL[dtype], "split product")


# --------------------------------------------------------------------------------------------------
# nn.Sequential's fused Conv2d -> ReLU (ops.conv.Conv2dReLU)
# --------------------------------------------------------------------------------------------------
def _conv_relu_net(cin, cout, kernel, stride, bias, dtype, seed):
    hw.manual_seed(seed)
    return hw.nn.Sequential(hw.nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=bias, dtype=dtype),
                            hw.nn.ReLU(), hw.nn.Conv2d(cout, 3, 1, dtype=dtype), hw.nn.ReLU())


def _run_net(net, x, upstream):
    xt = hw.Tensor(x, requires_grad=True)
    out = net(xt)
    out.backward(hw.Tensor(upstream))
    return [out.numpy(), xt.grad.numpy()] + [p.grad.numpy() for p in net.parameters()]


@settings(max_examples=20, deadline=None)
@given(cin=st.sampled_from([1, 3, 6, 16, 20]), cout=st.sampled_from([2, 12, 16, 33]), size=st.integers(4, 17),
       kernel=st.sampled_from([1, 3]), stride=st.sampled_from([1, 2]), bias=st.booleans(), dtype=st.sampled_from(DTYPES),
       compiled_on=st.booleans(), seed=st.integers(0, 2**16))
def test_sequential_conv_relu_is_fused_and_bit_for_bit_the_two_ops(backend, monkeypatch, cin, cout, size, kernel,
                                                                   stride, bias, dtype, compiled_on, seed):
    """Conv2d -> ReLU in nn.Sequential runs as one Conv2dReLU node, with the output and every
    gradient bit for bit those of the two ops run one by one (NaN and signed zeros of the ReLU as
    Relu's); the ops are not fused when FUSE_CONV_RELU is off."""
    _check_fused_conv_relu(monkeypatch, cin, cout, size, kernel, stride, bias, dtype, compiled_on, seed)


@pytest.mark.parametrize("cin,cout,size,kernel,stride,compiled_on", [
    (20, 33, 16, 3, 1, True),   # compiled Winograd F(4x4), channels-last V and M (wino_output_cl)
    (20, 16, 8, 3, 1, True),    # F(4x4) at 8x8
    (16, 20, 4, 3, 1, True),    # F(2x2) at 4x4, channels-last
    (6, 12, 16, 3, 1, True),    # F(2x2), channel-major V (wino_output)
    (32, 32, 8, 3, 1, False),   # the NumPy Winograd
    (3, 8, 12, 3, 1, True),     # im2col, one product per image (144 positions)
    (3, 8, 6, 3, 1, True),      # im2col, one product for the chunk (36 positions)
    (4, 6, 9, 3, 2, False),     # im2col, strided
])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_relu_fusion_on_every_kernel_path(monkeypatch, cin, cout, size, kernel, stride, compiled_on, bias, dtype):
    """The fused ReLU on each kernel path of the NumPy backend, named (the drawn cases above
    reach some of them only now and then)."""
    _check_fused_conv_relu(monkeypatch, cin, cout, size, kernel, stride, bias, dtype, compiled_on, 7)


def _check_fused_conv_relu(monkeypatch, cin, cout, size, kernel, stride, bias, dtype, compiled_on, seed):
    from tinygrad_hw.kernels import compiled
    from tinygrad_hw.nn import containers
    rng = _rng(seed)
    x = rng.standard_normal((2, cin, size, size)).astype(dtype)
    x[0, 0, 0, :2] = [np.nan, -0.0]
    net = _conv_relu_net(cin, cout, kernel, stride, bias, dtype, seed)
    calls = {"fused": 0}
    real = conv_ops.Conv2dReLU.forward

    def counted(self, *arrays):
        calls["fused"] += 1
        return real(self, *arrays)

    with monkeypatch.context() as patch:  # undone after each drawn example
        patch.setattr(compiled, "ENABLED", compiled_on and compiled.ENABLED)
        patch.setattr(conv_ops.Conv2dReLU, "forward", counted)
        upstream = rng.standard_normal(net(hw.Tensor(x)).shape)
        calls["fused"] = 0
        fused = _run_net(net, x, upstream)
        assert calls["fused"] == 2
        patch.setattr(containers, "FUSE_CONV_RELU", False)
        for p in net.parameters():
            p.grad = None
        separate = _run_net(net, x, upstream)
        assert calls["fused"] == 2  # not called again
    for a, b in zip(fused, separate):
        np.testing.assert_array_equal(a, b)


def test_conv_relu_fusion_needs_the_exact_classes(backend, monkeypatch):
    """A subclass of ReLU or Conv2d, or an instance with its own forward, runs on its own."""
    calls = []
    monkeypatch.setattr(conv_ops.Conv2dReLU, "forward",
                        lambda self, *a: calls.append(1) or conv_ops.Conv2d.forward(self, *a))

    class MyReLU(hw.nn.ReLU):
        pass

    x = hw.Tensor(_rng(0).standard_normal((1, 2, 5, 5)))
    hw.nn.Sequential(hw.nn.Conv2d(2, 3, 3, dtype=np.float64), MyReLU())(x)
    conv = hw.nn.Conv2d(2, 3, 3, dtype=np.float64)
    conv.forward = lambda inp, **kw: hw.nn.functional.conv2d(inp, conv.weight, conv.bias)
    hw.nn.Sequential(conv, hw.nn.ReLU())(x)
    assert not calls
    hw.nn.Sequential(hw.nn.Conv2d(2, 3, 3, dtype=np.float64), hw.nn.ReLU())(x)
    assert calls


@settings(max_examples=10, deadline=None)
@given(case=conv_cases())
def test_conv2d_relu_second_order_matches_torch(backend, case):
    """conv2d_relu records a backward that is differentiable again: second-order gradients (in
    x, w, b and the upstream gradient) of relu(conv) -> tanh as PyTorch's."""
    from tinygrad_hw.nn.functional.conv import conv2d_relu
    case = dict(case, dtype=np.float64, bias=True)
    x, w, b = _conv_arrays(case)
    geom = case["geom"]
    second_order_against_torch(backend, lambda x, w, b: conv2d_relu(x, w, b, **geom).tanh(),
                               lambda x, w, b: F.relu(F.conv2d(x, w, b, **geom)).tanh(), [x, w, b], case["seed"])
