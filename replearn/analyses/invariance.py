"""Invariance and abstraction by depth: how far each layer's representation moves under small nuisance
transformations of the same test image, against how far it moves between different images of the same and
of different classes (``replearn.interpret.invariance``), for raw pixels, the random-init encoder and every
regime on the same test images and the same transformed copies.

Also the small helpers the interpretability analyses share: how many test images an ``images`` option
means, and the check of ``images`` and ``layers`` options against the run's data and encoder."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from replearn.analyses import plots
from replearn.config.sections import Config
from replearn.data import STREAMED_ANALYSIS_IMAGES, stratified_subset
from replearn.errors import ConfigError
from replearn.interpret.invariance import NUISANCE_HELP, NUISANCES, encoder_features, invariance_rows
from replearn.config.options import opt
from replearn.analyses.base import Analysis, RunArtifacts, Section, SeedContext, register_analysis
from replearn.analyses.render import figure, table

GUIDE = ("How far each layer's representation of a test image moves when the image is slightly transformed "
         "(translated, rotated, noised, its contrast or brightness changed), relative to the distance between two "
         "different test images of the same class: invariance = 1 − d(nuisance) / d(same class), 1 when the layer "
         "ignores the nuisance, 0 when the nuisance moves it as far as swapping to another image of the class. The "
         "last panel is the class contrast, 1 − d(same class) / d(other class): a layer abstracts when invariance and "
         "class contrast grow together with depth. Both can be negative: invariance below 0 means the nuisance moves "
         "the representation further than swapping to another image of the class does (e.g. −0.7: 1.7 times as "
         "far), class contrast below 0 that images of one class lie further apart than images of different classes. "
         "This is a distance ratio over whole representations (a relative-displacement measure), not Goodfellow et "
         "al. (2009)'s invariance score, which is a per-unit ratio of local to global firing rates; their paper "
         "is cited for the question, not the formula.")


# ---------------------------------------------------------------- helpers shared by the interpretability analyses

def analysed_test_count(cfg: Config, data: Any) -> int:
    """How many test images the analyses see: the test split, cut to ``analysis.max_images_per_split``
    (streamed data: at most STREAMED_ANALYSIS_IMAGES when it is 0), as ``data.analysis_view`` cuts it."""
    n = len(data.test_y)
    cap = cfg.analysis.max_images_per_split or (STREAMED_ANALYSIS_IMAGES if data.streamed else 0)
    return min(n, cap) if cap else n


def check_images(analysis: str, images: int, cfg: Config, data: Any) -> None:
    """Refuse an ``images`` option larger than the analysed test split."""
    available = analysed_test_count(cfg, data)
    if images > available:
        raise ConfigError(f"analyses.{analysis}.images={images} is more than the {available} test images analysed",
                          f"set analyses.{analysis}.images to at most {available}, or 0 for all of them")


def check_layer_names(analysis: str, names: list[str], valid: list[str]) -> None:
    """Refuse a ``layers`` option naming a layer the encoder does not have."""
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise ConfigError(f"analyses.{analysis}.layers names {', '.join(repr(u[:60]) for u in unknown[:3])}, which the "
                          f"encoder does not have", f"choose from {', '.join(valid)} (or leave the list empty for all)")


def chosen_test_images(ctx: SeedContext, images: int, default_cap: int) -> np.ndarray:
    """Indices of the analysed test images an analysis uses: ``images`` of them (0: all, up to ``default_cap``),
    a class-stratified subset chosen by the split seed, so every model and seed sees the same images."""
    y = ctx.data.test_y.numpy()
    size = images or min(len(y), default_cap)
    return np.sort(stratified_subset(y, min(size, len(y)), ctx.cfg.data.split_seed))


def model_device(module: torch.nn.Module) -> torch.device:
    return next((p.device for p in module.parameters()), torch.device("cpu"))


def encoder_depths(layer_names: list[str]) -> dict[str, int]:
    """Depth of each layer as the probe table counts it: input 0, then the encoder's layers in order."""
    return {"input": 0, **{name: i + 1 for i, name in enumerate(layer_names)}}


def mean_over_seeds(frame: pd.DataFrame, keys: list[str], columns: list[str]) -> pd.DataFrame:
    return frame.groupby(keys, sort=False)[columns].mean().reset_index()


# ---------------------------------------------------------------- the analysis

@dataclass
class InvarianceOptions:
    images: int = opt(0, "test images whose transformed copies are compared (0: all analysed ones, at most 200)", min=0)
    nuisances: list[str] = opt(list(NUISANCES), f"nuisance transformations: {NUISANCE_HELP}",
                               choices=tuple(NUISANCES), list_default=True)
    layers: list[str] = opt([], "encoder layers measured (empty: all of them)", list_default=True, may_be_empty=True)


