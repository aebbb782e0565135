"""SWATS: start with Adam, switch to SGD once the SGD learning rate it implies has settled.

Keskar & Socher, *Improving Generalization Performance by Switching from Adam to SGD*
(2017, arXiv:1712.07628), Algorithm 1, per parameter group.
"""
from __future__ import annotations

import numpy

from .adam import check_betas
from .optimizer import Optimizer, grad_array, mark_updated, param_backend

__all__ = ["SWATS"]

# Per-group bookkeeping kept in the parameter-group dicts, so that state_dict() carries it.
_GROUP_STATE = dict(phase="adam", step=0, sgd_lr_avg=0.0, sgd_lr=None, switch_step=None,
                    switch_base_lr=None)


def dot64(xp, a, b, scratch64=None):
    """``sum(a * b)`` accumulated in float64, as a 0-d backend array (no host transfer)."""
    if a.dtype == numpy.float64 and b.dtype == numpy.float64:
        return xp.vdot(a, b)
    # float32/float16 parameters: their products are formed straight into a float64 buffer so
    # that the switching test, which compares numbers to ~1e-9, is not drowned by float32 sums.
    out = xp.multiply(a, b, out=scratch64, dtype=numpy.float64)
    return out.sum()


class SWATS(Optimizer):
    """Adam that switches, per parameter group and for good, to SGD with momentum.

    Adam phase (``k`` counts this group's steps, ``d = g + weight_decay * p``)::

        m = beta1 * m + (1 - beta1) * d,    a = beta2 * a + (1 - beta2) * d**2
        p_k = -lr * sqrt(1 - beta2**k) / (1 - beta1**k) * m / (sqrt(a) + eps),   x += p_k

    Then, where ``p_k . d != 0`` (dot products over all parameters of the group)::

        gamma_k = (p_k . p_k) / (-p_k . d),   lambda_k = beta2 * lambda_{k-1} + (1 - beta2) * gamma_k

    and once ``k > 1`` and ``|lambda_k / (1 - beta2**k) - gamma_k| < switch_tol`` the group
    switches to SGD with ``Lambda = lambda_k / (1 - beta2**k)``: ``v = beta1 * v + d`` (``v``
    starting at zero), ``x -= (1 - beta1) * Lambda * v``.

    Choices where the paper is silent (documented deviations/extensions):

    * ``weight_decay`` is an L2 term added to the gradient (``d`` above) in both phases and in
      the projections. The paper has no weight decay.
    * The Adam moments' bias corrections use each parameter's own step count (as
      ``torch.optim.Adam`` does); ``k`` in the switching rule is the group's step count. They
      differ only for parameters that sometimes have no gradient.
    * After the switch the SGD step is ``Lambda * lr / lr_at_switch``: a learning-rate
      scheduler keeps scaling the group's rate after the switch; without one it is ``Lambda``.
    * ``switch_rtol`` (default None, i.e. off, as in the paper) adds a relative criterion:
      switch also when ``|lambda_k / (1 - beta2**k) - gamma_k| < switch_rtol * |gamma_k|``. The
      paper's absolute test depends on the scale of ``gamma``; ports that use a relative test
      can be reproduced with ``switch_tol=0, switch_rtol=...``.

    Which groups switched, at which step and with which rate: :meth:`switch_info`; the same
    numbers are in each parameter group (``'phase'``, ``'switch_step'``, ``'sgd_lr'``) and so
    in :meth:`state_dict`. Deciding the switch needs the two dot products on the host: one
    device-to-host transfer per step (for all groups) during the Adam phase.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-9,
                 weight_decay: float = 0, switch_tol: float = 1e-9, switch_rtol=None):
        check_betas(lr, betas, eps, weight_decay)
        if switch_tol < 0 or (switch_rtol is not None and switch_rtol < 0):
            raise ValueError("switch tolerances must be >= 0")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        switch_tol=switch_tol, switch_rtol=switch_rtol)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        for key, value in _GROUP_STATE.items():
            self.param_groups[-1].setdefault(key, value)

    def switch_info(self) -> list[dict]:
        """Per group: ``{'switched': bool, 'step': k or None, 'lr': Lambda or None}``."""
        return [dict(switched=g["phase"] == "sgd", step=g["switch_step"], lr=g["sgd_lr"])
                for g in self.param_groups]

    def _update_group(self, group):
        live = [(p, grad_array(p)) for p in group["params"] if p.grad is not None]
        if not live:
            return
        for p, _ in live:
            mark_updated(p, "SWATS.step")
        group["step"] += 1
        if group["phase"] == "sgd":
            self._sgd_step(group, live)
        else:
            self._adam_step(group, live)

    @staticmethod
    def _direction(xp, x, g, weight_decay):
        if weight_decay == 0:
            return g  # read-only
        d = xp.multiply(x, weight_decay, out=xp.empty_like(x))
        d += g
        return d

    def _sgd_step(self, group, live):
        beta1 = group["betas"][0]
        coef = (1 - beta1) * group["sgd_lr"]
        if group["lr"] != group["switch_base_lr"]:
            coef *= group["lr"] / group["switch_base_lr"]
        for p, g in live:
            xp = param_backend(p).xp
            x = p.data
            state = self._state_of(p)
            state["step"] = state.get("step", 0) + 1
            d = self._direction(xp, x, g, group["weight_decay"])
            buf = state.get("momentum_buffer")
            if buf is None:  # v_{k-1} = 0 at the switch, so v_k = d
                buf = state["momentum_buffer"] = xp.array(d, copy=True)
            else:
                buf *= beta1
                buf += d
            work = d if d is not g else xp.empty_like(x)
            xp.multiply(buf, coef, out=work)
            x -= work

    def _adam_step(self, group, live):
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        pp = pg = None
        for p, g in live:
            be = param_backend(p)
            xp = be.xp
            x = p.data
            state = self._state_of(p)
            if not state or "exp_avg" not in state:
                state["step"] = state.get("step", 0)
                state["exp_avg"] = xp.zeros_like(x)
                state["exp_avg_sq"] = xp.zeros_like(x)
            state["step"] += 1
            step = state["step"]
            m, a = state["exp_avg"], state["exp_avg_sq"]
            d = self._direction(xp, x, g, group["weight_decay"])
            work = xp.empty_like(x)

            m *= beta1
            xp.multiply(d, 1 - beta1, out=work)
            m += work
            a *= beta2
            xp.multiply(d, d, out=work)
            work *= 1 - beta2
            a += work

            step_size = lr * (1 - beta2 ** step) ** 0.5 / (1 - beta1 ** step)
            xp.sqrt(a, out=work)
            work += eps
            xp.divide(m, work, out=work)
            work *= -step_size  # work is now p_k for this parameter
            scratch64 = None if x.dtype == numpy.float64 else xp.empty(x.shape, numpy.float64)
            pp_p, pg_p = dot64(xp, work, work, scratch64), dot64(xp, work, d, scratch64)
            pp = pp_p if pp is None else pp + pp_p
            pg = pg_p if pg is None else pg + pg_p
            x += work

        if getattr(self, "_pending", None) is not None:  # inside step(): read with the other groups
            self._pending.append((group, be, pp, pg))
            return
        pp, pg = (float(v) for v in be.to_numpy(be.xp.stack([pp, pg])))
        self._decide(group, pp, pg)

    def step(self, closure=None):
        """One update of every group; the groups still in the Adam phase then read their dot
        products in one device-to-host transfer (one host synchronisation per step, not one per
        group) and decide whether to switch, each as it would have alone."""
        self._pending = []
        try:
            loss = super().step(closure)
            pending = self._pending
        finally:
            self._pending = None
        if pending:
            be = pending[0][1]
            host = be.to_numpy(be.xp.stack([v for _, _, pp, pg in pending for v in (pp, pg)])).tolist()
            for k, (group, _, _, _) in enumerate(pending):
                self._decide(group, host[2 * k], host[2 * k + 1])
        return loss

    def _decide(self, group, pp, pg):
        """The switching rule, given this step's dot products ``p_k . p_k`` and ``p_k . d``."""
        beta2 = group["betas"][1]
        lr = group["lr"]
        if pg == 0:
            return  # lambda_k = lambda_{k-1}
        k = group["step"]
        gamma = pp / -pg
        group["sgd_lr_avg"] = beta2 * group["sgd_lr_avg"] + (1 - beta2) * gamma
        estimate = group["sgd_lr_avg"] / (1 - beta2 ** k)
        gap = abs(estimate - gamma)
        rtol = group["switch_rtol"]
        if k > 1 and (gap < group["switch_tol"] or (rtol is not None and gap < rtol * abs(gamma))):
            group["phase"] = "sgd"
            group["sgd_lr"] = estimate
            group["switch_step"] = k
            group["switch_base_lr"] = lr
            for p in group["params"]:  # the Adam moments are not needed any more
                state = self.state.get(p)
                if state:
                    state.pop("exp_avg", None)
                    state.pop("exp_avg_sq", None)
