"""The analyses of one seed, run on features extracted once per model.

``analyze_seed`` takes ``{model: {layer: {split: features}}}`` and returns DataFrames (probe accuracies
by model and layer, projection quality); it writes array artifacts (2-D coordinates) to the run
directory. Each analysis itself is a plain function over arrays in its own module.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .artifacts import read_json, save_npz
from .config import Config
from .data import Dataset, stratified_subset
from .features import Features
from .log import log
from .probes import knn_probe, linear_probe
from .projection import trustworthiness, umap_embed

MODEL_ORDER = ["pixels", "pca", "random", "supervised", "autoencoder"]


def layer_depths(features: dict[str, Features]) -> dict[str, int]:
    """Depth index of each layer name: input 0, stage1..N → 1..N, latent N+1."""
    names = {layer for model in features.values() for layer in model}
    stages = sorted((n for n in names if n.startswith("stage")), key=lambda n: int(n[5:]))
    depths = {"input": 0, **{n: int(n[5:]) for n in stages}}
    depths["latent"] = len(stages) + 1
    return depths


def probe_table(features: dict[str, Features], labels: dict[str, torch.Tensor], cfg: Config, seed: int,
                progress: bool = True) -> pd.DataFrame:
    """Linear and kNN probe accuracy for every model and layer (hyperparameters chosen on validation)."""
    depths = layer_depths(features)
    jobs = [(m, layer) for m in features for layer in features[m]]
    rows = []
    for model, layer in tqdm(jobs, desc=f"probes seed {seed}", leave=False, disable=not progress or None):
        f = features[model][layer]
        train, val, test = ((f[s], labels[s]) for s in ("train", "val", "test"))
        started = time.perf_counter()
        lin = linear_probe(train, val, test, cfg.analysis.probe_l2_grid, cfg.analysis.probe_max_iter)
        lin_seconds = time.perf_counter() - started
        started = time.perf_counter()
        knn = knn_probe(train, val, test, cfg.analysis.knn_k_grid, cfg.analysis.knn_temperature)
        knn_seconds = time.perf_counter() - started
        for result, seconds in ((lin, lin_seconds), (knn, knn_seconds)):
            rows.append({"model": model, "seed": seed, "layer": layer, "depth": depths[layer],
                         "dim": int(f["train"].shape[1]), "probe": result.kind,
                         "test_accuracy": result.test_accuracy, "val_accuracy": result.val_accuracy,
                         "chosen": result.chosen, "seconds": round(seconds, 3)})
        log(f"  {model:>11} {layer:>7} (d={f['train'].shape[1]:>4}): linear {lin.test_accuracy:.4f}, "
            f"kNN {knn.test_accuracy:.4f}")
    return pd.DataFrame(rows)


def projection_table(features: dict[str, Features], labels: dict[str, torch.Tensor], cfg: Config, seed: int,
                     run_dir: Path) -> pd.DataFrame:
    """2-D UMAP of each model's test-set latent (pixels for the raw baseline), with trustworthiness."""
    n = cfg.analysis.projection_points
    if n == 0:
        return pd.DataFrame()
    test_y = labels["test"].numpy()
    keep = stratified_subset(test_y, n, seed)
    arrays: dict[str, np.ndarray] = {"labels": test_y[keep], "indices": keep}
    rows = []
    for model, layers in features.items():
        layer = "latent" if "latent" in layers else "input"
        x = layers[layer]["test"][keep]
        started = time.perf_counter()
        coords = umap_embed(x, n_neighbors=cfg.analysis.projection_neighbors, seed=seed)
        seconds = time.perf_counter() - started
        arrays[model] = coords
        tw = trustworthiness(x, coords, n_neighbors=min(5, max(1, len(keep) // 2 - 1)))
        rows.append({"model": model, "seed": seed, "layer": layer, "points": len(keep),
                     "trustworthiness": tw, "seconds": round(seconds, 2)})
        log(f"  projection {model}: {len(keep)} points, trustworthiness {tw:.3f} ({seconds:.1f}s)")
    save_npz(run_dir / "artifacts" / f"projection_seed{seed}.npz", **arrays)
    return pd.DataFrame(rows)


def analyze_seed(features: dict[str, Features], labels: dict[str, torch.Tensor], data: Dataset, cfg: Config,
                 seed: int, run_dir: Path, progress: bool = True) -> dict[str, pd.DataFrame]:
    """Every analysis of one seed; returns the tables to append to the run's metrics."""
    log(f"seed {seed}: probing {sum(len(v) for v in features.values())} layers")
    tables = {"probes": probe_table(features, labels, cfg, seed, progress)}
    if seed == cfg.train.seeds[0]:
        tables["projection"] = projection_table(features, labels, cfg, seed, run_dir)
    return tables


def summarize(run_dir: Path, cfg: Config, wall_seconds: float) -> dict[str, Any]:
    """Headline numbers of a finished run, for summary.json and the report's first lines."""
    out: dict[str, Any] = {"name": cfg.name, "dataset": cfg.data.name, "wall_seconds": round(wall_seconds, 1),
                           "seeds": cfg.train.seeds}
    models_csv = run_dir / "metrics" / "models.csv"
    if models_csv.is_file():
        models = pd.read_csv(models_csv)
        if "test_accuracy" in models:
            sup = models[models.model == "supervised"]["test_accuracy"].dropna()
            if len(sup):
                out["supervised_classifier_test_accuracy"] = float(sup.mean())
    probes_csv = run_dir / "metrics" / "probes.csv"
    if probes_csv.is_file():
        probes = pd.read_csv(probes_csv)
        latent = probes[probes.layer.isin(["latent", "input"])]
        means = latent.groupby(["model", "probe"]).test_accuracy.mean()
        out["final_layer_probe_test_accuracy"] = {f"{m}/{p}": float(v) for (m, p), v in means.items()}
    status = run_dir / "status.json"
    if status.is_file():
        out["state"] = read_json(status).get("state")
    return out
