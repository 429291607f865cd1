"""Several similarity measures, and tests of the measures on the run's own models.

Per seed, on at most ``images`` test images (the same ones every seed): every chosen measure
(``replearn.metrics.similarity_measures``) between the final layers of each pair of models (raw pixels, PCA, the
random-init encoder and the regimes), and the functional measures on their final-layer probes' test
predictions; the same measures between two regimes at every layer; and the principal-component deletion test
of Ding et al. (2021): each regime's latent against itself with all but its top-k principal components deleted,
beside the change of a linear probe fitted on those truncated features. After every seed (with two or more):
the layer-identification test of Kornblith et al. (2019) — is a layer of one seed most similar to the same
layer of another seed? — and the specificity floor, a measure's same-layer value across seeds.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from replearn.runtime.log import log
from replearn.config.options import opt
from replearn.metrics.probes import linear_probe
from replearn.metrics.ranks import spearman
from replearn.metrics.similarity_measures import DEFAULT_MEASURES, FUNCTIONAL, MEASURES, disagreement, error_consistency, subsample
from replearn.analyses.base import Analysis, RunArtifacts, RunContext, Section, SeedContext, final_layer, register_analysis
from replearn.analyses.render import table
from replearn.rundir import layout
from replearn.errors import ReplearnError

REFERENCES = ["Kornblith, Norouzi, Lee & Hinton (2019). Similarity of neural network representations revisited. ICML.",
              "Ding, Denain & Steinhardt (2021). Grounding representation similarity through statistical testing. "
              "NeurIPS.",
              "Huh, Cheung, Wang & Isola (2024). The platonic representation hypothesis. ICML.",
              "Williams, Kunz, Kornblith & Linderman (2021). Generalized shape metrics on neural representations. "
              "NeurIPS.",
              "Raghu et al. (2017). SVCCA. NeurIPS; Morcos, Raghu & Bengio (2018). Insights on representational "
              "similarity in neural networks with canonical correlation. NeurIPS.",
              "Kriegeskorte, Mur & Bandettini (2008). Representational similarity analysis. Front. Syst. Neurosci.",
              "Geirhos, Meding & Wichmann (2020). Beyond accuracy: quantifying trial-by-trial behaviour of CNNs "
              "and humans by measuring error consistency. NeurIPS."]
BASELINES = ("pixels", "pca", "random")


@dataclass
class RulersOptions:
    measures: list[str] = opt(list(DEFAULT_MEASURES), "similarity measures computed (see docs/similarity.md; the "
                              "default ones are the cheap ones)", choices=tuple(MEASURES), list_default=True)
    images: int = opt(500, "test images the measures use (a seeded subsample of the analysed ones, the same every "
                      "seed): the kernel, kNN and RSA measures build images × images matrices", min=20, max=5000)
    keep_components: list[int] = opt([1, 4, 16], "principal components kept in the deletion test (Ding et "
                                     "al.): each regime's latent against itself with all but its top k deleted",
                                     min=1, list_default=True)


def _measure_all(names: list[str], x: Any, y: Any) -> dict[str, float]:
    """Each named measure of x and y; NaN for one that cannot be computed on so few images (the kNN measures
    need more than k + 1), so that a run with a tiny test split still finishes."""
    out = {}
    for name in names:
        try:
            out[name] = MEASURES[name].fn(x, y)
        except ReplearnError:
            out[name] = float("nan")
    return out


def _principal(train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The training features' mean and principal axes (rows, by decreasing variance)."""
    mean = train.double().mean(0)
    return mean, torch.linalg.svd(train.double() - mean, full_matrices=False)[2]


