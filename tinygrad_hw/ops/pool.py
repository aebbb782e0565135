"""Differentiable pooling: ``MaxPool2d`` / ``MaxPool2dBackward`` / ``MaxPool2dGather`` and
``AvgPool2d`` / ``AvgPool2dBackward``, each family closed under differentiation (the backward of
each is another member), so gradients of any order exist. The array work is in
:mod:`tinygrad_hw.kernels.pool`.
"""
from __future__ import annotations

from ..autograd.function import Function, first_order
from ..kernels.pool import MaxPoolRoute, avg_pool2d_backward, avg_pool2d_forward, max_pool2d_forward

__all__ = ["MaxPool2d", "MaxPool2dBackward", "MaxPool2dGather", "AvgPool2d", "AvgPool2dBackward"]


class MaxPool2d(Function):
    """Max pooling. Keeps the argmax of every window; ``sink`` (a dict or None) receives it for
    ``return_indices``."""

    saves = ()  # the routes and shapes kept on the op are all backward reads

    def forward(self, x):
        y, self.argmax = max_pool2d_forward(self.backend, x, self.kernel, self.stride, self.padding,
                                            self.dilation, self.ceil_mode)
        self.input_shape = x.shape
        if self.sink is not None:
            self.sink["argmax"] = self.argmax
        return y

    def backward(self, g):
        route = MaxPoolRoute(self.backend, self.argmax, self.input_shape, self.kernel, self.stride,
                              self.padding, self.dilation)
        if first_order():  # MaxPool2dBackward's forward, without the op
            return (self.const(route.scatter(g.data)),)
        return (MaxPool2dBackward.apply(g, route=route),)


class MaxPool2dBackward(Function):
    """Scatter of output gradients to the windows' maxima; its adjoint is MaxPool2dGather."""

    saves = ()  # the routes and shapes kept on the op are all backward reads

    def forward(self, g):
        return self.route.scatter(g)

    def backward(self, gg):
        return (MaxPool2dGather.apply(gg, route=self.route),)


class MaxPool2dGather(Function):
    """Reads an input-shaped tensor at the windows' maxima; its adjoint is MaxPool2dBackward."""

    saves = ()  # the routes and shapes kept on the op are all backward reads

    def forward(self, x):
        return self.route.gather(x)

    def backward(self, g):
        return (MaxPool2dBackward.apply(g, route=self.route),)


class AvgPool2d(Function):
    """Average pooling (linear): its gradient is AvgPool2dBackward, whose gradient is AvgPool2d."""

    saves = ()  # the routes and shapes kept on the op are all backward reads

    def forward(self, x):
        self.input_shape = x.shape
        return avg_pool2d_forward(self.backend, x, self.kernel, self.stride, self.padding,
                                  self.ceil_mode, self.count_include_pad)

    def backward(self, g):
        return (AvgPool2dBackward.apply(g, input_shape=self.input_shape, kernel=self.kernel,
                                        stride=self.stride, padding=self.padding, ceil_mode=self.ceil_mode,
                                        count_include_pad=self.count_include_pad),)


class AvgPool2dBackward(Function):
    saves = ()

    def forward(self, g):
        return avg_pool2d_backward(self.backend, g, self.input_shape, self.kernel, self.stride,
                                   self.padding, self.ceil_mode, self.count_include_pad)

    def backward(self, gg):
        return (AvgPool2d.apply(gg, kernel=self.kernel, stride=self.stride, padding=self.padding,
                                ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad),)

