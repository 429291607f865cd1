"""The training loop shared by every regime: the regime supplies the head and the loss, the loop the rest.

Data stay in memory (or in a streamed store) and are batched by index; each epoch's order is a pure
function of (seed, epoch) and each step's randomness of (seed, epoch, step), so a run interrupted mid-epoch
resumes at the exact step. Per-layer gradient norms are kept every step; a non-finite loss or gradient
stops training and names the layer. Everything else — checkpoints, the metrics CSV, the per-epoch probe,
reconstruction snapshots, progress, the ETA and stopping on a signal — is a ``Callback``.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, fields
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn as nn

from replearn.runtime import distributed

from replearn.runtime import threads as parallel
from replearn.encoders import Encoder
from replearn.errors import ConfigError, TrainingDiverged, TrainingInterrupted
from replearn.regimes import Regime
from replearn.runtime.seeding import AUGMENT, derive_seed
from replearn.training.state import TrainState
from replearn.training.steps import (augment_batch, autocast, epoch_order, eval_batch_size, evaluate, fast_cuda, flush_denormals,
                    layer_groups, make_optimizer, resident_images, step_generator, to_device, training_threads)


@dataclass
class TrainSettings:
    """What the loop needs of the ``train`` section, for one regime."""

    epochs: int
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 3e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    augment: bool = False
    precision: str = "fp32"
    sync_batchnorm: bool = False

    @classmethod
    def from_config(cls, train: Any, epochs: int) -> "TrainSettings":
        """The settings of a ``TrainConfig``, with the regime's own number of epochs."""
        return cls(epochs=epochs, **{f.name: getattr(train, f.name) for f in fields(cls) if f.name != "epochs"})


@dataclass
class TrainOutcome:
    """What a finished regime leaves behind besides its weights."""

    history: list[dict[str, float]]
    snapshots: np.ndarray | None = None
    resumed_from: dict[str, int] | None = None


class StopTraining(Exception):
    """Raised by a callback to end training at a step boundary (e.g. on a signal); the trainer then calls
    every callback's ``on_stop`` (so that the state is saved) and raises ``TrainingInterrupted``."""

    def __init__(self, reason: str, where: str = "") -> None:
        self.reason, self.where = reason, where
        super().__init__(reason)


class Callback:
    """Hooks around the loop; each defaults to doing nothing. ``on_validation`` may add columns to the
    epoch's row before it is recorded; ``on_epoch_end`` sees it recorded (state advanced to the next epoch).
    A callback that saves a resumable state names the file in ``saves_to`` (quoted when training fails)."""

    saves_to: Any = None

    def on_train_start(self, trainer: "Trainer") -> None: ...
    def on_epoch_start(self, trainer: "Trainer") -> None: ...
    def on_step_end(self, trainer: "Trainer", loss: torch.Tensor) -> None: ...
    def on_validation(self, trainer: "Trainer", row: dict[str, float]) -> None: ...
    def on_epoch_end(self, trainer: "Trainer", row: dict[str, float]) -> None: ...
    def on_stop(self, trainer: "Trainer") -> None: ...
    def on_train_end(self, trainer: "Trainer") -> None: ...


class JoinedImages:
    """Two image collections indexed as one (labelled training images, then a dataset's unlabelled ones)."""

    def __init__(self, first: Any, second: Any) -> None:
        self.first, self.second, self.split = first, second, len(first)

    def __len__(self) -> int:
        return self.split + len(self.second)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(idx)
        out = torch.empty((len(idx), *self.first.shape[1:]), dtype=torch.float32)  # both hold normalised float32
        low = idx < self.split
        if low.any():
            out[low] = torch.as_tensor(self.first[idx[low]])
        if (~low).any():
            out[~low] = torch.as_tensor(self.second[idx[~low] - self.split])
        return out


