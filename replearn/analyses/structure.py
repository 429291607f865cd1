"""Structure without labels: k-means agreement with the classes (NMI, ARI), the silhouette of the true
classes, and the overlap of k-nearest-neighbour sets between every pair of models (each model's
neighbour sets found once)."""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd
import torch

from replearn.analyses import plots
from replearn.runtime.threads import map_tasks, task_workers
from replearn.metrics.clustering import cluster_scores, neighbour_sets, set_overlap
from replearn.analyses.base import Analysis, RunArtifacts, Section, SeedContext, final_layer, register_analysis
from replearn.analyses.render import figure, table

GUIDE = ("How class structure shows without labels: k-means on the final layer scored against the classes (NMI, "
         "ARI), the silhouette of the true classes (cosine), the UMAP projection's trustworthiness, and the fraction "
         "of 10-nearest-neighbour sets each pair of models shares.")
NEIGHBOURS = 10
SILHOUETTE_UNDEFINED = (" The silhouette is left blank: the analysed test images hold one image per class, and it "
                        "is defined only when some class has two (raise data.test_subset or analysis.analysis_points).")


@register_analysis("structure")
class Structure(Analysis):
    order = 70
    requires = ("projection",)  # its section shows the projection's trustworthiness (metrics/projection.csv)

    def compute(self, ctx: SeedContext) -> dict[str, pd.DataFrame]:
        test_y = ctx.data.test_y.numpy()[ctx.points]
        models = list(ctx.features)

        def final(model: str) -> torch.Tensor:
            return ctx.features[model][final_layer(ctx.features[model])]["test"][ctx.points]

        def scores(model: str) -> dict[str, Any]:
            return {"model": model, "seed": ctx.seed, **cluster_scores(final(model), test_y, ctx.seed,
                                                                     standardize=ctx.standardize(model))}

        cache = ctx.memory(self.name)  # the seed-independent baselines' neighbour sets, found once per run
        new = [m for m in models if m not in cache]
        sets = {**cache, **dict(zip(new, map_tasks(lambda m: neighbour_sets(final(m), NEIGHBOURS), new,
                                                    task_workers(len(new), phase="structure"))))}
        cache.update({m.name: sets[m.name] for m in ctx.run.models if m.kind == "baseline" and m.name in sets})
        overlaps = {frozenset(pair): set_overlap(sets[pair[0]], sets[pair[1]])
                    for pair in itertools.combinations(models, 2) if pair[0] in ctx.fresh or pair[1] in ctx.fresh}
        frame = pd.DataFrame(map_tasks(scores, ctx.fresh, task_workers(len(ctx.fresh), phase="structure")))
        for other in models:
            frame[f"knn_overlap_{other}"] = [overlaps.get(frozenset((m, other)), np.nan) for m in frame.model]
        return {"structure": frame}

    def sections(self, run: RunArtifacts) -> list[Section]:
        structure = run.csv("structure")
        if structure is None:
            return []
        projection = run.csv("projection")
        if projection is not None and "trustworthiness" in projection:
            tw = projection.groupby("model").trustworthiness.mean()
            structure = structure.assign(umap_trustworthiness=structure.model.map(tw))
        columns = [c for c in structure.columns if c != "seed"]
        means = structure[columns].groupby("model", sort=False).mean(numeric_only=True)
        means = means.reindex(run.order(list(means.index)))
        overlap = [c for c in means.columns if c.startswith("knn_overlap_")]
        means = means.rename(columns={c: f"10-NN overlap with {run.style(c.removeprefix('knn_overlap_'))[0]}"
                                      for c in overlap})
        means.index = [run.style(m)[0] for m in means.index]
        return [Section("structure", "Structure without labels", GUIDE,
                        figures=[figure(plots.structure_bars(structure, run.styles()), "structure", run)],
                        table=table(means.rename_axis("model").reset_index(), "structure", run),
                        caption="Final layer of each model on the analysis subset of test images; means over seeds."
                        + (SILHOUETTE_UNDEFINED if structure["silhouette"].isna().any() else ""))]
