"""Dimension by depth: how many dimensions each layer uses on test images (PCA 90%, participation
ratio, TwoNN intrinsic dimension)."""
from __future__ import annotations

from typing import Any

import pandas as pd

from replearn.analyses import plots
from replearn.data import stratified_subset
from replearn.metrics.dimension import participation_ratio, pca_dimension, twonn_dimension
from replearn.runtime.threads import map_tasks, task_workers
from replearn.analyses.base import Analysis, RunArtifacts, Section, SeedContext, register_analysis
from replearn.analyses.probes import layer_depths
from replearn.analyses.render import figure, table

GUIDE = ("How many dimensions each layer uses on test images: principal components needed for 90% of the "
         "variance, the participation ratio (a soft count of them), and the TwoNN intrinsic dimension of the data "
         "manifold. A stack that compresses shows falling curves with depth.")


def dimension_table(ctx: SeedContext) -> pd.DataFrame:
    depths = layer_depths({m: ctx.features[m] for m in ctx.fresh})
    jobs = [(model, layer) for model in ctx.fresh for layer in ctx.features[model]]
    cap = ctx.cfg.analysis.twonn_points
    twonn_rows = stratified_subset(ctx.data.test_y.numpy()[ctx.points], cap, ctx.cfg.data.split_seed)

    def measure(job: tuple[str, str]) -> dict[str, Any]:
        model, layer = job
        x = ctx.features[model][layer]["test"][ctx.points]
        return {"model": model, "seed": ctx.seed, "layer": layer, "depth": depths[layer],
                "features": int(x.shape[1]), "pca90": pca_dimension(x, 0.9),
                "participation_ratio": participation_ratio(x),
                "twonn": twonn_dimension(x[twonn_rows], max_points=cap, seed=ctx.seed)}

    return pd.DataFrame(map_tasks(measure, jobs, task_workers(len(jobs), phase="dimensions")))


@register_analysis("dimensions")
class Dimensions(Analysis):
    order = 40

    def compute(self, ctx: SeedContext) -> dict[str, pd.DataFrame]:
        return {"dimensions": dimension_table(ctx)}

    def sections(self, run: RunArtifacts) -> list[Section]:
        dims = run.csv("dimensions")
        if dims is None:
            return []
        means = (dims.groupby(["model", "layer"], sort=False)[["features", "pca90", "participation_ratio", "twonn"]]
                 .mean().reset_index())
        means["model"] = means.model.map(lambda m: run.style(m)[0])
        return [Section("dimensions", "Dimension by depth", GUIDE,
                        figures=[figure(plots.dimension_by_depth(dims, run.layer_order(), run.styles()),
                                        "dimension_by_depth", run)],
                        table=table(means, "dimensions", run, decimals=1),
                        caption="Means over seeds, on the same test images for every model and seed.")]
