"""``replearn compare``: one self-contained HTML report across runs — a sweep's, or any run directories.

Every measure is read from the runs' saved files (nothing is retrained) and drawn against the swept value
(``compare_runs.layout``): each model's linear-probe accuracy on the latent and on its best layer (chosen
on validation accuracy), mean and 95% interval over seeds (``stats.seed_interval``: logit-scale t-interval for
accuracies and CKA, none for one seed, a tie named as such); each regime's gap to the reference regime with a
two-level paired bootstrap over seeds and the same test images (``stats.paired_gap``; one seed: images only);
CKA between the regimes of a run and
between runs (each run's latent against the same regime at the first swept value, same seed, on the same
evaluation images); intrinsic dimension and gradient norms by layer; and a table of every run with the
config values that differ. Figures go to figures/ (PNG) and tables to tables/ (CSV, LaTeX) beside
compare.html.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any, Callable

import jinja2
import numpy as np
import pandas as pd

from replearn.studies import plots as compare_plots
from replearn.analyses import RunArtifacts, Section
from replearn.analyses.render import figure, table
from replearn.analyses.summary import reference_regime
from replearn.rundir.io import RUN_MARKER, atomic_write_text
from replearn.studies.checks import check_duplicates, check_run
from replearn.studies.runs import Layout, RunEntry, find_runs, layout
from replearn.errors import RunDirError
from replearn.metrics.similarity import minibatch_cka
from replearn.metrics.stats import paired_gap, seed_interval, seeds_note
from replearn.studies.sweep import MANIFEST, flow
from replearn.version import __version__
from replearn.rundir import layout as run_files
from replearn.metrics.similarity_measures import MEASURES

PLUS_MINUS = ("Error bars and the low/high columns are 95% intervals, and the 'interval' column names each: a "
              "t-interval over seeds (on the logit scale for accuracies and CKA, so it stays inside [0, 1]; on the log "
              "scale for gradient norms and dimensions, so it stays above 0), or for "
              "gaps a two-level paired bootstrap over seeds and test images (one seed: test images only). One seed "
              "shows no interval; seeds that all gave the same value are a tie.")
Measure = Callable[[RunEntry], list[dict[str, Any]]]


def interval_columns(values: list[float], bounded: bool, positive: bool = False) -> dict[str, Any]:
    """mean, low, high (missing for one seed or a tie) and the interval's name, for one point of a figure. A
    ``bounded`` measure with a value outside [0, 1] gets the plain t-interval, named as such, rather than a logit
    interval that would have to clip it: the unbiased CKA of a collapsed layer is not bounded (a depth-study run
    wrote 1.014, and values further out)."""
    bounded = bounded and all(0 <= v <= 1 for v in values if np.isfinite(v))
    iv = seed_interval(values, bounded=bounded, positive=positive)
    shown = iv.has_interval
    return {"mean": iv.mean, "low": iv.low if shown else np.nan, "high": iv.high if shown else np.nan,
            "interval": iv.label(), "n": iv.n}


def aggregate(lay: Layout, measure: Measure, bounded: bool = False, positive: bool = False) -> pd.DataFrame:
    """The measure of every run, pooled over the runs (seeds) of each point: mean and 95% interval over seeds
    (``bounded``: the measure lies in [0, 1], its interval too; ``positive``: the measure is above 0, gradient norms
    and dimensions, and its interval is taken on the log scale, the scale the figure draws it on)."""
    rows = []
    for (panel, _label), runs in lay.groups.items():
        samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for run in runs:
            for row in measure(run):
                samples.setdefault((row.get("panel", ""), row["series"]), []).append(row)
        for (sub, series), found in samples.items():
            value = runs[0].config.get(lay.x_key) if lay.x_key else None
            layers = sorted({str(r["layer"]) for r in found if "layer" in r})
            rows.append({"panel": " · ".join(p for p in (panel if len(lay.panels) > 1 else "", sub) if p) or "all runs",
                         "x_label": lay.x_label(value), "x": lay.x_position(value), "series": series,
                         "color": found[0]["color"],
                         **interval_columns([r["value"] for r in found], bounded, positive),
                         **({"layer": ", ".join(layers)} if layers else {})})
    return pd.DataFrame(rows)


def _linear(run: RunEntry) -> pd.DataFrame | None:
    probes = run.artifacts.csv("probes")
    return None if probes is None else probes[probes.probe == "linear"]


def latent_probe(run: RunEntry) -> list[dict[str, Any]]:
    """Each model's linear probe on its final layer (latent; raw pixels: the input), one row per seed."""
    probes = _linear(run)
    if probes is None:
        return []
    final = probes[probes.layer.isin(["latent", "input"])]
    return [{"series": run.artifacts.style(r.model)[0], "color": run.artifacts.style(r.model)[1],
             "value": float(r.test_accuracy)} for r in final.itertuples()]