class Trainer:
    """Trains ``encoder`` + ``head`` under ``regime`` on ``data`` (a ``Dataset``). A regime that never sees
    labels also trains on the dataset's unlabelled split, when it has one."""

    def __init__(self, regime: Regime, encoder: Encoder, head: nn.Module, data: Any, settings: TrainSettings,
                 *, seed: int = 0, device: torch.device | str = "cpu", callbacks: Iterable[Callback] = ()) -> None:
        self.regime, self.encoder, self.head, self.data, self.settings = regime, encoder, head, data, settings
        self.seed, self.device, self.callbacks = seed, torch.device(device), list(callbacks)
        self.images = self.training_images(regime, data)
        self.steps_per_epoch = self.steps_in_epoch(len(self.images), settings.batch_size)
        encoder.to(self.device).to(memory_format=torch.channels_last)
        head.to(self.device).to(memory_format=torch.channels_last)
        self.world, self.images = distributed.world(), resident_images(self.images, self.device, settings.augment)
        self.loss_fn = distributed.ddp_loss(regime, encoder, head, self.device, settings.sync_batchnorm)
        fast_cuda(self.device, settings.precision)
        self.layer_names, self.params, index = layer_groups(encoder, head, regime.head_name)
        self.group_index = torch.tensor(index, device=self.device)
        self.optimizer, self.scheduler = make_optimizer(self.params, settings, settings.epochs * self.steps_per_epoch)
        self.modules = {"encoder": encoder, "head": head, "optimizer": self.optimizer, "scheduler": self.scheduler}
        self.state = TrainState(len(self.layer_names), self.device)
        self.resumed_from: dict[str, int] | None = None
        self.threads = 1

    @staticmethod
    def steps_in_epoch(images: int, batch_size: int) -> int:
        """Batches per epoch: ceil(images / batch_size), except that a last batch of a single image joins the
        one before it (batch norm cannot train on one image; runs whose last batch is larger are unchanged)."""
        steps = math.ceil(images / batch_size)
        return steps - 1 if steps > 1 and images % batch_size == 1 else steps

    @staticmethod
    def training_images(regime: Regime, data: Any) -> Any:
        """The images ``regime`` trains on: the training split, plus the unlabelled split (when the dataset
        has one) for a regime that never sees labels."""
        unlabelled = getattr(data, "unlabelled_x", None)
        if unlabelled is None or not len(unlabelled) or regime.needs_labels:
            return data.train_x
        return JoinedImages(data.train_x, unlabelled)

    def fit(self) -> TrainOutcome:
        """Train the remaining epochs; raises ``TrainingInterrupted`` when a callback stops it (after every
        callback's ``on_stop``) and ``TrainingDiverged`` on a non-finite loss or gradient."""
        state, data = self.state, self.data
        self.threads = training_threads(self.regime, self.encoder, self.head, to_device(data.train_x[:2], self.device),
                                        data.train_y[:2].to(self.device), self.settings.batch_size)
        with parallel.use_threads(self.threads), flush_denormals(), self._callbacks_around():
            try:
                while state.epoch < self.settings.epochs:
                    self._emit("on_epoch_start")
                    started = time.perf_counter()
                    self.encoder.train(), self.head.train()
                    order = epoch_order(len(self.images), self.seed, state.epoch)
                    for step in range(state.step, self.steps_per_epoch):
                        loss = self._step(order, step)
                        state.step = step + 1
                        self._emit("on_step_end", loss)
                    self._end_epoch(time.perf_counter() - started)
            except StopTraining as stop:
                self._emit("on_stop")
                raise TrainingInterrupted(stop.where, stop.reason) from None
        distributed.sync_buffers(self.encoder, self.head)
        return TrainOutcome(state.history, np.stack(state.snapshots) if state.snapshots else None, self.resumed_from)

    @contextlib.contextmanager
    def _callbacks_around(self) -> Any:
        self._emit("on_train_start")
        try:
            yield
        finally:
            self._emit("on_train_end")

    def _step(self, order: torch.Tensor, step: int) -> torch.Tensor:
        """One optimisation step on the ``step``-th batch of the epoch's order; with several processes each
        takes its share of that batch, weighted so that the averaged gradient is the whole batch's."""
        bs, state, device = self.settings.batch_size, self.state, self.device
        end = len(order) if step == self.steps_per_epoch - 1 else (step + 1) * bs  # the last batch takes the rest
        idx = order[step * bs:end]
        mine = distributed.share(len(idx))
        if self.settings.augment:  # augmented whole, then shared: the one-process batch, image for image
            xb = augment_batch(self.images[idx], torch.Generator().manual_seed(
                derive_seed((self.seed, state.epoch, step), AUGMENT)))[mine]
        else:
            xb = self.images[idx[mine]]
        y = self.data.train_y[idx[mine]].to(device, non_blocking=True) if self.regime.needs_labels else None
        with distributed.sharded_batch(), autocast(self.settings.precision, device):
            loss, stats = check_step_output(self.regime, self.loss_fn(
                to_device(xb, device), y, step_generator(self.seed, state.epoch, step, device, self.world.rank)))
        self.optimizer.zero_grad(set_to_none=True)
        (loss * (self.world.size * len(xb) / len(idx))).backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        sq = torch.zeros(len(self.layer_names), device=device).index_add_(
            0, self.group_index, torch.stack(torch._foreach_norm(grads)) ** 2)
        if not distributed.all_true(bool(torch.isfinite(loss) and torch.isfinite(sq).all())):
            state.step = step
            self._emit("on_stop")
            raise diverged(self, loss, sq)
        self.optimizer.step()
        self.scheduler.step()
        self.regime.after_step(self.encoder, self.head, state.epoch * self.steps_per_epoch + step + 1,
                               self.settings.epochs * self.steps_per_epoch)
        state.add(loss, stats, sq.sqrt(), len(xb))
        return loss

    def _end_epoch(self, seconds: float) -> None:
        """Validate, let callbacks add to the epoch's row, record it and move to the next epoch."""
        state, data, regime = self.state, self.data, self.regime
        pixels = data.train_x[0].numel()
        row = state.epoch_row(self.layer_names, seconds, float(self.optimizer.param_groups[0]["lr"]),
                              lambda stats, seen: regime.metrics(stats, seen, pixels))
        row["threads"] = self.threads
        val = evaluate(regime, self.encoder, self.head, data.val_x, data.val_y, self.device,
                       eval_batch_size(regime, self.settings.batch_size)) if self.world.main else {}  # rank 0 reports
        row.update({f"val_{k}": v for k, v in val.items()})
        self._emit("on_validation", row)
        state.history.append(row)
        state.epoch, state.step = state.epoch + 1, 0
        state.reset_sums()
        self._emit("on_epoch_end", row)

    def restore(self, payload: dict[str, Any], load_checked: Any) -> None:
        """Continue from a saved state (``TrainState.payload``)."""
        self.state.restore(payload, self.modules, load_checked)
        self.resumed_from = {"epoch": self.state.epoch, "step": self.state.step}

    def _emit(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)


