"""Sanity checks for the attribution maps (Adebayo et al. 2018; ``replearn.interpret.sanity``): each
model's layers are randomised from the top down (cascading) and one at a time (independent), and the
maps of the randomised model are compared with the trained model's. Pairs of independent full randomisations
give each metric's floor (random vs random); a method whose trained maps survive full randomisation better than
that floor (or whose maps ignore the weights) is marked as not reflecting what the model learned
(``interpret.sanity.verdicts``). Cost: per model and method, 2 × layers − 1 attributions for the curves and
2 × ``draws`` for the floor, each on ``images`` images."""
from __future__ import annotations

import dataclasses

import textwrap

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from replearn.interpret.attributions import LABELS, attribute
from replearn.interpret.explain import model_color, model_label, order_models
from replearn.interpret.sanity import (INPUT_FREE, MARGIN, METRICS, NULL_METRICS, input_divisor,
                                null_floor, randomisation_tests, verdicts)
from replearn.config.options import opt
from replearn.analyses.plots import PAGE_WIDTH, plt
from replearn.analyses.attributions import (FIRST_SEED, ExplainOptions, check_explain_options, explain_setup, maps_for,
                                            sized_options)
from replearn.analyses.base import Analysis, RunArtifacts, Section, SeedContext, register_analysis
from replearn.analyses.render import figure, table

GUIDE = ("Does a map depend on what the model learned? Each curve follows how similar a method's maps stay to the "
         "trained model's as its layers are re-initialised from the top (the probe or head, then the latent, then "
         "each stage down to the first; solid), or one layer at a time (dashed). How low a similarity can fall "
         "depends on the metric and the method: two independently randomised models give the floor (random vs "
         "random). The verdict compares the trained-vs-randomised similarity with that floor, over several draws: "
         f"a method whose trained maps survive randomisation better than a random model's survive another (by more "
         f"than {MARGIN}), or whose maps do not depend on the weights at all (floor above {1 - MARGIN:g}), does not "
         "reflect what was learned. For methods that multiply by the input (Integrated Gradients, gradient × input) "
         "the absolute maps' ranking follows the input whatever the weights, so their verdict uses the input-free "
         "Spearman (the map divided by input − baseline). Passing is necessary, not sufficient: a map that changes "
         "with the weights can still say little about what the model uses.")
NULL_GUIDE_METRIC = {INPUT_FREE: "Spearman (input-free)", "spearman_abs": "Spearman (|map|)"}
SHORT = {"spearman_abs": "Spearman (|map|)", "spearman": "Spearman (signed)", "ssim": "SSIM", "hog": "HOG similarity"}
BASELINES = ("pixels", "random")  # models that learned nothing but their probe
COLORS = {"integrated_gradients": "#1f77b4", "smoothgrad": "#ff7f0e", "gradient_x_input": "#2ca02c",
          "gradcam": "#d62728"}


SANITY_IMAGES = 16  # the default number of images for a verdict, on images of up to 64×64 pixels