@register_analysis("rulers")
class Rulers(Analysis):
    order = 52
    requires = ("probes",)
    Options = RulersOptions

    def images(self, ctx: SeedContext) -> np.ndarray:
        return ctx.points[subsample(len(ctx.points), self.options.images, ctx.cfg.data.split_seed)]

    def compute(self, ctx: SeedContext) -> dict[str, pd.DataFrame]:
        names = list(dict.fromkeys(self.options.measures))
        idx = self.images(ctx)
        regimes = ctx.regimes()
        final = {m: ctx.features[m][final_layer(ctx.features[m])]["test"][idx]
                 for m in [*BASELINES, *regimes] if m in ctx.features}
        predictions = self._predictions(ctx)
        rows = []
        for a, b in itertools.combinations(final, 2):
            values = _measure_all(names, final[a], final[b])
            if a in predictions and b in predictions:
                values["disagreement"] = disagreement(predictions[a], predictions[b])
                values["error_consistency"] = error_consistency(predictions[a], predictions[b], predictions["labels"])
            rows += [{"seed": ctx.seed, "model_a": a, "model_b": b, "layer": "final", "measure": k, "value": v}
                     for k, v in values.items()]
        for a, b in itertools.combinations(regimes, 2):
            for layer in [layer for layer in ctx.features[a] if layer != "input" and layer in ctx.features[b]]:
                values = _measure_all(names, ctx.features[a][layer]["test"][idx], ctx.features[b][layer]["test"][idx])
                rows += [{"seed": ctx.seed, "model_a": a, "model_b": b, "layer": layer, "measure": k, "value": v}
                         for k, v in values.items()]
        ctx.memory(self.name)[ctx.seed] = {r: {layer: f["test"][idx] for layer, f in ctx.features[r].items()
                                               if layer != "input"} for r in regimes}
        out = {"similarity_measures": pd.DataFrame(rows)} if rows else {}
        deletion = self._deletion(ctx, names, idx)
        if len(deletion):
            out["similarity_deletion"] = deletion
        return out

    def _predictions(self, ctx: SeedContext) -> dict[str, np.ndarray]:
        """Each model's final-layer probe predictions on the analysed test images (the probes' saved file; the
        baselines' from the first seed, where they were probed), with the labels."""
        kept = ctx.memory(self.name + ".predictions")
        path = ctx.run.run_dir / layout.predictions(ctx.seed)
        if path.is_file():
            with np.load(path) as saved:
                kept.update({k: saved[k] for k in saved.files})
        return dict(kept)

    def _deletion(self, ctx: SeedContext, names: list[str], idx: np.ndarray) -> pd.DataFrame:
        """Ding et al.'s test: the latent with all but its top k principal components deleted, each measure of
        it against the full latent, and the change of a linear probe's test accuracy."""
        cfg, labels, rows = ctx.cfg, ctx.labels, []
        probes = ctx.tables.get("probes")
        for regime in ctx.regimes():
            layer = final_layer(ctx.features[regime])
            f = ctx.features[regime][layer]
            chosen = cfg.analysis.probe_l2_grid
            if probes is not None:
                row = probes[(probes.model == regime) & (probes.layer == layer) & (probes.probe == "linear")]
                chosen = [float(row.chosen.iloc[0])] if len(row) else chosen

            mean, axes = _principal(f["train"])
            scores = {split: (f[split].double() - mean) @ axes.T for split in ("train", "val", "test")}

            def accuracy(k: int, l2: list[float] = chosen, scores: dict[str, torch.Tensor] = scores) -> float:
                """Test accuracy of a linear probe on the top k principal components (the run's chosen L2)."""
                split = {s: (scores[s][:, :k].float(), labels[s]) for s in ("train", "val", "test")}
                return linear_probe(split["train"], split["val"], split["test"], l2, cfg.analysis.probe_max_iter,
                                    cfg.analysis.probe_tol, True).test_accuracy

            full = accuracy(len(axes))
            for k in sorted({k for k in self.options.keep_components if k < len(axes)}):
                kept = accuracy(k)
                truncated = scores["test"][idx, :k] @ axes[:k] + mean  # the latent with the other components deleted
                values = _measure_all(names, f["test"][idx], truncated)
                rows += [{"seed": ctx.seed, "model": regime, "layer": layer, "kept": k, "measure": name,
                          "value": v, "probe_drop": full - kept} for name, v in values.items()]
        return pd.DataFrame(rows)

    def finish(self, run: RunContext) -> dict[str, pd.DataFrame]:
        """Layer identification and the specificity floor: every layer of each regime in one seed against every
        layer of the same regime in another."""
        kept = run.memory.get(self.name, {})
        names = list(dict.fromkeys(self.options.measures))
        rows = []
        for s1, s2 in itertools.combinations(sorted(kept), 2):
            for regime in [r for r in kept[s1] if r in kept[s2]]:
                log(f"layer identification: {regime}, seeds {s1} and {s2}")
                layers = [layer for layer in kept[s1][regime] if layer in kept[s2][regime]]
                for la, lb in itertools.product(layers, layers):
                    for name, v in _measure_all(names, kept[s1][regime][la], kept[s2][regime][lb]).items():
                        rows.append({"model": regime, "seed_a": s1, "seed_b": s2, "layer_a": la, "layer_b": lb,
                                     "measure": name, "value": v})
        return {"similarity_seeds": pd.DataFrame(rows)} if rows else {}

    # ------------------------------------------------------------------ report

    def sections(self, run: RunArtifacts) -> list[Section]:
        out = []
        pairs = _numeric(run.csv("similarity_measures"), {"seed", "model_a", "model_b", "layer", "measure", "value"})
        if pairs is not None:
            out += pair_sections(pairs, run)
        seeds = _numeric(run.csv("similarity_seeds"), {"model", "seed_a", "seed_b", "layer_a", "layer_b", "measure",
                                                       "value"})
        deletion = _numeric(run.csv("similarity_deletion"), {"kept", "measure", "value", "probe_drop"})
        if seeds is not None or deletion is not None:
            out.append(test_section(seeds, pairs, deletion, run))
        return out


