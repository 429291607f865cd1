"""The training loop shared by every regime: the regime supplies the head and the loss, the loop the rest.

Data stay in memory as tensors and are batched by index (no per-sample DataLoader). Each epoch's order
comes from a generator seeded by (seed, epoch), so a run interrupted mid-epoch resumes at the exact step
and ends with the same metrics as an uninterrupted one. Per-layer gradient norms are kept every step;
a non-finite loss or gradient stops training and names the layer.
"""
from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import parallel
from .artifacts import load_checkpoint, load_state_dict_checked, save_checkpoint, write_csv
from .config import Config
from .data import Dataset
from .errors import TrainingDiverged, TrainingInterrupted
from .features import eval_mode, extract_features
from .log import run_clock
from .encoders import Encoder
from .regimes import Regime
from .probes import LinearProbe

EPOCH_PROBE_L2 = 1e-3


class Stopper:
    """Turns SIGINT/SIGTERM into an orderly stop of a run, wherever the signal lands.

    While the training loop runs (inside ``deferring()``) the signal only sets ``requested``; the loop
    checks it after every step and after every epoch's validation, writes a resumable checkpoint and
    raises ``TrainingInterrupted``. At any other moment (extraction, analyses, rendering), or on a second
    signal, it interrupts at once with ``KeyboardInterrupt``, since those phases are redone on resume;
    ``requested`` still names the signal, so the run can record that it was interrupted and by what.
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self._deferring = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.requested is None
        self.requested = self.requested or signal.Signals(signum).name
        if not self._deferring or not first:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferring(self) -> Iterator[None]:
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False

    def __enter__(self) -> "Stopper":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from .errors import ConfigError

        raise ConfigError("train.device is 'cuda' but no CUDA device is available", "use --set train.device=auto")
    return torch.device(name)


def layer_groups(encoder: Encoder, head: nn.Module, head_name: str
                 ) -> tuple[list[str], list[nn.Parameter], list[int]]:
    """Named layers for gradient norms: each named layer of the encoder (by the module ``feature_info``
    gives it; parameters outside those modules form 'other'), then the regime's head."""
    names = list(encoder.layer_names)
    prefixes = [(s.name, s.module + ".") for s in encoder.feature_info if s.module]
    params, index = [], []
    for pname, p in encoder.named_parameters():
        layer = next((name for name, prefix in prefixes if pname.startswith(prefix)), "other")
        if layer not in names:
            names.append(layer)
        params.append(p)
        index.append(names.index(layer))
    names.append(head_name)
    for p in head.parameters():
        params.append(p)
        index.append(len(names) - 1)
    return names, params, index


def step_generator(seed: int, epoch: int, step: int, device: torch.device) -> torch.Generator:
    """The random source of one training step (augmentation, noise, sampling): a pure function of
    (seed, epoch, step), so that a resumed run draws exactly what an uninterrupted one would."""
    return torch.Generator(device=device).manual_seed((((seed * 1_000_003 + epoch) * 100_003 + step) * 7 + 1) % 2**63)


@torch.no_grad()
def evaluate(regime: Regime, encoder: Encoder, head: nn.Module, x: torch.Tensor, y: torch.Tensor,
             device: torch.device, batch_size: int = 1000) -> dict[str, float]:
    """The regime's loss and metrics over a whole split, in eval mode, with fixed randomness."""
    total_loss, sums = 0.0, {}
    with eval_mode(encoder, head):
        for start in range(0, len(x), batch_size):
            xb = _to_device(x[start:start + batch_size], device)
            yb = y[start:start + batch_size].to(device) if regime.needs_labels else None
            loss, batch_sums = regime.loss(encoder, head, xb, yb, torch.Generator(device=device).manual_seed(start))
            total_loss += float(loss) * len(xb)
            for key, value in batch_sums.items():
                sums[key] = sums.get(key, 0.0) + float(value)
    n = max(1, len(x))
    return {"loss": total_loss / n, **regime.metrics(sums, n, x[0].numel() if len(x) else 1)}


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    return x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)


