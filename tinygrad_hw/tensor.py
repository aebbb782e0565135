"""The Tensor: an n-dimensional array on a backend, with PyTorch's API and reverse-mode autograd.

A Tensor wraps one backend array (``.data``). Every method that computes is a one-line ``def``
that checks its arguments and calls a differentiable op of :mod:`tinygrad_hw.ops` (or composes
other methods); recording the op and walking the graph backwards are the engine's job
(:mod:`tinygrad_hw.autograd`). ``cat``, ``stack`` and ``where``, which combine several tensors,
are here too; the factories (``zeros``, ``randn``...) are in :mod:`tinygrad_hw.creation`.
"""
from __future__ import annotations

import collections
import math
import numbers
import weakref as _weakref

import numpy

from . import backend as _backend
from . import device as _devices
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
    defaults to a CuPy array's own backend, else (NumPy arrays, lists, numbers) the default
    backend, as ``torch.tensor`` follows the default device.
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
        # NumPy arrays are host data, like lists: the default backend, as torch.tensor(ndarray)
        # follows the default device; device (CuPy) arrays stay where they are
        be = get_backend(backend if backend is not None else (src if src is not None and src.name != "numpy" else None))
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
        t = _new_tensor(Tensor)  # _init written out: every op's output comes through here
        t.data = data
        t._be = be
        t.requires_grad = requires_grad
        t.grad = None
        t._ctx = None
        t._retains_grad = False
        t._vc = [0, None]
        t._is_view = False
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

    def to(self, *args, backend=None, dtype=None, device=None, copy=False, non_blocking=False) -> "Tensor":
        """``torch.Tensor.to``: ``t.to('cpu')``, ``t.to('cuda')``, ``t.to(hw.float64)``,
        ``t.to(other)`` (its backend and dtype), ``t.to('numpy', 'float32')``; backend names
        'numpy'/'cupy' and PyTorch's device names 'cpu'/'cuda' both work. A change of dtype is
        differentiable; a move between backends is not (the copy is a new leaf), and ``self``
        itself comes back where nothing changes (``copy=True`` makes a copy then)."""
        del non_blocking  # accepted for PyTorch code; copies here are synchronous
        target = device if device is not None else backend
        for arg in args:
            if isinstance(arg, Tensor):
                target, dtype = arg._be, arg.dtype
            elif _devices.is_device_spec(arg):
                target = arg
            elif arg is not None:
                dtype = arg
        out = self
        if target is not None:
            be = get_backend(_devices.backend_name(target))
            if be is not self._be:
                out = Tensor._make(be.asarray(self._be.to_numpy(self.data)), be, self.requires_grad)
        if dtype is not None:
            out = out.astype(dtype)
        if copy and out is self:
            out = self.clone()
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
        if self._ctx is not None:  # the engine looks for the tensor through its op
            self._ctx.output_ref = _weakref.ref(self)
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
        elif any(step == 0 and size > 1 for step, size in zip(data.strides, data.shape)):
            # a zero stride is what expand() makes (CuPy's arrays have no flags.writeable)
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
            return Tensor._make(self._be.scalar(value, dtype), self._be)
        if isinstance(value, bool):
            dtype = self.dtype
        elif isinstance(value, numbers.Integral):
            dtype = self.dtype if self.dtype.kind != "b" else numpy.dtype(numpy.int64)
        elif isinstance(value, numbers.Real):
            dtype = self.dtype if is_float(self.dtype) else get_default_dtype()
        else:
            raise TypeError(f"unsupported operand type {type(value).__name__}")
        return Tensor._make(self._be.scalar(value, dtype), self._be)

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

    def add(self, other, *, alpha=1): return self + (other if alpha == 1 else self._operand(other) * alpha)
    def sub(self, other, *, alpha=1): return self - (other if alpha == 1 else self._operand(other) * alpha)
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

    def max(self, dim=None, keepdim=False, *, axis=None, keepdims=False):
        """PyTorch's three forms: ``t.max()`` the largest value (ties share the gradient, as in
        PyTorch); ``t.max(dim, keepdim=False)`` the named pair ``(values, indices)`` with the
        first maximal index (the gradient goes to it); ``t.max(other)`` the elementwise maximum.
        ``amax`` reduces over several dims and gives values only."""
        return self._extremum(ops.Max, self._be.xp.argmax, "max", dim, axis, keepdim or keepdims)

    def min(self, dim=None, keepdim=False, *, axis=None, keepdims=False):
        """``t.min()``, ``t.min(dim, keepdim=False)`` -> ``(values, indices)``, ``t.min(other)``;
        see :meth:`max`."""
        return self._extremum(ops.Min, self._be.xp.argmin, "min", dim, axis, keepdim or keepdims)

    def _extremum(self, op, argfn, name, dim, axis, keepdim):
        if isinstance(dim, Tensor):
            return self.maximum(dim) if name == "max" else self.minimum(dim)
        dim = _axis_arg(axis, dim)
        if dim is None:
            return op.apply(self, axis=_axes(None, self.ndim), keepdims=bool(keepdim))
        if not isinstance(dim, numbers.Integral):
            raise TypeError(f"{name}(dim): dim must be an int, got {dim!r}; use a{name}() to reduce "
                            "over several dims")
        axis = _axes(dim, self.ndim)
        if self.ndim and self.shape[axis[0]] == 0:
            raise IndexError(f"{name}(): dimension {dim} of shape {self.shape} has no elements")
        if not axis:  # a 0-d tensor: itself, index 0
            return _return_type(name)(self, Tensor._make(self._be.xp.zeros((), numpy.int64), self._be))
        indices = Tensor._make(argfn(self.data, axis=axis[0], keepdims=True).astype(numpy.int64), self._be)
        values = self.gather(axis[0], indices)
        if not keepdim:
            values, indices = values.squeeze(axis[0]), indices.squeeze(axis[0])
        return _return_type(name)(values, indices)

    def amax(self, axis=None, keepdims=False, *, dim=None, keepdim=False):
        """Largest value over ``axis`` (an int, a tuple or all); ties share the gradient evenly."""
        axis = _axes(_axis_arg(axis, dim), self.ndim)
        return ops.Max.apply(self, axis=axis, keepdims=_keep_arg(keepdims, keepdim))

    def amin(self, axis=None, keepdims=False, *, dim=None, keepdim=False):
        """Smallest value over ``axis`` (an int, a tuple or all); ties share the gradient evenly."""
        axis = _axes(_axis_arg(axis, dim), self.ndim)
        return ops.Min.apply(self, axis=axis, keepdims=_keep_arg(keepdims, keepdim))

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
        shift = self.detach().amax(axis, keepdims=True)
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

    # ==========================================================================================
    # PyTorch idioms (issue 17): conversions, device, floor division, sorting, cumulative sums,
    # norms, splitting and repeating, gather, masked_fill, flip/roll, any/all, sin/cos
    # ==========================================================================================
    @property
    def device(self):
        """PyTorch's name for the backend: ``device('cpu')`` (NumPy) or ``device('cuda')`` (CuPy)."""
        return _devices.device("cuda" if self._be.name == "cupy" else "cpu")

    @property
    def is_cuda(self) -> bool:
        return self._be.name == "cupy"

    def cuda(self): return self.to("cupy")

    def __float__(self): return float(self._one_element("float"))
    def __int__(self): return int(self._one_element("int"))

    def __index__(self):
        if self.dtype.kind not in "iu":
            raise TypeError(f"only integer tensors of a single element can be used as an index, not {self.dtype}")
        return int(self._one_element("index"))

    def _one_element(self, what):
        if self.data.size != 1:
            raise TypeError(f"{what}(): only a tensor with one element can be converted to a Python "
                            f"number, this one has shape {self.shape}")
        return self.item()

    def clone(self) -> "Tensor":
        """A copy of the data that stays in the graph (the gradient flows back to ``self``)."""
        return ops.Clone.apply(self)

    def __floordiv__(self, other): return self._floor_divide(self, other)
    def __rfloordiv__(self, other): return self._floor_divide(self._operand(other), self)
    def __mod__(self, other): return self.remainder(other)
    def __rmod__(self, other): return self._operand(other).remainder(self)

    def floor_divide(self, other):
        """``a // b`` rounded towards minus infinity (Python's and PyTorch's rule). Deviation: the
        result carries no gradient (PyTorch records an op whose backward is not implemented)."""
        return self._floor_divide(self, other)

    def _floor_divide(self, a, b):
        b = a._operand(b)
        dtype = promote_types(a.dtype, b.dtype) if a.dtype != b.dtype else a.dtype
        if dtype.kind in "iu" and bool((b.data == 0).any()):
            raise ZeroDivisionError("floor_divide: integer division by zero")
        out = self._be.xp.floor_divide(a.data.astype(dtype, copy=False), b.data.astype(dtype, copy=False))
        return Tensor._make(out, self._be)

    def remainder(self, other):
        """``a % b`` with the sign of ``b`` (Python's and PyTorch's rule): ``a - (a // b) * b``;
        the gradient is 1 for ``a`` and ``-(a // b)`` for ``b``, as in PyTorch."""
        other = self._operand(other)
        return self - (self // other) * other

    def floor(self): return Tensor._make(self._be.xp.floor(self.data), self._be)
    def ceil(self): return Tensor._make(self._be.xp.ceil(self.data), self._be)
    def round(self): return Tensor._make(self._be.xp.round(self.data), self._be)
    def sin(self): return self._float_op(ops.Sin)
    def cos(self): return self._float_op(ops.Cos)

    def gather(self, dim, index):
        """``torch.gather``: ``out[i][j] = self[index[i][j]][j]`` for ``dim=0`` (and so on); the
        gradient is scattered back, repeated indices adding up."""
        index = index.data if isinstance(index, Tensor) else self._be.asarray(index)
        if index.ndim != self.ndim:
            raise ValueError(f"gather: index has {index.ndim} dims, the tensor {self.ndim}")
        if index.dtype.kind not in "iu":
            raise TypeError(f"gather: index must be an integer tensor, got {index.dtype}")
        dim = _axes(dim, self.ndim)[0] if self.ndim else 0
        if not self.ndim:
            return self.clone()
        xp = self._be.xp
        items = []
        for d in range(self.ndim):
            if d == dim:
                items.append(index)
            else:
                if index.shape[d] > self.shape[d]:
                    raise ValueError(f"gather: index shape {tuple(index.shape)} is larger than the "
                                     f"tensor's {self.shape} in dim {d}")
                shape = [1] * self.ndim
                shape[d] = index.shape[d]
                items.append(xp.arange(index.shape[d]).reshape(shape))
        return ops.GetItem.apply(self, index=tuple(items))

    def take_along_dim(self, indices, dim): return self.gather(dim, indices)

    def sort(self, dim=-1, descending=False, stable=False):
        """``(values, indices)`` sorted along ``dim``; this sort is always stable (ties keep their
        order), which is one of the orders PyTorch may give."""
        indices = self.argsort(dim, descending=descending, stable=stable)
        return _return_type("sort")(self.gather(dim, indices) if self.ndim else self, indices)

    def argsort(self, dim=-1, descending=False, stable=False):
        """Indices that sort along ``dim`` (stable; see :meth:`sort`)."""
        del stable  # always stable
        xp = self._be.xp
        if not self.ndim:
            return Tensor._make(xp.zeros((), numpy.int64), self._be)
        dim = _axes(dim, self.ndim)[0]
        a = self.data
        if descending:  # sort the reversed array ascending, then read it backwards: stable too
            n = a.shape[dim]
            rev = [slice(None)] * self.ndim
            rev[dim] = slice(None, None, -1)
            rev = tuple(rev)
            idx = (n - 1 - _stable_argsort(xp, a[rev], dim))[rev]
        else:
            idx = _stable_argsort(xp, a, dim)
        return Tensor._make(idx.astype(numpy.int64), self._be)

    def topk(self, k, dim=-1, largest=True, sorted=True):
        """``(values, indices)`` of the ``k`` largest (or smallest) along ``dim``, in sorted order."""
        dim = _axes(dim, self.ndim)[0] if self.ndim else 0
        n = self.shape[dim] if self.ndim else 1
        if not 0 <= k <= n:
            raise IndexError(f"topk: k={k} is out of range for dimension {dim} of size {n}")
        indices = self.argsort(dim, descending=largest)
        if self.ndim:
            cut = [slice(None)] * self.ndim
            cut[dim] = slice(0, k)
            indices = Tensor._make(indices.data[tuple(cut)], self._be)
        return _return_type("topk")(self.gather(dim, indices) if self.ndim else self, indices)

    def cumsum(self, dim, *, dtype=None):
        x = self if dtype is None else self.astype(dtype)
        if x.dtype.kind == "b" or (dtype is None and x.dtype.kind in "iu"):
            x = x.astype(numpy.int64)  # PyTorch sums bools and integers in int64
        if not x.ndim:
            return x.clone()
        return ops.Cumsum.apply(x, axis=_axes(dim, x.ndim)[0])

    def norm(self, p="fro", dim=None, keepdim=False, dtype=None):
        """``torch.norm``/``Tensor.norm``: the vector p-norm over ``dim`` (all elements by default);
        ``p`` is 'fro' or 2 (Euclidean, gradient 0 at zero), 1, inf, -inf, 0 or any other number.
        The nuclear norm and matrix norms other than Frobenius are not implemented."""
        x = self if dtype is None else self.astype(dtype)
        x = x if is_float(x.dtype) else x.astype(get_default_dtype())
        axis = _axes(dim, x.ndim)
        if p == "fro" or p == 2:
            return ops.Norm2.apply(x, axis=axis, keepdims=bool(keepdim))
        if isinstance(p, str):
            raise NotImplementedError(f"norm: p={p!r} is not implemented (use 'fro' or a number)")
        p = float(p)
        if p == numpy.inf:
            return x.abs().amax(axis, keepdim)
        if p == -numpy.inf:
            return x.abs().amin(axis, keepdim)
        if p == 0:
            return (x != 0).astype(x.dtype).sum(axis, keepdim)
        if p == 1:
            return x.abs().sum(axis, keepdim)
        return ops.NormP.apply(x, axis=axis, keepdims=bool(keepdim), p=p)

    def repeat(self, *sizes):
        """``torch.Tensor.repeat``: tile the tensor ``sizes[i]`` times along dim i (``numpy.tile``)."""
        sizes = as_shape(sizes)
        if len(sizes) < self.ndim:
            raise ValueError(f"repeat: {len(sizes)} repeat counts for a tensor with {self.ndim} dims "
                             "(give at least one per dim)")
        if any(r < 0 for r in sizes):
            raise ValueError(f"repeat: counts must be non-negative, got {sizes}")
        x = self.reshape((1,) * (len(sizes) - self.ndim) + self.shape)
        interleaved = [n for size in x.shape for n in (1, size)]
        target = [n for r, size in zip(sizes, x.shape) for n in (r, size)]
        return x.reshape(interleaved).expand(target).reshape([r * n for r, n in zip(sizes, x.shape)])

    def tile(self, *dims):
        dims = as_shape(dims)
        return self.repeat((1,) * (self.ndim - len(dims)) + dims)

    def split(self, split_size_or_sections, dim=0):
        """Pieces along ``dim``: of ``split_size`` each (the last may be smaller), or of the sizes
        in a list (which must add up to the dim's size)."""
        dim = _axes(dim, self.ndim)[0]
        n = self.shape[dim]
        if isinstance(split_size_or_sections, numbers.Integral):
            size = int(split_size_or_sections)
            if size <= 0 and n:
                raise ValueError(f"split: split_size must be positive, got {size}")
            sizes = [min(size, n - i) for i in range(0, n, size)] if n else [0]
        else:
            sizes = [int(s) for s in split_size_or_sections]
            if sum(sizes) != n or any(s < 0 for s in sizes):
                raise ValueError(f"split: sections {sizes} do not add up to {n}, the size of dim {dim}")
        out, start = [], 0
        lead = (slice(None),) * dim
        for size in sizes:
            out.append(self[lead + (slice(start, start + size),)])
            start += size
        return tuple(out)

    def chunk(self, chunks, dim=0):
        """``torch.chunk``: at most ``chunks`` pieces of ``ceil(n / chunks)`` along ``dim``."""
        if chunks <= 0:
            raise ValueError(f"chunk: chunks must be positive, got {chunks}")
        n = self.shape[_axes(dim, self.ndim)[0]]
        return self.split(max(-(-n // chunks), 1), dim)

    def unbind(self, dim=0):
        dim = _axes(dim, self.ndim)[0]
        lead = (slice(None),) * dim
        return tuple(self[lead + (i,)] for i in range(self.shape[dim]))

    def narrow(self, dim, start, length):
        dim = _axes(dim, self.ndim)[0]
        start = start % self.shape[dim] if start < 0 else start
        if start + length > self.shape[dim] or length < 0:
            raise IndexError(f"narrow: start {start} + length {length} exceeds dimension {dim} of size {self.shape[dim]}")
        return self[(slice(None),) * dim + (slice(start, start + length),)]

    def masked_fill(self, mask, value):
        """A copy with ``value`` where ``mask`` is True (out of place; the gradient flows where it is
        False). ``value`` is a number or a 0-d tensor, cast to this tensor's dtype."""
        mask = mask.data if isinstance(mask, Tensor) else self._be.asarray(mask)
        if mask.dtype.kind != "b":
            raise TypeError(f"masked_fill: mask must be a bool tensor, got {mask.dtype}")
        _check_broadcast("masked_fill", self.shape, mask.shape)
        if isinstance(value, Tensor):
            if value.ndim:
                raise ValueError(f"masked_fill: value must be a number or a 0-d tensor, got shape {value.shape}")
            fill = value.astype(self.dtype)
        else:
            fill = Tensor._make(self._be.xp.asarray(value).astype(self.dtype), self._be)
        out = where(Tensor._make(mask, self._be), fill, self)
        return out if out.shape == self.shape else out.expand(self.shape)

    def flip(self, *dims):
        """Reverse the order along each of ``dims``."""
        axes = _axes(as_shape(dims), self.ndim)
        index = tuple(slice(None, None, -1) if d in axes else slice(None) for d in range(self.ndim))
        return self[index] if axes else self

    def roll(self, shifts, dims=None):
        """``torch.roll``: shift elements along ``dims`` (the flattened tensor when None), wrapping."""
        if dims is None:
            return self.flatten().roll(shifts, 0).reshape(self.shape)
        shifts = (shifts,) if isinstance(shifts, numbers.Integral) else tuple(shifts)
        dims = (dims,) if isinstance(dims, numbers.Integral) else tuple(dims)
        if len(shifts) != len(dims):
            raise ValueError(f"roll: {len(shifts)} shifts for {len(dims)} dims")
        out = self
        for shift, d in zip(shifts, dims):
            d = _axes(d, self.ndim)[0]
            n = self.shape[d]
            if n == 0 or shift % n == 0:
                continue
            k = shift % n
            lead = (slice(None),) * d
            out = cat([out[lead + (slice(n - k, n),)], out[lead + (slice(0, n - k),)]], dim=d)
        return out

    def any(self, dim=None, keepdim=False):
        return self._logical(self._be.xp.any, dim, keepdim)

    def all(self, dim=None, keepdim=False):
        return self._logical(self._be.xp.all, dim, keepdim)

    def _logical(self, fn, dim, keepdim):
        axis = _axes(dim, self.ndim)
        return Tensor._make(fn(self.data.astype(bool, copy=False), axis=axis, keepdims=keepdim), self._be)

    def new_zeros(self, *size): return Tensor._make(self._be.xp.zeros(as_shape(size), self.dtype), self._be)
    def new_ones(self, *size): return Tensor._make(self._be.xp.ones(as_shape(size), self.dtype), self._be)
    def new_full(self, size, fill_value): return Tensor._make(self._be.xp.full(tuple(size), fill_value, self.dtype), self._be)
    def new_tensor(self, data): return Tensor(data, dtype=self.dtype, backend=self._be)
    def type_as(self, other): return self.astype(other.dtype)
    def is_floating_point(self) -> bool: return is_float(self.dtype)
    def movedim(self, source, destination):
        order = [d for d in range(self.ndim) if d != source % self.ndim]
        order.insert(destination % self.ndim, source % self.ndim)
        return self.permute(*order)
    def swapaxes(self, axis0, axis1): return self.transpose(axis0, axis1)
    def view_as(self, other): return self.reshape(other.shape)
    def reshape_as(self, other): return self.reshape(other.shape)
    def unflatten(self, dim, sizes):
        dim = _axes(dim, self.ndim)[0]
        return self.reshape(self.shape[:dim] + tuple(sizes) + self.shape[dim + 1:])
    def t(self):
        if self.ndim > 2:
            raise ValueError(f"t(): expects a tensor with at most 2 dims, got {self.ndim} (use transpose or mT)")
        return self.transpose(0, 1) if self.ndim == 2 else self
    def nelement(self) -> int: return self.numel()
    def ndimension(self) -> int: return self.ndim
    def element_size(self) -> int: return int(self.dtype.itemsize)
    def is_contiguous(self) -> bool: return True  # every op gives a fresh (or reshaped) array

    def clamp_min(self, min): return self.clamp(min=min)  # noqa: A002
    def clamp_max(self, max): return self.clamp(max=max)  # noqa: A002
    def log2(self): return self.log() / math.log(2.0)
    def log10(self): return self.log() / math.log(10.0)
    def exp2(self): return (self * math.log(2.0)).exp() if is_float(self.dtype) else self.astype(get_default_dtype()).exp2()

    # tests and logical operations: no gradient, bool results
    def isnan(self): return Tensor._make(self._be.xp.isnan(self.data), self._be)
    def isinf(self): return Tensor._make(self._be.xp.isinf(self.data), self._be)
    def isfinite(self): return Tensor._make(self._be.xp.isfinite(self.data), self._be)
    def logical_not(self): return Tensor._make(self._be.xp.logical_not(self.data), self._be)
    def logical_and(self, other): return self._compare(self._be.xp.logical_and, other)
    def logical_or(self, other): return self._compare(self._be.xp.logical_or, other)
    def logical_xor(self, other): return self._compare(self._be.xp.logical_xor, other)
    def nonzero(self): return Tensor._make(self._be.xp.stack(self._be.xp.nonzero(self.data), axis=-1).astype(numpy.int64), self._be)
    def count_nonzero(self, dim=None): return (self != 0).sum(dim)

    def allclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False) -> bool:
        other = self._operand(other)
        return bool(self._be.xp.allclose(self.data, other.data, rtol=rtol, atol=atol, equal_nan=equal_nan))

    def equal(self, other) -> bool:
        """Same shape and same values (``torch.equal``)."""
        other = self._operand(other)
        return self.shape == other.shape and bool((self.data == other.data).all())

    # matrix products with torch's stricter shape rules
    def mm(self, other):
        other = self._operand(other)
        if self.ndim != 2 or other.ndim != 2:
            raise ValueError(f"mm: expects two 2-D tensors, got {self.shape} and {other.shape}")
        return self.matmul(other)

    def bmm(self, other):
        other = self._operand(other)
        if self.ndim != 3 or other.ndim != 3 or self.shape[0] != other.shape[0]:
            raise ValueError(f"bmm: expects two 3-D tensors with the same batch, got {self.shape} and {other.shape}")
        return self.matmul(other)

    def outer(self, other):
        other = self._operand(other)
        if self.ndim != 1 or other.ndim != 1:
            raise ValueError(f"outer: expects two 1-D tensors, got {self.shape} and {other.shape}")
        return self.unsqueeze(1) * other.unsqueeze(0)

    def tril(self, diagonal=0): return self._triangle(diagonal, lower=True)
    def triu(self, diagonal=0): return self._triangle(diagonal, lower=False)

    def _triangle(self, diagonal, lower):
        if self.ndim < 2:
            raise ValueError(f"tril/triu: expects at least 2 dims, got {self.shape}")
        xp = self._be.xp
        n, m = self.shape[-2:]
        keep = (xp.tril if lower else xp.triu)(xp.ones((n, m), dtype=bool), k=diagonal)
        return where(Tensor._make(keep, self._be), self, self.new_zeros(()))

    def index_select(self, dim, index):
        """The entries at ``index`` (1-D integers) along ``dim``; the gradient is scattered back."""
        index = index.data if isinstance(index, Tensor) else self._be.asarray(index)
        if index.ndim != 1 or index.dtype.kind not in "iu":
            raise ValueError(f"index_select: index must be a 1-D integer tensor, got shape {tuple(index.shape)} of {index.dtype}")
        dim = _axes(dim, self.ndim)[0]
        return ops.GetItem.apply(self, index=(slice(None),) * dim + (index,))

    def masked_select(self, mask):
        """The entries where ``mask`` (broadcast to this shape) is True, as a 1-D tensor."""
        mask = mask.data if isinstance(mask, Tensor) else self._be.asarray(mask)
        if mask.dtype.kind != "b":
            raise TypeError(f"masked_select: mask must be a bool tensor, got {mask.dtype}")
        shape = numpy.broadcast_shapes(self.shape, tuple(mask.shape))
        x = self.expand(shape) if shape != self.shape else self
        return ops.GetItem.apply(x, index=self._be.xp.broadcast_to(mask, shape))

    def repeat_interleave(self, repeats, dim=None):
        """Each element ``repeats`` (an int) times in a row along ``dim`` (the flattened tensor when None)."""
        if not isinstance(repeats, numbers.Integral) or repeats < 0:
            raise ValueError(f"repeat_interleave: repeats must be a non-negative int, got {repeats!r}")
        if dim is None:
            return self.flatten().repeat_interleave(repeats, 0)
        dim = _axes(dim, self.ndim)[0]
        index = self._be.xp.repeat(self._be.xp.arange(self.shape[dim]), int(repeats))
        return self.index_select(dim, Tensor._make(index, self._be))
    def prod(self, dim=None, keepdim=False, *, dtype=None):
        """Product over ``dim`` (all elements by default); bools and integers multiply in int64,
        as in PyTorch. The gradient is exact where there are zeros."""
        x = self if dtype is None else self.astype(dtype)
        if x.dtype.kind == "b" or (dtype is None and x.dtype.kind in "iu"):
            x = x.astype(numpy.int64)
        return ops.Prod.apply(x, axis=_axes(dim, x.ndim), keepdims=bool(keepdim))
    # ====================================== end of the issue-17 block ========================


# --------------------------------------------------------------------------------------------------
# helpers and module-level functions
# --------------------------------------------------------------------------------------------------
def _stable_argsort(xp, a, axis):
    """A stable argsort on any backend: NumPy needs ``kind='stable'``; CuPy's argsort is always
    stable and, in some versions, takes no ``kind``."""
    try:
        return xp.argsort(a, axis=axis, kind="stable")
    except (TypeError, ValueError, NotImplementedError):
        return xp.argsort(a, axis=axis)


def _return_type(name):
    """PyTorch's ``torch.return_types.<name>``: a named pair ``(values, indices)``."""
    return _RETURN_TYPES[name]


_RETURN_TYPES = {name: collections.namedtuple(name, ["values", "indices"]) for name in
                 ("max", "min", "sort", "topk", "kthvalue", "median", "mode")}


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
