"""Units: the class selectivity index of every channel of every layer (Morcos et al. 2018), dead units, the
test images that drive the most selective channels most, and feature visualisations of those channels
(activation maximisation regularised as in Olah et al. 2017), for the random-init encoder and every regime.

Selectivity and dead units are computed from the test features every analysis already has (stage maps
average-pooled as for the probes: a channel's mean over its pooled cells is its mean over the map); only
the feature visualisation runs the encoders again."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from replearn.analyses import plots
from replearn.config.sections import Config
from replearn.interpret.featvis import normalised_for_display, visualise
from replearn.interpret.selectivity import (channel_responses, class_selectivity, constant_units, dead_units, most_selective,
                                     top_images)
from replearn.config.options import opt
from replearn.analyses.base import Analysis, RunArtifacts, Section, SeedContext, register_analysis
from replearn.analyses.invariance import check_layer_names, encoder_depths, model_device
from replearn.analyses.render import figure, table

GUIDE_SELECTIVITY = ("How class-specific single channels are: the class selectivity index of each channel, (μ_max − "
                     "μ_−max) / (μ_max + μ_−max) of its mean response to each class (1: responds to one class only, 0: "
                     "to all alike), its distribution per layer and model, and the channels that never respond on a "
                     "test image (dead). Trained with labels, deep channels tend to grow selective; a reconstruction "
                     "objective keeps them more distributed.")
GUIDE_FEATVIS = ("What the most class-selective channels of each layer respond to: left of each group, the image "
                 "found by activation maximisation (frequency-space parameterisation with jitter, scaling and "
                 "rotation, as in Olah et al. 2017), then the test images that drive the channel most. Early layers "
                 "show strokes and edges; deep ones, when trained, parts or whole class shapes.")
SEP = "__"  # model, layer and field names in the saved arrays' keys


@dataclass
class UnitsOptions:
    channels: int = opt(2, "most class-selective channels per layer shown with their top images and visualised", min=1)
    top_images: int = opt(4, "test images shown for each of them (those it responds to most)", min=1)
    steps: int = opt(48, "optimisation steps of each feature visualisation", min=1)
    lr: float = opt(0.05, "Adam step size of the feature visualisation", gt=0.0)
    visualise: bool = opt(True, "run the feature visualisation (false: selectivity, dead units and top images only)")
    layers: list[str] = opt([], "encoder layers analysed (empty: all of them)", list_default=True, may_be_empty=True)


@register_analysis("units")
class Units(Analysis):
    order = 92
    Options = UnitsOptions

    def check(self, cfg: Config, data: Any, layers: list[str]) -> None:
        check_layer_names(self.name, self.options.layers, [name for name in layers if name != "input"])

    def compute(self, ctx: SeedContext) -> dict[str, pd.DataFrame]:
        o = self.options
        y = ctx.data.test_y
        rows, vis_rows, arrays = [], [], {}
        for model, encoder in ctx.encoders.items():
            if model not in ctx.features:
                continue
            infos = {info.name: info for info in encoder.feature_info}
            depths = encoder_depths(encoder.layer_names)
            targets, shown = [], []
            for layer in [n for n in (o.layers or encoder.layer_names) if n in ctx.features[model]]:
                features = ctx.features[model][layer]["test"]
                if layer not in infos or features.shape[1] % infos[layer].channels:
                    continue  # an output that is not channels × positions (e.g. tokens): no channels to score
                responses = channel_responses(features, infos[layer].channels)
                si = class_selectivity(responses, y, ctx.data.num_classes)
                signed = bool((features < 0).any())
                dead = constant_units(features, infos[layer].channels) if signed else dead_units(responses)
                alive = si[np.isfinite(si)]
                rows.append({"model": model, "seed": ctx.seed, "layer": layer, "depth": depths[layer],
                             "units": len(si), "dead": int(dead.sum()), "dead_fraction": float(dead.mean()),
                             "signed": signed,
                             "selectivity_mean": float(alive.mean()) if len(alive) else np.nan,
                             "selectivity_median": float(np.median(alive)) if len(alive) else np.nan,
                             "selectivity_p90": float(np.quantile(alive, 0.9)) if len(alive) else np.nan})
                chosen = most_selective(si, o.channels)
                key = f"{model}{SEP}{layer}"
                arrays[f"{key}{SEP}selectivity"] = si.astype(np.float32)
                arrays[f"{key}{SEP}channels"] = chosen
                if ctx.first_seed:
                    top = top_images(responses, chosen, o.top_images)
                    arrays[f"{key}{SEP}top"] = ctx.data.to_unit_range(
                        ctx.data.test_x[torch.from_numpy(top.reshape(-1))]).numpy().reshape(
                        *top.shape, *ctx.data.image_shape) if top.size else np.zeros((0,), np.float32)
                    arrays[f"{key}{SEP}top_labels"] = y.numpy()[top] if top.size else np.zeros((0,), int)
                targets += [(layer, int(c)) for c in chosen]
                shown += [(layer, int(c), float(si[c])) for c in chosen]
            if ctx.first_seed and o.visualise and targets:
                result = visualise(encoder, targets, ctx.data.mean, ctx.data.std, steps=o.steps, lr=o.lr,
                                   seed=ctx.cfg.data.split_seed, device=model_device(encoder))
                images = normalised_for_display(result["images"]).numpy()
                for i, (layer, channel, selectivity) in enumerate(shown):
                    vis_rows.append({"model": model, "seed": ctx.seed, "layer": layer, "channel": channel,
                                     "selectivity": selectivity, "activation_start": float(result["before"][i]),
                                     "activation_end": float(result["after"][i])})
                for layer in dict.fromkeys(layer for layer, _, _ in shown):
                    picks = [i for i, (name, _, _) in enumerate(shown) if name == layer]
                    arrays[f"{model}{SEP}{layer}{SEP}vis"] = images[picks]
        ctx.save("units", **arrays)
        tables = {"selectivity": pd.DataFrame(rows)}
        if vis_rows:
            tables["feature_visualisation"] = pd.DataFrame(vis_rows)
        return tables

    def sections(self, run: RunArtifacts) -> list[Section]:
        sections = []
        frame = run.csv("selectivity")
        arrays = run.first_arrays("units") or {}
        if frame is not None and {"model", "layer", "selectivity_mean", "dead"} <= set(frame.columns):
            means = frame.groupby(["model", "layer"], sort=False)[
                ["depth", "units", "dead", "dead_fraction", "selectivity_mean", "selectivity_median",
                 "selectivity_p90"]].mean().reset_index()
            models = run.order(list(means.model.unique()))
            layer_order = list(means.groupby("layer").depth.max().sort_values(kind="stable").index)
            distributions = {(m, layer): arrays[f"{m}{SEP}{layer}{SEP}selectivity"] for m in models
                             for layer in layer_order if f"{m}{SEP}{layer}{SEP}selectivity" in arrays}
            shown = means.assign(model=[run.style(m)[0] for m in means.model],
                                 dead_fraction=(100 * means.dead_fraction)).rename(
                columns={"dead_fraction": "dead (%)", "selectivity_mean": "mean selectivity",
                         "selectivity_median": "median selectivity", "selectivity_p90": "90th percentile"})
            order = {m: i for i, m in enumerate(models)}
            shown = shown.iloc[sorted(range(len(means)), key=lambda i: (order.get(means.model.iloc[i], 99),
                                                                         means.depth.iloc[i]))]
            figures = [figure(selectivity_figure(distributions, models, layer_order, run.styles()), "selectivity",
                              run)] if distributions else []
            signed = sorted(set(frame[frame.get("signed", False) == True].layer)) if "signed" in frame else []  # noqa: E712
            caption = ("Test images; dead: never a positive response on any of them; means over seeds."
                       + (f" Layers with negative values ({', '.join(signed)}) are rectified for the selectivity (a "
                          "negative response counts as none; units never positive are left out of it), and there a "
                          "unit is dead when its activation is the same on every test image." if signed else ""))
            sections.append(Section("selectivity", "Unit selectivity and dead units", GUIDE_SELECTIVITY,
                                    figures=figures, table=table(shown.drop(columns=["depth"]), "selectivity", run,
                                                                 decimals={"dead (%)": 1, "units": 0, "dead": 1}),
                                    caption=caption,
                                    references=["Morcos, Barrett, Rabinowitz, Botvinick (2018). On the importance of "
                                                "single directions for generalization. ICLR."]))
        vis = self._featvis(run, arrays)
        if vis is not None:
            sections.append(vis)
        return sections

    def _featvis(self, run: RunArtifacts, arrays: dict[str, np.ndarray]) -> Section | None:
        frame = run.csv("feature_visualisation")
        top_keys = [k for k in arrays if k.endswith(f"{SEP}top")]
        if not top_keys:
            return None
        models = run.order(list(dict.fromkeys(k.split(SEP)[0] for k in top_keys)))
        selectivity = run.csv("selectivity")
        layer_order = (list(selectivity.groupby("layer").depth.max().sort_values(kind="stable").index)
                       if selectivity is not None and "depth" in selectivity else [])
        rows, labels = [], []
        for model in models:
            for layer in [l for l in layer_order if f"{model}{SEP}{l}{SEP}top" in arrays] or \
                    [k.split(SEP)[1] for k in top_keys if k.startswith(f"{model}{SEP}")]:
                top = arrays[f"{model}{SEP}{layer}{SEP}top"]
                channels = arrays.get(f"{model}{SEP}{layer}{SEP}channels", np.arange(len(top)))
                vis = arrays.get(f"{model}{SEP}{layer}{SEP}vis")
                if top.ndim != 5 or not len(top):
                    continue
                blank = np.ones((1, *top.shape[2:]), np.float32)
                row = []
                for i in range(len(top)):
                    if i:
                        row.append(blank)
                    if vis is not None and len(vis) > i:
                        row.append(vis[i:i + 1])
                    row.append(top[i])
                rows.append(np.concatenate(row))
                labels.append(f"{run.style(model)[0]}, {layer}: " + ", ".join(f"#{int(c)}" for c in channels))
        if not rows:
            return None
        width = max(len(r) for r in rows)
        rows = [np.concatenate([r, np.ones((width - len(r), *r.shape[1:]), np.float32)]) if len(r) < width else r
                for r in rows]
        fig = plots.image_grid(rows, labels, cell=0.45)
        gains = ""
        if frame is not None and {"activation_start", "activation_end"} <= set(frame.columns) and len(frame):
            rose = int((frame.activation_end > frame.activation_start).sum())
            gains = f" The optimisation raised {rose} of {len(frame)} target activations (metrics/feature_visualisation.csv)."
        guide = GUIDE_FEATVIS if any(k.endswith(f"{SEP}vis") for k in arrays) else GUIDE_FEATVIS.split(":")[0] + \
            ": the test images that drive each channel most (feature visualisation was switched off)."
        return Section("feature-visualisation", "Feature visualisation and top-activating images", guide,
                       figures=[figure(fig, "feature_visualisation", run)],
                       caption="Each row: a model's layer and its most selective channels (#index), each as its "
                               "visualisation followed by its top test images; first seed." + gains,
                       references=["Olah, Mordvintsev, Schubert (2017). Feature visualization. Distill."])


def selectivity_figure(distributions: dict[tuple[str, str], np.ndarray], models: list[str], layer_order: list[str],
                       styles: dict[str, tuple[str, str]]) -> Any:
    """Box plots of the selectivity index per layer (groups along x), one box per model in its colour."""
    layers = [layer for layer in layer_order if any((m, layer) in distributions for m in models)]
    fig, ax = plots.plt.subplots(figsize=(min(plots.PAGE_WIDTH, 1.6 + 1.4 * len(layers) * max(1, len(models)) / 2),
                                          3.4))
    width = 0.8 / max(1, len(models))
    for j, model in enumerate(models):
        label, color = styles.get(model, (model, "#7f7f7f"))
        data, positions = [], []
        for i, layer in enumerate(layers):
            values = distributions.get((model, layer))
            if values is None:
                continue
            values = values[np.isfinite(values)]
            if len(values):
                data.append(values)
                positions.append(i - 0.4 + width * (j + 0.5))
        if data:
            box = ax.boxplot(data, positions=positions, widths=width * 0.9, patch_artist=True, showfliers=False,
                             manage_ticks=False)
            for patch in box["boxes"]:
                patch.set(facecolor=color, alpha=0.55, edgecolor=color)
            for part in ("medians", "whiskers", "caps"):
                for line in box[part]:
                    line.set(color=color)
            ax.plot([], [], "s", color=color, alpha=0.55, label=label)
    ax.set_xticks(range(len(layers)), layers)
    ax.set_ylabel("class selectivity index")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="upper left", fontsize=9, frameon=False, ncol=min(4, len(models)))
    fig.tight_layout()
    return fig