@dataclass
class SanityOptions(ExplainOptions):
    images: int | None = opt(None, "test images whose maps are compared before and after randomisation (default: "
                                   f"{SANITY_IMAGES} up to 64×64 pixels, the attribution grid's number above; "
                                   "never more than the test split holds)", min=1)
    draws: int = opt(3, "pairs of independent full randomisations: the trained-vs-random similarity and the "
                        "random-vs-random floor of every metric, with their spread over the draws", min=1, max=50)
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
        check_explain_options(self.sized(data), self.name, cfg, data)

    def sized(self, data: Any) -> SanityOptions:
        """The options with an unset image count resolved: SANITY_IMAGES on small images, the attribution
        grid's per-size number above 64×64, and never more than the test split (a set count is kept, and
        refused by ``check`` when the split is smaller)."""
        if self.options.images is not None:
            return self.options
        shape = tuple(data.image_shape)
        wanted = SANITY_IMAGES if shape[-2] * shape[-1] <= 64 * 64 else sized_options(self.options, shape).images
        return dataclasses.replace(self.options, images=max(1, min(wanted, len(data.test_y))))

    def compute(self, ctx: SeedContext) -> dict[str, pd.DataFrame]:
        if not (ctx.first_seed or self.options.every_seed):
            return {}
        setup = explain_setup(ctx, self.sized(ctx.data))
        frames, nulls = [], []
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
                null = null_floor(target.model, maps_of, reference, self.options.draws, seed=ctx.seed,
                                  divisor=input_divisor(method, setup.x, setup.settings.baseline))
                nulls.append(null.assign(model=target.name, method=method, seed=ctx.seed))
        if not frames:
            return {}
        frame = pd.concat(frames, ignore_index=True)
        null_frame = pd.concat(nulls, ignore_index=True)
        return {"sanity": frame[["model", "seed", "method", "test", "layer", "step", *METRICS]],
                "sanity_null": null_frame[["model", "seed", "method", "kind", "draw", *NULL_METRICS]]}

    def sections(self, run: RunArtifacts) -> list[Section]:
        frame = run.csv("sanity")
        if frame is None or not {"model", "method", "test", "layer", "step", *METRICS} <= set(frame.columns):
            return []
        models = order_models(run, list(frame.model.unique()))
        null = run.csv("sanity_null")
        shown, bullets = verdict_table(null, models, run) if null is not None else (None, [])
        if null is None:
            bullets.append("This run saved no null floor (metrics/sanity_null.csv): its sanity checks have no verdict.")
        seeds = sorted(frame.seed.unique()) if "seed" in frame else []
        guide = GUIDE + (FIRST_SEED.format(name=self.name) if len(seeds) <= 1 else "")
        caption = (f"Similarities are means over the images and seeds ({len(seeds) or 1}); the table gives, after "
                   "every layer (and the probe or head) is randomised, each metric's trained-vs-random similarity "
                   "beside its random-vs-random floor, as mean [lowest, highest] over the draws of independent "
                   "randomisations. Layers are re-initialised with their own initialisers; a probe gets Gaussian "
                   "weights of the fitted ones' spread.")
        return [Section("sanity", "Sanity checks: do the maps depend on what was learned?", guide, bullets=bullets,
                        figures=[figure(sanity_figure(frame, models, run), "sanity", run)],
                        table=table(shown, "sanity", run) if shown is not None else None, caption=caption)]


def _spread(row: pd.Series, metric: str, kind: str) -> str:
    mean = row[f"{metric}__{kind}"]
    if not np.isfinite(mean):
        return "–"
    low, high = row[f"{metric}__{kind}__min"], row[f"{metric}__{kind}__max"]
    return f"{mean:.2f} [{low:.2f}, {high:.2f}]" if high > low else f"{mean:.2f}"


def verdict_table(null: pd.DataFrame, models: list[str], run: RunArtifacts) -> tuple[pd.DataFrame, list[str]]:
    """Per model and method: every metric's trained-vs-random similarity and random-vs-random floor (mean and
    range over draws, seeds pooled), the verdict and the metric it rests on; and one sentence per failing pair."""
    marks = verdicts(null.assign(draw=null.draw + 1000 * null.seed) if "seed" in null else null)
    marks["rank"] = marks.model.map({m: i for i, m in enumerate(models)})
    marks = marks.sort_values(["rank", "method"], kind="stable")
    rows, bullets = [], []
    for _, r in marks.iterrows():
        row = {"model": model_label(run, r.model), "method": LABELS.get(r.method, r.method), "draws": int(r.draws)}
        for metric in NULL_METRICS:
            if not np.isfinite(r[f"{metric}__trained_vs_random"]):
                continue
            short = NULL_GUIDE_METRIC.get(metric, SHORT.get(metric, metric))
            row[f"{short}: trained vs random"] = _spread(r, metric, "trained_vs_random")
            row[f"{short}: random vs random (floor)"] = _spread(r, metric, "random_vs_random")
        row["verdict rests on"] = NULL_GUIDE_METRIC.get(r.verdict_metric, r.verdict_metric)
        row["reflects what was learned (necessary, not sufficient)"] = "no" if r.not_reflecting else "passes"
        rows.append(row)
        if r.not_reflecting:
            why = ("its maps do not depend on the weights (two random models' maps agree at "
                   f"{r[f'{r.verdict_metric}__random_vs_random']:.2f})" if r.weight_independent else
                   f"its trained maps survive randomisation {r.above_floor:+.2f} above the floor")
            bullets.append(f"{LABELS.get(r.method, r.method)} on {model_label(run, r.model)}: does not reflect what "
                           f"was learned — {why}, on the {row['verdict rests on']}.")
    if not bullets and rows:
        bullets.append("Every method passes: after full randomisation its maps are no more similar to the trained "
                       "model's than two random models' maps are to each other. Passing is necessary, not "
                       "sufficient.")
    return pd.DataFrame(rows), bullets


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
