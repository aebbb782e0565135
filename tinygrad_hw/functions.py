"""The ``torch.*`` function forms of Tensor methods: ``hw.max(x, 1)`` is ``x.max(1)``,
``hw.argmax(x, dim=1)`` is ``x.argmax(dim=1)``, and so on (``cat``, ``stack`` and ``where`` live in
:mod:`tinygrad_hw.tensor`). Each is a one-line call of the method, so the two cannot differ.
"""
from __future__ import annotations

from .tensor import Tensor

__all__ = ["max", "min", "amax", "amin", "argmax", "argmin", "sum", "mean", "var", "std", "logsumexp",
           "softmax", "log_softmax", "exp", "log", "sqrt", "tanh", "sigmoid", "abs", "relu", "clamp",
           "maximum", "minimum", "matmul", "flatten", "reshape", "permute", "transpose", "squeeze",
           "unsqueeze", "sort", "argsort", "topk", "cumsum", "norm", "clone", "gather", "masked_fill",
           "flip", "roll", "chunk", "split", "unbind", "any", "all", "numel", "floor_divide",
           "remainder", "sin", "cos", "square", "neg", "mul", "add", "sub", "div", "pow", "is_tensor",
           "mm", "bmm", "outer", "tril", "triu", "index_select", "masked_select", "nonzero", "isnan",
           "isinf", "isfinite", "logical_not", "logical_and", "logical_or", "allclose", "equal",
           "log2", "log10", "t", "repeat_interleave", "count_nonzero", "prod"]


def max(input: Tensor, *args, **kwargs): return input.max(*args, **kwargs)  # noqa: A001
def min(input: Tensor, *args, **kwargs): return input.min(*args, **kwargs)  # noqa: A001
def amax(input: Tensor, *args, **kwargs): return input.amax(*args, **kwargs)
def amin(input: Tensor, *args, **kwargs): return input.amin(*args, **kwargs)
def argmax(input: Tensor, *args, **kwargs): return input.argmax(*args, **kwargs)
def argmin(input: Tensor, *args, **kwargs): return input.argmin(*args, **kwargs)
def sum(input: Tensor, *args, **kwargs): return input.sum(*args, **kwargs)  # noqa: A001
def mean(input: Tensor, *args, **kwargs): return input.mean(*args, **kwargs)
def var(input: Tensor, *args, **kwargs): return input.var(*args, **kwargs)
def std(input: Tensor, *args, **kwargs): return input.std(*args, **kwargs)
def logsumexp(input: Tensor, *args, **kwargs): return input.logsumexp(*args, **kwargs)
def softmax(input: Tensor, *args, **kwargs): return input.softmax(*args, **kwargs)
def log_softmax(input: Tensor, *args, **kwargs): return input.log_softmax(*args, **kwargs)
def exp(input: Tensor): return input.exp()
def log(input: Tensor): return input.log()
def sqrt(input: Tensor): return input.sqrt()
def tanh(input: Tensor): return input.tanh()
def sigmoid(input: Tensor): return input.sigmoid()
def abs(input: Tensor): return input.abs()  # noqa: A001
def relu(input: Tensor): return input.relu()
def sin(input: Tensor): return input.sin()
def cos(input: Tensor): return input.cos()
def square(input: Tensor): return input.square()
def neg(input: Tensor): return -input
def clamp(input: Tensor, min=None, max=None): return input.clamp(min, max)  # noqa: A002
def maximum(input: Tensor, other): return input.maximum(other)
def minimum(input: Tensor, other): return input.minimum(other)
def add(input: Tensor, other): return input + other
def sub(input: Tensor, other): return input - other
def mul(input: Tensor, other): return input * other
def div(input: Tensor, other): return input / other
def pow(input: Tensor, exponent): return input ** exponent  # noqa: A001
def floor_divide(input: Tensor, other): return input.floor_divide(other)
def remainder(input: Tensor, other): return input.remainder(other)
def matmul(input: Tensor, other): return input.matmul(other)
def flatten(input: Tensor, start_dim=0, end_dim=-1): return input.flatten(start_dim, end_dim)
def reshape(input: Tensor, shape): return input.reshape(shape)
def permute(input: Tensor, dims): return input.permute(dims)
def transpose(input: Tensor, dim0, dim1): return input.transpose(dim0, dim1)
def squeeze(input: Tensor, dim=None): return input.squeeze(dim)
def unsqueeze(input: Tensor, dim): return input.unsqueeze(dim)
def sort(input: Tensor, *args, **kwargs): return input.sort(*args, **kwargs)
def argsort(input: Tensor, *args, **kwargs): return input.argsort(*args, **kwargs)
def topk(input: Tensor, *args, **kwargs): return input.topk(*args, **kwargs)
def cumsum(input: Tensor, dim, **kwargs): return input.cumsum(dim, **kwargs)
def norm(input: Tensor, *args, **kwargs): return input.norm(*args, **kwargs)
def clone(input: Tensor): return input.clone()
def gather(input: Tensor, dim, index): return input.gather(dim, index)
def masked_fill(input: Tensor, mask, value): return input.masked_fill(mask, value)
def flip(input: Tensor, dims): return input.flip(dims)
def roll(input: Tensor, shifts, dims=None): return input.roll(shifts, dims)
def chunk(input: Tensor, chunks, dim=0): return input.chunk(chunks, dim)
def split(tensor: Tensor, split_size_or_sections, dim=0): return tensor.split(split_size_or_sections, dim)
def unbind(input: Tensor, dim=0): return input.unbind(dim)
def any(input: Tensor, *args, **kwargs): return input.any(*args, **kwargs)  # noqa: A001
def all(input: Tensor, *args, **kwargs): return input.all(*args, **kwargs)  # noqa: A001
def numel(input: Tensor): return input.numel()
def is_tensor(obj) -> bool: return isinstance(obj, Tensor)
def mm(input: Tensor, mat2): return input.mm(mat2)
def bmm(input: Tensor, mat2): return input.bmm(mat2)
def outer(input: Tensor, vec2): return input.outer(vec2)
def tril(input: Tensor, diagonal=0): return input.tril(diagonal)
def triu(input: Tensor, diagonal=0): return input.triu(diagonal)
def index_select(input: Tensor, dim, index): return input.index_select(dim, index)
def masked_select(input: Tensor, mask): return input.masked_select(mask)
def nonzero(input: Tensor): return input.nonzero()
def isnan(input: Tensor): return input.isnan()
def isinf(input: Tensor): return input.isinf()
def isfinite(input: Tensor): return input.isfinite()
def logical_not(input: Tensor): return input.logical_not()
def logical_and(input: Tensor, other): return input.logical_and(other)
def logical_or(input: Tensor, other): return input.logical_or(other)
def allclose(input: Tensor, other, rtol=1e-05, atol=1e-08, equal_nan=False): return input.allclose(other, rtol, atol, equal_nan)
def equal(input: Tensor, other): return input.equal(other)
def log2(input: Tensor): return input.log2()
def log10(input: Tensor): return input.log10()
def t(input: Tensor): return input.t()
def repeat_interleave(input: Tensor, repeats, dim=None): return input.repeat_interleave(repeats, dim)
def count_nonzero(input: Tensor, dim=None): return input.count_nonzero(dim)
def prod(input: Tensor, *args, **kwargs): return input.prod(*args, **kwargs)
