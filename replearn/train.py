"""The training loop shared by both regimes: supervised (cross-entropy) and autoencoder (reconstruction MSE).

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

from .artifacts import load_checkpoint, load_state_dict_checked, save_checkpoint, write_csv
from .config import Config
from .data import Dataset
from .errors import TrainingDiverged, TrainingInterrupted
from .features import eval_mode, extract_features
from .model import ConvEncoder
from .probes import LinearProbe

EPOCH_PROBE_L2 = 1e-3


class Stopper:
    """Turns SIGINT/SIGTERM into a flag that the training loop checks after every step.

    Only while the loop runs (inside ``deferring()``) is the signal deferred to the next step boundary,
    where a resumable checkpoint is written; at any other moment, or on a second signal, it interrupts
    at once (``KeyboardInterrupt``), since nothing unsaved would be lost.
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self._deferring = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if not self._deferring or self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

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


def layer_groups(encoder: ConvEncoder, head: nn.Module, regime: str) -> tuple[list[str], list[nn.Parameter], list[int]]:
    """Named layers for gradient norms: each encoder stage, the latent map, and the head or decoder."""
    names = encoder.layer_names + ["head" if regime == "supervised" else "decoder"]
    params, index = [], []
    for pname, p in encoder.named_parameters():
        params.append(p)
        index.append(names.index(pname.split(".")[1] if pname.startswith("stages.") else "latent"))
    for p in head.parameters():
        params.append(p)
        index.append(len(names) - 1)
    return names, params, index