def check_step_output(regime: Regime, output: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A regime's ``loss`` result, checked: (a scalar tensor, {statistic name: one-element tensor}); anything
    else is a one-line ConfigError naming the regime (the trainer sums the statistics as tensors)."""
    where = f"regime '{getattr(regime, 'spec', regime.name)}'"
    fix = "return (loss, {name: a tensor summed over the batch}), e.g. (loss, {'correct': (pred == y).sum()})"
    if not (isinstance(output, tuple) and len(output) == 2):
        raise ConfigError(f"{where}: loss() returned {_described(output)}, not a (loss, stats) pair", fix)
    loss, stats = output
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        raise ConfigError(f"{where} returned a loss that is not a scalar tensor ({_described(loss)})",
                          "return loss.mean() or a sum")
    if not isinstance(stats, dict):
        raise ConfigError(f"{where}: loss() returned its statistics as {_described(stats)}, not a dict", fix)
    for key, value in stats.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise ConfigError(f"{where}: loss() returned the statistic {str(key)[:40]!r} as {_described(value)}, "
                              "not a one-element tensor", fix)
    return loss, stats


def _described(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return "None" if value is None else f"a {type(value).__name__}"


def diverged(trainer: Trainer, loss: torch.Tensor, sq: torch.Tensor) -> TrainingDiverged:
    """The one-line error for a non-finite loss or gradient, naming the layer and the largest finite norm."""
    names, state = trainer.layer_names, trainer.state
    bad = [names[i] for i in range(len(names)) if not torch.isfinite(sq[i])]
    what = f"the loss became {float(loss)}" if not torch.isfinite(loss) else "the gradient norm became non-finite"
    where = f" in layer {', '.join(bad)}" if bad else ""
    norms = sq.sqrt()
    finite = [(float(norms[i]), names[i]) for i in range(len(names)) if torch.isfinite(norms[i])]
    largest = f"; largest finite gradient norm {max(finite)[0]:.3g} in {max(finite)[1]}" if finite else ""
    saved = next((f"; the last good state is in {c.saves_to}" for c in trainer.callbacks if c.saves_to), "")
    return TrainingDiverged(f"{trainer.regime.name} training (seed {trainer.seed}) diverged at epoch {state.epoch + 1}, "
                            f"step {state.step + 1}: {what}{where}{largest}{saved}",
                            "lower train.lr (e.g. --set train.lr=0.001) or use the adam optimizer, then re-run")
