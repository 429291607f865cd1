"""What a training run carries from step to step, and what a resumed run needs to continue exactly."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from replearn.runtime import distributed


class TrainState:
    """Position (epoch, step within it), the epoch's running sums, the finished epochs' rows and the
    reconstruction snapshots; ``payload``/``restore`` turn it, with the modules, into a checkpoint and back."""

    def __init__(self, n_layers: int, device: torch.device) -> None:
        self.epoch, self.step = 0, 0
        self.history: list[dict[str, float]] = []
        self.snapshots: list[np.ndarray] = []
        self.extras: dict[str, Any] = {}  # what callbacks carry across epochs (tensors), e.g. the epoch probe's weights
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

    def global_sums(self) -> dict[str, Any]:
        """The running sums over every process (each sums its own share of the batches; gradient norms are of
        the averaged gradient, the same on every rank); the sums themselves with one process."""
        if not distributed.world().active:
            return self.sums
        acc = self.sums
        keys = sorted(acc["stats"])
        flat = torch.stack([acc["loss"].float(), torch.tensor(float(acc["seen"]), device=self.device),
                            *[torch.as_tensor(acc["stats"][k], device=self.device).float() for k in keys]])
        flat = distributed.all_reduce_sum(flat)
        return {**acc, "loss": flat[0], "seen": int(flat[1]), "stats": dict(zip(keys, flat[2:]))}

    def payload(self, modules: dict[str, Any]) -> dict[str, Any]:
        """The resumable state (on every rank, since the sums are gathered; rank 0 writes it)."""
        acc = self.global_sums()
        cpu = {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in acc.items() if k != "stats"}
        cpu["stats"] = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in acc["stats"].items()}
        cuda = {"rng_cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}
        return {"format": "replearn-checkpoint", "kind": "train-state", "epoch": self.epoch, "step_in_epoch": self.step,
                **{k: m.state_dict() for k, m in modules.items()}, "rng_torch": torch.get_rng_state(), **cuda,
                "accumulator": cpu, "history": self.history, "snapshots": [torch.from_numpy(s) for s in self.snapshots],
                "extras": self.extras, "world_size": distributed.world().size}

    def restore(self, state: dict[str, Any], modules: dict[str, Any], load_checked: Any) -> None:
        """Load a ``payload``: weights through ``load_checked(module, state_dict, key)``, then the rest."""
        for key in ("encoder", "head"):
            load_checked(modules[key], state[key], key)
        modules["optimizer"].load_state_dict(state["optimizer"])
        modules["scheduler"].load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_torch"])
        self.epoch, self.step = int(state["epoch"]), int(state["step_in_epoch"])
        acc = state["accumulator"]
        self.sums = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in acc.items() if k != "stats"}
        self.sums["stats"] = {k: v.to(self.device) for k, v in acc["stats"].items()}
        if "rng_cuda" in state and torch.cuda.is_available() and len(state["rng_cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        if not distributed.world().main:  # the saved sums are every rank's: rank 0 alone carries them on
            self.sums.update(loss=torch.zeros_like(self.sums["loss"]), seen=0,
                             stats={k: torch.zeros_like(v) for k, v in self.sums["stats"].items()})
        self.history = list(state["history"])
        self.snapshots = [s.numpy() for s in state.get("snapshots", [])]
        self.extras = dict(state.get("extras", {}))

    def epoch_row(self, names: list[str], seconds: float, lr: float, metrics: Any) -> dict[str, float]:
        """The finished epoch's row: loss, the regime's metrics (``metrics(stats, images)``), learning rate,
        time, throughput and gradient norms by layer."""
        acc = self.global_sums()
        seen, steps = max(1, acc["seen"]), max(1, acc["steps"])
        row: dict[str, float] = {"epoch": self.epoch + 1, "train_loss": float(acc["loss"]) / seen}
        stats = {k: float(v) for k, v in acc["stats"].items()}
        row.update({f"train_{k}": v for k, v in metrics(stats, seen).items()} if stats else {})
        row["lr_end"] = lr
        row["train_seconds"] = seconds
        row["train_images_per_s"] = acc["seen"] / seconds if seconds > 0 else float("nan")
        for i, name in enumerate(names):
            row[f"grad_norm_{name}"] = float(acc["grad_sq"][i]) / steps
            row[f"grad_norm_max_{name}"] = float(acc["grad_max"][i])
        return row
