"""2-D UMAP projections of each model's test-set final layer (first seed), with trustworthiness."""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from replearn.analyses import plots
from replearn.data import stratified_subset
from replearn.errors import ConfigError
from replearn.runtime.log import log
from replearn.runtime.threads import map_tasks, task_workers
from replearn.metrics.umap import trustworthiness, umap_embed
from replearn.analyses.base import Analysis, RunArtifacts, Section, SeedContext, final_layer, register_analysis
from replearn.analyses.render import figure, table

GUIDE = ("2-D UMAP embeddings of test-set latent vectors, coloured by class, one panel per model. Trustworthiness "
         "(1 = every embedded neighbourhood is a true one) says how far to trust local structure; distances between "
         "far-apart clusters mean little in UMAP.")
BACKENDS = {"replearn": ("replearn's reimplementation of UMAP in torch (replearn.metrics.umap.umap_embed: the same "
                         "steps as umap-learn, on PCA-reduced features), not umap-learn itself; on 10k latent "
                         "vectors its trustworthiness was 0.0023 below umap-learn's, at 11.7× the speed "
                         "(benchmarks/bench_projection.py, an earlier run). analysis.umap_backend=umap-learn uses "
                         "the reference implementation."),
            "umap-learn": "umap-learn (umap.UMAP, the reference implementation)."}


def umap_learn_embed(x: np.ndarray, n_neighbors: int = 15, seed: int = 0) -> np.ndarray:
    """2-D embedding by umap-learn (the reference implementation), imported only when chosen."""
    try:
        import umap
    except ImportError as exc:
        raise ConfigError("analysis.umap_backend is umap-learn, but umap-learn is not installed",
                          "pip install 'replearn[umap]', or set analysis.umap_backend=replearn") from exc
    return umap.UMAP(n_neighbors=n_neighbors, random_state=seed).fit_transform(x).astype(np.float32)


EMBEDDERS = {"replearn": umap_embed, "umap-learn": umap_learn_embed}


@register_analysis("projection")
class Projection(Analysis):
    order = 80

    def compute(self, ctx: SeedContext) -> dict[str, pd.DataFrame]:
        n = ctx.cfg.analysis.projection_points
        if n == 0 or not ctx.first_seed:
            return {}
        test_y = ctx.data.test_y.numpy()
        keep = stratified_subset(test_y, n, ctx.seed)
        models = list(ctx.features)
        embed = EMBEDDERS[ctx.cfg.analysis.umap_backend]

        def project(model: str) -> tuple[np.ndarray, dict[str, Any]]:
            layer = final_layer(ctx.features[model])
            x = ctx.features[model][layer]["test"][keep]
            started = time.perf_counter()
            coords = embed(x, n_neighbors=ctx.cfg.analysis.projection_neighbors, seed=ctx.seed)
            seconds = time.perf_counter() - started
            tw = trustworthiness(x, coords, n_neighbors=min(5, max(1, len(keep) // 2 - 1)))
            log(f"  projection {model}: {len(keep)} points, trustworthiness {tw:.3f} ({seconds:.1f}s)")
            return coords, {"model": model, "seed": ctx.seed, "layer": layer, "points": len(keep),
                            "trustworthiness": tw, "seconds": round(seconds, 2)}

        outcomes = map_tasks(project, models, task_workers(len(models), phase="projection"))
        ctx.save("projection", labels=test_y[keep], indices=keep,
                 **{model: coords for model, (coords, _) in zip(models, outcomes)})
        return {"projection": pd.DataFrame([row for _, row in outcomes])}

    def sections(self, run: RunArtifacts) -> list[Section]:
        projection = run.csv("projection")
        arrays = run.first_arrays("projection")
        if projection is None or arrays is None or "labels" not in arrays:
            return []
        shown = run.order([m for m in arrays if m not in ("labels", "indices")])
        tw = dict(zip(projection.model, projection.trustworthiness))
        titles = {m: f"{run.style(m)[0]}\ntrustworthiness {tw.get(m, float('nan')):.3f}" for m in shown}
        fig = plots.projection_panels({m: arrays[m] for m in shown}, arrays["labels"],
                                      run.dataset.get("class_names", []), titles)
        shown = projection.assign(model=projection.model.map(lambda m: run.style(m)[0]))
        backend = (run.config.get("analysis") or {}).get("umap_backend", "replearn")
        guide = GUIDE + " Embeddings by " + BACKENDS.get(backend, str(backend))
        return [Section("projection", "UMAP of the latent space", guide, figures=[figure(fig, "umap", run)],
                        table=table(shown, "projection", run, decimals={"trustworthiness": 4, "seconds": 1}))]
