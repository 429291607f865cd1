"""Faithfulness of the attribution maps (``replearn.interpret.faithfulness``): deletion and insertion
curves of each model's class probability as its most-attributed pixels are replaced by the dataset mean
or restored onto it (Petsiuk et al. 2018), with their areas under the curve beside a random order, and
Captum's infidelity and max-sensitivity, per method and model."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from replearn.interpret.attributions import LABELS, attribute
from replearn.interpret.explain import model_color, model_label, order_models
from replearn.interpret.faithfulness import (area_under, fractions, infidelity_scores, perturbation_curve, random_maps,
                                      sensitivity_scores)
from replearn.config.options import opt
from replearn.analyses.plots import PAGE_WIDTH, plt
from replearn.analyses.attributions import FIRST_SEED, ExplainOptions, check_explain_options, explain_setup, maps_for, sized_options
from replearn.analyses.base import Analysis, RunArtifacts, Section, SeedContext, register_analysis
from replearn.analyses.render import figure, table

FLOOR_RADIUS = 1e-9  # sensitivity_max at this radius: what the measure gives without a real perturbation
GUIDE = ("How well each method's ranking of pixels predicts what the model needs: deleting the most-attributed "
         "pixels first (replacing them by the dataset mean) should make the class probability fall fast (low "
         "deletion AUC), restoring them first onto the mean image should make it rise fast (high insertion AUC); "
         "a random order is the reference. Infidelity (lower is better) and max-sensitivity (lower is steadier) "
         "are Captum's; each max-sensitivity stands beside its floor, the same measure at a vanishing radius "
         f"({FLOOR_RADIUS:g} of the value range), which is ≈ 0 for a method whose map is fixed for a fixed input "
         "(SmoothGrad's noise is fixed per image) and would otherwise be the method's own sampling noise.")
RANDOM = "random"


@dataclass
class FaithfulnessOptions(ExplainOptions):
    steps: int | None = opt(None, "points of the deletion and insertion curves (fractions of the pixels; default "
                                  "by image size: 16, 8 above 64×64)", min=1)
    infidelity_samples: int | None = opt(None, "Gaussian perturbations per image for Captum's infidelity (0: skip "
                                               "it; default by image size: 8, 4 above 64×64)", min=0)
    sensitivity_samples: int | None = opt(None, "perturbations per image for Captum's sensitivity_max, each "
                                                "re-running the method (0: skip it; default by image size: 2, 1 "
                                                "above 64×64)", min=0)
    sensitivity_radius: float = opt(0.02, "sensitivity_max's perturbation radius, as a fraction of the inputs' "
                                           "value range", gt=0.0, max=1.0)


@register_analysis("faithfulness")
class Faithfulness(Analysis):
    order = 94
    requires = ("probes",)
    Options = FaithfulnessOptions

    def check(self, cfg: Any, data: Any, layers: list[str]) -> None:
        check_explain_options(self.options, self.name, cfg, data)

    def compute(self, ctx: SeedContext) -> dict[str, pd.DataFrame]:
        o = sized_options(self.options, ctx.data.image_shape)
        if not (ctx.first_seed or o.every_seed):
            return {}
        setup = explain_setup(ctx, o)
        reference = ctx.memory("interpret")["baseline"]
        xs = fractions(o.steps)
        rows, curves = [], {"fractions": xs}
        shape = (len(setup.index), *setup.x.shape[2:])
        for target in setup.targets:
            orders = {RANDOM: (random_maps(shape, ctx.seed), None)}
            for method in setup.methods:
                if setup.applies(method, target):
                    orders[method] = (maps_for(ctx, setup, target, method)[0].maps, method)
            for name, (maps, method) in orders.items():
                row: dict[str, Any] = {"model": target.name, "seed": ctx.seed, "method": name}
                for mode in ("deletion", "insertion"):
                    curve = perturbation_curve(target.model, setup.x, setup.y, maps, reference, mode, o.steps)
                    curves[f"{mode}__{name}__{target.name.replace(':', '-')}"] = curve.mean(0)
                    row[f"{mode}_auc"] = float(area_under(curve, xs).mean())
                if method is not None:
                    att = maps_for(ctx, setup, target, method)[0]
                    if o.infidelity_samples:
                        row["infidelity"] = float(np.mean(infidelity_scores(
                            target.model, setup.x.to(target.device), setup.y, att.values, o.infidelity_samples,
                            seed=ctx.seed)))
                    if o.sensitivity_samples:
                        def explain(inputs: torch.Tensor, labels: torch.Tensor, method: str = method) -> torch.Tensor:
                            return attribute(method, target.model, inputs, labels, setup.settings, seed=ctx.seed).values

                        row["sensitivity_max"] = float(np.mean(sensitivity_scores(
                            explain, setup.x.to(target.device), setup.y.to(target.device), o.sensitivity_samples,
                            o.sensitivity_radius, seed=ctx.seed)))
                        row["sensitivity_floor"] = float(np.mean(sensitivity_scores(
                            explain, setup.x.to(target.device), setup.y.to(target.device), 1, FLOOR_RADIUS,
                            seed=ctx.seed)))
                rows.append(row)
        curves["models"] = np.array([t.name for t in setup.targets])
        ctx.save("faithfulness", **curves)
        return {"faithfulness": pd.DataFrame(rows)}

    def sections(self, run: RunArtifacts) -> list[Section]:
        frame = run.csv("faithfulness")
        if frame is None or not {"model", "method", "deletion_auc", "insertion_auc"} <= set(frame.columns):
            return []
        models = order_models(run, list(frame.model.unique()))
        means = frame.groupby(["model", "method"], sort=False).mean(numeric_only=True).reset_index()
        random = means[means.method == RANDOM].set_index("model")
        shown_rows = []
        for model in models:
            for _, r in means[(means.model == model) & (means.method != RANDOM)].iterrows():
                base = random.loc[model] if model in random.index else None
                shown_rows.append({"model": model_label(run, model), "method": LABELS.get(r.method, r.method),
                                   "deletion AUC": r.deletion_auc,
                                   "deletion AUC, random order": np.nan if base is None else base.deletion_auc,
                                   "insertion AUC": r.insertion_auc,
                                   "insertion AUC, random order": np.nan if base is None else base.insertion_auc,
                                   **({"infidelity": r.infidelity} if "infidelity" in r else {}),
                                   **({"max-sensitivity": r.sensitivity_max} if "sensitivity_max" in r else {}),
                                   **({f"max-sensitivity at radius {FLOOR_RADIUS:g} (floor)": r.sensitivity_floor}
                                      if "sensitivity_floor" in r else {})})
        shown = pd.DataFrame(shown_rows)
        seeds = frame.seed.nunique() if "seed" in frame else 1
        guide = GUIDE + (FIRST_SEED.format(name=self.name) if seeds <= 1 else "")
        curves = run.first_arrays("faithfulness")
        figures = []
        if curves and "fractions" in curves:
            figures.append(figure(curves_figure(curves, models, [m for m in means.method.unique() if m != RANDOM], run),
                                  "faithfulness", run))
        caption = ("AUCs are means over the images (and seeds); the probability is the softmax of the model's "
                   "class logits for the image's true class. Infidelity is Captum's normalised infidelity under "
                   "Gaussian perturbations; max-sensitivity the largest relative change of the map under small "
                   "uniform perturbations of the input, beside the same measure at a vanishing radius (its floor: "
                   "what it reports when the input barely moves).")
        shape = run.dataset.get("image_shape")
        if isinstance(shape, list) and len(shape) == 3:
            o = sized_options(self.options, tuple(shape))
            caption += (f" Settings for {shape[1]}×{shape[2]} images (per-image-size defaults unless set under "
                        f"analyses.{self.name}): {o.images} images, curves of {o.steps} steps, {o.infidelity_samples} "
                        f"infidelity and {o.sensitivity_samples} sensitivity perturbations per image.")
        return [Section("faithfulness", "Faithfulness: deletion, insertion, infidelity, sensitivity", guide,
                        figures=figures, table=table(shown, "faithfulness", run) if len(shown) else None,
                        caption=caption)]


def curves_figure(curves: dict[str, np.ndarray], models: list[str], methods: list[str], run: RunArtifacts) -> Any:
    """Rows: deletion, insertion; columns: methods; one curve per model (dotted: a random order, mean of the
    models)."""
    xs = curves["fractions"]
    fig, axes = plt.subplots(2, max(1, len(methods)), figsize=(PAGE_WIDTH, 5.6), squeeze=False, sharey=True,
                             sharex=True)
    for r, mode in enumerate(("deletion", "insertion")):
        for c, method in enumerate(methods):
            ax = axes[r, c]
            randoms = [curves[f"{mode}__{RANDOM}__{m.replace(':', '-')}"] for m in models
                       if f"{mode}__{RANDOM}__{m.replace(':', '-')}" in curves]
            if randoms:
                ax.plot(xs, np.mean(randoms, 0), ":", color="black", lw=1.0, label="random order (mean of models)")
            for model in models:
                key = model.replace(":", "-")
                if f"{mode}__{method}__{key}" in curves:
                    ax.plot(xs, curves[f"{mode}__{method}__{key}"], "-" if not model.endswith(":head") else "--",
                            color=model_color(run, model), label=model_label(run, model))
            ax.set_ylim(0, 1.02)
            if r == 0:
                ax.set_title(LABELS.get(method, method))
            if r == 1:
                ax.set_xlabel("fraction of pixels")
            if c == 0:
                ax.set_ylabel(f"{mode}: p(true class)")
    handles, labels = [], []
    for ax in axes.ravel():
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in labels:
                handles.append(h)
                labels.append(l)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(handles)), frameon=False)
    # fixed margins: tight_layout measures every tick label, which costs more than drawing the panels
    fig.subplots_adjust(left=0.07, right=0.99, top=0.94, bottom=0.2, hspace=0.12, wspace=0.06)
    return fig
