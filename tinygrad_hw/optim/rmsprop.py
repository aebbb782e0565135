"""RMSprop, like ``torch.optim.RMSprop``."""
from __future__ import annotations

from .optimizer import Optimizer

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    """``torch.optim.RMSprop``: same arguments, defaults and update rule.

    With ``d = g + weight_decay * p`` (``-g`` when ``maximize``): ``v = alpha v + (1 - alpha) d^2``;
    the denominator is ``sqrt(v) + eps`` (``sqrt(v - m^2) + eps`` with ``centered``, where
    ``m = alpha m + (1 - alpha) d``); the step is ``p -= lr * d / denominator``, or with momentum
    ``buf = momentum buf + d / denominator`` and ``p -= lr * buf``.
    State per parameter: ``'step'``, ``'square_avg'``, ``'momentum_buffer'`` (with momentum),
    ``'grad_avg'`` (centered).
    """

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0, momentum: float = 0, centered: bool = False, *,
                 maximize: bool = False):
        for name, value in (("learning rate", lr), ("epsilon value", eps), ("momentum value", momentum),
                            ("weight_decay value", weight_decay), ("alpha value", alpha)):
            if value < 0.0:
                raise ValueError(f"Invalid {name}: {value}")
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                        centered=centered, maximize=maximize)
        super().__init__(params, defaults)

    def _update_group(self, group):
        lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
        momentum, centered = group["momentum"], group["centered"]
        for p, g, xp in self._with_grads(group):
            x = p.data
            d = self._descent_direction(group, g, x)
            state = self._state_of(p)
            if not state:
                state["step"] = 0
                state["square_avg"] = xp.zeros_like(x)
                if momentum > 0:
                    state["momentum_buffer"] = xp.zeros_like(x)
                if centered:
                    state["grad_avg"] = xp.zeros_like(x)
            state["step"] += 1
            square_avg = state["square_avg"]
            square_avg *= alpha
            square_avg += (1 - alpha) * d * d
            if centered:
                grad_avg = state["grad_avg"]
                grad_avg *= alpha
                grad_avg += (1 - alpha) * d
                avg = xp.sqrt(square_avg - grad_avg * grad_avg) + eps
            else:
                avg = xp.sqrt(square_avg) + eps
            if momentum > 0:
                buf = state["momentum_buffer"]
                buf *= momentum
                buf += d / avg
                x -= lr * buf
            else:
                x -= lr * (d / avg)