def best_layer_probe(run: RunEntry) -> list[dict[str, Any]]:
    """Each model's best layer by validation accuracy (ties: the deeper), its test accuracy, one row per seed."""
    probes = _linear(run)
    if probes is None:
        return []
    rows = []
    for (model, _seed), group in probes.groupby(["model", "seed"], sort=False):
        best = group.sort_values(["val_accuracy", "depth"]).iloc[-1]
        rows.append({"series": run.artifacts.style(model)[0], "color": run.artifacts.style(model)[1],
                     "value": float(best.test_accuracy), "layer": best.layer})
    return rows


def regime_cka(run: RunEntry) -> list[dict[str, Any]]:
    """Latent-to-latent CKA of every pair of regimes (and each regime against its initialisation)."""
    cka = run.artifacts.csv("cka")
    if cka is None:
        return []
    latent = cka[(cka.layer_a == "latent") & (cka.layer_b == "latent") & ~cka.pair.str.contains(" seed ")]
    pairs = list(dict.fromkeys(latent.pair))
    colors = compare_plots.category_colors(pairs)
    return [{"series": r.pair, "color": colors[r.pair], "value": float(r.cka)} for r in latent.itertuples()]


def dimension_by_layer(column: str) -> Measure:
    """A dimension measure (``metrics/dimensions.csv``) of every layer of each regime, panels by regime."""
    def measure(run: RunEntry) -> list[dict[str, Any]]:
        dims = run.artifacts.csv("dimensions")
        if dims is None or column not in dims:
            return []
        regimes = set(run.artifacts.regimes())
        dims = dims[dims.model.isin(regimes)].sort_values("depth", kind="stable")
        colors = compare_plots.layer_colors(list(dict.fromkeys(dims.layer)))
        return [{"panel": run.artifacts.style(r.model)[0], "series": r.layer, "color": colors[r.layer],
                 "value": float(getattr(r, column))} for r in dims.itertuples()]
    return measure


def gradient_norm(when: str) -> Measure:
    """Each layer's gradient norm per regime from metrics/train_<regime>_seed<s>.csv: the first epoch's
    ('start') or the mean over training ('mean')."""
    def measure(run: RunEntry) -> list[dict[str, Any]]:
        rows = []
        for regime in run.artifacts.regimes():
            for stem, frame in run.artifacts.csvs(f"train_{regime}_seed*.csv"):
                layers = [c[len("grad_norm_"):] for c in frame.columns
                          if c.startswith("grad_norm_") and not c.startswith("grad_norm_max_") and c != "grad_norm_head"]
                colors = compare_plots.layer_colors(layers)
                for layer in layers:
                    values = frame[f"grad_norm_{layer}"].dropna()
                    if len(values):
                        value = float(values.iloc[0] if when == "start" else values.mean())
                        rows.append({"panel": run.artifacts.style(regime)[0], "series": layer,
                                     "color": colors[layer], "value": value})
        return rows
    return measure


def initial_gradient_norm(run: RunEntry, column: str = "grad_norm") -> list[dict[str, Any]]:
    """Each layer's gradient norm at the very first step, before any weight moved
    (metrics/grad_init_<regime>_seed<s>.csv), per regime; ``column`` grad_norm_per_param: norm / √parameters."""
    rows = []
    for _stem, frame in run.artifacts.csvs("grad_init_*.csv"):
        if not {"regime", "layer", column} <= set(frame.columns):
            continue
        frame = frame[frame.layer != "head"]
        colors = compare_plots.layer_colors(list(dict.fromkeys(frame.layer)))
        rows += [{"panel": run.artifacts.style(r.regime)[0], "series": r.layer, "color": colors[r.layer],
                  "value": float(getattr(r, column))} for r in frame.itertuples()]
    return rows


