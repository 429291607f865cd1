"""Sanity checks for the attribution maps (Adebayo et al. 2018; ``replearn.interpret.sanity``): each
model's layers are randomised from the top down (cascading) and one at a time (independent), and the
maps of the randomised model are compared with the trained model's. A method whose maps survive full
randomisation is marked as not reflecting what the model learned."""
from __future__ import annotations

import textwrap

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from replearn.interpret.attributions import LABELS, attribute
from replearn.interpret.explain import model_color, model_label, order_models
from replearn.interpret.sanity import METRIC_LABELS, METRICS, THRESHOLD, not_reflecting, randomisation_tests
from replearn.config.options import opt
from replearn.analyses.plots import PAGE_WIDTH, plt
from replearn.analyses.attributions import FIRST_SEED, ExplainOptions, check_explain_options, explain_setup, maps_for
from replearn.analyses.base import Analysis, RunArtifacts, Section, SeedContext, register_analysis
from replearn.analyses.render import figure, table

GUIDE = ("Does a map depend on what the model learned? Each curve follows how similar a method's maps stay to the "
         "trained model's as its layers are re-initialised from the top (the probe or head, then the latent, then "
         "each stage down to the first; solid), or one layer at a time (dashed). A faithful method falls towards 0; "
         f"a method still at a Spearman rank correlation of {THRESHOLD} or more after every layer is randomised is "
         "marked as not reflecting what was learned.")
SHORT = {"spearman_abs": "Spearman (|map|)", "spearman": "Spearman (signed)", "ssim": "SSIM", "hog": "HOG similarity"}
BASELINES = ("pixels", "random")  # models that learned nothing but their probe
COLORS = {"integrated_gradients": "#1f77b4", "smoothgrad": "#ff7f0e", "gradient_x_input": "#2ca02c",
          "gradcam": "#d62728"}


@dataclass
class SanityOptions(ExplainOptions):
    images: int = opt(4, "test images whose maps are compared before and after randomisation (at most the test "
                      "split)", min=1)
    ig_steps: int = opt(8, "Integrated Gradients' steps from the dataset-mean image (each randomised model's maps "
                        "are computed anew: fewer steps than the attribution grid's)", min=1)
    baselines: bool = opt(False, "also check the baselines' maps: the random-init encoder's probe and the probe on "
                                 "raw pixels (default: the trained regimes only, through their probes and heads)")


@register_analysis("sanity")
class Sanity(Analysis):
    order = 93
    requires = ("probes",)
    Options = SanityOptions

    def check(self, cfg: Any, data: Any, layers: list[str]) -> None:
        check_explain_options(self.options, self.name, cfg, data)

    def compute(self, ctx: SeedContext) -> dict[str, pd.DataFrame]:
        if not (ctx.first_seed or self.options.every_seed):
            return {}
        setup = explain_setup(ctx, self.options)
        frames = []
        for target in setup.targets:
            if target.name in BASELINES and not self.options.baselines:
                continue
            for method in setup.methods:
                if not setup.applies(method, target):
                    continue
                reference = maps_for(ctx, setup, target, method)[0].maps

                def maps_of(model: Any, method: str = method) -> np.ndarray:
                    return attribute(method, model, setup.x, setup.y, setup.settings, seed=ctx.seed).maps

                frame = randomisation_tests(target.model, maps_of, seed=ctx.seed, reference=reference)
                frames.append(frame.assign(model=target.name, method=method, seed=ctx.seed))
        if not frames:
            return {}
        frame = pd.concat(frames, ignore_index=True)
        return {"sanity": frame[["model", "seed", "method", "test", "layer", "step", *METRICS]]}

    def sections(self, run: RunArtifacts) -> list[Section]:
        frame = run.csv("sanity")
        if frame is None or not {"model", "method", "test", "layer", "step", *METRICS} <= set(frame.columns):
            return []
        models = order_models(run, list(frame.model.unique()))
        marks = not_reflecting(frame.groupby(["model", "method", "test", "layer"], sort=False)
                               .mean(numeric_only=True).reset_index())
        full = (frame[frame.test == "cascading"].sort_values("step").groupby(["model", "method", "seed"]).tail(1)
                .groupby(["model", "method"], sort=False)[list(METRICS)].mean().reset_index())
        full = full.merge(marks[["model", "method", "not_reflecting"]], on=["model", "method"])
        full["rank"] = full.model.map({m: i for i, m in enumerate(models)})
        full = full.sort_values(["rank", "method"], kind="stable")
        shown = pd.DataFrame({"model": [model_label(run, m) for m in full.model],
                              "method": [LABELS.get(m, m) for m in full.method],
                              **{f"{METRIC_LABELS[k]} after full randomisation": full[k].to_numpy() for k in METRICS},
                              "reflects what was learned": ~full.not_reflecting.astype(bool)})
        bullets = []
        for method, group in full.groupby("method", sort=False):
            failing = [model_label(run, m) for m in group.model[group.not_reflecting.astype(bool)]]
            if failing:
                bullets.append(f"{LABELS.get(method, method)}: not reflecting what was learned for "
                               f"{', '.join(failing)} (Spearman rank correlation of the absolute maps ≥ {THRESHOLD} "
                               "after every layer is randomised).")
        if not bullets:
            bullets.append(f"Every method's maps change once the layers are randomised (Spearman rank correlation "
                           f"of the absolute maps below {THRESHOLD} for every model).")
        seeds = sorted(frame.seed.unique()) if "seed" in frame else []
        guide = GUIDE + (FIRST_SEED.format(name=self.name) if len(seeds) <= 1 else "")
        caption = (f"Similarities are means over the images and seeds ({len(seeds) or 1}); the table's are after "
                   "every layer (and the probe or head) is randomised. Layers are re-initialised with their own "
                   "initialisers; a probe gets Gaussian weights of the fitted ones' spread.")
        return [Section("sanity", "Sanity checks: do the maps depend on what was learned?", guide, bullets=bullets,
                        figures=[figure(sanity_figure(frame, models, run), "sanity", run)],
                        table=table(shown, "sanity", run), caption=caption)]


