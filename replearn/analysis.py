"""The analyses of one seed (and across seeds), run on features extracted once per model.

Features are ``{model: {layer: {split: array}}}``. Each function here is a thin loop over models and
layers that calls a plain array function from ``probes``, ``projection``, ``similarity``, ``dimension``
or ``structure`` and returns a DataFrame; ``analyze_seed`` runs them all and writes the array artifacts
(projections, predictions, filters, neighbours) that the report draws.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .artifacts import load_npz, read_json, save_npz, write_json
from .config import Config
from .data import Dataset, stratified_subset
from .dimension import participation_ratio, pca_dimension, twonn_dimension
from .features import Features
from .log import log
from .model import ConvEncoder
from .probes import cosine_topk, knn_probe, label_efficiency, linear_probe
from .projection import trustworthiness, umap_embed
from .similarity import cka_matrix
from .stats import mcnemar, mean_ci, paired_bootstrap
from .structure import cluster_scores, knn_overlap

ENCODERS = ("random", "supervised", "autoencoder")


def final_layer(layers: dict[str, Any]) -> str:
    """The layer that stands for a model's representation: its latent, or the input for raw pixels."""
    return "latent" if "latent" in layers else "input"


def layer_depths(features: dict[str, Features]) -> dict[str, int]:
    """Depth index of each layer name: input 0, stage1..N → 1..N, latent N+1."""
    names = {layer for model in features.values() for layer in model}
    stages = sorted((n for n in names if n.startswith("stage")), key=lambda n: int(n[5:]))
    depths = {"input": 0, **{n: int(n[5:]) for n in stages}}
    depths["latent"] = len(stages) + 1
    return depths


def pca_baseline(pixels: dict[str, torch.Tensor], dims: int) -> dict[str, dict[str, torch.Tensor]]:
    """Raw pixels projected on their top ``dims`` principal components (fitted on train): the PCA baseline
    of the same dimension as the latent, under the layer name 'latent'."""
    train = pixels["train"].double()
    mean = train.mean(0)
    dims = min(dims, train.shape[1])
    _, vecs = torch.linalg.eigh((train - mean).T @ (train - mean))
    basis = vecs[:, -dims:].flip(1)
    return {"latent": {split: ((x.double() - mean) @ basis).float() for split, x in pixels.items()}}


def probe_table(features: dict[str, Features], labels: dict[str, torch.Tensor], cfg: Config, seed: int,
                progress: bool = True) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Linear and kNN probe accuracy for every model and layer (hyperparameters chosen on validation),
    plus each model's final-layer linear-probe test predictions (for paired tests)."""
    depths = layer_depths(features)
    jobs = [(m, layer) for m in features for layer in features[m]]
    rows, predictions = [], {}
    for model, layer in tqdm(jobs, desc=f"probes seed {seed}", leave=False, disable=not progress or None):
        f = features[model][layer]
        train, val, test = ((f[s], labels[s]) for s in ("train", "val", "test"))
        started = time.perf_counter()
        lin = linear_probe(train, val, test, cfg.analysis.probe_l2_grid, cfg.analysis.probe_max_iter,
                           cfg.analysis.probe_tol)
        lin_seconds = time.perf_counter() - started
        started = time.perf_counter()
        knn = knn_probe(train, val, test, cfg.analysis.knn_k_grid, cfg.analysis.knn_temperature)
        knn_seconds = time.perf_counter() - started
        if layer == final_layer(features[model]):
            predictions[model] = lin.test_predictions.numpy()
        for result, seconds in ((lin, lin_seconds), (knn, knn_seconds)):
            rows.append({"model": model, "seed": seed, "layer": layer, "depth": depths[layer],
                         "dim": int(f["train"].shape[1]), "probe": result.kind,
                         "test_accuracy": result.test_accuracy, "val_accuracy": result.val_accuracy,
                         "chosen": result.chosen, "seconds": round(seconds, 3)})
        log(f"  {model:>11} {layer:>7} (d={f['train'].shape[1]:>4}): linear {lin.test_accuracy:.4f}, "
            f"kNN {knn.test_accuracy:.4f}")
    return pd.DataFrame(rows), predictions


def dimension_table(features: dict[str, Features], points: np.ndarray, seed: int) -> pd.DataFrame:
    """Linear (PCA 90% variance, participation ratio) and intrinsic (TwoNN) dimension of every layer."""
    depths = layer_depths(features)
    rows = []
    for model, layers in features.items():
        for layer, f in layers.items():
            x = f["test"][points]
            rows.append({"model": model, "seed": seed, "layer": layer, "depth": depths[layer],
                         "features": int(x.shape[1]), "pca90": pca_dimension(x, 0.9),
                         "participation_ratio": participation_ratio(x), "twonn": twonn_dimension(x, seed=seed)})
    return pd.DataFrame(rows)


