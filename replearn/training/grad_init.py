"""Per-layer gradient norms at initialisation: the norms of the very first training step, taken before the
optimiser changes any weight. The epoch rows of ``train_<regime>_seed<S>.csv`` average over an epoch, when the
weights have already moved; depth studies (vanishing and exploding gradients) need the untouched start too.
Written to ``metrics/grad_init_<regime>_seed<S>.csv`` (one row per named layer): the layer's gradient norm
(Frobenius, over all its parameters), its number of parameters, and the norm per parameter, norm / √parameters
(the root mean square gradient entry), which compares layers of different sizes: a layer with 100× the
parameters has a 10× larger norm at the same typical entry."""
from __future__ import annotations

import math

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
        sizes = [0] * len(trainer.layer_names)
        for p, i in zip(trainer.params, trainer.group_index.tolist()):
            sizes[i] += p.numel()
        write_csv(self.path, pd.DataFrame({"regime": trainer.regime.name, "seed": trainer.seed,
                                           "layer": trainer.layer_names, "grad_norm": norms,
                                           "parameters": sizes,
                                           "grad_norm_per_param": [n / math.sqrt(max(k, 1)) for n, k in
                                                                   zip(norms, sizes)],
                                           "loss": float(loss.detach())}))