def augment_batch(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random horizontal flip and a random shift of up to ``max_shift`` pixels per image (edges replicated)."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    shift = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator) * (2 * max_shift + 1) \
        + torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    out = torch.empty_like(x)
    for code in shift.unique().tolist():
        rows = (shift == code).nonzero().squeeze(1)
        dy, dx = divmod(code, 2 * max_shift + 1)
        out[rows] = padded[rows, :, dy:dy + h, dx:dx + w]
    return out


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The training order of one epoch; a pure function of (seed, epoch) so that resuming is exact."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def make_optimizer(params: list[nn.Parameter], cfg: Config, total_steps: int
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    t = cfg.train
    if t.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=t.lr, momentum=0.9, weight_decay=t.weight_decay)
    elif t.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    warmup = max(1, int(0.05 * total_steps))

    def factor(step: int) -> float:
        if t.schedule == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def training_step_flops(regime: Regime, encoder: Encoder, head: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
                        batch_size: int) -> float:
    """FLOPs of one training step: one evaluation of the regime's loss on a small batch (eval mode, no
    autograd), scaled to the batch, times 3 for the backward pass."""
    with eval_mode(encoder, head):
        flops = parallel.count_flops([encoder, head], lambda: regime.loss(
            encoder, head, x, y if regime.needs_labels else None, torch.Generator(device=x.device).manual_seed(0)))
    return 3 * flops / len(x) * batch_size


def training_threads(regime: Regime, encoder: Encoder, head: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     batch_size: int) -> int:
    """Threads for the training loop, from the FLOPs of one step (``training_step_flops``)."""
    return parallel.threads_for(training_step_flops(regime, encoder, head, x, y, batch_size),
                                phase=f"training {regime.name}")


@dataclass
class TrainOutcome:
    """What a finished regime leaves behind besides its weights."""

    history: list[dict[str, float]]
    snapshots: np.ndarray | None = None
    resumed_from: dict[str, int] | None = None


class _TrainState:
    """Everything a resumed run needs: model, optimiser and schedule, position, the epoch's running sums,
    the finished epochs' rows and reconstruction snapshots."""

    def __init__(self, n_layers: int, device: torch.device) -> None:
        self.epoch, self.step = 0, 0
        self.history: list[dict[str, float]] = []
        self.snapshots: list[np.ndarray] = []
        self.device = device
        self.n_layers = n_layers
        self.reset_sums()

    def reset_sums(self) -> None:
        zeros = torch.zeros(self.n_layers, device=self.device)
        self.sums: dict[str, Any] = {"loss": torch.zeros((), device=self.device), "stats": {},
                                     "grad_sq": zeros, "grad_max": zeros.clone(), "seen": 0, "steps": 0}

    def add(self, loss: torch.Tensor, stats: dict[str, torch.Tensor], norms: torch.Tensor, images: int) -> None:
        acc = self.sums
        acc["loss"] += loss.detach() * images
        for key, value in stats.items():
            acc["stats"][key] = acc["stats"].get(key, 0.0) + value.detach().float()
        acc["grad_sq"] += norms
        acc["grad_max"] = torch.maximum(acc["grad_max"], norms)
        acc["seen"] += images
        acc["steps"] += 1

    def payload(self, modules: dict[str, Any]) -> dict[str, Any]:
        cpu = {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in self.sums.items() if k != "stats"}
        cpu["stats"] = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in self.sums["stats"].items()}
        return {"format": "replearn-checkpoint", "kind": "train-state", "epoch": self.epoch, "step_in_epoch": self.step,
                **{k: m.state_dict() for k, m in modules.items()}, "rng_torch": torch.get_rng_state(),
                "accumulator": cpu, "history": self.history, "snapshots": [torch.from_numpy(s) for s in self.snapshots]}

    def restore(self, state: dict[str, Any], modules: dict[str, Any], where: Path) -> None:
        for key in ("encoder", "head"):
            load_state_dict_checked(modules[key], state[key], f"resume state {where} ({key})")
        modules["optimizer"].load_state_dict(state["optimizer"])
        modules["scheduler"].load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_torch"])
        self.epoch, self.step = int(state["epoch"]), int(state["step_in_epoch"])
        acc = state["accumulator"]
        self.sums = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in acc.items() if k != "stats"}
        self.sums["stats"] = {k: v.to(self.device) for k, v in acc["stats"].items()}
        self.history = list(state["history"])
        self.snapshots = [s.numpy() for s in state.get("snapshots", [])]


