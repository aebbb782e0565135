"""Optimizers (SGD, Adam, AdamW, RMSprop, Adagrad...) and learning-rate schedulers with ``torch.optim``'s API,
defaults and update rules.

Updates run as in-place array expressions on each parameter's backend (NumPy or CuPy) and are
never recorded by autograd. Besides PyTorch's SGD, Adam and AdamW there is :class:`SWATS`
(Adam switching to SGD, Keskar & Socher 2017) and :class:`SwitchOnPlateau`, the same switch
triggered by a validation-loss plateau.
"""
from . import lr_scheduler
from .adam import Adam, AdamW
from .adagrad import Adagrad
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD
from .swats import SWATS
from .switch import SwitchOnPlateau

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "SWATS", "SwitchOnPlateau", "lr_scheduler"]