def objective(regime: str, encoder: nn.Module, head: nn.Module, x: torch.Tensor, y: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, per-batch statistic): correct predictions (supervised) or summed squared error (autoencoder)."""
    out = head(encoder(x))
    if regime == "supervised":
        loss = F.cross_entropy(out, y)
        return loss, (out.argmax(1) == y).sum()
    loss = F.mse_loss(out, x)
    return loss, loss.detach() * x.numel()


@torch.no_grad()
def evaluate(regime: str, encoder: nn.Module, head: nn.Module, x: torch.Tensor, y: torch.Tensor,
             device: torch.device, batch_size: int = 1000) -> dict[str, float]:
    """Loss and accuracy (supervised) or reconstruction MSE (autoencoder) over a whole split, in eval mode."""
    total_loss, total_stat = 0.0, 0.0
    with eval_mode(encoder, head):
        for start in range(0, len(x), batch_size):
            xb = _to_device(x[start:start + batch_size], device)
            yb = y[start:start + batch_size].to(device)
            loss, stat = objective(regime, encoder, head, xb, yb)
            total_loss += float(loss) * len(xb)
            total_stat += float(stat)
    n = len(x)
    if regime == "supervised":
        return {"loss": total_loss / n, "accuracy": total_stat / n}
    return {"loss": total_loss / n, "recon_mse": total_stat / (n * x[0].numel())}


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


@dataclass
class TrainOutcome:
    """What a finished regime leaves behind besides its weights."""

    history: list[dict[str, float]]
    snapshots: np.ndarray | None = None
    resumed_from: dict[str, int] | None = None


def train_regime(regime: str, encoder: ConvEncoder, head: nn.Module, data: Dataset, cfg: Config, seed: int,
                 device: torch.device, state_path: Path, metrics_path: Path, stopper: Stopper | None = None,
                 snapshot_images: torch.Tensor | None = None, progress: bool = True) -> TrainOutcome:
    """Train ``encoder`` + ``head`` for the regime's epochs, resuming from ``state_path`` if it exists.

    Writes the per-epoch metrics CSV and the resumable state after every epoch (atomically). Raises
    ``TrainingInterrupted`` after checkpointing on SIGINT/SIGTERM, and ``TrainingDiverged`` on a
    non-finite loss or gradient.
    """
    epochs = cfg.epochs_for(regime)
    bs = cfg.train.batch_size
    train_x, train_y = data.train_x, data.train_y
    n = len(train_x)
    steps_per_epoch = math.ceil(n / bs)
    encoder.to(device).to(memory_format=torch.channels_last)
    head.to(device).to(memory_format=torch.channels_last)
    names, params, index = layer_groups(encoder, head, regime)
    group_index = torch.tensor(index, device=device)
    opt, sched = make_optimizer(params, cfg, epochs * steps_per_epoch)
    probe_idx = torch.from_numpy(np.sort(np.random.RandomState(seed).permutation(n)[:cfg.train.probe_train_images]))

    history: list[dict[str, float]] = []
    snapshots: list[np.ndarray] = []
    epoch, step_in_epoch = 0, 0
    acc = _fresh_accumulator(len(names), device)
    resumed_from = None
    if state_path.exists():
        state = load_checkpoint(state_path)
        load_state_dict_checked(encoder, state["encoder"], f"resume state {state_path} (encoder)")
        load_state_dict_checked(head, state["head"], f"resume state {state_path} (head)")
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_torch"])
        epoch, step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        acc = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in state["accumulator"].items()}
        history = list(state["history"])
        snapshots = [s.numpy() for s in state.get("snapshots", [])]
        resumed_from = {"epoch": epoch, "step": step_in_epoch}

    def save_state(ep: int, step: int, accumulator: dict[str, Any]) -> None:
        save_checkpoint(state_path, {
            "format": "replearn-checkpoint", "kind": "train-state", "regime": regime, "seed": seed,
            "epoch": ep, "step_in_epoch": step, "encoder": encoder.state_dict(), "head": head.state_dict(),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng_torch": torch.get_rng_state(),
            "accumulator": {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in accumulator.items()},
            "history": history, "snapshots": [torch.from_numpy(s) for s in snapshots],
        })

    with stopper.deferring() if stopper is not None else contextlib.nullcontext():
        while epoch < epochs:
            encoder.train()
            head.train()
            order = epoch_order(n, seed, epoch)
            started = time.perf_counter()
            bar = tqdm(total=steps_per_epoch, initial=step_in_epoch, desc=f"{regime} seed {seed} epoch {epoch + 1}/{epochs}",
                       leave=False, disable=not progress or None, unit="batch")
            for step in range(step_in_epoch, steps_per_epoch):
                idx = order[step * bs:(step + 1) * bs]
                xb = train_x[idx]
                if cfg.train.augment:
                    xb = augment_batch(xb, torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 100_003 + step))
                x = _to_device(xb, device)
                y = train_y[idx].to(device, non_blocking=True)
                loss, stat = objective(regime, encoder, head, x, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
                sq = torch.zeros(len(names), device=device).index_add_(0, group_index,
                                                                       torch.stack(torch._foreach_norm(grads)) ** 2)
                if not (torch.isfinite(loss) and torch.isfinite(sq).all()):
                    save_state(epoch, step, acc)
                    _raise_diverged(regime, seed, epoch, step, loss, sq, names, acc, state_path)
                opt.step()
                sched.step()
                acc["loss"] += loss.detach() * len(idx)
                acc["stat"] += stat.detach().float()
                acc["grad_sq"] += sq.sqrt()
                acc["grad_max"] = torch.maximum(acc["grad_max"], sq.sqrt())
                acc["seen"] += len(idx)
                acc["steps"] += 1
                bar.update(1)
                if acc["steps"] % 20 == 0:
                    bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
                if stopper is not None and stopper.requested:
                    bar.close()
                    save_state(epoch, step + 1, acc)
                    raise TrainingInterrupted(str(state_path), stopper.requested)
            bar.close()
            train_seconds = time.perf_counter() - started
            row = _epoch_row(regime, epoch, acc, names, train_seconds, opt)
            row.update({f"val_{k}": v for k, v in evaluate(regime, encoder, head, data.val_x, data.val_y, device).items()})
            if cfg.train.probe_every_epoch:
                row["val_latent_probe_accuracy"] = epoch_probe(encoder, data, probe_idx, device)
            if snapshot_images is not None and regime == "autoencoder":
                with torch.no_grad(), eval_mode(encoder, head):
                    recon = head(encoder(_to_device(snapshot_images, device)))
                snapshots.append(recon.float().cpu().contiguous().numpy())
            history.append(row)
            epoch, step_in_epoch = epoch + 1, 0
            acc = _fresh_accumulator(len(names), device)
            write_csv(metrics_path, pd.DataFrame(history))
            save_state(epoch, 0, acc)
            _log_epoch(row, regime, seed, epochs)
    if not history:
        write_csv(metrics_path, pd.DataFrame(columns=["epoch"]))
    return TrainOutcome(history=history, snapshots=np.stack(snapshots) if snapshots else None,
                        resumed_from=resumed_from)


def _fresh_accumulator(n_layers: int, device: torch.device | str = "cpu") -> dict[str, Any]:
    return {"loss": torch.zeros((), device=device), "stat": torch.zeros((), device=device),
            "grad_sq": torch.zeros(n_layers, device=device), "grad_max": torch.zeros(n_layers, device=device),
            "seen": 0, "steps": 0}


def _epoch_row(regime: str, epoch: int, acc: dict[str, Any], names: list[str], seconds: float,
               opt: torch.optim.Optimizer) -> dict[str, float]:
    seen = max(1, acc["seen"])
    steps = max(1, acc["steps"])
    row: dict[str, float] = {"epoch": epoch + 1, "train_loss": float(acc["loss"]) / seen}
    if regime == "supervised":
        row["train_accuracy"] = float(acc["stat"]) / seen
    row["lr_end"] = float(opt.param_groups[0]["lr"])
    row["train_seconds"] = seconds
    row["train_images_per_s"] = acc["seen"] / seconds if seconds > 0 else float("nan")
    for i, name in enumerate(names):
        row[f"grad_norm_{name}"] = float(acc["grad_sq"][i]) / steps
        row[f"grad_norm_max_{name}"] = float(acc["grad_max"][i])
    return row


def _raise_diverged(regime: str, seed: int, epoch: int, step: int, loss: torch.Tensor, sq: torch.Tensor,
                    names: list[str], acc: dict[str, Any], state_path: Path) -> None:
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
def epoch_probe(encoder: ConvEncoder, data: Dataset, probe_idx: torch.Tensor, device: torch.device) -> float:
    """Validation accuracy of a linear probe (fixed L2) on the latent, fitted on a fixed training subset."""
    train = extract_features(encoder, data.train_x[probe_idx], layers=["latent"], device=device)["latent"]
    val = extract_features(encoder, data.val_x, layers=["latent"], device=device)["latent"]
    return LinearProbe(l2=EPOCH_PROBE_L2, max_iter=100).fit(train, data.train_y[probe_idx]).score(val, data.val_y)


def _log_epoch(row: dict[str, float], regime: str, seed: int, epochs: int) -> None:
    from .log import log

    if regime == "supervised":
        detail = f"val acc {row['val_accuracy']:.4f}"
    else:
        detail = f"val recon MSE {row['val_recon_mse']:.4f}"
    probe = f", latent probe (val) {row['val_latent_probe_accuracy']:.4f}" if "val_latent_probe_accuracy" in row else ""
    log(f"{regime} seed {seed} epoch {int(row['epoch'])}/{epochs}: train loss {row['train_loss']:.4f}, {detail}{probe} "
        f"({row['train_seconds']:.1f}s, {row['train_images_per_s']:.0f} img/s)")
