"""Label efficiency: final-layer linear-probe accuracy when only a few labelled images per class are
available, per model (class-balanced draws; the penalty chosen on the validation split)."""
from __future__ import annotations

import pandas as pd

from replearn.analyses import plots
from replearn.runtime.threads import map_tasks, task_workers
from replearn.metrics.probes import ProbeFit, label_efficiency
from replearn.metrics.stats import format_mean_ci
from replearn.analyses.base import Analysis, RunArtifacts, Section, SeedContext, final_layer, register_analysis
from replearn.analyses.render import figure, table

GUIDE = ("Test accuracy of a linear probe on each model's final layer when only a few labelled images per class "
         "are available (class-balanced random draws; the band spans draws and seeds). Representations that "
         "organise images by class need fewer labels.")


def label_efficiency_table(ctx: SeedContext) -> pd.DataFrame:
    cfg, labels, probes = ctx.cfg, ctx.labels, ctx.tables["probes"]
    budget = cfg.train.labels_per_class  # under a label budget the training split is the budget's images: fewer only
    counts = [c for c in cfg.analysis.label_counts if not budget or c < budget]

    def model_frame(model: str) -> pd.DataFrame:
        layer = final_layer(ctx.features[model])
        f = ctx.features[model][layer]
        fit = ProbeFit(min(100, cfg.analysis.probe_max_iter), cfg.analysis.probe_tol, ctx.standardize(model),
                       cfg.analysis.probe_selection)
        val = None if budget else (f["val"], labels["val"])  # a budget: the penalty by cross-validation inside it
        frame = label_efficiency((f["train"], labels["train"]), val, (f["test"], labels["test"]),
                                 counts, cfg.analysis.label_draws, cfg.analysis.probe_l2_grid, ctx.seed, fit)
        full = probes[(probes.model == model) & (probes.layer == layer) & (probes.probe == "linear")]
        frame = pd.concat([frame, pd.DataFrame([{"per_class": -1, "labels": len(labels["train"]), "draw": 0,
                                                 "test_accuracy": float(full.test_accuracy.iloc[0]),
                                                 "val_accuracy": float(full.val_accuracy.iloc[0]),
                                                 "chosen": float(full.chosen.iloc[0])}])], ignore_index=True)
        frame.insert(0, "model", model)
        frame.insert(1, "seed", ctx.seed)
        frame.insert(2, "layer", layer)
        return frame

    frames = map_tasks(model_frame, ctx.fresh, task_workers(len(ctx.fresh), phase="label efficiency"))
    return pd.concat(frames, ignore_index=True)


@register_analysis("label_efficiency")
class LabelEfficiency(Analysis):
    order = 60
    requires = ("probes",)  # the full-label point is the probes' final-layer row (ctx.tables["probes"])

    def compute(self, ctx: SeedContext) -> dict[str, pd.DataFrame]:
        return {"label_efficiency": label_efficiency_table(ctx)}

    def sections(self, run: RunArtifacts) -> list[Section]:
        eff = run.csv("label_efficiency")
        if eff is None:
            return []
        shown = eff.assign(labels_per_class=eff.per_class.map(lambda c: "all" if c < 0 else str(c)))
        shown = shown.groupby(["model", "labels_per_class"], sort=False).test_accuracy.apply(format_mean_ci).unstack()
        shown = shown[sorted(shown.columns, key=lambda c: 10**9 if c == "all" else int(c))]
        shown = shown.reindex(run.order(list(shown.index)))
        shown.index = [run.style(m)[0] for m in shown.index]
        marked = {m.name for m in run.models if m.trained_with_labels}
        with_labels = [run.style(m)[0] for m in run.order(list(marked))]
        budget = (run.config.get("train") or {}).get("labels_per_class") or 0
        seen = f"the budget's {budget} labels per class" if budget else "all labels"
        caveat = (f" Models trained with {'labels' if budget else 'every label'} ({', '.join(with_labels)}; dashed) "
                  f"saw {seen} while training, so their few-label points measure how well their features transfer, "
                  "not label efficiency." if with_labels else "")
        if budget:
            caveat += (f" Under the label budget, column 'all' means the budget's {budget} labelled images per class,"
                       " the only labels any probe saw.")
        return [Section("labels", "Label efficiency", GUIDE + caveat,
                        figures=[figure(plots.label_efficiency_curves(eff, run.styles(), marked), "label_efficiency",
                                        run)],
                        table=table(shown.rename_axis("model").reset_index(), "label_efficiency", run),
                        caption="Test accuracy by labelled images per class (column 'all': every training "
                                "label). Brackets are 95% intervals over the random draws of labelled images and "
                                "the seeds together (a t-interval on the logit scale, inside [0, 1]); 'tie' means "
                                "every draw and seed gave the same accuracy.")]
