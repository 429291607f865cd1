"""Training: the loop (``Trainer``), its state, the pieces of a step and the callbacks around it."""
from .callbacks import Checkpoint, EpochLog, EpochProbe, MetricsCSV, ProgressBar, SignalStop, Snapshots
from .loop import Callback, JoinedImages, StopTraining, Trainer, TrainOutcome, TrainSettings
from .state import TrainState
from .steps import (augment_batch, epoch_order, eval_batch_size, evaluate, layer_groups, make_optimizer,
                    resolve_device, step_generator, training_step_flops)
from .stop import Stopper

__all__ = ["Callback", "Checkpoint", "EpochLog", "EpochProbe", "JoinedImages", "MetricsCSV", "ProgressBar",
           "SignalStop", "Snapshots", "StopTraining", "Stopper", "TrainOutcome", "TrainSettings", "TrainState",
           "Trainer", "augment_batch", "epoch_order", "eval_batch_size", "evaluate", "layer_groups",
           "make_optimizer", "resolve_device", "step_generator", "training_step_flops"]
