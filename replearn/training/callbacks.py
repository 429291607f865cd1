"""The side effects of training, each a ``Callback``: resumable checkpoints, the metrics CSV, the per-epoch
latent probe, reconstruction snapshots, the progress bar, the per-epoch log line with the run's ETA, and
stopping at a step boundary on SIGINT/SIGTERM. A run passes the ones it wants; none is global."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from replearn.runtime import distributed
from replearn.rundir.io import load_checkpoint, load_state_dict_checked, save_checkpoint, write_csv
from replearn.encoders import Encoder
from replearn.encoders.extract import eval_mode
from replearn.runtime.log import RunClock, log
from replearn.metrics.probes import LinearProbe
from replearn.training.loop import Callback, StopTraining, Trainer
from replearn.training.steps import to_device
from replearn.training.stop import Stopper

EPOCH_PROBE_L2 = 1e-3


class Checkpoint(Callback):
    """Saves the resumable state after every epoch and before any stop; resumes from it when it exists."""

    def __init__(self, path: Path) -> None:
        self.path = self.saves_to = Path(path)

    def on_train_start(self, trainer: Trainer) -> None:
        if self.path.exists():
            trainer.restore(load_checkpoint(self.path),
                            lambda module, state, key: load_state_dict_checked(module, state,
                                                                               f"resume state {self.path} ({key})"))

    def save(self, trainer: Trainer) -> None:
        payload = trainer.state.payload(trainer.modules)  # on every rank (it sums theirs); rank 0 writes it
        if distributed.world().main:
            save_checkpoint(self.path, {**payload, "regime": trainer.regime.name, "seed": trainer.seed})

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
        self.save(trainer)

    def on_stop(self, trainer: Trainer) -> None:
        self.save(trainer)


class MetricsCSV(Callback):
    """Writes every finished epoch's row to a CSV (rewritten whole, atomically, after each epoch)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_train_start(self, trainer: Trainer) -> None:
        if trainer.settings.epochs == 0:
            write_csv(self.path, pd.DataFrame(columns=["epoch"]))

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
        write_csv(self.path, pd.DataFrame(trainer.state.history))


class EpochProbe(Callback):
    """Validation accuracy of a linear probe (fixed L2) on the latent after each epoch, fitted on a fixed,
    seeded subset of ``images`` training images: a cheap view of how linearly separable the latent becomes.
    Each epoch's fit starts from the last epoch's weights (kept in the training state, so a resumed run fits
    exactly as an uninterrupted one): the same optimum, in about half the iterations."""

    def __init__(self, images: int, data: Any = None) -> None:
        self.images, self.data = images, data  # data: the probe's own (e.g. under a label budget), else the trainer's

    def on_validation(self, trainer: Trainer, row: dict[str, float]) -> None:
        data = self.data if self.data is not None else trainer.data
        n = len(data.train_x)
        idx = torch.from_numpy(np.sort(np.random.RandomState(trainer.seed).permutation(n)[:self.images]))
        start = trainer.state.extras.get("epoch_probe")
        accuracy, probe = epoch_probe(trainer.encoder, data, idx, trainer.device, start)
        trainer.state.extras["epoch_probe"] = {"coef": probe.coef_, "intercept": probe.intercept_,
                                               "classes": probe.classes_}
        row["val_latent_probe_accuracy"] = accuracy


@torch.no_grad()
def epoch_probe(encoder: Encoder, data: Any, probe_idx: torch.Tensor, device: torch.device,
                start: dict[str, torch.Tensor] | None = None) -> tuple[float, LinearProbe]:
    """Validation accuracy of a linear probe (fixed L2) on the latent, fitted on the training images
    ``probe_idx`` (from ``start``'s weights when given), and the probe."""
    train = latent_features(encoder, data.train_x[probe_idx], device)
    val = latent_features(encoder, data.val_x, device)
    probe = LinearProbe(l2=EPOCH_PROBE_L2, max_iter=100, warm_start=True)
    if start is not None:
        probe.coef_, probe.intercept_, probe.classes_ = start["coef"], start["intercept"], start["classes"]
    probe.fit(train, data.train_y[probe_idx])
    return probe.score(val, data.val_y), probe