def _numeric(frame: pd.DataFrame | None, columns: set[str]) -> pd.DataFrame | None:
    """A saved table with the columns the report reads and its values as numbers, or None (a table another
    version or a damaged file left without them is not shown)."""
    if frame is None or not columns <= set(frame.columns):
        return None
    frame = frame.assign(**{c: pd.to_numeric(frame[c], errors="coerce") for c in ("value", "probe_drop", "kept")
                            if c in frame.columns})
    return frame if frame.value.notna().any() else None


def label(name: str) -> str:
    return MEASURES[name].label if name in MEASURES else FUNCTIONAL.get(name, name)


def oriented(name: str, values: pd.Series) -> pd.Series:
    """Values with larger = more similar (distances and disagreement negated)."""
    return -values if name == "disagreement" or (name in MEASURES and not MEASURES[name].higher_is_similar) else values


def pair_sections(pairs: pd.DataFrame, run: RunArtifacts) -> list[Section]:
    """The final layers' pairs by every measure (mean over seeds, rank among the pairs), and the measures' rank
    agreement over the pairs (Spearman's ρ)."""
    final = pairs[pairs.layer == "final"]
    if final.empty:
        return []
    final = final.assign(pair=[f"{run.style(a)[0]} vs {run.style(b)[0]}" for a, b in zip(final.model_a, final.model_b)])
    means = final.groupby(["pair", "measure"], sort=False).value.mean().unstack()
    measures = [m for m in [*MEASURES, *FUNCTIONAL] if m in means.columns]
    shown = pd.DataFrame({"pair (final layers)": means.index})
    for m in measures:
        rank = oriented(m, means[m]).rank(ascending=False, method="min")
        shown[label(m)] = [f"{v:.3f} (#{int(r)})" if np.isfinite(v) else "" for v, r in zip(means[m], rank)]
    seeds = int(final.seed.nunique())
    sections = [Section("rulers", "Regime pairs by several similarity measures", GUIDE_PAIRS,
                        table=table(shown, "similarity_measures_pairs", run),
                        caption=f"Each measure between the final layers (pixels: the input), mean over {seeds} "
                                f"seed{'s' if seeds != 1 else ''}, on {images_note(run)}; (#r) is the pair's rank by "
                                "that measure, 1 = most similar (Procrustes is a distance and disagreement a "
                                "fraction: smaller ranks first).",
                        references=REFERENCES)]
    complete = means[measures].dropna(axis=1, how="all").dropna()
    measures = list(complete.columns)
    if len(complete) >= 3 and len(measures) >= 2:
        ranks = pd.DataFrame({m: oriented(m, complete[m]) for m in measures})
        rho = ranks.corr(method="spearman")
        agreement = pd.DataFrame({"measure": [label(m) for m in measures],
                                  **{label(m): rho[m].values for m in measures}})
        sections.append(Section("rulers-agreement", "Do the measures rank the pairs alike?", GUIDE_AGREEMENT,
                                table=table(agreement, "similarity_measures_agreement", run, decimals=2),
                                caption=f"Spearman's ρ between two measures' rankings of the {len(complete)} pairs "
                                        "above (each oriented so that larger = more similar)."))
    return sections