# models side by side in the sanity figure before it wraps onto another block of rows
SANITY_COLUMNS = 5


def sanity_figure(frame: pd.DataFrame, models: list[str], run: RunArtifacts) -> Any:
    """Rows: the four similarities; columns: the models; one curve per method, solid for cascading and dashed for
    independent randomisation, by the layers from the top down."""
    means = frame.groupby(["model", "method", "test", "layer", "step"], sort=False)[list(METRICS)].mean().reset_index()
    per_row = min(len(models), SANITY_COLUMNS)
    blocks = (len(models) + per_row - 1) // per_row
    tick_room = 0.06 * max((len(str(v)) for v in means.layer.unique()), default=6) + 0.15
    height = blocks * (1.3 * len(METRICS) + 0.35 + tick_room) + 0.5
    fig, grid = plt.subplots(blocks * len(METRICS), per_row, figsize=(PAGE_WIDTH, height), squeeze=False,
                             sharey="row")
    for spare in range(len(models), blocks * per_row):
        for r in range(len(METRICS)):
            grid[(spare // per_row) * len(METRICS) + r, spare % per_row].set_visible(False)
    axes = grid
    for index, model in enumerate(models):
        block, c = divmod(index, per_row)
        part = means[means.model == model]
        layers = part.sort_values("step").drop_duplicates("step").layer.tolist()
        for r, metric in enumerate(METRICS):
            ax = grid[block * len(METRICS) + r, c]
            for (method, test), g in part.groupby(["method", "test"], sort=False):
                g = g.sort_values("step")
                ax.plot(g.step, g[metric], "-o" if test == "cascading" else "--", ms=3,
                        color=COLORS.get(method, "#7f7f7f"), alpha=1.0 if test == "cascading" else 0.6,
                        label=LABELS.get(method, method) if test == "cascading" else None)
            ax.axhline(0, color="#bbbbbb", lw=0.6)
            ax.set_ylim(-0.5, 1.05)
            ax.set_xticks(range(1, len(layers) + 1), layers if r == len(METRICS) - 1 else [], rotation=90,
                          fontsize=7)
            ax.tick_params(axis="y", labelsize=7)
            if r == 0:
                ax.set_title(textwrap.fill(model_label(run, model), 26), color=model_color(run, model), fontsize=8)
            if c == 0:
                ax.set_ylabel(SHORT[metric], fontsize=7)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    for ax in axes.ravel():
        h, l = ax.get_legend_handles_labels()
        for hh, ll in zip(h, l):
            if ll not in labels:
                handles.append(hh)
                labels.append(ll)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(handles), 4), frameon=False, fontsize=8)
    # fixed margins in inches (tight_layout measures every tick label of the grid, which costs more than drawing
    # it): room for the legend below, the column titles above each block and the layer names under it
    legend = 0.25 * ((len(handles) + 3) // 4) + 0.15
    fig.subplots_adjust(left=0.08, right=0.99, top=1 - 0.45 / height, bottom=(legend + tick_room) / height,
                        hspace=(0.5 + tick_room) / 1.3 if blocks > 1 else 0.12, wspace=0.08)
    return fig
