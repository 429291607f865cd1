"""Per-layer gradient norms at initialisation: the norms of the very first training step, taken before the
optimiser changes any weight. The epoch rows of ``train_<regime>_seed<S>.csv`` average over an epoch, when the
weights have already moved; depth studies (vanishing and exploding gradients) need the untouched start too.
Written to ``metrics/grad_init_<regime>_seed<S>.csv`` (one row per named layer)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from replearn.rundir.io import write_csv
from replearn.training.loop import Callback, Trainer


class InitialGradNorms(Callback):
    """Records the gradient norm of every named layer at the first step of a run that starts at epoch 0
    (a resumed run has already recorded it)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_step_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        state = trainer.state
        if state.epoch != 0 or state.step != 1 or state.sums["steps"] != 1:
            return
        norms = state.sums["grad_sq"].detach().cpu().tolist()  # after one step: exactly that step's norms
        write_csv(self.path, pd.DataFrame({"regime": trainer.regime.name, "seed": trainer.seed,
                                           "layer": trainer.layer_names, "grad_norm": norms,
                                           "loss": float(loss.detach())}))
