"""Differentiable convolution: ``Conv2d``, ``Conv2dInputGrad`` (= transposed convolution) and
``Conv2dWeightGrad`` form a closed family: the backward of each is written with the other two, so
gradients of any order exist. The array work is in :mod:`tinygrad_hw.kernels.conv`; the public
functions with PyTorch's signatures are in :mod:`tinygrad_hw.nn.functional`.
"""
from __future__ import annotations

from ..autograd.function import Function, first_order
from ..kernels import compiled, compiled_nn
from ..kernels.conv import conv2d_forward, conv2d_input_grad, conv2d_weight_grad
from .elementwise import Relu

__all__ = ["Conv2d", "Conv2dReLU", "Conv2dInputGrad", "Conv2dWeightGrad"]


class _ConvFamily(Function):
    """The three members compute the three partial derivatives of the trilinear form
    ``<conv(x, w), g>``: :class:`Conv2d` makes the role ``g`` from (x, w),
    :class:`Conv2dInputGrad` makes ``x`` from (g, w), :class:`Conv2dWeightGrad` makes ``w`` from
    (x, g). So the gradient of any member in one of its inputs is the member that makes that
    input's role from the other input and the cotangent of the output: one backward serves all
    three. ``roles`` names a member's two inputs, ``makes`` its output, ``size_param`` the
    parameter that fixes its output's spatial size."""

    roles: tuple
    makes: str
    size_param: str

    def geometry(self) -> dict:
        """The parameters every member shares, to pass on to another member."""
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    def save(self, a, b):
        """Called by each member's forward with its two array inputs: the gradient in one input
        reads the other (never the bias), and only the spatial sizes of the inputs themselves."""
        self.save_partners((0, 1))
        self.in_hw = (a.shape[2:], b.shape[2:])

    def backward(self, cotangent):
        tensors = dict(zip(self.roles, self.inputs[:2]))
        tensors[self.makes] = cotangent
        sizes = dict(zip(self.roles, self.in_hw))
        # a plain first-order pass records and checks nothing: the member's forward straight
        # on the arrays (Function.compute), without apply's bookkeeping
        direct = first_order()
        grads = []
        for role, need in zip(self.roles, self.needs_input_grad):
            if not need:
                grads.append(None)
                continue
            maker = _MAKERS[role]
            a, b = (tensors[r] for r in maker.roles)
            if direct:
                grads.append(self.const(maker.compute(self.backend, a.data, b.data,
                                                      **{maker.size_param: sizes[role]},
                                                      **self.geometry())))
            else:
                grads.append(maker.apply(a, b, **{maker.size_param: sizes[role]}, **self.geometry()))
        return tuple(grads)


class Conv2d(_ConvFamily):
    """y = conv(x, w) (+ b, one value per output channel, when a third input is given). Params:
    stride, padding (4-tuple), dilation, groups, out_hw (or None). The bias lives in this node
    rather than in a separate broadcast add: one pass over the output fewer each way."""

    roles, makes, size_param = ("x", "w"), "g", "out_hw"

    def forward(self, x, w, b=None):
        self.save(x, w)
        return conv2d_forward(self.backend, x, w, out_hw=self.out_hw, bias=b, **self.geometry())

    def backward(self, g):
        grads = super().backward(g)
        if len(self.needs_input_grad) == 2:
            return grads
        if not self.needs_input_grad[2]:
            return grads + (None,)
        gd = g.data
        if first_order() and compiled.active(self.backend, gd):
            # first order: one compiled pass, channels over the workers (kernels/compiled_nn.py)
            return grads + (self.const(compiled_nn.channel_sums(self.backend, self.xp.ascontiguousarray(gd))),)
        return grads + (g.sum((0, 2, 3)),)


class Conv2dReLU(Conv2d):
    """relu(conv(x, w) (+ b)) as one node (nn.Sequential runs a Conv2d followed by a ReLU so):
    max(., 0) is applied as the kernels write the output, with no pass of its own, and backward
    masks the cotangent with the saved output exactly as :class:`~.elementwise.Relu` does before
    Conv2d's backward. Values and gradients are the two ops', bit for bit."""

    def forward(self, x, w, b=None):
        self.save(x, w)
        self.save_output()
        return conv2d_forward(self.backend, x, w, out_hw=self.out_hw, bias=b, relu=True, **self.geometry())

    def backward(self, g):
        masked, = Relu.backward(self, g)  # Relu's own code: it reads only the saved output
        dtype = self.output_data().dtype
        if masked.dtype != dtype:  # the cast the engine makes between Relu and Conv2d
            masked = masked.astype(dtype)
        return super().backward(masked)


class Conv2dInputGrad(_ConvFamily):
    """dx = conv_transpose(g, w) with dx of spatial size ``input_hw``: the adjoint of Conv2d in
    x (a transposed convolution of g)."""

    roles, makes, size_param = ("g", "w"), "x", "input_hw"

    def forward(self, g, w):
        self.save(g, w)
        return conv2d_input_grad(self.backend, g, w, self.input_hw, **self.geometry())


class Conv2dWeightGrad(_ConvFamily):
    """dw = the weight gradient of a convolution of x with output gradient g, of spatial size
    ``kernel_hw``."""

    roles, makes, size_param = ("x", "g"), "w", "kernel_hw"

    def forward(self, x, g):
        self.save(x, g)
        return conv2d_weight_grad(self.backend, x, g, self.kernel_hw, **self.geometry())


_MAKERS = {"g": Conv2d, "x": Conv2dInputGrad, "w": Conv2dWeightGrad}