def images_note(run: RunArtifacts) -> str:
    rulers = run.config.get("analyses", {}).get("rulers", {}) if isinstance(run.config.get("analyses"), dict) else {}
    cap = rulers.get("images", 500) if isinstance(rulers, dict) else 500
    return f"at most {cap} test images (functional measures: all analysed test images)"


def identification(seeds: pd.DataFrame) -> pd.DataFrame:
    """Per measure: the fraction of (regime, seed pair, layer, direction) cases in which a layer is most similar
    to the same layer of the other seed (Kornblith et al.'s test), and the same-layer values across seeds."""
    rows = []
    for name, sub in seeds.dropna(subset=["value"]).groupby("measure", sort=False):
        hits, cases = 0, 0
        for _, one in sub.groupby(["model", "seed_a", "seed_b"]):
            matrix = one.pivot(index="layer_a", columns="layer_b", values="value")
            score = oriented(str(name), matrix)
            layers = [layer for layer in matrix.index if layer in matrix.columns]
            for layer in layers:
                hits += int(score.loc[layer].idxmax() == layer) + int(score[layer].idxmax() == layer)
                cases += 2
        same = sub[sub.layer_a == sub.layer_b].value
        rows.append({"measure": name, "identified": hits / cases if cases else np.nan, "cases": cases,
                     "floor_mean": float(same.mean()), "floor_min": float(same.min()), "floor_max": float(same.max())})
    return pd.DataFrame(rows)


def deletion_sensitivity(deletion: pd.DataFrame) -> pd.DataFrame:
    """Per measure: Spearman's ρ between its dissimilarity of the full and truncated latents and the probe's
    accuracy drop, over every (regime, seed, k) case (Ding et al.'s sensitivity test)."""
    rows = []
    for name, sub in deletion.dropna(subset=["value"]).groupby("measure", sort=False):
        dissimilarity = -oriented(str(name), sub.value)
        varies = float(sub.value.max() - sub.value.min()) > 1e-6  # CCA is blind to the deletion: constant 1
        rho = _spearman(dissimilarity, sub.probe_drop) if varies else np.nan
        by_k = sub.groupby("kept").value.mean() if "kept" in sub else sub.value
        rows.append({"measure": name, "deletion_rho": float(rho), "deletion_cases": len(sub),
                     "deletion_range": float(by_k.max() - by_k.min())})
    return pd.DataFrame(rows)


