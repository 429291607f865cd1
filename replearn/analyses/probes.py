"""Accuracy by depth: linear and kNN probes at every layer of every model (hyperparameters chosen on
validation), and each model's final-layer test predictions for the paired comparisons."""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from replearn.analyses import plots
from replearn.data import stratified_subset
from replearn.runtime.log import log, progress_bar
from replearn.runtime.threads import map_tasks, task_workers
from replearn.metrics.probes import knn_probe, linear_probe
from replearn.metrics.stats import format_mean_ci, seeds_note
from replearn.analyses.base import Analysis, RunArtifacts, Section, SeedContext, final_layer, register_analysis
from replearn.analyses.render import PLUS_MINUS, figure, table

GUIDE_TABLE = ("Test accuracy of a linear probe (standardised features — PCA components keep their relative scales —, "
               "multinomial logistic regression) and a "
               "weighted kNN probe (cosine, k chosen on validation) at every layer. Raw pixels and the untrained "
               "encoder are the baselines: a trained layer that does not beat them has learned nothing linearly "
               "useful.")
GUIDE_DEPTH = ("The same probe accuracies plotted against depth. Supervised features usually become more linearly "
               "separable with depth; autoencoder features often peak early and fall off towards the latent.")


def layer_depths(features: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Depth index of each layer name: input 0, then the encoder's layers in order, latent last (a baseline's
    single layer, such as PCA's "latent", takes the depth the encoders give that name)."""
    depths = {"input": 0}
    for layers in features.values():
        for i, name in enumerate(n for n in layers if n != "input"):
            depths[name] = max(depths.get(name, 0), i + 1)
    return depths


def knn_evaluation_rows(labels: dict[str, Any], cap: int, seed: int) -> dict[str, np.ndarray]:
    """Rows of the validation and test splits the kNN probe classifies: a stratified subset of at most ``cap``
    of each (all when ``cap`` is 0), so its search grows with the training images only."""
    out = {}
    for split in ("val", "test"):
        y = np.asarray(labels[split])
        out[split] = np.arange(len(y)) if cap == 0 else stratified_subset(y, cap, seed)
    return out


def probe_table(ctx: SeedContext) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Probe every layer of the seed's fresh models side by side (one thread each)."""
    cfg, features, labels = ctx.cfg, ctx.features, ctx.labels
    depths = layer_depths({m: features[m] for m in ctx.fresh})
    jobs = [(m, layer) for m in ctx.fresh for layer in features[m]]
    bar = progress_bar(len(jobs), f"probes seed {ctx.seed}", ctx.run.progress)
    knn_rows = knn_evaluation_rows(labels, cfg.analysis.knn_eval_points, cfg.data.split_seed)

    def probe(job: tuple[str, str]) -> tuple[Any, float, Any, float]:
        model, layer = job
        f = features[model][layer]
        train, val, test = ((f[s], labels[s]) for s in ("train", "val", "test"))
        if cfg.train.labels_per_class:  # a label budget: settings chosen by cross-validation inside its labels
            val = None
        started = time.perf_counter()
        lin = linear_probe(train, val, test, cfg.analysis.probe_l2_grid, cfg.analysis.probe_max_iter,
                           cfg.analysis.probe_tol, ctx.standardize(model),
                           cfg.analysis.probe_selection)
        lin_seconds = time.perf_counter() - started
        started = time.perf_counter()
        val_knn, test_knn = ((f[s][knn_rows[s]], labels[s][knn_rows[s]]) for s in ("val", "test"))
        if val is None:  # the label budget: k too is chosen inside the budget's labels
            val_knn = None
        knn = knn_probe(train, val_knn, test_knn, cfg.analysis.knn_k_grid, cfg.analysis.knn_temperature)
        bar.update(1)
        log(f"  {model:>11} {layer:>7} (d={f['train'].shape[1]:>4}): linear {lin.test_accuracy:.4f}, "
            f"kNN {knn.test_accuracy:.4f}")
        return lin, lin_seconds, knn, time.perf_counter() - started

    outcomes = map_tasks(probe, jobs, task_workers(len(jobs), phase="probes"))
    bar.close()
    rows, predictions = [], {}
    for (model, layer), (lin, lin_seconds, knn, knn_seconds) in zip(jobs, outcomes):
        if layer == final_layer(features[model]):
            predictions[model] = lin.test_predictions.numpy()
        for result, seconds in ((lin, lin_seconds), (knn, knn_seconds)):
            rows.append({"model": model, "seed": ctx.seed, "layer": layer, "depth": depths[layer],
                         "dim": int(features[model][layer]["train"].shape[1]), "probe": result.kind,
                         "test_accuracy": result.test_accuracy, "val_accuracy": result.val_accuracy,
                         "chosen": result.chosen, "seconds": round(seconds, 3)})
    return pd.DataFrame(rows), predictions


def probe_matrix(probes: pd.DataFrame, run: RunArtifacts) -> pd.DataFrame:
    """Model × layer rows with linear and kNN test accuracy (mean and 95% interval over seeds,
    ``stats.format_mean_ci``) and the chosen settings."""
    rows = []
    order = run.layer_order()
    for model in run.order(list(probes.model.unique())):
        sub = probes[probes.model == model]
        for layer in [l for l in order if l in set(sub.layer)]:
            cell = sub[sub.layer == layer]
            lin, knn = cell[cell.probe == "linear"], cell[cell.probe == "knn"]
            rows.append({"model": run.style(model)[0], "layer": layer, "dim": int(cell.dim.iloc[0]),
                         "linear test acc": format_mean_ci(lin.test_accuracy),
                         "kNN test acc": format_mean_ci(knn.test_accuracy),
                         "L2 (val)": ", ".join(f"{v:g}" for v in sorted(lin.chosen.unique())),
                         "k (val)": ", ".join(f"{int(v)}" for v in sorted(knn.chosen.unique())),
                         "seeds": int(lin.seed.nunique())})
    return pd.DataFrame(rows)


@register_analysis("probes")
class Probes(Analysis):
    order = 30

    def compute(self, ctx: SeedContext) -> dict[str, pd.DataFrame]:
        log(f"seed {ctx.seed}: probing {sum(len(ctx.features[m]) for m in ctx.fresh)} layers")
        probes, predictions = probe_table(ctx)
        ctx.save("predictions", labels=ctx.data.test_y.numpy(), **predictions)
        return {"probes": probes}

    def sections(self, run: RunArtifacts) -> list[Section]:
        probes = run.csv("probes")
        if probes is None:
            return []
        return [Section("probes", "Probe accuracy by model and layer", GUIDE_TABLE,
                        table=table(probe_matrix(probes, run), "probes", run),
                        caption=PLUS_MINUS + " " + (seeds_note(int(probes.seed.nunique())) or "")),
                Section("depth", "Accuracy by depth", GUIDE_DEPTH,
                        figures=[figure(plots.accuracy_by_depth(probes, run.layer_order(), run.styles()),
                                        "accuracy_by_depth", run)])]
