"""What the models look like from the inside: reconstructions (final and after every epoch) of each
regime that decodes, first-layer filters, the nearest training images of a few test images in each
feature space, and regime-specific test arrays such as the VAE's KL per latent dimension."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch.nn as nn

from replearn.analyses import plots
from replearn.data import stratified_subset
from replearn.metrics.neighbours import nearest_neighbours
from replearn.config.options import opt
from replearn.analyses.base import Analysis, RunArtifacts, Section, SeedContext, final_layer, register_analysis
from replearn.analyses.render import figure, table

GUIDES = {
    "reconstructions": "Test images (top row) and each decoding regime's reconstruction of them. What survives the "
                       "bottleneck is what the latent encodes; blurred detail is what it discarded.",
    "recon-epochs": "The same test images reconstructed after each epoch: coarse shape comes first, detail later.",
    "filters": "First-layer convolution filters of each encoder (first input channel, each scaled to its own range). "
               "Compare trained filters with the random initialisation they started from (the top row): how far "
               "training moved them is in the table below.",
    "neighbours": "For a few test images (left), their nearest training images in each model's final-layer feature "
                  "space (cosine). Neighbours of the same class mean the space groups by class; neighbours that "
                  "merely look alike mean it groups by appearance.",
    "latent-usage": "How much each latent dimension of a variational model carries: the KL divergence of its "
                    "posterior from the prior, averaged over test images, sorted. Units whose posterior mean varies "
                    "over the data by more than 0.01 are active (Burda et al. 2016); the rest collapsed to the prior.",
}


def first_conv_weights(encoder: nn.Module) -> np.ndarray | None:
    """Weights of the encoder's first 2-D convolution (out × in × k × k), if it has one."""
    for module in encoder.modules():
        if isinstance(module, nn.Conv2d):
            return module.weight.detach().float().cpu().numpy()
    return None


def _class_name(names: list[str], label: int) -> str:
    return str(names[int(label)]) if 0 <= int(label) < len(names) else str(label)


@dataclass
class InspectionOptions:
    queries: int = opt(6, "test images whose nearest training images the report shows", min=1)
    neighbours: int = opt(5, "nearest training images shown for each of them", min=1)