def latent_features(encoder: Encoder, x: torch.Tensor, device: torch.device, batch_size: int = 1000) -> torch.Tensor:
    """The latent of ``x`` from the encoder being trained, in eval mode and on the trainer's threads. Unlike
    ``extract_features`` (the analyses' features) it makes no batch-norm-fused copy and counts no FLOPs: the
    epoch's probe is a quick view, and those cost more than its forward pass on small images."""
    parts = []
    with eval_mode(encoder), torch.inference_mode():
        for start in range(0, len(x), batch_size):
            xb = to_device(x[start:start + batch_size], device)
            parts.append(encoder.forward_features(xb, ["latent"])["latent"].flatten(1).float().cpu())
    return torch.cat(parts)


class Snapshots(Callback):
    """The regime's reconstructions of fixed images after each epoch (kept in the state, so they resume)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def on_validation(self, trainer: Trainer, row: dict[str, float]) -> None:
        with eval_mode(trainer.encoder, trainer.head):
            recon = trainer.regime.reconstruct(trainer.encoder, trainer.head, to_device(self.images, trainer.device))
        if recon is not None:
            trainer.state.snapshots.append(recon.float().cpu().contiguous().numpy())


class ProgressBar(Callback):
    """A progress bar per epoch (steps, with the loss every 20 steps), gone when the epoch ends."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled, self.bar = enabled, None

    def on_epoch_start(self, trainer: Trainer) -> None:
        s = trainer.state
        self.bar = tqdm(total=trainer.steps_per_epoch, initial=s.step, leave=False, disable=not self.enabled or None,
                        unit="batch", desc=f"{trainer.regime.name} seed {trainer.seed} epoch {s.epoch + 1}/"
                                           f"{trainer.settings.epochs}")

    def on_step_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        self.bar.update(1)
        if trainer.state.sums["steps"] % 20 == 0:
            self.bar.set_postfix(loss=f"{float(loss.detach()):.4f}")

    def on_validation(self, trainer: Trainer, row: dict[str, float]) -> None:
        self.on_stop(trainer)

    def on_stop(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class EpochLog(Callback):
    """One log line per epoch; with a ``RunClock``, the epoch's work is counted and the run's ETA shown."""

    def __init__(self, clock: RunClock | None = None) -> None:
        self.clock = clock
        self.started, self.first_step = 0.0, 0

    def on_epoch_start(self, trainer: Trainer) -> None:
        self.started, self.first_step = time.perf_counter(), trainer.state.step

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
        if self.clock is not None:  # the whole epoch: steps, validation, probe, checkpoint
            self.clock.trained(trainer.steps_per_epoch - self.first_step, time.perf_counter() - self.started)
        val = {k[4:]: v for k, v in row.items() if k.startswith("val_") and k != "val_latent_probe_accuracy"}
        probe = (f", latent probe (val) {row['val_latent_probe_accuracy']:.4f}"
                 if "val_latent_probe_accuracy" in row else "")
        log(f"{trainer.regime.name} seed {trainer.seed} epoch {int(row['epoch'])}/{trainer.settings.epochs}: "
            f"train loss {row['train_loss']:.4f}, {trainer.regime.headline(val)}{probe} ({row['train_seconds']:.1f}s, "
            f"{row['train_images_per_s']:.0f} img/s){self.clock.suffix() if self.clock is not None else ''}")


class SignalStop(Callback):
    """Defers SIGINT/SIGTERM while training (``Stopper``) and stops at the next step or epoch boundary."""

    def __init__(self, stopper: Stopper, where: str = "") -> None:
        self.stopper, self.where = stopper, where
        self._deferring: contextlib.ExitStack | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        self._deferring = contextlib.ExitStack()
        self._deferring.enter_context(self.stopper.deferring())

    def on_step_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        requested = distributed.first_request(self.stopper.requested)  # a signal on any rank stops every rank here
        if requested:
            raise StopTraining(requested, self.where)

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
        requested = distributed.first_request(self.stopper.requested)  # arrived during validation, probe, checkpoint
        if requested:
            raise StopTraining(requested, self.where)

    def on_train_end(self, trainer: Trainer) -> None:
        if self._deferring is not None:
            self._deferring.close()
