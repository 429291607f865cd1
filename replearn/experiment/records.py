"""What an experiment builds and records around each regime's training: the environment record, the models'
descriptions, the callbacks and head of a training run, its FLOPs, its checkpoint and its test metrics. Plain
functions of the Experiment, so that the class holds only its stages."""

from __future__ import annotations

import importlib.metadata

import os
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from replearn.analyses.base import ModelInfo, baseline_models
from replearn.data import Dataset
from replearn.encoders import Encoder, build_encoder, encoder_spec
from replearn.encoders.extract import eval_mode
from replearn.regimes import DataInfo, Regime
from replearn.regimes.base import reconstruction_mse, reconstructs
from replearn.rundir import layout
from replearn.rundir.io import save_npz
from replearn.runtime import distributed, seeding
from replearn.runtime import threads as parallel
from replearn.runtime.log import log
from replearn.runtime.seeding import derive_seed
from replearn.training import eval_batch_size, evaluate, training_step_flops
from replearn.training.grad_init import InitialGradNorms
from replearn.training.loop import Callback
from replearn.training.tensorboard import TensorBoard, run_log_dir
from replearn.version import __version__

if TYPE_CHECKING:  # the class these functions serve imports this module
    from replearn.experiment.experiment import Experiment


def outside_run(exc: OSError, run_dir: Path) -> bool:
    """Whether an OSError names a file outside the run directory (one the run reads, not one it writes)."""
    name = exc.filename
    if not isinstance(name, (str, os.PathLike)):
        return False
    try:
        Path(name).resolve().relative_to(Path(run_dir).resolve())
    except ValueError:
        return True
    except OSError:
        return False
    return False


def environment_record(experiment: Experiment) -> dict[str, Any]:
    """What ran where: versions, machine, threads, device, seeds and the command."""
    device = experiment.device
    return {
        "replearn": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit-learn": importlib.metadata.version("scikit-learn"),
        "pandas": pd.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": parallel.record(),
        "device": str(device),
        "cuda": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "seeds": experiment.config.train.seeds,
        "command": " ".join(sys.argv),
        "precision": experiment.config.train.precision,
        **distributed.describe(),
    }


def model_infos(regimes: list[Regime]) -> list[ModelInfo]:
    """The analysed models: the baselines, the untrained encoder, then every regime."""
    return baseline_models() + [
        ModelInfo(
            r.name, r.label or r.name, r.color, "regime", r.needs_labels, type(r).reconstruct is not Regime.reconstruct
        )
        for r in regimes
    ]


def study_callbacks(experiment: Experiment, regime: Regime, seed: int) -> list[Callback]:
    """The per-layer gradient norms at initialisation (always) and TensorBoard's logs (when asked for)."""
    rd = experiment.run_dir
    callbacks: list[Callback] = [InitialGradNorms(rd / layout.grad_init(regime.name, seed))]
    if experiment.config.analysis.tensorboard:
        callbacks.append(TensorBoard(run_log_dir(rd.path, regime.name, seed)))
    return callbacks


def build_head(regime: Regime, encoder: Encoder, data: Dataset, seed: int) -> torch.nn.Module:
    """The regime's head, seeded (the same seed always gives the same head)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed((seed, 1), seeding.HEAD))
        return regime.build_head(encoder, DataInfo(data.image_shape, data.num_classes, data.mean, data.std))


def step_flops(experiment: Experiment, regime: Regime) -> float:
    """FLOPs of one training step of the regime, from a throwaway encoder; used only to weigh the run's ETA."""
    data, device = experiment.data, experiment.device
    encoder = build_encoder(experiment.config.model, data.image_shape, 0).to(device)
    head = build_head(regime, encoder, data, 0).to(device)
    return training_step_flops(
        regime,
        encoder,
        head,
        data.train_x[:2].to(device),
        data.train_y[:2].to(device),
        experiment.config.train.batch_size,
    )


def checkpoint_payload(
    experiment: Experiment, regime: Regime, seed: int, encoder: Encoder, head: torch.nn.Module, epochs: int
) -> dict[str, Any]:
    """A final checkpoint: enough to rebuild the encoder and reproduce its features without the run."""
    cfg, data = experiment.config, experiment.data
    return {
        "format": "replearn-checkpoint",
        "kind": "model",
        "regime": regime.name,
        "regime_spec": regime.spec,
        "seed": seed,
        "encoder": encoder.state_dict(),
        "encoder_spec": encoder_spec(cfg.model, data.image_shape),
        "head": head.state_dict(),
        "config": cfg.to_dict(),
        "in_shape": list(encoder.in_shape),
        "num_classes": data.num_classes,
        "dataset": data.summary(),
        "epochs_trained": epochs,
        "replearn": __version__,
    }


def test_metrics_row(
    experiment: Experiment, regime: Regime, seed: int, encoder: Encoder, head: torch.nn.Module, outcome: Any
) -> dict[str, Any]:
    """The trained model's row of models.csv (test loss and metrics, the regime's own test results), saving
    its test arrays and reconstructions beside it. ``test_recon_mse`` is, for every regime that reconstructs,
    the error of its deterministic reconstruction of clean test images (a regime's own objective error, if
    another, has its own column)."""
    cfg, data, rd, device = experiment.config, experiment.data, experiment.run_dir, experiment.device
    test = evaluate(
        regime, encoder, head, data.test_x, data.test_y, device, eval_batch_size(regime, cfg.train.batch_size)
    )
    row: dict[str, Any] = {
        "model": regime.name,
        "seed": seed,
        "epochs": len(outcome.history),
        **{f"test_{k}": v for k, v in test.items()},
    }
    snapshot_images = data.test_x[: cfg.analysis.reconstructions] if cfg.analysis.reconstructions else None
    with torch.no_grad(), eval_mode(encoder, head):
        scalars, arrays = regime.test_report(encoder, head, data.test_x, 1000)
        if "recon_mse" not in test and "recon_mse" not in scalars and reconstructs(regime):
            scalars = {**scalars, "recon_mse": reconstruction_mse(regime, encoder, head, data.test_x, 1000)}
        if outcome.snapshots is not None and len(outcome.history) == experiment.plugins.epochs_for(regime):
            recon = torch.from_numpy(outcome.snapshots[-1])  # the last epoch's snapshot is the final model's
        elif snapshot_images is not None:
            recon = regime.reconstruct(
                encoder, head, snapshot_images.to(device).contiguous(memory_format=torch.channels_last)
            )
        else:
            recon = None
    row.update({f"test_{k}": v for k, v in scalars.items()})
    if outcome.history:
        row["train_seconds"] = float(sum(h["train_seconds"] for h in outcome.history))
    log(f"{regime.name} seed {seed}: test " + ", ".join(f"{k} {v:.4f}" for k, v in test.items()))
    if arrays:
        save_npz(rd / layout.model_artifact("test", regime.name, seed), **arrays)
    if recon is not None:
        save_npz(
            rd / layout.model_artifact("reconstructions", regime.name, seed),
            inputs=data.to_unit_range(snapshot_images).numpy(),
            final=data.to_unit_range(recon.float().cpu()).numpy(),
            over_epochs=(
                data.to_unit_range(torch.from_numpy(outcome.snapshots)).numpy()
                if outcome.snapshots is not None
                else np.zeros((0,), np.float32)
            ),
        )
    return row
