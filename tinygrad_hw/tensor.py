"""The Tensor: an n-dimensional array on a backend, with PyTorch's API and reverse-mode autograd.

A Tensor wraps one backend array (``.data``). Every method that computes is a one-line ``def``
that checks its arguments and calls a differentiable op of :mod:`tinygrad_hw.ops` (or composes
other methods); recording the op and walking the graph backwards are the engine's job
(:mod:`tinygrad_hw.autograd`). ``cat``, ``stack`` and ``where``, which combine several tensors,
are here too; the factories (``zeros``, ``randn``...) are in :mod:`tinygrad_hw.creation`.
"""
from __future__ import annotations

import numbers
import weakref as _weakref

import numpy

from . import backend as _backend
from . import ops
from .autograd import engine
from .autograd.grad_mode import state as _grad_state
from .backend import get_backend
from .dtypes import get_default_dtype, is_float, promote_types, to_dtype

__all__ = ["Tensor", "cat", "stack", "where"]

_new_tensor = object.__new__


def _axes(axis, ndim):
    """Normalise an int / tuple / None axis argument to a sorted tuple of non-negative ints."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, numbers.Integral):
        axis = (axis,)
    out = []
    for a in axis:
        if not -max(ndim, 1) <= a < max(ndim, 1):
            raise IndexError(f"dimension {a} out of range for a tensor with {ndim} dims")
        if ndim:  # a 0-d tensor accepts dim 0 / -1 (as in PyTorch) and has nothing to reduce
            out.append(a % ndim)
    return tuple(sorted(set(out)))


def _axis_arg(axis, dim):
    if dim is not None:
        if axis is not None:
            raise TypeError("give axis= or dim=, not both")
        return dim
    return axis


def _keep_arg(keepdims, keepdim):
    return bool(keepdims or keepdim)


class Tensor:
    """An n-dimensional array on a backend, with reverse-mode autograd.

    ``Tensor(data, dtype=None, requires_grad=False, backend=None)``: Python numbers and lists become
    the default float dtype (float32) when they hold floats, int64 for ints, bool for bools; NumPy
    and CuPy arrays keep their dtype unless ``dtype`` is given. ``backend`` ('numpy' or 'cupy')
    defaults to the array's own backend, or the default backend for lists and numbers.
    """

    # _vc: the version counter, [version, name of the last in-place op], shared by tensors that
    # share memory (detach(), views) and read by the ops that saved this tensor for backward
    # _is_view: made by a view op (reshape, permute, expand, basic indexing) of another tensor
    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_be", "_retains_grad", "_vc", "_is_view",
                 "__weakref__")
    __array_ufunc__ = None  # numpy scalars and arrays defer to Tensor's reflected operators

    def __init__(self, data, dtype=None, requires_grad=False, backend=None):
        if isinstance(data, Tensor):
            data = data.data
        src = None
        if hasattr(data, "__array__") or hasattr(data, "__cuda_array_interface__"):
            try:
                src = _backend.backend_of(data)
            except TypeError:
                src = None
        be = get_backend(backend if backend is not None else (src or None))
        if dtype is not None:
            dtype = to_dtype(dtype)
        if src is None:  # Python numbers, lists, anything array-like
            arr = numpy.asarray(data)
            if arr.dtype == object:
                raise TypeError(f"Tensor: cannot make a tensor from {type(data).__name__}")
            if dtype is None and arr.dtype.kind == "f" and not isinstance(data, numpy.generic):
                dtype = get_default_dtype()
            elif dtype is None and arr.dtype.kind in "iu" and not isinstance(data, numpy.generic):
                dtype = numpy.dtype(numpy.int64)
            data = be.asarray(arr, dtype=dtype)
        elif src is not be:
            data = be.asarray(src.to_numpy(data), dtype=dtype)
        else:
            data = be.asarray(data, dtype=dtype)
        self._init(data, be, False)
        if requires_grad:
            self.requires_grad_(True)

    def _init(self, data, be, requires_grad):
        self.data = data
        self._be = be
        self.requires_grad = requires_grad
        self.grad = None
        self._ctx = None
        self._retains_grad = False
        self._vc = [0, None]
        self._is_view = False

    @staticmethod
    def _make(data, be, requires_grad=False) -> "Tensor":
        """Wrap an array of backend ``be`` without any conversion (the engine's fast path)."""
        t = _new_tensor(Tensor)
        t._init(data, be, requires_grad)
        return t

    def _const(self, array) -> "Tensor":
        """A constant tensor on this tensor's backend."""
        return Tensor._make(self._be.asarray(array), self._be)

    def _coerce(self, value) -> "Tensor":
        """``value`` itself if it is a Tensor, else a new Tensor of it on this tensor's backend
        with this tensor's dtype (how the engine takes a user's gradient)."""
        if isinstance(value, Tensor):
            return value
        return Tensor(value, backend=self._be, dtype=self.dtype)

    # -- properties -----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def backend(self) -> str:
        return self._be.name

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    @property
    def T(self) -> "Tensor":
        return self.permute(*reversed(range(self.ndim)))

    @property
    def mT(self) -> "Tensor":
        return self.transpose(-2, -1)

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return int(self.data.size)

    def dim(self) -> int:
        return self.ndim

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self):
        extra = ", requires_grad=True" if self.requires_grad else ""
        if self._ctx is not None:
            extra = f", grad_fn=<{self._ctx.name}>"
        body = numpy.array2string(self.numpy(), separator=", ", prefix="tensor(")
        return f"tensor({body}, dtype={self.dtype}, backend={self.backend}{extra})"

    def __bool__(self):
        if self.data.size != 1:
            raise RuntimeError("the truth value of a tensor with more than one element is ambiguous")
        return bool(self.item())

    def __hash__(self):
        return id(self)

    # -- conversion -----------------------------------------------------------------------------
    def numpy(self) -> numpy.ndarray:
        """A NumPy copy of the data (copied from the GPU for the cupy backend)."""
        return self._be.to_numpy(self.data)

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item(): the tensor has {self.data.size} elements, not one")
        return self.data.reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def to(self, backend=None, dtype=None) -> "Tensor":
        """A copy on ``backend`` ('numpy'/'cupy') and/or with ``dtype``; differentiable for dtype."""
        out = self
        if backend is not None and get_backend(backend) is not self._be:
            be = get_backend(backend)
            out = Tensor._make(be.asarray(self._be.to_numpy(self.data)), be, self.requires_grad)
        if dtype is not None:
            out = out.astype(dtype)
        return out

    def cpu(self):
        return self.to("numpy")

    def astype(self, dtype) -> "Tensor":
        dtype = to_dtype(dtype)
        if dtype == self.dtype:
            return self
        if self.requires_grad and dtype.kind != "f":
            return Tensor._make(self.data.astype(dtype), self._be)
        return ops.Cast.apply(self, dtype=dtype)

    def type(self, dtype):
        return self.astype(dtype)

    def float(self):
        return self.astype(numpy.float32)

    def double(self):
        return self.astype(numpy.float64)

    def long(self):
        return self.astype(numpy.int64)

    def int(self):
        return self.astype(numpy.int32)

    def bool(self):
        return self.astype(numpy.bool_)

    # -- autograd -------------------------------------------------------------------------------
    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if requires_grad and not is_float(self.dtype):
            raise TypeError(f"only floating-point tensors can require gradients, this one is {self.dtype}")
        if not self.is_leaf and not requires_grad:
            raise RuntimeError("requires_grad_(False) on a non-leaf tensor: use .detach()")
        self.requires_grad = requires_grad
        return self

    def retain_grad(self) -> "Tensor":
        """Keep ``.grad`` for this non-leaf tensor in the next backward pass."""
        self._retains_grad = True
        return self

    def detach(self) -> "Tensor":
        """The same data (and version counter), cut from the graph."""
        t = Tensor._make(self.data, self._be)
        t._vc = self._vc
        return t

    @property
    def _version(self) -> int:
        """How many in-place operations changed this tensor's memory (PyTorch's ``_version``)."""
        return self._vc[0]

    def backward(self, gradient=None, retain_graph=None, create_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``, like ``torch.Tensor.backward``."""
        engine.backward(self, gradient, retain_graph, create_graph)

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(self)`` after each ``backward()`` stored this leaf's ``.grad``; returns a
        handle whose ``remove()`` unregisters it."""
        return engine.register_post_accumulate_grad_hook(self, hook)

    # -- in-place operations -------------------------------------------------------------------
    # PyTorch's rules: the result is written into this tensor's memory (what shares it, such as
    # detach() or a view, sees the change) and its version counter goes up, so that an op that
    # saved it for backward raises instead of using the new values; in grad mode the op is
    # recorded and this tensor's grad_fn becomes it (differentiable through the old value).
    def add_(self, other, *, alpha=1): return self._inplace("add_", lambda old: old + (other if alpha == 1 else old._operand(other) * alpha))
    def sub_(self, other, *, alpha=1): return self._inplace("sub_", lambda old: old - (other if alpha == 1 else old._operand(other) * alpha))
    def mul_(self, other): return self._inplace("mul_", lambda old: old * other)
    def div_(self, other): return self._inplace("div_", lambda old: old / other)
    def pow_(self, other): return self._inplace("pow_", lambda old: old ** other)
    def neg_(self): return self._inplace("neg_", lambda old: -old)
    def clamp_(self, min=None, max=None): return self._inplace("clamp_", lambda old: old.clamp(min, max))
    def clip_(self, min=None, max=None): return self.clamp_(min, max)
    def zero_(self): return self._inplace("zero_", lambda old: old._filled(0))
    def __iadd__(self, other): return self.add_(other)
    def __isub__(self, other): return self.sub_(other)
    def __imul__(self, other): return self.mul_(other)
    def __itruediv__(self, other): return self.div_(other)

    def fill_(self, value) -> "Tensor":
        """Set every element to ``value`` (a number or a 0-d tensor; its gradient is the sum)."""
        if isinstance(value, Tensor) and value.ndim:
            raise RuntimeError(f"fill_ only supports 0-dimension value tensor but got tensor with "
                               f"{value.ndim} dimensions")
        return self._inplace("fill_", lambda old: old._filled(value))

    def copy_(self, src) -> "Tensor":
        """Copy ``src`` (broadcast to this shape, cast to this dtype) into this tensor; the
        gradient flows to ``src``, none to the old value."""
        return self._inplace("copy_", lambda old: old._filled(src), cast=True)

    def masked_fill_(self, mask, value) -> "Tensor":
        """Set ``value`` where the boolean ``mask`` (broadcast to this shape) is True."""
        mask = mask.data if isinstance(mask, Tensor) else self._be.asarray(mask)
        if mask.dtype.kind != "b":
            raise RuntimeError(f"masked_fill_ only supports boolean masks, but got mask with dtype {mask.dtype}")
        if isinstance(value, Tensor) and value.ndim:
            raise RuntimeError(f"masked_fill_ only supports a 0-dimensional value tensor, but got tensor "
                               f"with {value.ndim} dimension(s)")
        _check_broadcast("masked_fill_", self.shape, mask.shape)
        return self._inplace("masked_fill_", lambda old: where(mask, old._operand(value).astype(old.dtype), old))

    def __setitem__(self, index, value):
        """``x[index] = value``: in place, differentiable in ``x``'s other elements and in ``value``."""
        index = self._index(index)
        if not (_grad_state.grad_enabled and (self.requires_grad or getattr(value, "requires_grad", False))):
            # nothing to record: write straight into the memory
            value = self._operand(value)
            if not numpy.can_cast(value.dtype, self.dtype, "same_kind"):
                raise RuntimeError(f"Index put requires the source and destination dtypes match, got "
                                   f"{_type_name(self.dtype)} for the destination and "
                                   f"{_type_name(value.dtype)} for the source.")
            self.data[index] = value.data
            self._vc[0] += 1
            self._vc[1] = "setitem"
            return
        self._inplace("setitem", lambda old: ops.SetItem.apply(old, old._operand(value).astype(old.dtype), index=index))

    def _filled(self, value) -> "Tensor":
        """``value`` broadcast to this tensor's shape: a ``where`` whose condition is all True, so
        that the gradient flows to ``value`` and zero flows to ``self`` (even where it is NaN)."""
        if isinstance(value, Tensor) and value._be is not self._be:
            value = value.to(self.backend)
        value = self._operand(value)
        if value.ndim > self.ndim or numpy.broadcast_shapes(value.shape, self.shape) != self.shape:
            raise RuntimeError(f"the size of the source {value.shape} cannot be broadcast to {self.shape}")
        return where(self._be.xp.ones((), dtype=bool), value, self)

    def _inplace(self, name, compute, cast=False) -> "Tensor":
        """Run ``compute(old)`` (``old``: this tensor as it is now) and write the result into this
        tensor's memory, with PyTorch's checks, version counting and recording."""
        grad_on = _grad_state.grad_enabled
        if grad_on and self.requires_grad and self._ctx is None:
            raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
        old = Tensor._make(self.data, self._be, self.requires_grad)  # the value before the write
        old._ctx, old._vc = self._ctx, self._vc
        result = compute(old)
        if not isinstance(result, Tensor):
            result = self._operand(result)
        if result.shape != self.shape:
            raise RuntimeError(f"output with shape {list(self.shape)} doesn't match the broadcast shape "
                               f"{list(result.shape)}")
        if result.dtype != self.dtype:
            if not cast and not numpy.can_cast(result.dtype, self.dtype, "same_kind"):
                raise RuntimeError(f"result type {_type_name(result.dtype)} can't be cast to the desired "
                                   f"output type {_type_name(self.dtype)}")
            result = result.astype(self.dtype) if is_float(self.dtype) or not result.requires_grad \
                else Tensor._make(result.data.astype(self.dtype), self._be)
        node = result._ctx if grad_on else None
        if node is not None:
            if self._is_view:
                raise RuntimeError(f"{name}: a differentiable in-place operation on a view (the output of "
                                   "reshape, permute, expand or basic indexing) is not supported: PyTorch "
                                   "rewrites the base tensor's history, this engine does not. Apply it to "
                                   "the base tensor (x[index] = value), or use the out-of-place form")
            _keep_old_value(node, old)
        data = self.data
        if isinstance(data, numpy.generic):  # a 0-d result of a reduction: an immutable scalar
            self.data = self._be.asarray(result.data).copy()
        elif not getattr(data.flags, "writeable", True):
            raise RuntimeError("unsupported operation: more than one element of the written-to tensor "
                               "refers to a single memory location (an expand()ed tensor). Please copy "
                               "the tensor before performing the operation.")
        else:
            data[...] = result.data
        vc = self._vc
        vc[0] += 1
        vc[1] = name
        if node is not None:
            self._ctx = node
            self.requires_grad = True
            node.output_ref = _weakref.ref(self)
            saved_out = node.__dict__.get("_saved_out")
            if saved_out is not None:  # the output now lives in this tensor's memory
                node._saved_out = (self.data, vc, vc[0])
        return self

    # -- creation helpers used by ops -------------------------------------------------------
    def _scalar(self, value) -> "Tensor":
        """A Python number as a 0-d tensor of the dtype PyTorch would give ``self op value``."""
        dtype = self.data.dtype
        if type(value) is float and dtype.kind == "f":  # the common case, without the ABC checks
            return Tensor._make(self._be.xp.asarray(value, dtype=dtype), self._be)
        if isinstance(value, bool):
            dtype = self.dtype
        elif isinstance(value, numbers.Integral):
            dtype = self.dtype if self.dtype.kind != "b" else numpy.dtype(numpy.int64)
        elif isinstance(value, numbers.Real):
            dtype = self.dtype if is_float(self.dtype) else get_default_dtype()
        else:
            raise TypeError(f"unsupported operand type {type(value).__name__}")
        return Tensor._make(self._be.xp.asarray(value, dtype=dtype), self._be)

    def _operand(self, other) -> "Tensor":
        if type(other) is Tensor or isinstance(other, Tensor):
            return other
        if isinstance(other, numbers.Number):
            return self._scalar(other)
        return Tensor(other, backend=self._be)

    def _binary(self, op, other, reverse=False) -> "Tensor":
        other = self._operand(other)
        a, b = (other, self) if reverse else (self, other)
        dtype = a.data.dtype
        if dtype != b.data.dtype or (op is ops.Div and not is_float(dtype)):
            dtype = promote_types(dtype, b.dtype)
            if op is ops.Div and not is_float(dtype):
                dtype = get_default_dtype()
            a, b = a.astype(dtype), b.astype(dtype)
        if a.data.shape != b.data.shape and a.data.ndim and b.data.ndim:  # 0-d always broadcasts
            _check_broadcast(op.__name__, a.shape, b.shape)
        return op.apply(a, b)

    def _compare(self, fn, other) -> "Tensor":
        other = self._operand(other)
        if other._be is not self._be:
            raise ValueError(f"comparison: tensors on two backends, {self.backend} and {other.backend}")
        return Tensor._make(fn(self.data, other.data), self._be)

    # -- arithmetic -----------------------------------------------------------------------------
    def __add__(self, other): return self._binary(ops.Add, other)
    def __radd__(self, other): return self._binary(ops.Add, other, reverse=True)
    def __sub__(self, other): return self._binary(ops.Sub, other)
    def __rsub__(self, other): return self._binary(ops.Sub, other, reverse=True)
    def __mul__(self, other): return self._binary(ops.Mul, other)
    def __rmul__(self, other): return self._binary(ops.Mul, other, reverse=True)
    def __truediv__(self, other): return self._binary(ops.Div, other)
    def __rtruediv__(self, other): return self._binary(ops.Div, other, reverse=True)
    def __pow__(self, other): return self._binary(ops.Pow, other)
    def __rpow__(self, other): return self._binary(ops.Pow, other, reverse=True)
    def __matmul__(self, other): return self.matmul(other)
    def __rmatmul__(self, other): return self._operand(other).matmul(self)
    def __neg__(self): return ops.Neg.apply(self)
    def __pos__(self): return self

    def add(self, other): return self + other
    def sub(self, other): return self - other
    def mul(self, other): return self * other
    def div(self, other): return self / other
    def pow(self, other): return self ** other
    def neg(self): return -self

    # comparisons give bool tensors and carry no gradient
    def __eq__(self, other): return self._compare(lambda a, b: a == b, other)
    def __ne__(self, other): return self._compare(lambda a, b: a != b, other)
    def __lt__(self, other): return self._compare(lambda a, b: a < b, other)
    def __le__(self, other): return self._compare(lambda a, b: a <= b, other)
    def __gt__(self, other): return self._compare(lambda a, b: a > b, other)
    def __ge__(self, other): return self._compare(lambda a, b: a >= b, other)
    def __invert__(self): return Tensor._make(~self.data, self._be)
    def __and__(self, other): return self._compare(lambda a, b: a & b, other)
    def __or__(self, other): return self._compare(lambda a, b: a | b, other)

    def eq(self, other): return self == other
    def ne(self, other): return self != other
    def lt(self, other): return self < other
    def le(self, other): return self <= other
    def gt(self, other): return self > other
    def ge(self, other): return self >= other

    # -- elementwise functions ------------------------------------------------------------------
    def _float_op(self, op, **params) -> "Tensor":
        x = self if is_float(self.dtype) else self.astype(get_default_dtype())
        return op.apply(x, **params)

    def exp(self): return self._float_op(ops.Exp)
    def log(self): return self._float_op(ops.Log)
    def sqrt(self): return self._float_op(ops.Sqrt)
    def tanh(self): return self._float_op(ops.Tanh)
    def sigmoid(self): return self._float_op(ops.Sigmoid)
    def abs(self): return ops.Abs.apply(self)
    def relu(self): return ops.Relu.apply(self)
    def leaky_relu(self, negative_slope=0.01): return ops.LeakyRelu.apply(self, negative_slope=negative_slope)
    def clamp(self, min=None, max=None): return ops.Clamp.apply(self, min=min, max=max)
    def clip(self, min=None, max=None): return self.clamp(min, max)
    def maximum(self, other): return self._binary(ops.Maximum, other)
    def minimum(self, other): return self._binary(ops.Minimum, other)
    def square(self): return self * self
    def rsqrt(self): return 1 / self.sqrt()
    def reciprocal(self): return 1 / self
    def log1p(self): return self._float_op(ops.Log1p)
    def softplus(self):
        """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)): stable in both tails. max() splits its
        gradient evenly at 0, which gives exactly sigmoid(0) = 1/2 there."""
        return self.maximum(0.0) + (-self.abs()).exp().log1p()
    def sign(self): return Tensor._make(self._be.xp.sign(self.data), self._be)

    def where(self, condition, other) -> "Tensor":
        """``torch.where(condition, self, other)`` (PyTorch's ``Tensor.where``)."""
        return where(condition, self, other)

    # -- reductions -----------------------------------------------------------------------------
    def sum(self, axis=None, keepdims=False, *, dim=None, keepdim=False):
        axis = _axes(_axis_arg(axis, dim), self.ndim)
        x = self if self.dtype.kind != "b" else self.astype(numpy.int64)
        return ops.Sum.apply(x, axis=axis, keepdims=_keep_arg(keepdims, keepdim))

    def mean(self, axis=None, keepdims=False, *, dim=None, keepdim=False):
        axis = _axes(_axis_arg(axis, dim), self.ndim)
        count = int(numpy.prod([self.shape[a] for a in axis]))
        x = self if is_float(self.dtype) else self.astype(get_default_dtype())
        return x.sum(axis, _keep_arg(keepdims, keepdim)) / count

    def var(self, axis=None, keepdims=False, *, dim=None, keepdim=False, correction=1, unbiased=None):
        """Variance with Bessel's correction by default (``correction=1``), as in PyTorch."""
        if unbiased is not None:
            correction = int(unbiased)
        axis = _axes(_axis_arg(axis, dim), self.ndim)
        count = int(numpy.prod([self.shape[a] for a in axis]))
        centred = self - self.mean(axis, keepdims=True)
        return (centred * centred).sum(axis, _keep_arg(keepdims, keepdim)) / max(count - correction, 0)

    def std(self, axis=None, keepdims=False, *, dim=None, keepdim=False, correction=1, unbiased=None):
        return self.var(axis, keepdims, dim=dim, keepdim=keepdim, correction=correction,
                        unbiased=unbiased).sqrt()

    def max(self, axis=None, keepdims=False, *, dim=None, keepdim=False):
        """Largest value over ``axis`` (values only, like ``torch.amax``; ties share the gradient)."""
        axis = _axes(_axis_arg(axis, dim), self.ndim)
        return ops.Max.apply(self, axis=axis, keepdims=_keep_arg(keepdims, keepdim))

    def min(self, axis=None, keepdims=False, *, dim=None, keepdim=False):
        """Smallest value over ``axis`` (values only, like ``torch.amin``)."""
        axis = _axes(_axis_arg(axis, dim), self.ndim)
        return ops.Min.apply(self, axis=axis, keepdims=_keep_arg(keepdims, keepdim))

    def amax(self, axis=None, keepdims=False, *, dim=None, keepdim=False):
        return self.max(axis, keepdims, dim=dim, keepdim=keepdim)

    def amin(self, axis=None, keepdims=False, *, dim=None, keepdim=False):
        return self.min(axis, keepdims, dim=dim, keepdim=keepdim)

    def argmax(self, axis=None, keepdims=False, *, dim=None, keepdim=False):
        return self._arg(self._be.xp.argmax, _axis_arg(axis, dim), _keep_arg(keepdims, keepdim))

    def argmin(self, axis=None, keepdims=False, *, dim=None, keepdim=False):
        return self._arg(self._be.xp.argmin, _axis_arg(axis, dim), _keep_arg(keepdims, keepdim))

    def _arg(self, fn, axis, keepdims):
        if axis is None:
            out = fn(self.data.reshape(-1))
            out = out.reshape((1,) * self.ndim) if keepdims else out
        else:
            out = fn(self.data, axis=axis, keepdims=keepdims)
        return Tensor._make(out.astype(numpy.int64), self._be)

    def logsumexp(self, axis=None, keepdims=False, *, dim=None, keepdim=False):
        """log(sum(exp(x))) computed stably (shifted by the detached maximum)."""
        axis = _axes(_axis_arg(axis, dim), self.ndim)
        shift = self.detach().max(axis, keepdims=True)
        shift = shift.where(self._be.xp.isfinite(shift.data), 0)
        out = (self - shift).exp().sum(axis, keepdims=True).log() + shift
        return out if _keep_arg(keepdims, keepdim) else out.squeeze(axis)

    def softmax(self, axis=-1, *, dim=None):
        return self._float_op(ops.Softmax, axis=_axes(_axis_arg(axis, dim), self.ndim))

    def log_softmax(self, axis=-1, *, dim=None):
        return self._float_op(ops.LogSoftmax, axis=_axes(_axis_arg(axis, dim), self.ndim))

    def sum_to(self, shape) -> "Tensor":
        """Sum over broadcast dimensions so the result has ``shape`` (the reverse of ``expand``)."""
        shape = tuple(shape)
        if self.shape == shape:
            return self
        lead = self.ndim - len(shape)
        axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape)
                                          if n == 1 and self.shape[i + lead] != 1)
        out = self.sum(axes, keepdims=True)
        return out.reshape(shape) if lead or out.shape != shape else out

    # -- shape ----------------------------------------------------------------------------------
    def reshape(self, *shape):
        shape = as_shape(shape)
        if tuple(shape) == self.shape:
            return self
        try:
            numpy.empty(self.shape, dtype=bool).reshape(shape)  # validates and resolves -1 cheaply
        except ValueError:
            raise ValueError(f"reshape: cannot reshape a tensor of shape {self.shape} "
                             f"({self.numel()} elements) into {tuple(shape)}") from None
        return ops.Reshape.apply(self, shape=tuple(shape))

    def view(self, *shape):
        return self.reshape(*shape)

    def permute(self, *axes):
        axes = as_shape(axes)
        if sorted(a % self.ndim for a in axes) != list(range(self.ndim)):
            raise ValueError(f"permute: {tuple(axes)} is not a permutation of the {self.ndim} dims")
        axes = tuple(a % self.ndim for a in axes)
        if axes == tuple(range(self.ndim)):
            return self
        return ops.Permute.apply(self, axes=axes)

    def transpose(self, dim0=-2, dim1=-1):
        if self.ndim < 2:
            _axes((dim0, dim1), self.ndim)  # validates
            return self
        axes = list(range(self.ndim))
        axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
        return self.permute(*axes)

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            return self.reshape(1)
        start, end = start_dim % self.ndim, end_dim % self.ndim
        shape = self.shape[:start] + (-1,) + self.shape[end + 1:]
        return self.reshape(shape) if end > start else self

    def squeeze(self, dim=None):
        axes = _axes(dim, self.ndim) if dim is not None else tuple(range(self.ndim))
        shape = [n for i, n in enumerate(self.shape) if not (i in axes and n == 1)]
        return self.reshape(shape)

    def unsqueeze(self, dim):
        dim = dim % (self.ndim + 1)
        return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])

    def expand(self, *shape):
        shape = list(as_shape(shape))
        lead = len(shape) - self.ndim
        if lead < 0:
            raise ValueError(f"expand: target {tuple(shape)} has fewer dims than {self.shape}")
        for i in range(self.ndim):
            if shape[lead + i] == -1:
                shape[lead + i] = self.shape[i]
            elif self.shape[i] not in (1, shape[lead + i]):
                raise ValueError(f"expand: cannot expand {self.shape} to {tuple(shape)}")
        shape = tuple(shape)
        return self if shape == self.shape else ops.Expand.apply(self, shape=shape)

    def expand_as(self, other):
        return self.expand(other.shape)

    def contiguous(self):
        return self

    def __getitem__(self, index):
        return ops.GetItem.apply(self, index=self._index(index))

    def _index(self, index):
        """Tensors inside an index become backend arrays; lists become integer arrays."""
        items = index if isinstance(index, tuple) else (index,)
        out = []
        for item in items:
            if isinstance(item, Tensor):
                item = item.data
            elif isinstance(item, list):
                item = self._be.asarray(item)
            elif isinstance(item, numpy.ndarray) and self._be.name != "numpy":
                item = self._be.asarray(item)
            out.append(item)
        return tuple(out) if isinstance(index, tuple) else out[0]

    def _scatter_into(self, shape, index):
        return ops.ScatterInto.apply(self, shape=shape, index=index)

    def pad(self, pad, value=0.0):
        """Constant padding with ``torch.nn.functional.pad``'s order: (last_lo, last_hi, prev_lo, ...)."""
        if len(pad) % 2 or len(pad) // 2 > self.ndim:
            raise ValueError(f"pad: expected an even number of at most {2 * self.ndim} values, got {len(pad)}")
        if any(p < 0 for p in pad):
            raise ValueError("pad: negative padding is not supported")
        widths = [(0, 0)] * self.ndim
        for i in range(len(pad) // 2):
            widths[self.ndim - 1 - i] = (int(pad[2 * i]), int(pad[2 * i + 1]))
        return ops.Pad.apply(self, widths=tuple(widths), value=value)

    def matmul(self, other):
        """Matrix product with ``torch.matmul``'s rules, 1-D operands included."""
        a, b = self, self._operand(other)
        if a.dtype != b.dtype:
            dtype = promote_types(a.dtype, b.dtype)
            a, b = a.astype(dtype), b.astype(dtype)
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("matmul: both arguments need at least 1 dimension")
        a2 = a.unsqueeze(0) if a.ndim == 1 else a
        b2 = b.unsqueeze(-1) if b.ndim == 1 else b
        if a2.shape[-1] != b2.shape[-2]:
            raise ValueError(f"matmul: inner dimensions differ: {a.shape} @ {b.shape} "
                             f"({a2.shape[-1]} != {b2.shape[-2]})")
        if a2.ndim > 2 or b2.ndim > 2:
            _check_broadcast("matmul", a2.shape[:-2], b2.shape[:-2])
        out = ops.MatMul.apply(a2, b2)
        if b.ndim == 1:
            out = out.squeeze(-1)
        if a.ndim == 1:
            out = out.squeeze(-2 if b.ndim > 1 else -1)
        return out

    def dot(self, other):
        return self.matmul(other)


# --------------------------------------------------------------------------------------------------
# helpers and module-level functions
# --------------------------------------------------------------------------------------------------
def as_shape(shape) -> tuple:
    """A shape given as ``(2, 3)`` or as ``2, 3`` (``reshape(2, 3)``, ``zeros(2, 3)``) as a tuple."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(int(s) for s in shape)


def _type_name(dtype) -> str:
    """PyTorch's name of a dtype in messages ('Float', 'Long'...)."""
    return {"float32": "Float", "float64": "Double", "float16": "Half", "int64": "Long", "int32": "Int",
            "int16": "Short", "int8": "Char", "uint8": "Byte", "bool": "Bool"}.get(str(dtype), str(dtype))


def _keep_old_value(node, old):
    """Where the in-place op's node (or the op under its dtype cast) saved the old value, give it
    a private copy: the write is about to overwrite that memory (PyTorch saves the original too)."""
    for fn in (node, node.__dict__.get("edges", (None,))[0]):
        saved = fn.__dict__.get("_saved") if fn is not None and hasattr(fn, "edges") else None
        if saved and any(t is old for t in saved):
            old.data = old.data.copy()
            old._vc = [old._vc[0], None]
            return


def _check_broadcast(name, a, b):
    for x, y in zip(reversed(a), reversed(b)):
        if x != y and x != 1 and y != 1:
            raise ValueError(f"{name}: shapes {tuple(a)} and {tuple(b)} cannot be broadcast together")


def cat(tensors, dim=0, *, axis=None) -> Tensor:
    """Concatenate along an existing dimension (``torch.cat``)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty list of tensors")
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = promote_types(dtype, t.dtype)
    tensors = [t.astype(dtype) for t in tensors]
    ndim = tensors[0].ndim
    axis = _axes(_axis_arg(axis, dim), ndim)[0]
    for t in tensors:
        if t.ndim != ndim or any(t.shape[i] != tensors[0].shape[i] for i in range(ndim) if i != axis):
            raise ValueError(f"cat: shapes {[x.shape for x in tensors]} differ outside dim {axis}")
    return ops.Cat.apply(*tensors, axis=axis)


def stack(tensors, dim=0, *, axis=None) -> Tensor:
    """Join along a new dimension (``torch.stack``)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: expected a non-empty list of tensors")
    if any(t.shape != tensors[0].shape for t in tensors):
        raise ValueError(f"stack: all tensors need the same shape, got {[t.shape for t in tensors]}")
    d = _axis_arg(axis, dim)
    d = d % (tensors[0].ndim + 1)
    return cat([t.unsqueeze(d) for t in tensors], dim=d)


def where(condition, input, other) -> Tensor:
    """``torch.where(condition, input, other)``; gradients flow to ``input`` and ``other``."""
    ref = input if isinstance(input, Tensor) else other
    if not isinstance(ref, Tensor):
        raise TypeError("where: input or other must be a Tensor")
    a, b = ref._operand(input), ref._operand(other)
    dtype = promote_types(a.dtype, b.dtype)
    a, b = a.astype(dtype), b.astype(dtype)
    cond = condition.data if isinstance(condition, Tensor) else ref._be.asarray(condition)
    if cond.dtype.kind != "b":
        cond = cond.astype(bool)
    _check_broadcast("where", a.shape, b.shape)
    _check_broadcast("where", numpy.broadcast_shapes(a.shape, b.shape), cond.shape)
    return ops.Where.apply(a, b, cond=cond)
