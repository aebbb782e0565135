"""Stochastic gradient descent with optional (Nesterov) momentum, like ``torch.optim.SGD``."""
from __future__ import annotations

from ..kernels import compiled_optim, cuda
from .optimizer import Optimizer, param_backend

__all__ = ["SGD"]


class SGD(Optimizer):
    """``torch.optim.SGD``: same arguments, defaults and update rule.

    With ``d = g + weight_decay * p`` (``-g`` in place of ``g`` when ``maximize``), momentum
    keeps ``buf = momentum * buf + (1 - dampening) * d`` (``buf = d`` at the first step) and the
    step is ``p -= lr * buf`` (``lr * (d + momentum * buf)`` with ``nesterov``).
    State per parameter: ``'momentum_buffer'`` (only when momentum is used).
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def _momentum_buffer(self, p, x, xp):
        """(buffer, first): ``p``'s momentum buffer for the one-pass kernels, made (unwritten)
        at its first step, when the kernel fills it."""
        state = self._state_of(p)
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = xp.empty_like(x)
            return buf, True
        return buf, False

    def _update_group(self, group):
        lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
        weight_decay, nesterov, maximize = group["weight_decay"], group["nesterov"], group["maximize"]
        scalars = {}  # dtype -> the hyper-parameters as its scalars, for the compiled kernel
        for p, g, xp in self._with_grads(group):
            x = p.data
            be = param_backend(p)
            fused = cuda.for_backend(be)
            if fused is not None and fused.supports(x, g):  # one kernel (kernels/cuda.py)
                buf, first = self._momentum_buffer(p, x, xp) if momentum != 0 else (None, False)
                fused.sgd_step(x, g, buf, lr, momentum, dampening, weight_decay, nesterov,
                               maximize, first)
                continue
            if compiled_optim.sgd_supports(be, x, g):
                # one compiled pass (kernels/compiled_optim.py), bit-identical to the code below
                buf, first = self._momentum_buffer(p, x, xp) if momentum != 0 else (None, False)
                if buf is not None and not buf.flags.c_contiguous:  # the kernel reads it flat
                    buf = self._state_of(p)["momentum_buffer"] = xp.ascontiguousarray(buf)
                cast = scalars.get(x.dtype)
                if cast is None:
                    cast = scalars[x.dtype] = compiled_optim.sgd_scalars(x.dtype, lr, momentum,
                                                                         dampening, weight_decay)
                compiled_optim.sgd_step(x, g, buf, cast, momentum, dampening, weight_decay,
                                        nesterov, maximize, first)
                continue
            # `work` is the one scratch array of this update; the caller's gradient is never
            # written to, so `d` aliases it only while it is read-only.
            work = None
            if weight_decay != 0:
                work = xp.multiply(x, weight_decay, out=xp.empty_like(x))
                if maximize:
                    work -= g
                else:
                    work += g
                d = work
            elif maximize:
                d = work = xp.negative(g, out=xp.empty_like(x))
            else:
                d = g
            if momentum != 0:
                state = self._state_of(p)
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = xp.array(d, copy=True)
                else:
                    buf *= momentum
                    if dampening == 0:
                        buf += d
                    else:  # nesterov is off here, so d is not needed afterwards
                        if work is None:
                            work = xp.multiply(d, 1 - dampening, out=xp.empty_like(x))
                        else:
                            work *= 1 - dampening
                        buf += work
                if nesterov:
                    if work is None:
                        work = xp.multiply(buf, momentum, out=xp.empty_like(x))
                        work += d
                    else:  # work holds d
                        work += buf * momentum
                    d = work
                else:
                    d = buf
            if d is work:
                work *= lr
            elif work is not None:
                xp.multiply(d, lr, out=work)
            else:
                work = xp.multiply(d, lr, out=xp.empty_like(x))
            x -= work