def cka_table(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], pair: str, seed: int,
              batch_size: int) -> pd.DataFrame:
    """Layer × layer minibatch CKA between two models, in long format."""
    matrix = cka_matrix(a, b, batch_size, seed)
    return pd.DataFrame([{"pair": pair, "seed": seed, "layer_a": la, "layer_b": lb, "cka": float(matrix.loc[la, lb])}
                         for la in matrix.index for lb in matrix.columns])


def label_efficiency_table(features: dict[str, Features], labels: dict[str, torch.Tensor], cfg: Config,
                           seed: int, probes: pd.DataFrame) -> pd.DataFrame:
    """Final-layer linear-probe accuracy with few labels per class, per model; 'all labels' from ``probes``."""
    frames = []
    for model, layers in features.items():
        layer = final_layer(layers)
        f = layers[layer]
        frame = label_efficiency((f["train"], labels["train"]), (f["val"], labels["val"]), (f["test"], labels["test"]),
                                 cfg.analysis.label_counts, cfg.analysis.label_draws, cfg.analysis.probe_l2_grid,
                                 seed, min(100, cfg.analysis.probe_max_iter), cfg.analysis.probe_tol)
        full = probes[(probes.model == model) & (probes.layer == layer) & (probes.probe == "linear")]
        frame = pd.concat([frame, pd.DataFrame([{"per_class": -1, "labels": len(labels["train"]), "draw": 0,
                                                 "test_accuracy": float(full.test_accuracy.iloc[0]),
                                                 "val_accuracy": float(full.val_accuracy.iloc[0]),
                                                 "chosen": float(full.chosen.iloc[0])}])], ignore_index=True)
        frame.insert(0, "model", model)
        frame.insert(1, "seed", seed)
        frame.insert(2, "layer", layer)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def structure_table(features: dict[str, Features], test_y: np.ndarray, points: np.ndarray, seed: int,
                    projection: pd.DataFrame | None) -> pd.DataFrame:
    """k-means NMI/ARI, class silhouette and UMAP trustworthiness of each model's final layer; and the
    overlap of 10-nearest-neighbour sets between every pair of models."""
    rows = []
    tw = dict(zip(projection.model, projection.trustworthiness)) if projection is not None and len(projection) else {}
    for model, layers in features.items():
        x = layers[final_layer(layers)]["test"][points]
        rows.append({"model": model, "seed": seed, **cluster_scores(x, test_y[points], seed),
                     "umap_trustworthiness": tw.get(model, np.nan)})
    frame = pd.DataFrame(rows)
    names = list(features)
    overlap = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            fa = features[a][final_layer(features[a])]["test"][points]
            fb = features[b][final_layer(features[b])]["test"][points]
            overlap[f"knn_overlap_{b}"] = overlap.get(f"knn_overlap_{b}", {})
            overlap[f"knn_overlap_{b}"][a] = knn_overlap(fa, fb, 10)
    for column, values in overlap.items():
        frame[column] = frame.model.map(values)
    return frame


def projection_table(features: dict[str, Features], labels: dict[str, torch.Tensor], cfg: Config, seed: int,
                     run_dir: Path) -> pd.DataFrame:
    """2-D UMAP of each model's test-set final layer, with trustworthiness; coordinates saved for the report."""
    n = cfg.analysis.projection_points
    if n == 0:
        return pd.DataFrame()
    test_y = labels["test"].numpy()
    keep = stratified_subset(test_y, n, seed)
    arrays: dict[str, np.ndarray] = {"labels": test_y[keep], "indices": keep}
    rows = []
    for model, layers in features.items():
        layer = final_layer(layers)
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


def save_inspection(encoders: dict[str, ConvEncoder], features: dict[str, Features], data: Dataset, seed: int,
                    run_dir: Path, queries: int = 6, neighbours: int = 5) -> None:
    """First-layer filters of each encoder, and for a few test images their nearest training images in
    each model's final-layer feature space (cosine)."""
    filters = {name: enc.stages["stage1"][0].weight.detach().float().cpu().numpy() for name, enc in encoders.items()}
    save_npz(run_dir / "artifacts" / f"filters_seed{seed}.npz", **filters)
    test_y = data.test_y.numpy()
    query_idx = stratified_subset(test_y, min(queries, len(test_y)), seed)[:queries]
    arrays = {"query_images": data.to_unit_range(data.test_x[query_idx]).numpy(), "query_labels": test_y[query_idx]}
    for model, layers in features.items():
        f = layers[final_layer(layers)]
        _, idx = cosine_topk(f["train"], f["test"][query_idx], neighbours)
        arrays[f"{model}_images"] = data.to_unit_range(data.train_x[idx.flatten()]).numpy().reshape(
            len(query_idx), neighbours, *data.image_shape)
        arrays[f"{model}_labels"] = data.train_y[idx].numpy()
    save_npz(run_dir / "artifacts" / f"neighbours_seed{seed}.npz", **arrays)