def initial_gradient_per_param(run: RunEntry) -> list[dict[str, Any]]:
    """``initial_gradient_norm`` divided by √(the layer's parameters): the root mean square gradient entry."""
    return initial_gradient_norm(run, "grad_norm_per_param")


def probe_by_layer(run: RunEntry) -> list[dict[str, Any]]:
    """Linear-probe test accuracy of every layer of each regime (panels by regime), one row per seed."""
    probes = _linear(run)
    if probes is None:
        return []
    probes = probes[probes.model.isin(run.artifacts.regimes())].sort_values("depth", kind="stable")
    colors = compare_plots.layer_colors(list(dict.fromkeys(probes.layer)))
    return [{"panel": run.artifacts.style(r.model)[0], "series": r.layer, "color": colors[r.layer],
             "value": float(r.test_accuracy)} for r in probes.itertuples()]


def _correct(run: RunEntry, a: str, b: str) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for _seed, arrays in run.artifacts.arrays("predictions"):
        if a in arrays and b in arrays and "labels" in arrays:
            out.append((arrays[a] == arrays["labels"], arrays[b] == arrays["labels"]))
    return out


def gaps(lay: Layout, reference: str) -> pd.DataFrame:
    """Each regime minus the reference (latent linear probe), pooled over the seeds of each point, with a
    95% interval from ``stats.paired_gap``: two-level paired bootstrap (seeds, then the same test images)."""
    rows = []
    for (panel, _label), runs in lay.groups.items():
        regimes = list(dict.fromkeys(r for run in runs for r in run.artifacts.regimes() if r != reference))
        for regime in regimes:
            pairs = [p for run in runs for p in _correct(run, regime, reference)]
            if not pairs or len({len(a) for a, _ in pairs}) != 1:
                continue
            boot = paired_gap(np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs]), n_boot=2000)
            tie = boot["method"] == "tie"
            how = ("tie: the same images right and wrong" if tie else
                   f"two-level bootstrap, {len(pairs)} seeds" if len(pairs) > 1 else "bootstrap over images, 1 seed")
            label, color = runs[0].artifacts.style(regime)
            value = runs[0].config.get(lay.x_key) if lay.x_key else None
            rows.append({"panel": panel if len(lay.panels) > 1 else "all runs", "x_label": lay.x_label(value),
                         "x": lay.x_position(value), "series": f"{label} − {runs[0].artifacts.style(reference)[0]}",
                         "color": color, "mean": boot["difference"], "low": np.nan if tie else boot["ci_low"],
                         "high": np.nan if tie else boot["ci_high"], "interval": how, "n": len(pairs),
                         "p": boot["p_value"]})
    return pd.DataFrame(rows)


def _latents(run: RunEntry) -> dict[int, dict[str, np.ndarray]]:
    return {seed: arrays for seed, arrays in run.artifacts.arrays("cka_features")}


def cross_run_cka(lay: Layout, measure: Callable[[Any, Any], float] = minibatch_cka,
                  bounded: bool = True) -> pd.DataFrame:
    """Each regime's latent against the same regime, same seed, at the first swept value of its panel, on the
    same evaluation images (runs whose images differ are left out), by ``measure`` (minibatch linear CKA, or
    any of ``similarity_measures.MEASURES``). ``bounded``: the measure lies in [0, 1] (CKA, mutual kNN), so its
    seed interval is taken on the logit scale; False for one that does not (the Procrustes angle, in radians)."""
    rows = []
    for panel in lay.panels:
        points = [(x, runs) for (p, x), runs in lay.groups.items() if p == panel]
        points.sort(key=lambda item: lay.x_position(item[1][0].config.get(lay.x_key) if lay.x_key else None))
        if len(points) < 2:
            continue
        reference = {seed: arrays for run in points[0][1] for seed, arrays in _latents(run).items()}
        for _label, runs in points:
            samples: dict[str, list[float]] = {}
            for run in runs:
                for seed, arrays in _latents(run).items():
                    ref = reference.get(seed)
                    if ref is None or not np.array_equal(ref.get("points"), arrays.get("points")):
                        continue
                    for regime in [r for r in run.artifacts.regimes() if r in arrays and r in ref]:
                        samples.setdefault(regime, []).append(measure(arrays[regime], ref[regime]))
            for regime, values in samples.items():
                label, color = runs[0].artifacts.style(regime)
                value = runs[0].config.get(lay.x_key) if lay.x_key else None
                rows.append({"panel": panel if len(lay.panels) > 1 else "all runs", "x_label": lay.x_label(value),
                             "x": lay.x_position(value), "series": label, "color": color,
                             **interval_columns(values, bounded=bounded)})
    return pd.DataFrame(rows)


