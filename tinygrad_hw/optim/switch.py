"""Switch optimizers by hand-style rule: Adam until the validation loss plateaus, then SGD."""
from __future__ import annotations

import math

import numpy

from ..autograd import enable_grad
from .optimizer import Optimizer, grad_array, param_backend
from .swats import dot64

__all__ = ["SwitchOnPlateau"]


class SwitchOnPlateau:
    """Train with ``first`` until the validation metric stops improving, then with ``then``.

    ``first`` is an :class:`Optimizer` over the model's parameters, or a callable
    ``first(params)`` that builds one from ``params`` (which is otherwise not used). Call :meth:`step` / :meth:`zero_grad` in the training loop as with any
    optimizer and :meth:`epoch_end` once per epoch with the validation loss. When the loss has
    not improved for ``patience`` epochs in a row (improvement judged as in
    ``ReduceLROnPlateau``: ``mode``, ``threshold``, ``threshold_mode``), the helper calls
    ``then(param_groups, lr)`` and trains with the optimizer it returns from then on.

    ``param_groups`` mirrors ``first``'s groups, each a dict with only ``'params'`` (plus
    ``'lr'`` with ``layerwise=True``). ``lr`` is ``sgd_lr`` when given; otherwise it is
    estimated during the first phase as in SWATS: with ``p_k`` the step ``first`` actually took
    and ``g_k`` the gradient, ``gamma_k = (p_k . p_k) / (-p_k . g_k)``,
    ``lambda_k = beta * lambda_{k-1} + (1 - beta) * gamma_k`` and ``lr = lambda_k / (1 - beta**k)``
    (``beta`` defaults to the second Adam beta of ``first``, else 0.999). The estimate is over
    all parameters together; with ``layerwise=True`` each group also gets its own estimate as
    its ``'lr'``. The estimate is the rate of plain SGD; for SGD with momentum ``mu`` in
    PyTorch's form pass ``(1 - mu) * lr`` as SWATS does, e.g.
    ``then=lambda groups, lr: SGD(groups, lr=0.1 * lr, momentum=0.9)`` (with ``layerwise``
    the groups' own ``'lr'`` need the same scaling).

    Estimating keeps a copy of the parameters (to measure ``p_k``) during the first phase.
    Unlike ``ReduceLROnPlateau`` (which acts after ``patience + 1`` bad epochs) the switch
    happens after exactly ``patience`` epochs without improvement.
    """

    def __init__(self, params, first, then, patience: int = 10, *, sgd_lr=None,
                 layerwise: bool = False, beta=None, mode: str = "min", threshold: float = 1e-4,
                 threshold_mode: str = "rel"):
        if mode not in ("min", "max"):
            raise ValueError(f"mode {mode} is unknown!")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold mode {threshold_mode} is unknown!")
        if patience < 1:
            raise ValueError("patience must be >= 1")
        self.optimizer = first if isinstance(first, Optimizer) else first(params)
        self.then = then
        self.patience = patience
        self.given_lr = sgd_lr
        self.layerwise = layerwise
        if beta is None:
            betas = self.optimizer.defaults.get("betas")
            beta = betas[1] if betas is not None else 0.999
        self.beta = beta
        self.mode, self.threshold, self.threshold_mode = mode, threshold, threshold_mode
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.epoch = 0
        self.phase = "first"
        self.switch_epoch = None
        self.sgd_lr = None       # the lr handed to `then`
        self.group_lrs = None    # the groups' lrs handed to `then` (layerwise)
        n = len(self.optimizer.param_groups)
        # estimator: step count, lambda averages per group and over everything
        self._est = dict(steps=0, group_avg=[0.0] * n, group_seen=[False] * n, avg=0.0,
                         seen=False)
        self._previous = {}      # param -> copy of its data before the step (transient)

    # -- optimizer interface ----------------------------------------------------------------------
    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def switched(self) -> bool:
        return self.phase == "then"

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none)

    def step(self, closure=None):
        """A step of the current optimizer (measuring it for the lr estimate before the switch)."""
        if self.phase == "then" or self.given_lr is not None:
            return self.optimizer.step(closure)
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        groups = self.optimizer.param_groups
        for group in groups:
            for p in group["params"]:
                if p.grad is not None:
                    prev = self._previous.get(p)
                    if prev is None or not param_backend(p).is_array(prev) or prev.shape != p.data.shape:
                        prev = self._previous[p] = p.data.copy()
                    else:
                        prev[...] = p.data
        self.optimizer.step()
        self._measure(groups)
        return loss

    def _measure(self, groups):
        est = self._est
        est["steps"] += 1
        beta = self.beta
        # every parameter's two dot products stay on the device; one transfer reads them all
        # (one host synchronisation per step, not one per parameter), summed in the same order
        owners, dots, be = [], [], None
        for i, group in enumerate(groups):
            for p in group["params"]:
                g = grad_array(p)
                if g is None or p not in self._previous:
                    continue
                be = param_backend(p)
                disp = self._previous[p]
                be.xp.subtract(p.data, disp, out=disp)  # p_k, the step just taken
                scratch = None if disp.dtype == numpy.float64 else be.xp.empty(disp.shape, numpy.float64)
                dots += [dot64(be.xp, disp, disp, scratch), dot64(be.xp, disp, g, scratch)]
                owners.append(i)
        host = be.to_numpy(be.xp.stack(dots)).tolist() if dots else []
        totals = [[0.0, 0.0] for _ in groups]
        for k, i in enumerate(owners):
            totals[i][0] += host[2 * k]
            totals[i][1] += host[2 * k + 1]
        for i, (pp, pg) in enumerate(totals):
            if pg != 0:
                est["group_avg"][i] = beta * est["group_avg"][i] + (1 - beta) * (pp / -pg)
                est["group_seen"][i] = True
        pp, pg = sum(t[0] for t in totals), sum(t[1] for t in totals)
        if pg != 0:
            est["avg"] = beta * est["avg"] + (1 - beta) * (pp / -pg)
            est["seen"] = True

    def estimated_lr(self, group: int | None = None):
        """The current SWATS-style estimate (over everything, or of one group); None if none yet."""
        est = self._est
        seen = est["seen"] if group is None else est["group_seen"][group]
        if not seen:
            return None
        avg = est["avg"] if group is None else est["group_avg"][group]
        return avg / (1 - self.beta ** est["steps"])

    # -- the plateau rule -------------------------------------------------------------------------
    def _is_better(self, value):
        if self.mode == "min":
            return value < (self.best * (1 - self.threshold) if self.threshold_mode == "rel"
                            else self.best - self.threshold)
        return value > (self.best * (1 + self.threshold) if self.threshold_mode == "rel"
                        else self.best + self.threshold)

    def epoch_end(self, metric) -> bool:
        """Record this epoch's validation metric; returns True when it switched optimizers now."""
        value = float(metric)
        self.epoch += 1
        if self._is_better(value):
            self.best = value
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.phase == "first" and self.num_bad_epochs >= self.patience:
            self._switch()
            return True
        return False

    def _switch(self, lr=None, group_lrs=None):
        groups = self.optimizer.param_groups
        if lr is None:
            lr = self.given_lr if self.given_lr is not None else self.estimated_lr()
            if lr is None:
                raise RuntimeError("SwitchOnPlateau: no SGD learning rate could be estimated "
                                   "(no step had p.g != 0); pass sgd_lr=")
            if self.layerwise:
                group_lrs = [lr if self.given_lr is not None or self.estimated_lr(i) is None
                             else self.estimated_lr(i) for i in range(len(groups))]
        new_groups = [{"params": list(g["params"])} for g in groups]
        if group_lrs is not None:
            for g, glr in zip(new_groups, group_lrs):
                g["lr"] = glr
        self.optimizer = self.then(new_groups, lr)
        self.phase = "then"
        self.switch_epoch = self.epoch
        self.sgd_lr, self.group_lrs = lr, group_lrs
        self._previous = {}

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Plateau counters, the estimator, the switch record and the current optimizer's state."""
        est = self._est
        return dict(phase=self.phase, best=self.best, num_bad_epochs=self.num_bad_epochs,
                    epoch=self.epoch, switch_epoch=self.switch_epoch, sgd_lr=self.sgd_lr,
                    group_lrs=None if self.group_lrs is None else list(self.group_lrs),
                    estimator=dict(steps=est["steps"], group_avg=list(est["group_avg"]),
                                   group_seen=list(est["group_seen"]), avg=est["avg"],
                                   seen=est["seen"]),
                    optimizer=self.optimizer.state_dict())

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore; builds the second optimizer first when the checkpoint was taken after the switch."""
        if state_dict["phase"] == "then" and self.phase == "first":
            self._switch(lr=state_dict["sgd_lr"], group_lrs=state_dict["group_lrs"])
        elif state_dict["phase"] == "first" and self.phase == "then":
            raise ValueError("cannot load a checkpoint from before the switch into a switched helper")
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self.best = state_dict["best"]
        self.num_bad_epochs = state_dict["num_bad_epochs"]
        self.epoch = state_dict["epoch"]
        self.switch_epoch = state_dict["switch_epoch"]
        self.sgd_lr = state_dict["sgd_lr"]
        self.group_lrs = state_dict["group_lrs"]
        est = state_dict["estimator"]
        self._est = dict(steps=est["steps"], group_avg=list(est["group_avg"]),
                         group_seen=list(est["group_seen"]), avg=est["avg"], seen=est["seen"])