def analyze_seed(features: dict[str, Features], labels: dict[str, torch.Tensor], data: Dataset, cfg: Config,
                 seed: int, run_dir: Path, encoders: dict[str, ConvEncoder] | None = None,
                 progress: bool = True) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, torch.Tensor]]]:
    """Every analysis of one seed. Returns the tables to append to the run's metrics, and the encoders'
    test-subset features kept for cross-seed CKA."""
    started = time.perf_counter()
    test_y = labels["test"].numpy()
    points = stratified_subset(test_y, cfg.analysis.analysis_points, cfg.data.split_seed)  # same images every seed
    log(f"seed {seed}: probing {sum(len(v) for v in features.values())} layers")
    probes, predictions = probe_table(features, labels, cfg, seed, progress)
    save_npz(run_dir / "artifacts" / f"predictions_seed{seed}.npz", labels=test_y, **predictions)
    tables = {"probes": probes}
    log(f"seed {seed}: dimensions, similarity, label efficiency, clustering")
    tables["dimensions"] = dimension_table(features, points, seed)
    kept = {m: {layer: f["test"][points] for layer, f in features[m].items()} for m in ENCODERS if m in features}
    cka = []
    pairs = [("supervised", "autoencoder"), ("supervised", "random"), ("autoencoder", "random")]
    for a, b in pairs:
        if a in kept and b in kept:
            cka.append(cka_table(kept[a], kept[b], f"{a} vs {b}", seed, cfg.analysis.cka_batch_size))
    if cka:
        tables["cka"] = pd.concat(cka, ignore_index=True)
    tables["label_efficiency"] = label_efficiency_table(features, labels, cfg, seed, probes)
    if seed == cfg.train.seeds[0]:
        tables["projection"] = projection_table(features, labels, cfg, seed, run_dir)
        if encoders:
            save_inspection(encoders, features, data, seed, run_dir)
    tables["structure"] = structure_table(features, test_y, points, seed, tables.get("projection"))
    log(f"seed {seed}: analyses done in {time.perf_counter() - started:.1f}s")
    return tables, kept


def seed_similarity(kept: dict[int, dict[str, dict[str, torch.Tensor]]], batch_size: int) -> pd.DataFrame | None:
    """CKA between different seeds of the same regime: the noise floor for cross-regime similarity."""
    seeds = sorted(kept)
    frames = []
    for i, s1 in enumerate(seeds):
        for s2 in seeds[i + 1:]:
            for regime in ("supervised", "autoencoder"):
                if regime in kept[s1] and regime in kept[s2]:
                    frames.append(cka_table(kept[s1][regime], kept[s2][regime],
                                            f"{regime} seed {s1} vs seed {s2}", s1, batch_size))
    return pd.concat(frames, ignore_index=True) if frames else None


def compare_regimes(run_dir: Path, seeds: list[int], a: str = "supervised", b: str = "autoencoder",
                    n_boot: int = 10_000) -> dict[str, Any] | None:
    """Paired comparison of two models' final-layer linear probes on the same test images: the accuracy
    difference (mean over seeds) with a paired-bootstrap 95% interval and p-value, McNemar per seed,
    and the mean ± 95% t-interval of the per-seed differences."""
    correct_a, correct_b = [], []
    for seed in seeds:
        path = run_dir / "artifacts" / f"predictions_seed{seed}.npz"
        if not path.is_file():
            continue
        arrays = load_npz(path)
        if a in arrays and b in arrays:
            correct_a.append(arrays[a] == arrays["labels"])
            correct_b.append(arrays[b] == arrays["labels"])
    if not correct_a:
        return None
    ca, cb = np.stack(correct_a), np.stack(correct_b)
    boot = paired_bootstrap(ca, cb, n_boot=n_boot)
    per_seed = (ca.mean(1) - cb.mean(1)).tolist()
    mean, low, high = mean_ci(per_seed)
    return {"a": a, "b": b, "layer": "latent", "seeds": len(ca), "n_test": int(ca.shape[1]),
            "accuracy_a": float(ca.mean()), "accuracy_b": float(cb.mean()),
            "difference": boot["difference"], "bootstrap_ci": [boot["ci_low"], boot["ci_high"]],
            "bootstrap_p": boot["p_value"], "bootstrap_n": n_boot, "per_seed_difference": per_seed,
            "seed_mean_ci": [low, high] if len(per_seed) > 1 else None,
            "mcnemar_p_per_seed": [mcnemar(x, y)["p_value"] for x, y in zip(ca, cb)]}


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
    comparison = compare_regimes(run_dir, cfg.train.seeds)
    if comparison:
        write_json(run_dir / "metrics" / "comparison.json", comparison)
        out["supervised_minus_autoencoder_latent_probe"] = comparison["difference"]
    status = run_dir / "status.json"
    if status.is_file():
        out["state"] = read_json(status).get("state")
    return out