@dataclasses.dataclass
class Output:
    """Where the report's figures and tables go, shaped as ``analyses.render`` expects (PNG figures only)."""

    run_dir: Path
    figure_formats: tuple[str, ...] = ("png",)

    def __post_init__(self) -> None:
        self.exports = RunArtifacts(self.run_dir)
        self.exports.figure_formats = list(self.figure_formats)


def result_table(frame: pd.DataFrame, lay: Layout, value: str, series: str = "model") -> pd.DataFrame:
    """A figure's numbers as a table: panel, swept value, series, mean, 95% interval and its name, and seeds; no
    low/high columns when no point has an interval (one seed, or ties)."""
    x_title = lay.x_key or "runs"
    columns = {"panel": "panel", "x_label": x_title, "series": series, "layer": "best layer (by validation)",
               "mean": value, "low": "95% low", "high": "95% high", "interval": "interval", "n": "seeds"}
    if frame[["low", "high"]].isna().all().all():
        frame = frame.drop(columns=["low", "high"])
    shown = frame.sort_values(["panel", "x"], kind="stable")[[c for c in columns if c in frame]]
    return shown.rename(columns=columns)


def figure_section(lay: Layout, out: Output, spec: dict[str, Any]) -> Section | None:
    """A section of one figure (a measure against the swept value) and its table."""
    frame: pd.DataFrame = spec["frame"]
    if frame.empty:
        return None
    ticks = sorted({(float(x), str(label)) for x, label in zip(frame.x, frame.x_label)})
    positions = [lay.x_position(v) for v in lay.x_values]
    log_x = lay.numeric and min(positions) > 0 and max(positions) / min(positions) >= 16
    fig = compare_plots.series_panels(frame, lay.x_key or "runs", spec["y"], ticks, log_x=log_x,
                                      log_y=spec.get("log_y", False), zero_line=spec.get("zero", False))
    tab = result_table(frame, lay, spec["y"], spec.get("series", "model"))
    panels = frame.panel.nunique()
    more = (f" The figure shows the first {compare_plots.MAX_PANELS} of {panels} panels; the table has them all."
            if panels > compare_plots.MAX_PANELS else "")
    return Section(spec["name"], spec["title"], spec["guide"], figures=[figure(fig, spec["name"], out.exports)],
                   table=table(tab, spec["name"], out.exports, decimals=4),
                   caption=PLUS_MINUS + more + " " + (seeds_note(int(frame.n.min())) or ""))


def runs_section(runs: list[RunEntry], lay: Layout, notes: list[str], out: Output) -> Section:
    """Every run with its state, seeds and the config values that differ between the runs."""
    rows = []
    for run in runs:
        latent = {r["series"]: r["value"] for r in latent_probe(run)}
        rows.append({"run": run.label, "state": run.state, "seeds": ", ".join(map(str, run.seeds)),
                     **{k: flow(run.config.get(k)) for k in lay.varying},
                     "wall time (s)": run.artifacts.status.get("wall_seconds"),
                     **{f"{m} (latent probe)": v for m, v in latent.items()}})
    bullets = [f"{len(runs)} runs; config keys that differ: {', '.join(lay.varying) or 'none'}; x axis: "
               f"{lay.x_key or '—'}" + (f"; side by side: {', '.join(lay.panel_keys)}" if lay.panel_keys else "")]
    incomplete = [r.label for r in runs if r.state != "complete"]
    if incomplete:
        bullets.append("not complete (their saved results are included where they exist): " + ", ".join(incomplete))
    bullets += notes
    return Section("runs", "Runs", "Every run compared, with the config values that differ between them.",
                   bullets=bullets, table=table(pd.DataFrame(rows), "runs", out.exports,
                                                decimals={**{c: 4 for r in rows for c in r}, "wall time (s)": 1}))