def train_regime(regime: Regime, encoder: Encoder, head: nn.Module, data: Dataset, cfg: Config, seed: int,
                 device: torch.device, state_path: Path, metrics_path: Path, stopper: Stopper | None = None,
                 snapshot_images: torch.Tensor | None = None, progress: bool = True) -> TrainOutcome:
    """Train ``encoder`` + ``head`` for the regime's epochs, resuming from ``state_path`` if it exists.

    Writes the per-epoch metrics CSV and the resumable state after every epoch (atomically). Raises
    ``TrainingInterrupted`` after checkpointing on SIGINT/SIGTERM, and ``TrainingDiverged`` on a
    non-finite loss or gradient.
    """
    epochs, bs, n = cfg.epochs_for(regime), cfg.train.batch_size, len(data.train_x)
    steps_per_epoch = math.ceil(n / bs)
    encoder.to(device).to(memory_format=torch.channels_last)
    head.to(device).to(memory_format=torch.channels_last)
    names, params, index = layer_groups(encoder, head, regime.head_name)
    group_index = torch.tensor(index, device=device)
    opt, sched = make_optimizer(params, cfg, epochs * steps_per_epoch)
    modules = {"encoder": encoder, "head": head, "optimizer": opt, "scheduler": sched}
    probe_idx = torch.from_numpy(np.sort(np.random.RandomState(seed).permutation(n)[:cfg.train.probe_train_images]))
    state = _TrainState(len(names), device)
    resumed_from = None
    if state_path.exists():
        state.restore(load_checkpoint(state_path), modules, state_path)
        resumed_from = {"epoch": state.epoch, "step": state.step}

    def save() -> None:
        save_checkpoint(state_path, {**state.payload(modules), "regime": regime.name, "seed": seed})

    threads = training_threads(regime, encoder, head, _to_device(data.train_x[:2], device),
                               data.train_y[:2].to(device), bs)
    with stopper.deferring() if stopper is not None else contextlib.nullcontext(), parallel.use_threads(threads), \
            flush_denormals():
        while state.epoch < epochs:
            encoder.train(), head.train()
            order, started = epoch_order(n, seed, state.epoch), time.perf_counter()
            epoch_first_step = state.step
            bar = tqdm(total=steps_per_epoch, initial=state.step, leave=False, disable=not progress or None,
                       unit="batch", desc=f"{regime.name} seed {seed} epoch {state.epoch + 1}/{epochs}")
            for step in range(state.step, steps_per_epoch):
                idx = order[step * bs:(step + 1) * bs]
                xb = data.train_x[idx]
                if cfg.train.augment:
                    xb = augment_batch(xb, torch.Generator().manual_seed(((seed * 1_000_003 + state.epoch) * 100_003 + step) % 2**63))
                y = data.train_y[idx].to(device, non_blocking=True) if regime.needs_labels else None
                loss, stats = regime.loss(encoder, head, _to_device(xb, device), y,
                                          step_generator(seed, state.epoch, step, device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
                sq = torch.zeros(len(names), device=device).index_add_(0, group_index,
                                                                       torch.stack(torch._foreach_norm(grads)) ** 2)
                if not (torch.isfinite(loss) and torch.isfinite(sq).all()):
                    state.step = step
                    save()
                    _raise_diverged(regime.name, seed, state.epoch, step, loss, sq, names, state_path)
                opt.step()
                sched.step()
                state.add(loss, stats, sq.sqrt(), len(idx))
                bar.update(1)
                if state.sums["steps"] % 20 == 0:
                    bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
                if stopper is not None and stopper.requested:
                    bar.close()
                    state.step = step + 1
                    save()
                    raise TrainingInterrupted(str(state_path), stopper.requested)
            bar.close()
            row = _epoch_row(regime, state, names, time.perf_counter() - started, opt, data.train_x[0].numel())
            row["threads"] = threads
            val = evaluate(regime, encoder, head, data.val_x, data.val_y, device, eval_batch_size(regime, cfg))
            row.update({f"val_{k}": v for k, v in val.items()})
            if cfg.train.probe_every_epoch:
                row["val_latent_probe_accuracy"] = epoch_probe(encoder, data, probe_idx, device)
            if snapshot_images is not None:
                with eval_mode(encoder, head):
                    recon = regime.reconstruct(encoder, head, _to_device(snapshot_images, device))
                if recon is not None:
                    state.snapshots.append(recon.float().cpu().contiguous().numpy())
            state.history.append(row)
            state.epoch, state.step = state.epoch + 1, 0
            state.reset_sums()
            write_csv(metrics_path, pd.DataFrame(state.history))
            save()
            if (clock := run_clock()) is not None:  # the whole epoch: steps, validation, probe, checkpoint
                clock.trained(steps_per_epoch - epoch_first_step, time.perf_counter() - started)
            _log_epoch(row, regime, seed, epochs, val)
            if stopper is not None and stopper.requested:  # arrived during validation, probe or checkpoint
                raise TrainingInterrupted(str(state_path), stopper.requested)
    if not state.history:
        write_csv(metrics_path, pd.DataFrame(columns=["epoch"]))
    return TrainOutcome(history=state.history, snapshots=np.stack(state.snapshots) if state.snapshots else None,
                        resumed_from=resumed_from)


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Treat subnormal floats as zero on the CPU while training. Adam's second-moment estimates of small
    gradients underflow into the subnormal range late in training, where each operation on them costs ~100×;
    without this an autoencoder epoch on Fashion-MNIST slowed from 26 s to 47 s over six epochs."""
    before = torch.set_flush_denormal(True)  # False where the CPU cannot (then nothing changes)
    try:
        yield
    finally:
        if before:
            torch.set_flush_denormal(False)


def eval_batch_size(regime: Regime, cfg: Config) -> int:
    """Batches for evaluation: large, unless the regime's loss depends on what else is in the batch."""
    return cfg.train.batch_size if regime.batch_dependent_loss else 1000


def _epoch_row(regime: Regime, state: _TrainState, names: list[str], seconds: float,
               opt: torch.optim.Optimizer, pixels: int) -> dict[str, float]:
    acc = state.sums
    seen, steps = max(1, acc["seen"]), max(1, acc["steps"])
    stats = {k: float(v) for k, v in acc["stats"].items()}
    row: dict[str, float] = {"epoch": state.epoch + 1, "train_loss": float(acc["loss"]) / seen}
    row.update({f"train_{k}": v for k, v in regime.metrics(stats, seen, pixels).items()} if stats else {})
    row["lr_end"] = float(opt.param_groups[0]["lr"])
    row["train_seconds"] = seconds
    row["train_images_per_s"] = acc["seen"] / seconds if seconds > 0 else float("nan")
    for i, name in enumerate(names):
        row[f"grad_norm_{name}"] = float(acc["grad_sq"][i]) / steps
        row[f"grad_norm_max_{name}"] = float(acc["grad_max"][i])
    return row


def _raise_diverged(regime: str, seed: int, epoch: int, step: int, loss: torch.Tensor, sq: torch.Tensor,
                    names: list[str], state_path: Path) -> None:
    bad = [names[i] for i in range(len(names)) if not torch.isfinite(sq[i])]
    if not torch.isfinite(loss):
        what = f"the loss became {float(loss)}"
    else:
        what = "the gradient norm became non-finite"
    where = f" in layer {', '.join(bad)}" if bad else ""
    norms = sq.sqrt()
    finite = [(float(norms[i]), names[i]) for i in range(len(names)) if torch.isfinite(norms[i])]
    largest = f"; largest finite gradient norm {max(finite)[0]:.3g} in {max(finite)[1]}" if finite else ""
    raise TrainingDiverged(f"{regime} training (seed {seed}) diverged at epoch {epoch + 1}, step {step + 1}: "
                           f"{what}{where}{largest}; the last good state is in {state_path}",
                           "lower train.lr (e.g. --set train.lr=0.001) or use the adam optimizer, then re-run")


@torch.no_grad()
def epoch_probe(encoder: Encoder, data: Dataset, probe_idx: torch.Tensor, device: torch.device) -> float:
    """Validation accuracy of a linear probe (fixed L2) on the latent, fitted on a fixed training subset."""
    train = extract_features(encoder, data.train_x[probe_idx], layers=["latent"], device=device)["latent"]
    val = extract_features(encoder, data.val_x, layers=["latent"], device=device)["latent"]
    return LinearProbe(l2=EPOCH_PROBE_L2, max_iter=100).fit(train, data.train_y[probe_idx]).score(val, data.val_y)


def _log_epoch(row: dict[str, float], regime: Regime, seed: int, epochs: int, val: dict[str, float]) -> None:
    from .log import eta_suffix, log

    probe = f", latent probe (val) {row['val_latent_probe_accuracy']:.4f}" if "val_latent_probe_accuracy" in row else ""
    log(f"{regime.name} seed {seed} epoch {int(row['epoch'])}/{epochs}: train loss {row['train_loss']:.4f}, "
        f"{regime.headline(val)}{probe} ({row['train_seconds']:.1f}s, {row['train_images_per_s']:.0f} img/s)"
        f"{eta_suffix()}")
