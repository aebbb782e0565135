"""Differentiable convolution: ``Conv2d``, ``Conv2dInputGrad`` (= transposed convolution) and
``Conv2dWeightGrad`` form a closed family: the backward of each is written with the other two, so
gradients of any order exist. The array work is in :mod:`tinygrad_hw.kernels.conv`; the public
functions with PyTorch's signatures are in :mod:`tinygrad_hw.nn.functional`.
"""
from __future__ import annotations

from ..autograd.function import Function
from ..kernels.conv import conv2d_forward, conv2d_input_grad, conv2d_weight_grad

__all__ = ["Conv2d", "Conv2dInputGrad", "Conv2dWeightGrad"]


class Conv2d(Function):
    """y = conv(x, w) (+ b, one value per output channel, when a third input is given). Params:
    stride, padding (4-tuple), dilation, groups, out_hw (or None). The bias lives in this node
    rather than in a separate broadcast add: one pass over the output fewer each way."""

    def forward(self, x, w, b=None):
        return conv2d_forward(self.backend, x, w, self.stride, self.padding, self.dilation,
                              self.groups, self.out_hw, b)

    def backward(self, g):
        x, w = self.inputs[:2]
        geom = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)
        gx = Conv2dInputGrad.apply(g, w, input_hw=x.shape[2:], **geom) if self.needs_input_grad[0] else None
        gw = Conv2dWeightGrad.apply(x, g, kernel_hw=w.shape[2:], **geom) if self.needs_input_grad[1] else None
        if len(self.inputs) == 2:
            return gx, gw
        gb = g.sum((0, 2, 3)) if self.needs_input_grad[2] else None
        return gx, gw, gb


class Conv2dInputGrad(Function):
    """dx = conv_transpose(g, w) with dx of spatial size ``input_hw``: the adjoint of Conv2d in x.

    As a function of (g, w) its gradients are: in g, Conv2d(gg, w); in w, Conv2dWeightGrad(gg, g),
    because <gg, InputGrad(g, w)> = <Conv2d(gg, w), g>."""

    def forward(self, g, w):
        return conv2d_input_grad(self.backend, g, w, self.input_hw, self.stride, self.padding,
                                 self.dilation, self.groups)

    def backward(self, gg):
        g, w = self.inputs
        geom = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)
        dg = Conv2d.apply(gg, w, out_hw=g.shape[2:], **geom) if self.needs_input_grad[0] else None
        dw = Conv2dWeightGrad.apply(gg, g, kernel_hw=w.shape[2:], **geom) if self.needs_input_grad[1] else None
        return dg, dw


class Conv2dWeightGrad(Function):
    """dw = weight gradient of a convolution of x with output gradient g.

    <gw, WeightGrad(x, g)> = <Conv2d(x, gw), g>, so its gradients are: in x,
    Conv2dInputGrad(g, gw); in g, Conv2d(x, gw)."""

    def forward(self, x, g):
        return conv2d_weight_grad(self.backend, x, g, self.kernel_hw, self.stride, self.padding,
                                  self.dilation, self.groups)

    def backward(self, ggw):
        x, g = self.inputs
        geom = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)
        dx = Conv2dInputGrad.apply(g, ggw, input_hw=x.shape[2:], **geom) if self.needs_input_grad[0] else None
        dg = Conv2d.apply(x, ggw, out_hw=g.shape[2:], **geom) if self.needs_input_grad[1] else None
        return dx, dg