GUIDES = {
    "probes": "Linear-probe test accuracy of every model's final layer (the latent; raw pixels: the input).",
    "best_layer": "Linear-probe test accuracy of each model's best layer, the layer chosen on validation accuracy.",
    "gap": "Each regime's latent-probe accuracy minus the reference regime's on the same test images; the "
           "interval is a two-level paired bootstrap (the seeds of each point, then the test images within each seed), "
           "so it covers both the variation between seeds and test-set sampling.",
    "cka_regimes": "Linear CKA between the latents of two regimes of the same run (1: the same representation up "
                   "to rotation and scale).",
    "cka_runs": "Linear CKA of each regime's latent with the same regime at the first swept value (same seed, "
                "same evaluation images): how far the representation moves as the swept value changes.",
    "knn_runs": "Mutual k-nearest-neighbour alignment (Huh et al. 2024; k = 10) of each regime's latent with the same "
                "regime at the first swept value: the fraction of each image's 10 nearest neighbours both keep — a "
                "local ruler beside CKA's global one (docs/similarity.md).",
    "procrustes_runs": "Angular Procrustes shape distance (Williams et al. 2021) of each regime's latent to the same "
                       "regime at the first swept value, in radians (0 = the same up to rotation and scale).",
    "twonn": "TwoNN intrinsic dimension of each layer (colours from shallow to deep), per regime.",
    "by_layer": "Linear-probe test accuracy of every layer of each regime, from shallow (dark) to deep (bright).",
    "grad_init": "Gradient norm of each layer's parameters at the very first training step, before any weight "
                 "moved: vanishing or exploding gradients at initialisation show as norms that shrink or grow "
                 "with depth.",
    "grad_init_per_param": "The same first-step gradient norms divided by √(the layer's number of parameters): the "
                           "root mean square gradient entry, which compares layers of different sizes (a Frobenius "
                           "norm grows with the number of parameters).",
    "grad_start": "Gradient norm of each layer's parameters in the first epoch, per regime: vanishing or "
                  "exploding gradients show as norms that shrink or grow with depth.",
    "grad_mean": "Gradient norm of each layer's parameters, mean over training epochs, per regime.",
}


def sections(runs: list[RunEntry], lay: Layout, notes: list[str], out: Output) -> list[Section]:
    """Every section of the cross-run report, in order; a measure no run saved is left out."""
    done = [r for r in runs if r.has_results]
    regimes = list(dict.fromkeys(x for r in done for x in r.artifacts.regimes()))
    reference = reference_regime(regimes)
    lay_done = layout(done, lay.varying) if done else lay
    specs = [("probes", "Final-layer probe accuracy", "accuracy", aggregate(lay_done, latent_probe, True), {}),
             ("best_layer", "Best-layer probe accuracy", "accuracy", aggregate(lay_done, best_layer_probe, True), {}),
             ("by_layer", "Probe accuracy by layer", "accuracy", aggregate(lay_done, probe_by_layer, True),
              {"series": "layer"}),
             ("gap", f"Gap to {reference}", "accuracy difference",
              gaps(lay_done, reference) if reference else pd.DataFrame(), {"zero": True, "series": "comparison"}),
             ("cka_regimes", "CKA between regimes", "CKA (latent)", aggregate(lay_done, regime_cka, True),
              {"series": "pair"}),
             ("cka_runs", "CKA between runs", "CKA with first value", cross_run_cka(lay_done), {"series": "regime"}),
             ("knn_runs", "Mutual k-nearest neighbours between runs", "mutual kNN with first value",
              cross_run_cka(lay_done, MEASURES["mutual_knn"].fn), {"series": "regime"}),
             ("procrustes_runs", "Procrustes angle between runs", "angle to first value (rad)",
              cross_run_cka(lay_done, MEASURES["procrustes"].fn, bounded=False), {"series": "regime"}),
             ("twonn", "Intrinsic dimension by layer", "TwoNN dimension",
              aggregate(lay_done, dimension_by_layer("twonn"), positive=True), {"series": "layer"}),
             ("grad_init", "Gradient norms by layer at initialisation", "gradient norm",
              aggregate(lay_done, initial_gradient_norm, positive=True), {"log_y": True, "series": "layer"}),
             ("grad_init_per_param", "Gradient per parameter by layer at initialisation", "gradient norm / √params",
              aggregate(lay_done, initial_gradient_per_param, positive=True), {"log_y": True, "series": "layer"}),
             ("grad_start", "Gradient norms by layer, first epoch", "gradient norm",
              aggregate(lay_done, gradient_norm("start"), positive=True), {"log_y": True, "series": "layer"}),
             ("grad_mean", "Gradient norms by layer, mean over training", "gradient norm",
              aggregate(lay_done, gradient_norm("mean"), positive=True), {"log_y": True, "series": "layer"})]
    out_sections = [runs_section(runs, lay, notes, out)]
    for name, title, y, frame, extra in specs:
        section = figure_section(lay_done, out, {"name": name, "title": title, "guide": GUIDES[name], "y": y,
                                                 "frame": frame, **extra})
        if section is not None:
            out_sections.append(section)
    return out_sections