@register_analysis("invariance")
class Invariance(Analysis):
    order = 72
    Options = InvarianceOptions
    DEFAULT_IMAGES = 200

    def check(self, cfg: Config, data: Any, layers: list[str]) -> None:
        check_images(self.name, self.options.images, cfg, data)
        check_layer_names(self.name, self.options.layers, layers)

    def compute(self, ctx: SeedContext) -> dict[str, pd.DataFrame]:
        idx = torch.from_numpy(chosen_test_images(ctx, self.options.images, self.DEFAULT_IMAGES))
        x, y = ctx.data.test_x[idx], ctx.data.test_y[idx]
        mean, std, seed = ctx.data.mean, ctx.data.std, ctx.cfg.data.split_seed
        nuisances = list(dict.fromkeys(self.options.nuisances))
        rows = []
        if "pixels" in ctx.fresh:
            rows += [{"model": "pixels", "depth": 0, **r}
                     for r in invariance_rows(lambda t: {"input": t.flatten(1)}, x, y, nuisances, mean, std, seed)]
        for model, encoder in ctx.encoders.items():
            if model not in ctx.features:
                continue
            depths = encoder_depths(encoder.layer_names)
            wanted = [n for n in (self.options.layers or encoder.layer_names) if n != "input"]
            fn = encoder_features(encoder, wanted, ctx.cfg.analysis.max_stage_features, model_device(encoder))
            rows += [{"model": model, "depth": depths[r["layer"]], **r}
                     for r in invariance_rows(fn, x, y, nuisances, mean, std, seed)]
        frame = pd.DataFrame(rows)
        if len(frame):
            frame.insert(1, "seed", ctx.seed)
            frame["images"] = len(idx)
        return {"invariance": frame}

    def sections(self, run: RunArtifacts) -> list[Section]:
        frame = run.csv("invariance")
        if frame is None or not {"model", "layer", "nuisance", "invariance"} <= set(frame.columns):
            return []
        means = mean_over_seeds(frame, ["model", "layer", "nuisance"], ["invariance", "class_contrast", "depth"])
        layer_order = list(means.groupby("layer").depth.max().sort_values(kind="stable").index)
        fig = invariance_figure(means, layer_order, run.order(list(means.model.unique())), run.styles())
        final = {m: g.sort_values("depth").layer.iloc[-1] for m, g in means.groupby("model")}
        rows = []
        for model in run.order(list(final)):
            sub = means[(means.model == model) & (means.layer == final[model])]
            row: dict[str, Any] = {"model": run.style(model)[0], "layer": final[model]}
            row.update({f"invariance: {n}": v for n, v in zip(sub.nuisance, sub.invariance)})
            row["class contrast"] = float(sub.class_contrast.iloc[0]) if len(sub) else np.nan
            rows.append(row)
        images = int(frame["images"].iloc[0]) if "images" in frame else None
        caption = (f"Final layer of each model (raw pixels: the image itself); {images} test images"
                   if images else "Final layer of each model") + "; means over seeds."
        return [Section("invariance", "Invariance and abstraction by depth", GUIDE,
                        figures=[figure(fig, "invariance", run)],
                        table=table(pd.DataFrame(rows), "invariance", run), caption=caption,
                        references=["The question (not the formula): Goodfellow, Le, Saxe, Lee, Ng (2009). Measuring "
                                    "invariances in deep networks. NeurIPS — their score is per unit, local over "
                                    "global firing rate; this section's is a distance ratio over the whole layer."])]


def invariance_figure(means: pd.DataFrame, layer_order: list[str], models: list[str],
                      styles: dict[str, tuple[str, str]]) -> Any:
    """One panel per nuisance (invariance against depth) and one of the class contrast; a line per encoder
    starting from the raw pixels' value at the input."""
    panels = list(dict.fromkeys(means.nuisance)) + ["class contrast"]
    fig, axes = plots._grid(len(panels), 2.5, columns=3)
    x_of = {name: i for i, name in enumerate(layer_order)}
    pixels = means[means.model == "pixels"]
    for ax, panel in zip(axes, panels):
        column = "class_contrast" if panel == "class contrast" else "invariance"
        sub = means if panel == "class contrast" else means[means.nuisance == panel]
        start = sub[sub.model == "pixels"][column]
        for model in models:
            group = sub[sub.model == model].drop_duplicates("layer").set_index("layer")
            layers = [layer for layer in layer_order if layer in group.index]
            xs, ys = [x_of[layer] for layer in layers], [float(group.loc[layer, column]) for layer in layers]
            if model != "pixels" and len(start) and "input" in x_of:
                xs, ys = [x_of["input"]] + xs, [float(start.iloc[0])] + ys
            label, color = styles.get(model, (model, "#7f7f7f"))
            ax.plot(xs, ys, "-o" if len(xs) > 1 else "D", ms=4, color=color, label=label)
        ax.set_xticks(range(len(layer_order)), layer_order, rotation=30)
        ax.set_title(panel if panel == "class contrast" else f"invariance: {panel}")
        ax.grid(alpha=0.3)
    del pixels
    plots._legend_below(fig, axes, columns=4)
    return plots._finish(fig, legend_rows=(len(models) + 3) // 4)