def test_section(seeds: pd.DataFrame | None, pairs: pd.DataFrame | None, deletion: pd.DataFrame | None,
                 run: RunArtifacts) -> Section:
    frames = []
    if seeds is not None and {"measure", "layer_a", "layer_b", "value"} <= set(seeds.columns):
        frames.append(identification(seeds).set_index("measure"))
    if deletion is not None and {"measure", "value", "probe_drop"} <= set(deletion.columns):
        frames.append(deletion_sensitivity(deletion).set_index("measure"))
    merged = pd.concat(frames, axis=1) if frames else pd.DataFrame()
    rows = []
    cross = pairs[pairs.layer != "final"] if pairs is not None else None
    for name in [m for m in MEASURES if m in merged.index]:
        r = merged.loc[name]
        row: dict[str, Any] = {"measure": label(name)}
        if "identified" in r:
            row["layer identification"] = f"{r.identified:.2f} ({int(r.cases)} cases)"
            row["floor: same layer, other seed"] = f"{r.floor_mean:.3f} [{r.floor_min:.3f}, {r.floor_max:.3f}]"
        if cross is not None and len(cross[cross.measure == name]):
            row["other regime, same layer"] = f"{cross[cross.measure == name].value.mean():.3f}"
        if "deletion_rho" in r:
            row["ρ(dissimilarity, probe drop)"] = (f"{r.deletion_rho:+.2f}" if np.isfinite(r.deletion_rho) else
                                                   "blind (constant)")
            row["deletion: measure moved by"] = f"{r.deletion_range:.3f}"
        rows.append(row)
    bullets = []
    if seeds is None:
        bullets.append("Layer identification and the specificity floor need two or more seeds (--seeds 3).")
    if deletion is not None and "probe_drop" in deletion:
        drops = deletion.groupby("kept").probe_drop.mean()
        bullets.append("Probe accuracy drop when only the top k principal components of the latent are kept: "
                       + ", ".join(f"k={int(k)}: {v * 100:+.1f} pp" for k, v in drops.items()) + ".")
    return Section("rulers-tests", "Testing the measures: layer identification, specificity floor, sensitivity",
                   GUIDE_TESTS, bullets=bullets, table=table(pd.DataFrame(rows), "similarity_measures_tests", run),
                   caption="Layer identification: fraction of cases where a layer of one seed is most similar to the "
                           "same layer of another seed (1 = always; chance = 1 / layers). Floor: the measure's value "
                           "between the same layer of the same regime in two seeds, mean [min, max] — read "
                           "cross-regime values against it. Deletion ρ: Spearman's ρ, over regimes, seeds and k, "
                           "between the measure's dissimilarity of the latent and its truncation and the probe's "
                           "accuracy drop (a good measure: positive; blind: the measure did not change at all), and "
                           "how far the measure's mean moved between the k kept.")


GUIDE_PAIRS = ("No single similarity measure is trusted to compare representations: each is invariant to different "
               "transforms (docs/similarity.md) and reacts to different changes. The table gives every chosen measure "
               "between the final layers of each pair of models, and the functional ones — disagreement of the "
               "final-layer probes' predictions, and their error consistency (Cohen's κ beyond chance) — on the "
               "same test images.")
GUIDE_AGREEMENT = ("Where two measures rank the pairs alike, ρ is near 1; a low or negative ρ marks pairs that one "
                   "ruler calls close and another far — read such a comparison with both.")
GUIDE_TESTS = ("Tests of each measure on this run's own models. Layer identification (Kornblith et al. 2019): with "
               "two seeds trained alike, each layer should be most similar to the same layer of the other seed. The "
               "specificity floor is how similar the same layer is across seeds — a cross-regime value near the floor "
               "says nothing beyond seed noise. The deletion test (Ding et al. 2021) deletes all but the top principal "
               "components of each regime's latent: a sensitive measure moves as the probe's accuracy falls.")


def _spearman(a: Any, b: Any) -> float:
    """Spearman's rank correlation (NaN when either side is constant)."""
    return spearman(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
