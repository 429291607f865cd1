"""TensorBoard logging of training (``--tensorboard`` or ``analysis.tensorboard: true``): a ``Callback`` that
writes the loss, the learning rate and the per-layer gradient norms every step, every column of the epoch's
row (training and validation metrics, gradient norms, the epoch probe) every epoch, and a histogram of every
weight tensor of the encoder and the head every epoch, under ``<run dir>/tensorboard/<regime>_seed<S>/``.

``tensorboard`` is an optional extra: it is imported only when asked for, and a run that asks without it is
refused before anything is written (``summary_writer_class``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from replearn.errors import ConfigError
from replearn.training.loop import Callback, Trainer
from replearn.rundir import layout

INSTALL = "pip install 'replearn[tensorboard]'"


def summary_writer_class() -> Any:
    """torch's ``SummaryWriter``, or a one-line ConfigError naming the extra to install when TensorBoard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("TensorBoard logging (--tensorboard, analysis.tensorboard) needs the tensorboard package, "
                          "which is not installed", f"{INSTALL}, or leave TensorBoard off") from None
    return SummaryWriter


def run_log_dir(run_dir: Path, model: str, seed: int) -> Path:
    """Where one model's TensorBoard files go: ``<run dir>/tensorboard/<model>_seed<seed>``."""
    return Path(run_dir) / layout.tensorboard_run(model, seed)


class TensorBoard(Callback):
    """Scalars per step and per epoch and weight histograms per epoch, for one regime and seed. Global steps
    count optimisation steps from the start of training (epoch × steps per epoch + step), so a resumed run
    continues its curves where they stopped."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self.writer: Any = None
        self._before: torch.Tensor | None = None  # the epoch's gradient-norm sums before the step

    def on_train_start(self, trainer: Trainer) -> None:
        self.writer = summary_writer_class()(log_dir=str(self.log_dir))

    def on_epoch_start(self, trainer: Trainer) -> None:
        self._before = trainer.state.sums["grad_sq"].detach().clone()

    def on_step_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        state = trainer.state
        step = state.epoch * trainer.steps_per_epoch + state.step - 1  # the step just taken, from 0
        sums = state.sums["grad_sq"].detach()
        norms = (sums - self._before).cpu() if self._before is not None else sums.cpu()
        self._before = sums.clone()
        self.writer.add_scalar("step/loss", float(loss.detach()), step)
        self.writer.add_scalar("step/lr", float(trainer.optimizer.param_groups[0]["lr"]), step)
        for name, value in zip(trainer.layer_names, norms.tolist()):
            self.writer.add_scalar(f"step_grad_norm/{name}", value, step)

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
        epoch = int(row.get("epoch", trainer.state.epoch))
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                group = "epoch_grad_norm" if key.startswith("grad_norm") else "epoch"
                self.writer.add_scalar(f"{group}/{key}", float(value), epoch)
        for prefix, module in (("encoder", trainer.encoder), ("head", trainer.head)):
            for name, param in module.named_parameters():
                self.writer.add_histogram(f"weights/{prefix}.{name}", param.detach().float().cpu(), epoch)
        self.writer.flush()

    def on_stop(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.flush()

    def on_train_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
