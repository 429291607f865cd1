"""Training: the loop (``Trainer``), its state, the pieces of a step and the callbacks around it."""
from replearn.training.callbacks import Checkpoint, EpochLog, EpochProbe, MetricsCSV, ProgressBar, SignalStop, Snapshots
from replearn.training.loop import Callback, JoinedImages, StopTraining, Trainer, TrainOutcome, TrainSettings
from replearn.training.state import TrainState
from replearn.training.steps import (augment_batch, epoch_order, eval_batch_size, evaluate, layer_groups, make_optimizer,
                    resolve_device, step_generator, training_step_flops)
from replearn.training.stop import Stopper

__all__ = ["Callback", "Checkpoint", "EpochLog", "EpochProbe", "JoinedImages", "MetricsCSV", "ProgressBar",
           "SignalStop", "Snapshots", "StopTraining", "Stopper", "TrainOutcome", "TrainSettings", "TrainState",
           "Trainer", "augment_batch", "epoch_order", "eval_batch_size", "evaluate", "layer_groups",
           "make_optimizer", "resolve_device", "step_generator", "training_step_flops"]
