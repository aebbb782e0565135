"""Adagrad, like ``torch.optim.Adagrad``."""
from __future__ import annotations

from .optimizer import Optimizer

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    """``torch.optim.Adagrad``: same arguments, defaults and update rule.

    With ``d = g + weight_decay * p`` (``-g`` when ``maximize``): ``s += d^2`` (``s`` starts at
    ``initial_accumulator_value``) and ``p -= lr / (1 + (step - 1) lr_decay) * d / (sqrt(s) + eps)``.
    State per parameter: ``'step'``, ``'sum'`` (made at the first step here; PyTorch makes it in
    the constructor).
    """

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0, weight_decay: float = 0,
                 initial_accumulator_value: float = 0, eps: float = 1e-10, *, maximize: bool = False):
        for name, value in (("learning rate", lr), ("lr_decay value", lr_decay), ("weight_decay value", weight_decay),
                            ("initial_accumulator_value", initial_accumulator_value), ("epsilon value", eps)):
            if value < 0.0:
                raise ValueError(f"Invalid {name}: {value}")
        defaults = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, eps=eps, maximize=maximize)
        super().__init__(params, defaults)

    def _update_group(self, group):
        lr, lr_decay, eps = group["lr"], group["lr_decay"], group["eps"]
        for p, g, xp in self._with_grads(group):
            x = p.data
            d = self._descent_direction(group, g, x)
            state = self._state_of(p)
            if not state:
                state["step"] = 0
                state["sum"] = xp.full_like(x, group["initial_accumulator_value"])
            state["step"] += 1
            clr = lr / (1 + (state["step"] - 1) * lr_decay)
            state["sum"] += d * d
            x -= clr * (d / (xp.sqrt(state["sum"]) + eps))
