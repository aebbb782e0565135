"""Training machinery that the examples share, for any model and data:

* :mod:`.loop`: :func:`train_one_epoch`, :func:`evaluate` (optionally flip-averaged), the
  non-finite-loss diagnosis;
* :mod:`.fit`: :func:`fit`, the epoch loop with per-epoch checkpoints and an exact resume;
* :mod:`.checkpoint`: run checkpoints and the random states they carry (of every rank in
  data-parallel training);
* :mod:`.progress`: the progress bar;
* :mod:`.report` and :mod:`.plots`: the text report, the machine's description, the figures;
* :mod:`.cifar10`: the CIFAR-10 recipes (presets and their factories) of the examples.
"""
from . import cifar10
from .checkpoint import (load_checkpoint, random_state, restore_rank_state, save_checkpoint,
                         set_random_state, unwrap)
from .fit import fit, new_history
from .loop import NonFiniteLossError, diagnose_nonfinite, evaluate, nonfinite_parameters, train_one_epoch
from .plots import finish_axes, plot_run, pyplot, save_figure
from .progress import Progress
from .report import classification_report, machine

__all__ = ["cifar10", "fit", "new_history", "train_one_epoch", "evaluate", "NonFiniteLossError",
           "nonfinite_parameters", "diagnose_nonfinite", "save_checkpoint", "load_checkpoint",
           "random_state", "set_random_state", "restore_rank_state", "unwrap", "Progress", "classification_report", "machine",
           "plot_run", "pyplot", "finish_axes", "save_figure"]