@register_analysis("inspection")
class Inspection(Analysis):
    order = 90
    Options = InspectionOptions

    def compute(self, ctx: SeedContext) -> dict[str, pd.DataFrame]:
        if not ctx.first_seed:
            return {}
        queries, neighbours = self.options.queries, self.options.neighbours
        filters = {name: w for name, enc in ctx.encoders.items() if (w := first_conv_weights(enc)) is not None}
        if filters:
            ctx.save("filters", **filters)
        data = ctx.data
        test_y = data.test_y.numpy()
        query_idx = stratified_subset(test_y, min(queries, len(test_y)), ctx.seed)[:queries]
        arrays = {"query_images": data.to_unit_range(data.test_x[query_idx]).numpy(), "query_labels": test_y[query_idx]}
        for model, layers in ctx.features.items():
            f = layers[final_layer(layers)]
            idx = nearest_neighbours(f["test"][query_idx], f["train"], neighbours).indices
            arrays[f"{model}_images"] = data.to_unit_range(data.train_x[idx.flatten()]).numpy().reshape(
                len(query_idx), idx.shape[1], *data.image_shape)
            arrays[f"{model}_labels"] = data.train_y[idx].numpy()
        ctx.save("neighbours", **arrays)
        return {}

    def sections(self, run: RunArtifacts) -> list[Section]:
        return [s for s in (self._reconstructions(run) + self._filters(run) + self._neighbours(run)
                            + self._latent_usage(run)) if s is not None]

    def _reconstructions(self, run: RunArtifacts) -> list[Section]:
        decoded = {r: arrays for r in run.regimes() if (arrays := run.first_arrays(f"reconstructions_{r}")) is not None}
        if not decoded:
            return []
        inputs = next(iter(decoded.values()))["inputs"]
        rows = [inputs] + [a["final"] for a in decoded.values()]
        sections = [Section("reconstructions", "Reconstructions", GUIDES["reconstructions"], figures=[figure(
            plots.image_grid(rows, ["input"] + [run.style(r)[0] for r in decoded]), "reconstructions", run)])]
        for regime, arrays in decoded.items():
            over = arrays.get("over_epochs")
            if over is None or over.ndim != 5 or not len(over):
                continue
            epochs = sorted(set(np.linspace(0, len(over) - 1, min(6, len(over))).round().astype(int).tolist()))
            fig = plots.image_grid([arrays["inputs"]] + [over[e] for e in epochs],
                                   ["input"] + [f"epoch {e + 1}" for e in epochs])
            sections.append(Section(f"recon-epochs-{regime}", f"Reconstructions over epochs: {run.style(regime)[0]}",
                                    GUIDES["recon-epochs"], figures=[figure(fig, f"reconstructions_{regime}", run)]))
        return sections

    def _filters(self, run: RunArtifacts) -> list[Section]:
        filters = run.first_arrays("filters")
        if not filters:
            return []
        shown = {m: filters[m] for m in run.order(list(filters))}
        rows = []
        if "random" in shown:
            start = shown["random"].reshape(len(shown["random"]), -1)
            for model, w in shown.items():
                if model != "random" and w.shape == shown["random"].shape:
                    flat = w.reshape(len(w), -1)
                    corr = [float(np.corrcoef(a, b)[0, 1]) for a, b in zip(flat, start)]
                    rows.append({"model": run.style(model)[0], "median correlation with initial filter":
                                 round(float(np.median(corr)), 3), "lowest": round(float(np.min(corr)), 3)})
        return [Section("filters", "First-layer filters", GUIDES["filters"],
                        figures=[figure(plots.filter_grid(shown, run.styles()), "filters", run)],
                        table=table(pd.DataFrame(rows), "filters", run) if rows else None)]

    def _neighbours(self, run: RunArtifacts) -> list[Section]:
        nn_arrays = run.first_arrays("neighbours")
        if not nn_arrays or "query_labels" not in nn_arrays:
            return []
        names = run.dataset.get("class_names", [])
        models = run.order([k[:-7] for k in nn_arrays if k.endswith("_images") and k != "query_images"])
        panels = []
        for q in range(len(nn_arrays["query_labels"])):
            rows = []
            for m in models:
                found = nn_arrays[f"{m}_labels"][q]
                same = sum(int(label) == int(nn_arrays["query_labels"][q]) for label in found)
                rows.append((f"{run.style(m)[0]} ({same}/{len(found)})", nn_arrays[f"{m}_images"][q]))
            panels.append((nn_arrays["query_images"][q], f"test image: {_class_name(names, nn_arrays['query_labels'][q])}",
                           rows))
        guide = GUIDES["neighbours"] + " In brackets: how many of the neighbours share the test image's class."
        return [Section("neighbours", "Nearest neighbours", guide,
                        figures=[figure(plots.neighbours_figure(panels), "neighbours", run)])]

    def _latent_usage(self, run: RunArtifacts) -> list[Section]:
        usage = {r: a for r in run.regimes() if (a := run.first_arrays(f"test_{r}")) is not None and "kl_per_dim" in a}
        if not usage:
            return []
        fig = plots.sorted_bars({run.style(r)[0]: a["kl_per_dim"] for r, a in usage.items()},
                                ylabel="KL per image (nats)", title="KL divergence per latent dimension, sorted")
        rows = [{"model": run.style(r)[0], "latent dimensions": len(a["kl_per_dim"]),
                 "active units (variance of μ > 0.01)": int((a["mean_variance_per_dim"] > 0.01).sum()),
                 "total KL (nats)": round(float(a["kl_per_dim"].sum()), 2)} for r, a in usage.items()]
        return [Section("latent-usage", "Latent usage (variational models)", GUIDES["latent-usage"],
                        figures=[figure(fig, "latent_usage", run)], table=table(pd.DataFrame(rows), "latent_usage", run))]
