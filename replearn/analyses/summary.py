"""The run's headline: each classifier's test accuracy, the linear probe on every model's final layer,
and the paired comparison of a reference regime (supervised when trained) with every other regime on
the same test images: paired bootstrap, McNemar per seed, and the t-interval of per-seed differences."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from replearn.rundir.io import load_npz, write_json
from replearn.runtime.log import format_duration
from replearn.metrics.stats import format_mean_ci, gap_text, mcnemar, paired_gap, seed_interval, seeds_note
from replearn.analyses.base import Analysis, RunArtifacts, RunContext, Section, register_analysis
from replearn.analyses.render import PLUS_MINUS, table
from replearn.rundir import layout

GUIDE = ("Headline numbers of this run. A classifier's accuracy is its own head on the test set; the probe "
         "accuracies are linear classifiers trained on frozen features, with the penalty chosen on the validation "
         "split. Brackets are 95% intervals over seeds (on the logit scale, so they stay inside [0, 1]); a gap between "
         "regimes has a two-level paired bootstrap over seeds and test images (one seed: test images only).")
REFERENCES = {
    "fashion-mnist": [("logistic regression on raw pixels", 0.842, "Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747, "
                                                                   "Table 3")],
    "mnist": [("logistic regression on raw pixels", 0.917, "Xiao, Rasul & Vollgraf 2017, Table 3")],
}


def compare_regimes(run_dir: Path, seeds: list[int], a: str, b: str, n_boot: int = 10_000) -> dict[str, Any] | None:
    """Paired comparison of two models' final-layer linear probes on the same test images: the accuracy
    difference (mean over seeds) with a 95% interval and p-value (``stats.paired_gap``: two-level bootstrap
    over seeds and images, or images only for one seed), McNemar per seed, and the t-interval of the per-seed
    differences."""
    correct_a, correct_b = [], []
    for seed in seeds:
        path = run_dir / layout.predictions(seed)
        if not path.is_file():
            continue
        arrays = load_npz(path)
        if a in arrays and b in arrays:
            correct_a.append(arrays[a] == arrays["labels"])
            correct_b.append(arrays[b] == arrays["labels"])
    if not correct_a:
        return None
    ca, cb = np.stack(correct_a), np.stack(correct_b)
    boot = paired_gap(ca, cb, n_boot=n_boot)
    per_seed = (ca.mean(1) - cb.mean(1)).tolist()
    t = seed_interval(per_seed)
    return {"a": a, "b": b, "layer": "latent", "seeds": len(ca), "n_test": int(ca.shape[1]),
            "accuracy_a": float(ca.mean()), "accuracy_b": float(cb.mean()),
            "difference": boot["difference"], "bootstrap_ci": [boot["ci_low"], boot["ci_high"]],
            "bootstrap_p": boot["p_value"], "bootstrap_n": n_boot, "per_seed_difference": per_seed,
            "seed_mean_ci": [t.low, t.high] if t.has_interval else None,
            "mcnemar_p_per_seed": [mcnemar(x, y)["p_value"] for x, y in zip(ca, cb)]}


def reference_regime(regimes: list[str]) -> str | None:
    """The regime every other is compared with: supervised if trained, else the first one."""
    return "supervised" if "supervised" in regimes else (regimes[0] if regimes else None)


def _gap(c: dict[str, Any]) -> dict[str, Any]:
    """A saved comparison as ``stats.gap_text`` expects it: two-level bootstrap for several seeds, images only for
    one, a tie when the two models agreed on every image (zero gap, zero-width interval)."""
    tie = c["difference"] == 0 and c["bootstrap_ci"][0] == c["bootstrap_ci"][1] == 0
    method = "tie" if tie else ("bootstrap-2level" if c["seeds"] > 1 else "bootstrap-images")
    return {"difference": c["difference"], "ci_low": c["bootstrap_ci"][0], "ci_high": c["bootstrap_ci"][1],
            "method": method, "seeds": c["seeds"], "n_items": c["n_test"]}


def seed_t_text(c: dict[str, Any]) -> str:
    """The t-interval of the per-seed gaps in words, a tie when every seed gave the same gap ('' for one seed)."""
    per_seed = c.get("per_seed_difference") or []
    if len(per_seed) > 1 and len(set(per_seed)) == 1:
        return f"every seed gives {100 * per_seed[0]:+.2f} pp (a tie across {len(per_seed)} seeds)"
    if c.get("seed_mean_ci"):
        low, high = c["seed_mean_ci"]
        return f"t-interval of the {c['seeds']} per-seed gaps [{100 * low:+.2f}, {100 * high:+.2f}] pp"
    return ""


def comparison_sentence(c: dict[str, Any], label_a: str, label_b: str) -> str:
    """One sentence stating a latent-probe gap with its interval (and what it covers) and p-values."""
    seeds = f"{c['seeds']} seed{'s' if c['seeds'] != 1 else ''}"
    floor = 1 / c.get("bootstrap_n", 10_000)
    p = f"p < {floor:.0g}" if c["bootstrap_p"] <= floor + 1e-12 else f"p = {c['bootstrap_p']:.2g}"
    text = (f"{label_a[:1].upper() + label_a[1:]} minus {label_b}, linear probe on the latent "
            f"({100 * c['accuracy_a']:.2f}% vs {100 * c['accuracy_b']:.2f}%, {seeds}): {gap_text(_gap(c))}, {p}")
    if seed_t_text(c):
        text += "; " + seed_t_text(c)
    mc = c.get("mcnemar_p_per_seed") or []
    if mc:
        text += "; McNemar p per seed: " + ", ".join(f"{p:.2g}" for p in mc)
    return text + "."


@register_analysis("summary")
class Summary(Analysis):
    order = 0
    requires = ("probes",)  # compares the probes' final-layer predictions (artifacts/predictions_seed*.npz)

    def finish(self, run: RunContext) -> dict[str, pd.DataFrame]:
        regimes = [m.name for m in run.models if m.kind == "regime"]
        ref = reference_regime(regimes)
        comparisons = [c for other in regimes if other != ref
                       if (c := compare_regimes(run.run_dir, run.seeds(), ref, other)) is not None]
        if comparisons:
            write_json(run.run_dir / layout.COMPARISON, comparisons)
        return {}

    def sections(self, run: RunArtifacts) -> list[Section]:
        bullets: list[str] = []
        models, probes = run.csv("models"), run.csv("probes")
        if models is not None and "test_accuracy" in models:
            for regime in run.order(list(models.model.unique())):
                values = models[models.model == regime].test_accuracy.dropna()
                if len(values):
                    bullets.append(f"{run.style(regime)[0]} classifier test accuracy: {format_mean_ci(values)}")
        ranking, n_seeds = None, 0
        if probes is not None:
            n_seeds = int(probes.seed.nunique())
            final = probes[(probes.probe == "linear") & probes.layer.isin(["latent", "input"])]
            rows = []
            for model in run.order(list(final.model.unique())):
                values = final[final.model == model].test_accuracy
                rows.append({"model": run.style(model)[0], "layer": final[final.model == model].layer.iloc[0],
                             "linear probe test accuracy": format_mean_ci(values), "_mean": float(values.mean()),
                             "trained with labels": "yes" if run.info(model).trained_with_labels else "no",
                             "seeds": int(values.size)})
            if rows:
                ranking = pd.DataFrame(rows).sort_values("_mean", ascending=False).drop(columns="_mean")
        comparisons = run.json_file(layout.COMPARISON)
        if isinstance(comparisons, dict):
            comparisons = [comparisons]
        for c in comparisons if isinstance(comparisons, list) else []:
            if isinstance(c, dict) and {"a", "b", "difference", "bootstrap_ci"} <= set(c):
                bullets.append(comparison_sentence(c, run.style(c["a"])[0], run.style(c["b"])[0]))
        references = [f"Published reference — {what}: {acc:.3f} ({src})"
                      for what, acc, src in REFERENCES.get(run.dataset.get("name", ""), [])]
        if not bullets and ranking is None:
            return []
        return [Section("summary", "Summary", GUIDE, bullets=bullets, references=references,
                        table=table(ranking, "summary", run) if ranking is not None else None,
                        caption="Every model's final layer, best first (linear probe, test split). " + PLUS_MINUS
                        + " " + (seeds_note(n_seeds) or ""))]


def summarize(run_dir: Path, cfg: Any, wall_seconds: float) -> dict[str, Any]:
    """Headline numbers of a finished run for metrics/summary.json."""
    out: dict[str, Any] = {"name": cfg.name, "dataset": cfg.data.name, "wall_seconds": round(wall_seconds, 1),
                           "seeds": cfg.train.seeds}
    run = RunArtifacts(run_dir)
    models = run.csv("models")
    if models is not None and "test_accuracy" in models:
        out["classifier_test_accuracy"] = {m: float(v) for m, v in
                                           models.dropna(subset=["test_accuracy"]).groupby("model").test_accuracy.mean().items()}
    probes = run.csv("probes")
    if probes is not None:
        latent = probes[probes.layer.isin(["latent", "input"])]
        means = latent.groupby(["model", "probe"]).test_accuracy.mean()
        out["final_layer_probe_test_accuracy"] = {f"{m}/{p}": float(v) for (m, p), v in means.items()}
    comparisons = run.json_file(layout.COMPARISON) or []
    out["latent_probe_differences"] = {f"{c['a']} - {c['b']}": c["difference"] for c in comparisons}
    return out


def closing_summary(run_dir: Path, wall_seconds: float, report: Path) -> list[str]:
    """The lines a finished run ends with: headline accuracies, each regime's gap to the reference with its
    interval, and where the report is."""
    run = RunArtifacts(run_dir)
    summary = run.json_file(layout.SUMMARY) or {}
    lines = []
    classifier = summary.get("classifier_test_accuracy") or {}
    if classifier:
        lines.append("classifier test accuracy: " + ", ".join(f"{run.style(m)[0]} {v:.4f}" for m, v in classifier.items()))
    probes = {k.split("/")[0]: v for k, v in (summary.get("final_layer_probe_test_accuracy") or {}).items()
              if k.endswith("/linear")}
    if probes:
        ranked = sorted(probes.items(), key=lambda kv: -kv[1])
        lines.append("final-layer linear probe (test): " + ", ".join(f"{run.style(m)[0]} {v:.4f}" for m, v in ranked))
    seeds = len(summary.get("seeds") or [])
    for c in run.json_file(layout.COMPARISON) or []:
        line = f"{run.style(c['a'])[0]} − {run.style(c['b'])[0]} ({c['layer']} probe): {gap_text(_gap(c))}"
        lines.append(line + (f"; {seed_t_text(c)}" if seed_t_text(c) else ""))
    if run.json_file(layout.COMPARISON) and seeds_note(seeds):
        lines.append(str(seeds_note(seeds)))
    lines.append(f"done in {format_duration(wall_seconds)}; report: {report} (figures/ and tables/ beside it)")
    return lines