def default_out(paths: list[str | Path]) -> Path:
    """<sweep>/compare for one sweep; reports/compare-<timestamp> otherwise."""
    if len(paths) == 1 and (Path(paths[0]) / MANIFEST).is_file():
        return Path(paths[0]) / "compare"
    return Path("reports") / f"compare-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def check_out(out: Path, runs: list[RunEntry] | None = None) -> None:
    """The output folder must be absent, empty, or an earlier comparison (which is replaced) — never a run or
    sweep directory, whose tables/ and figures/ a comparison would overwrite."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"compare output '{out}' exists and is a file", "choose another --out directory")
    inputs = {run.path.resolve() for run in runs or []}
    if (out / RUN_MARKER).is_file() or (out / MANIFEST).is_file() or (out.exists() and out.resolve() in inputs):
        raise RunDirError(f"compare output '{out}' is a run or sweep directory: its tables/ and figures/ would be "
                          "overwritten", "choose another --out directory (e.g. a new folder beside it)")
    if out.is_dir() and any(out.iterdir()) and not (out / run_files.COMPARE_REPORT).is_file():
        raise RunDirError(f"compare output '{out}' is a folder that is not an earlier comparison",
                          "choose another --out directory (an empty or new one)")


def compare(paths: list[str | Path], out: str | Path | None = None) -> Path:
    """Write the cross-run report of the given run or sweep directories; returns compare.html's path."""
    runs, swept, notes = find_runs(paths)
    target = Path(out) if out is not None else default_out(paths)
    check_out(target, runs)
    check_duplicates(runs)
    for run in runs:  # every input read and checked before anything is written
        check_run(run)
    lay = layout(runs, swept)
    if not any(r.has_results for r in runs):
        raise RunDirError("none of the runs has saved results yet (metrics/probes.csv)",
                          "let the runs finish (or resume them), then compare again")
    target.mkdir(parents=True, exist_ok=True)
    output = Output(target)
    try:
        found = [dataclasses.asdict(s) for s in sections(runs, lay, notes, output)]
    finally:
        output.exports.finish_exports()
    incomplete = [r.label for r in runs if r.state != "complete"]
    datasets = sorted({str(r.config.get("data.name")) for r in runs})
    context = {"title": f"replearn — comparison of {len(runs)} runs", "run_dir": ", ".join(map(str, paths)),
               "dataset_name": ", ".join(datasets), "state": "some runs incomplete" if incomplete else "complete",
               "state_message": f"Not complete: {', '.join(incomplete)}." if incomplete else "",
               "complete": not incomplete, "wall_seconds": None, "sections": found,
               "unreadable": [u for r in runs for u in r.artifacts.unreadable], "not_written": output.exports.not_written,
               "version": __version__, "rendered": dt.datetime.now().isoformat(timespec="seconds")}
    env = jinja2.Environment(loader=jinja2.PackageLoader("replearn.report", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)  # the single-run report's template and escaping
    html = env.get_template("report.html.j2").render(**context)
    return atomic_write_text(target / run_files.COMPARE_REPORT, html)
