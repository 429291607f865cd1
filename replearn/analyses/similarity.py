"""Representation similarity: layer × layer linear CKA between every pair of trained regimes, each
regime against its own random initialisation, and each regime against itself from another seed (the
noise floor that cross-regime similarity should be read against)."""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd

from replearn.analyses import plots
from replearn.runtime.log import log
from replearn.metrics.similarity import cka_pairs
from replearn.analyses.base import Analysis, RunArtifacts, RunContext, Section, SeedContext, register_analysis
from replearn.analyses.render import figure, table

GUIDE = ("Linear CKA between every pair of layers of two encoders (1 = same representation up to rotation and "
         "scale), estimated from unbiased HSIC over minibatches of the same test images. Compare cross-regime "
         "similarity with the seed-vs-seed maps: those are the noise floor.")


SAVED_POINTS = 2000  # latents kept per regime for CKA between runs (`replearn compare`)


def save_latents(ctx: SeedContext, latents: dict[str, Any]) -> None:
    """Each regime's latent on the first ``SAVED_POINTS`` evaluation images, with their indices and labels
    (artifacts/cka_features_seed<S>.npz), so that a comparison of runs can measure CKA between runs on the
    same images."""
    if latents:
        points = ctx.points[:SAVED_POINTS]
        ctx.save("cka_features", points=np.asarray(points), labels=ctx.data.test_y.numpy()[points],
                 **{m: np.asarray(f[:SAVED_POINTS], dtype=np.float32) for m, f in latents.items()})


def long_format(matrix: pd.DataFrame, pair: str, seed: int) -> pd.DataFrame:
    return pd.DataFrame([{"pair": pair, "seed": seed, "layer_a": la, "layer_b": lb, "cka": float(matrix.loc[la, lb])}
                         for la in matrix.index for lb in matrix.columns])


# above this many pairs of models the layer × layer heatmaps give way to one model × model matrix per seed
MAX_HEATMAPS = 6


@register_analysis("similarity")
class Similarity(Analysis):
    order = 50

    def compute(self, ctx: SeedContext) -> dict[str, pd.DataFrame]:
        regimes = ctx.regimes()
        kept = {m: {layer: f["test"][ctx.points] for layer, f in ctx.features[m].items()}
                for m in [*regimes, "random"] if m in ctx.features}
        ctx.memory(self.name)[ctx.seed] = {m: kept[m] for m in regimes}
        save_latents(ctx, {m: kept[m]["latent"] for m in regimes if "latent" in kept[m]})
        pairs = list(itertools.combinations(regimes, 2)) + [(r, "random") for r in regimes if "random" in kept]
        if not pairs:
            return {}
        matrices = cka_pairs(kept, pairs, ctx.cfg.analysis.cka_batch_size, ctx.seed)
        return {"cka": pd.concat([long_format(m, f"{a} vs {b}", ctx.seed) for (a, b), m in matrices.items()],
                                 ignore_index=True)}

    def finish(self, run: RunContext) -> dict[str, pd.DataFrame]:
        """CKA of each regime between every two seeds, on the same test images."""
        kept = run.memory.get(self.name, {})
        frames = []
        for s1, s2 in itertools.combinations(sorted(kept), 2):
            regimes = [r for r in kept[s1] if r in kept[s2]]
            if not regimes:
                continue
            log(f"seed-vs-seed similarity: seeds {s1} and {s2}")
            models = {**{f"{r}@{s1}": kept[s1][r] for r in regimes}, **{f"{r}@{s2}": kept[s2][r] for r in regimes}}
            pairs = [(f"{r}@{s1}", f"{r}@{s2}") for r in regimes]
            matrices = cka_pairs(models, pairs, run.cfg.analysis.cka_batch_size, s1)
            frames += [long_format(matrices[p], f"{r} seed {s1} vs seed {s2}", s1) for r, p in zip(regimes, pairs)]
        return {"cka": pd.concat(frames, ignore_index=True)} if frames else {}

    def sections(self, run: RunArtifacts) -> list[Section]:
        cka = run.csv("cka")
        if cka is None:
            return []
        order = run.layer_order()
        diag = cka[cka.layer_a == cka.layer_b].groupby(["pair", "layer_a"], sort=False).cka.mean().unstack()
        diag = diag[[layer for layer in order if layer in diag.columns]].reset_index()
        pairs = [p for p in dict.fromkeys(cka.pair) if " seed " not in p]
        if len(pairs) <= MAX_HEATMAPS:
            fig = plots.cka_heatmaps(cka, order)
        else:  # one model × model matrix of the final layer per seed; every layer's value is in the table
            models = run.order(list(dict.fromkeys(m for p in pairs for m in p.split(" vs ", 1))))
            final = next((layer for layer in reversed(order) if layer in set(cka.layer_a)), "latent")
            fig = plots.cka_matrix(cka, models, final, {m: run.style(m)[0] for m in models})
        return [Section("similarity", "Representation similarity (CKA)", GUIDE,
                        figures=[figure(fig, "cka", run)],
                        table=table(diag.rename(columns={"pair": "pair (same layer)"}), "cka_same_layer", run),
                        caption="CKA of each layer with the same layer of the other model, mean over seeds.")]
