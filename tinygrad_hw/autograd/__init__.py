"""The autograd engine: the :class:`Function` base of every op and how a call is recorded
(:mod:`.function`), grad and anomaly modes (:mod:`.grad_mode`), and the backward pass
(:mod:`.engine`)."""
from .engine import backward, grad, queue_callback, register_post_accumulate_grad_hook
from .function import Function
from .grad_mode import (AnomalyError, detect_anomaly, enable_grad, is_anomaly_enabled, is_grad_enabled, no_grad,
                        set_grad_enabled)

__all__ = ["Function", "backward", "grad", "register_post_accumulate_grad_hook", "queue_callback",
           "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "is_anomaly_enabled",
           "detect_anomaly", "AnomalyError"]
