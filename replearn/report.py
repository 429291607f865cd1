"""The HTML report: rendered only from a run directory's saved artifacts, never by retraining.

One self-contained file: figures are embedded PNG data URIs, every user-supplied string is escaped by
Jinja2's autoescaping, and a Content-Security-Policy forbids loading anything from the network.
Sections whose artifacts are missing (an interrupted or diverged run) are left out, and the report
says that the run is incomplete.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from . import __version__
from .artifacts import atomic_write_text, check_run_dir, load_npz, read_json
from .stats import format_mean_ci

REFERENCES = {
    "fashion-mnist": [("logistic regression on raw pixels", 0.842, "Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747, "
                                                                   "Table 3")],
    "mnist": [("logistic regression on raw pixels", 0.917, "Xiao, Rasul & Vollgraf 2017, Table 3")],
}

GUIDES = {
    "summary": "Headline numbers of this run. The supervised classifier's accuracy is its own head on the test set; "
               "the probe accuracies are linear classifiers trained on frozen features, with the penalty chosen "
               "on the validation split.",
    "training": "Training loss and the validation metric per epoch for each regime, and the validation accuracy of "
                "a linear probe on the latent after each epoch (same probe settings every epoch). A probe curve that "
                "keeps rising while the loss flattens means the representation is still reorganising.",
    "probes": "Test accuracy of a linear probe (standardised features, multinomial logistic regression) and a "
              "weighted kNN probe (cosine, k chosen on validation) at every layer. Raw pixels and the untrained "
              "encoder are the baselines: a trained layer that does not beat them has learned nothing linearly useful.",
    "depth": "The same probe accuracies plotted against depth. Supervised features usually become more linearly "
             "separable with depth; autoencoder features often peak early and fall off towards the latent.",
    "projection": "2-D UMAP embeddings of test-set latent vectors, coloured by class, one panel per model. "
                  "Trustworthiness (1 = every embedded neighbourhood is a true one) says how far to trust local "
                  "structure; distances between far-apart clusters mean little in UMAP.",
    "reconstructions": "Test images (top) and the autoencoder's reconstructions (bottom). What survives the "
                       "bottleneck is what the latent encodes; blurred detail is what it discarded.",
    "gradients": "The mean gradient norm of each layer's parameters per training step, by epoch. Norms that shrink "
                 "by orders of magnitude towards the input signal vanishing gradients; a sudden jump signals an "
                 "exploding one (replearn stops and names the layer if a norm becomes non-finite).",
    "dimensions": "How many dimensions each layer uses on test images: principal components needed for 90% of the "
                  "variance, the participation ratio (a soft count of them), and the TwoNN intrinsic dimension of the "
                  "data manifold. A stack that compresses shows falling curves with depth.",
    "similarity": "Linear CKA between every pair of layers of two encoders (1 = same representation up to rotation and "
                  "scale), estimated from unbiased HSIC over minibatches of test images. Compare cross-regime "
                  "similarity with the seed-vs-seed maps when present: those are the noise floor.",
    "labels": "Test accuracy of a linear probe on each model's final layer when only a few labelled images per class "
              "are available (class-balanced random draws; the band spans draws and seeds). Representations that "
              "organise images by class need fewer labels.",
    "structure": "How class structure shows without labels: k-means on the final layer scored against the classes "
                 "(NMI, ARI), the silhouette of the true classes (cosine), the UMAP projection's trustworthiness, and "
                 "the fraction of 10-nearest-neighbour sets each pair of models shares.",
    "filters": "First-layer convolution filters of each encoder (first input channel, each scaled to its own range). "
               "Trained filters usually look like oriented edge and blob detectors; untrained ones look like noise.",
    "neighbours": "For a few test images (left), their nearest training images in each model's final-layer feature "
                  "space (cosine). Neighbours of the same class mean the space groups by class; neighbours that "
                  "merely look alike mean it groups by appearance.",
    "config": "The resolved configuration of this run (every default filled in) and the software it ran on.",
    "dataset": "Sizes of the splits. Validation is carved out of the training split; every hyperparameter (probe "
               "penalty, kNN k) is chosen on it, never on test.",
}

MODEL_ORDER = ["pixels", "pca", "random", "supervised", "autoencoder"]


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("replearn", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined)


def _table(frame: pd.DataFrame) -> dict[str, Any]:
    return {"columns": [str(c) for c in frame.columns], "rows": frame.astype(object).where(frame.notna(), "–").values.tolist()}


def _read_csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() and path.stat().st_size > 0 else None


def _model_sort(models: list[str]) -> list[str]:
    return sorted(models, key=lambda m: (MODEL_ORDER.index(m) if m in MODEL_ORDER else 99, m))


def layer_order(probes: pd.DataFrame) -> list[str]:
    return list(probes.drop_duplicates("layer").sort_values("depth").layer)


def probe_matrix(probes: pd.DataFrame) -> pd.DataFrame:
    """Model × layer rows with linear and kNN test accuracy (mean ± 95% CI over seeds) and the chosen settings."""
    rows = []
    for model in _model_sort(list(probes.model.unique())):
        sub = probes[probes.model == model]
        for layer in layer_order(sub):
            cell = sub[sub.layer == layer]
            lin, knn = cell[cell.probe == "linear"], cell[cell.probe == "knn"]
            rows.append({"model": model, "layer": layer, "dim": int(cell.dim.iloc[0]),
                         "linear test acc": format_mean_ci(lin.test_accuracy),
                         "kNN test acc": format_mean_ci(knn.test_accuracy),
                         "L2 (val)": ", ".join(f"{v:g}" for v in sorted(lin.chosen.unique())),
                         "k (val)": ", ".join(f"{int(v)}" for v in sorted(knn.chosen.unique())),
                         "seeds": int(lin.seed.nunique())})
    return pd.DataFrame(rows)


def build_context(run_dir: Path) -> dict[str, Any]:
    """Everything the template shows, read from the run directory."""
    from . import plots

    metrics = run_dir / "metrics"
    config_text = (run_dir / "config.yaml").read_text(encoding="utf-8")
    env = read_json(run_dir / "environment.json") if (run_dir / "environment.json").is_file() else {}
    dataset = read_json(run_dir / "dataset.json") if (run_dir / "dataset.json").is_file() else {}
    status = read_json(run_dir / "status.json") if (run_dir / "status.json").is_file() else {"state": "unknown"}
    summary = read_json(metrics / "summary.json") if (metrics / "summary.json").is_file() else {}
    marker = read_json(run_dir / "replearn-run.json")
    sections: list[dict[str, Any]] = []

    def section(key: str, title: str, **content: Any) -> None:
        sections.append({"id": key, "title": title, "guide": GUIDES.get(key, ""), "bullets": [], "references": [],
                         "figure": None, "figures": [], "table": None, "code": None, **content})

    headline: list[str] = []
    models = _read_csv(metrics / "models.csv")
    probes = _read_csv(metrics / "probes.csv")
    if models is not None and "test_accuracy" in models:
        sup = models[models.model == "supervised"].test_accuracy.dropna()
        if len(sup):
            headline.append(f"Supervised classifier test accuracy: {format_mean_ci(sup)}")
    if probes is not None:
        final = probes[(probes.probe == "linear") & probes.layer.isin(["latent", "input"])]
        for model in _model_sort(list(final.model.unique())):
            layer = "latent" if model not in ("pixels",) else "input"
            vals = final[(final.model == model) & (final.layer == layer)].test_accuracy
            headline.append(f"Linear probe on {plots.MODEL_LABELS.get(model, model)} ({layer}): {format_mean_ci(vals)}")
    comparison = read_json(metrics / "comparison.json") if (metrics / "comparison.json").is_file() else None
    if comparison:
        headline.append(comparison_sentence(comparison))
    references = REFERENCES.get(dataset.get("name", ""), [])
    if headline or references:
        section("summary", "Summary", bullets=headline,
                references=[f"Published reference — {what}: {acc:.3f} ({src})" for what, acc, src in references])

    histories = {}
    for regime in ("supervised", "autoencoder"):
        frames = []
        for path in sorted(metrics.glob(f"train_{regime}_seed*.csv")):
            frame = _read_csv(path)
            if frame is not None and len(frame):
                frames.append(frame)
        if frames:
            histories[regime] = pd.concat(frames, ignore_index=True)
    if histories:
        section("training", "Training curves", figure=plots.to_data_uri(plots.training_curves(histories)),
                table=_table(models.round(4)) if models is not None else None)

        section("gradients", "Gradient norms by layer", figure=plots.to_data_uri(plots.gradient_norms(histories)))

    if probes is not None and len(probes):
        section("probes", "Probe accuracy by model and layer", table=_table(probe_matrix(probes)))
        section("depth", "Accuracy by depth",
                figure=plots.to_data_uri(plots.accuracy_by_depth(probes, layer_order(probes))))
    order = layer_order(probes) if probes is not None and len(probes) else []

    dims = _read_csv(metrics / "dimensions.csv")
    if dims is not None and len(dims):
        dim_table = (dims.groupby(["model", "layer"], sort=False)[["features", "pca90", "participation_ratio", "twonn"]]
                     .mean().round(1).reset_index())
        section("dimensions", "Dimension by depth", figure=plots.to_data_uri(plots.dimension_by_depth(dims, order)),
                table=_table(dim_table))

    cka = _read_csv(metrics / "cka.csv")
    if cka is not None and len(cka):
        diag = cka[cka.layer_a == cka.layer_b].groupby(["pair", "layer_a"], sort=False).cka.mean().unstack()
        diag = diag[[l for l in order if l in diag.columns]].round(3).reset_index().rename(columns={"pair": "pair (same layer)"})
        section("similarity", "Representation similarity (CKA)",
                figure=plots.to_data_uri(plots.cka_heatmaps(cka, order)), table=_table(diag))

    eff = _read_csv(metrics / "label_efficiency.csv")
    if eff is not None and len(eff):
        eff_table = eff.assign(labels_per_class=eff.per_class.map(lambda c: "all" if c < 0 else str(c)))
        eff_table = (eff_table.groupby(["model", "labels_per_class"], sort=False).test_accuracy
                     .apply(format_mean_ci).unstack())
        eff_table = eff_table[[c for c in sorted(eff_table.columns, key=lambda c: 10**9 if c == "all" else int(c))]]
        section("labels", "Label efficiency", figure=plots.to_data_uri(plots.label_efficiency_curves(eff)),
                table=_table(eff_table.reset_index()))

    structure = _read_csv(metrics / "structure.csv")
    if structure is not None and len(structure):
        columns = [c for c in structure.columns if c not in ("seed",)]
        st_table = structure[columns].groupby("model", sort=False).mean().round(3).reset_index()
        section("structure", "Structure without labels", figure=plots.to_data_uri(plots.structure_bars(structure)),
                table=_table(st_table))

    projection = _read_csv(metrics / "projection.csv")
    proj_files = sorted((run_dir / "artifacts").glob("projection_seed*.npz"))
    if projection is not None and proj_files:
        arrays = load_npz(proj_files[0])
        shown = [m for m in _model_sort([m for m in arrays if m not in ("labels", "indices")])]
        tw = dict(zip(projection.model, projection.trustworthiness))
        titles = {m: f"{plots.MODEL_LABELS.get(m, m)}\ntrustworthiness {tw.get(m, float('nan')):.3f}" for m in shown}
        fig = plots.projection_panels({m: arrays[m] for m in shown}, arrays["labels"],
                                      dataset.get("class_names", []), titles)
        section("projection", "UMAP of the latent space", figure=plots.to_data_uri(fig),
                table=_table(projection.round(4)))

    recon_files = sorted((run_dir / "artifacts").glob("reconstructions_seed*.npz"))
    if recon_files:
        rec = load_npz(recon_files[0])
        fig = plots.image_grid([rec["inputs"], rec["final"]], ["input", "reconstruction"])
        section("reconstructions", "Autoencoder reconstructions", figure=plots.to_data_uri(fig))

    if recon_files:
        rec = load_npz(recon_files[0])
        over = rec.get("over_epochs")
        if over is not None and over.ndim == 5 and len(over):
            epochs = sorted(set(np.linspace(0, len(over) - 1, min(6, len(over))).round().astype(int).tolist()))
            fig = plots.image_grid([rec["inputs"]] + [over[e] for e in epochs],
                                   ["input"] + [f"epoch {e + 1}" for e in epochs])
            section("recon-epochs", "Reconstructions over epochs", figure=plots.to_data_uri(fig),
                    guide="The same test images reconstructed after each epoch: coarse shape comes first, detail later.")

    filter_files = sorted((run_dir / "artifacts").glob("filters_seed*.npz"))
    if filter_files:
        filters = load_npz(filter_files[0])
        shown = {m: filters[m] for m in _model_sort(list(filters))}
        section("filters", "First-layer filters", figure=plots.to_data_uri(plots.filter_grid(shown)))

    nn_files = sorted((run_dir / "artifacts").glob("neighbours_seed*.npz"))
    if nn_files:
        nn = load_npz(nn_files[0])
        names = dataset.get("class_names", [])
        models_shown = _model_sort([k[:-7] for k in nn if k.endswith("_images") and k != "query_images"])
        rows, labels = [], []
        for q in range(len(nn["query_labels"])):
            rows.append(nn["query_images"][q:q + 1])
            labels.append(f"query: {_class_name(names, nn['query_labels'][q])}")
            for m in models_shown:
                same = sum(int(l) == int(nn["query_labels"][q]) for l in nn[f"{m}_labels"][q])
                rows.append(nn[f"{m}_images"][q])
                labels.append(f"{plots.MODEL_LABELS.get(m, m)} ({same}/{len(nn[f'{m}_labels'][q])} same class)")
        figs = [plots.to_data_uri(plots.image_grid(rows, labels, cell=0.5))]
        section("neighbours", "Nearest neighbours", figures=figs)

    if dataset:
        ds_rows = pd.DataFrame([{"split": s, "images": dataset.get(s)} for s in ("train", "val", "test")])
        section("dataset", "Dataset", table=_table(ds_rows),
                bullets=[f"{dataset.get('name')}: images {'×'.join(map(str, dataset.get('image_shape', [])))}, "
                         f"{dataset.get('num_classes')} classes ({', '.join(map(str, dataset.get('class_names', [])))})",
                         f"source: {dataset.get('source')}"])
    env_rows = pd.DataFrame([{"item": k, "value": str(v)} for k, v in env.items()])
    section("config", "Configuration and environment", code=config_text, table=_table(env_rows) if len(env_rows) else None)

    state = status.get("state", "unknown")
    return {
        "title": f"replearn — {marker.get('name', run_dir.name)}",
        "run_name": marker.get("name", run_dir.name), "run_dir": str(run_dir), "dataset_name": dataset.get("name", "?"),
        "state": state, "state_message": status.get("message", ""), "complete": state == "complete",
        "wall_seconds": summary.get("wall_seconds"), "sections": sections, "version": __version__,
        "rendered": dt.datetime.now().isoformat(timespec="seconds"),
    }


def _class_name(names: list[str], label: Any) -> str:
    return str(names[int(label)]) if 0 <= int(label) < len(names) else str(label)


def comparison_sentence(c: dict[str, Any]) -> str:
    """One sentence stating the supervised-minus-autoencoder probe gap with its interval and p-values."""
    seeds = f"{c['seeds']} seed{'s' if c['seeds'] != 1 else ''}"
    text = (f"Supervised minus autoencoder, linear probe on the latent: {100 * c['difference']:+.2f} percentage points "
            f"({100 * c['accuracy_a']:.2f}% vs {100 * c['accuracy_b']:.2f}%, {seeds}, {c['n_test']} test images); "
            f"paired bootstrap 95% CI [{100 * c['bootstrap_ci'][0]:+.2f}, {100 * c['bootstrap_ci'][1]:+.2f}] pp, "
            + (f"p < {1 / c.get('bootstrap_n', 10_000):.0g}" if c['bootstrap_p'] <= 1 / c.get('bootstrap_n', 10_000) + 1e-12
               else f"p = {c['bootstrap_p']:.2g}"))
    if c.get("seed_mean_ci"):
        text += f"; across seeds 95% t-interval [{100 * c['seed_mean_ci'][0]:+.2f}, {100 * c['seed_mean_ci'][1]:+.2f}] pp"
    mc = c.get("mcnemar_p_per_seed") or []
    if mc:
        text += "; McNemar p per seed: " + ", ".join(f"{p:.2g}" for p in mc)
    return text + "."


def render_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render ``run_dir``'s report from its artifacts and write it atomically (default: run_dir/report.html)."""
    run_dir = check_run_dir(run_dir, need="report")
    html = _env().get_template("report.html.j2").render(**build_context(run_dir))
    return atomic_write_text(Path(out) if out else run_dir / "report.html", html)

