"""Adam and AdamW, like ``torch.optim.Adam`` / ``torch.optim.AdamW``."""
from __future__ import annotations

from ..kernels import cuda
from .optimizer import Optimizer, param_backend

__all__ = ["Adam", "AdamW"]


def check_betas(lr, betas, eps, weight_decay):
    if not 0.0 <= lr:
        raise ValueError(f"Invalid learning rate: {lr}")
    if not 0.0 <= eps:
        raise ValueError(f"Invalid epsilon value: {eps}")
    if not 0.0 <= betas[0] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
    if not 0.0 <= betas[1] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
    if not 0.0 <= weight_decay:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")


def lerp_(xp, start, end, weight, work):
    """``start += weight * (end - start)`` in place, rounded as ``torch.lerp`` rounds it."""
    xp.subtract(end, start, out=work)
    if weight < 0.5:
        work *= weight
        start += work
    else:  # end - (end - start) * (1 - weight): exact at weight == 1
        work *= 1 - weight
        xp.subtract(end, work, out=start)


class Adam(Optimizer):
    """``torch.optim.Adam``: same arguments, defaults and update rule.

    ``m = lerp(m, d, 1 - beta1)``, ``v = beta2 * v + (1 - beta2) * d**2`` with
    ``d = g + weight_decay * p`` (L2; with ``decoupled_weight_decay=True`` instead
    ``p *= 1 - lr * weight_decay``, which is AdamW), then
    ``p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)``; ``amsgrad`` uses
    the running maximum of ``v``. State per parameter: ``'step'`` (int), ``'exp_avg'``,
    ``'exp_avg_sq'`` and, with amsgrad, ``'max_exp_avg_sq'``.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *, maximize: bool = False,
                 decoupled_weight_decay: bool = False):
        check_betas(lr, betas, eps, weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def _update_group(self, group):
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        weight_decay, amsgrad, maximize = group["weight_decay"], group["amsgrad"], group["maximize"]
        decoupled = group["decoupled_weight_decay"]
        for p, g, xp in self._with_grads(group):
            x = p.data
            state = self._state_of(p)
            if not state:
                state["step"] = 0
                state["exp_avg"] = xp.zeros_like(x)
                state["exp_avg_sq"] = xp.zeros_like(x)
                if amsgrad:
                    state["max_exp_avg_sq"] = xp.zeros_like(x)
            state["step"] += 1
            step = state["step"]
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            fused = cuda.for_backend(param_backend(p))
            if fused is not None and fused.supports(x, g, exp_avg, exp_avg_sq):  # one kernel
                vmax = None
                if amsgrad:
                    vmax = state.get("max_exp_avg_sq")
                    if vmax is None:  # amsgrad switched on mid-training
                        vmax = state["max_exp_avg_sq"] = xp.zeros_like(x)
                fused.adam_step(x, g, exp_avg, exp_avg_sq, vmax, lr=lr, beta1=beta1, beta2=beta2,
                                eps=eps, weight_decay=weight_decay, step=step,
                                decoupled=decoupled, amsgrad=amsgrad, maximize=maximize)
                continue

            d = g  # read-only alias of the caller's gradient unless replaced below
            if weight_decay != 0 and decoupled:
                x *= 1 - lr * weight_decay
            if weight_decay != 0 and not decoupled:
                d = xp.multiply(x, weight_decay, out=xp.empty_like(x))
                if maximize:
                    d -= g
                else:
                    d += g
            elif maximize:
                d = xp.negative(g, out=xp.empty_like(x))
            work = xp.empty_like(x)  # the one scratch array of this update

            lerp_(xp, exp_avg, d, 1 - beta1, work)
            exp_avg_sq *= beta2
            xp.multiply(d, d, out=work)
            work *= 1 - beta2
            exp_avg_sq += work

            bias_correction1 = 1 - beta1 ** step
            bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
            step_size = lr / bias_correction1
            if amsgrad:
                max_exp_avg_sq = state.get("max_exp_avg_sq")
                if max_exp_avg_sq is None:  # amsgrad switched on mid-training
                    max_exp_avg_sq = state["max_exp_avg_sq"] = xp.zeros_like(x)
                xp.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
                xp.sqrt(max_exp_avg_sq, out=work)
            else:
                xp.sqrt(exp_avg_sq, out=work)
            work /= bias_correction2_sqrt
            work += eps
            xp.divide(exp_avg, work, out=work)
            work *= -step_size
            x += work


class AdamW(Adam):
    """``torch.optim.AdamW``: Adam with decoupled weight decay (default 1e-2),
    ``p *= 1 - lr * weight_decay`` before the Adam step."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)
