"""``replearn similarity A B``: every similarity measure between two models' representations of the same images,
as a small self-contained HTML report (similarity.html) with its tables (CSV) beside it.

A and B are either two feature exports (``replearn features``: arrays ``<layer>.test``, ``labels.test`` and, from
this version on, ``images.test``, a fingerprint of each test image) — every layer of A against every layer of B —
or two run directories — each regime's latent of A against each regime's latent of B, per seed both runs have,
from the saved ``artifacts/cka_features_seed<S>.npz`` (the same evaluation images), and the functional measures
on the final-layer probes' predictions (``artifacts/predictions_seed<S>.npz``). Inputs that are not of the same
images, of different sizes or of malformed shapes are refused before anything is written.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from replearn.analyses import Section
from replearn.analyses.render import format_frame
from replearn.rundir.io import RUN_MARKER, atomic_write_text, check_run_dir, read_json
from replearn.errors import ReplearnError, RunDirError
from replearn.metrics.similarity_measures import DEFAULT_MEASURES, FUNCTIONAL, MEASURES, disagreement, error_consistency, subsample
from replearn.version import __version__
from replearn.rundir import layout

REPORT = layout.SIMILARITY_REPORT


@dataclass
class Side:
    """One input: its models' features of the same images (model → layer → n × d), their predictions, the
    labels and the images' identity (fingerprints or indices), by seed (exports: one "seed", None)."""

    path: Path
    kind: str  # "features" or "run"
    seeds: dict[Any, dict[str, Any]] = field(default_factory=dict)


def _bad(path: Path, problem: str, fix: str) -> ReplearnError:
    return ReplearnError(f"'{path}': {problem}", fix)


def load_export(path: Path) -> Side:
    """A feature export's test-split layers, labels and image fingerprints, with its shapes checked."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as exc:
        raise _bad(path, f"is not a readable .npz file ({type(exc).__name__})",
                   "pass a file written by `replearn features`") from None
    layers = [k[:-len(".test")] for k in arrays if k.endswith(".test") and k not in ("labels.test", "images.test")]
    if not layers:
        raise _bad(path, "holds no '<layer>.test' arrays", "pass a file written by `replearn features`")
    feats = {}
    for layer in layers:
        a = arrays[f"{layer}.test"]
        if a.ndim != 2 or not np.issubdtype(a.dtype, np.number):
            raise _bad(path, f"layer '{layer}' has shape {a.shape}, not images × features",
                       "export features with `replearn features` (one row of numbers per image)")
        feats[layer] = a
    rows = {layer: len(a) for layer, a in feats.items()}
    if len(set(rows.values())) != 1:
        raise _bad(path, f"its layers hold different numbers of images ({rows})", "re-export the features")
    n = next(iter(rows.values()))
    labels, images = arrays.get("labels.test"), arrays.get("images.test")
    for name, a in (("labels.test", labels), ("images.test", images)):
        if a is not None and a.shape != (n,):
            raise _bad(path, f"'{name}' has shape {a.shape}, but the layers hold {n} images", "re-export the features")
    return Side(path, "features", {None: {"features": {"model": feats}, "labels": labels, "images": images,
                                          "predictions": {}}})


def load_run(path: Path) -> Side:
    """A run's saved latents (cka_features) and probe predictions, by seed."""
    check_run_dir(path, need="compare its representations")
    side = Side(path, "run")
    dataset = read_json(path / layout.DATASET) if (path / layout.DATASET).is_file() else {}
    for file in sorted((path / layout.ARTIFACTS).glob(layout.seed_artifact_pattern("cka_features"))):
        match = re.fullmatch(r"cka_features_seed(\d+)\.npz", file.name)
        if not match:
            continue
        seed = int(match.group(1))
        with np.load(file, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        points, labels = arrays.pop("points", None), arrays.pop("labels", None)
        if points is None or any(a.ndim != 2 or len(a) != len(points) for a in arrays.values()):
            raise _bad(file, "does not hold one latent row per saved image", "re-run the experiment")
        predictions: dict[str, np.ndarray] = {}
        pred_file = path / layout.predictions(seed)
        if pred_file.is_file():
            with np.load(pred_file, allow_pickle=False) as npz:
                predictions = {k: npz[k][points] for k in npz.files if k in arrays or k == "labels"}
        side.seeds[seed] = {"features": {m: {"latent": a} for m, a in arrays.items()}, "labels": labels,
                            "images": (dataset, points), "predictions": predictions}
    if not side.seeds:
        raise RunDirError(f"run directory '{path}' has no saved latents (artifacts/cka_features_seed*.npz)",
                          "let the run finish, or pass a run made by this version of replearn")
    return side


def load_side(path: str | Path) -> Side:
    path = Path(path)
    if path.is_dir():
        if not (path / RUN_MARKER).is_file():
            raise RunDirError(f"'{path}' is neither a feature export (.npz) nor a replearn run directory",
                              "pass two files from `replearn features` or two directories from `replearn run`")
        return load_run(path)
    if not path.is_file():
        raise ReplearnError(f"'{path}' does not exist",
                            "pass two files from `replearn features` or two run directories")
    return load_export(path)


def check_same_images(a: Side, b: Side) -> list[Any]:
    """The seeds both sides hold the same images for (exports: [None]), or an error naming the mismatch."""
    if a.kind != b.kind:
        raise ReplearnError(f"'{a.path}' is a {a.kind} input and '{b.path}' a {b.kind} input",
                            "compare two feature exports, or two run directories")
    seeds = [s for s in a.seeds if s in b.seeds]
    if not seeds:
        raise RunDirError(f"the runs '{a.path}' and '{b.path}' share no seed", "compare runs with a seed in common")
    for seed in seeds:
        sa, sb = a.seeds[seed], b.seeds[seed]
        na = len(next(iter(next(iter(sa["features"].values())).values())))
        nb = len(next(iter(next(iter(sb["features"].values())).values())))
        if a.kind == "run":
            (data_a, points_a), (data_b, points_b) = sa["images"], sb["images"]
            if data_a != data_b:
                raise ReplearnError(f"the runs are on different image sets ({data_a.get('name')}, {data_a.get('test')} "
                                    f"test images vs {data_b.get('name')}, {data_b.get('test')}; dataset.json differs)",
                                    "compare runs on the same dataset and data settings")
            if na != nb or not np.array_equal(points_a, points_b):
                raise ReplearnError(f"the runs saved latents of different test images (seed {seed}: {na} vs {nb} "
                                    "images, not the same ones)",
                                    "compare runs made with the same data and analysis settings")
            continue
        if na != nb:
            raise ReplearnError(f"the exports hold different numbers of test images ({na} vs {nb})",
                                "export both models' features on the same dataset with the same data settings")
        fa, fb = sa["images"], sb["images"]
        if fa is not None and fb is not None and not np.array_equal(fa, fb):
            raise ReplearnError(f"the exports are of different test images ({int(np.sum(fa != fb))} of {na} differ)",
                                "export both models' features on the same dataset with the same data settings")
        la, lb = sa["labels"], sb["labels"]
        if la is not None and lb is not None and not np.array_equal(la, lb):
            raise ReplearnError(f"the exports are of different test images (their labels differ on "
                                f"{int(np.sum(la != lb))} of {na})",
                                "export both models' features on the same dataset with the same data settings")
    return seeds


def check_out(out: Path) -> None:
    """The output folder must be absent, empty, or an earlier similarity report (which is replaced)."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"similarity output '{out}' exists and is a file", "choose another --out directory")
    if out.is_dir() and any(out.iterdir()) and not (out / REPORT).is_file():
        raise RunDirError(f"similarity output '{out}' is a folder that is not an earlier similarity report",
                          "choose another --out directory (an empty or new one)")


def compute(a: Side, b: Side, seeds: list[Any], measures: list[str], images: int, seed: int = 0
            ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every measure between every (model, layer) of A and every (model, layer) of B, per seed, on at most
    ``images`` images; and the functional measures where both sides have predictions."""
    rows, functional = [], []
    for s in seeds:
        sa, sb = a.seeds[s], b.seeds[s]
        n = len(next(iter(next(iter(sa["features"].values())).values())))
        idx = subsample(n, images, seed)
        for (ma, layers_a), (mb, layers_b) in itertools.product(sa["features"].items(), sb["features"].items()):
            for (la, xa), (lb, xb) in itertools.product(layers_a.items(), layers_b.items()):
                for name in measures:
                    rows.append({"seed": s, "model_a": ma, "layer_a": la, "model_b": mb, "layer_b": lb,
                                 "measure": name, "value": MEASURES[name].fn(xa[idx], xb[idx]), "images": len(idx)})
        pa, pb = sa["predictions"], sb["predictions"]
        if "labels" in pa and "labels" in pb:
            for ma, mb in itertools.product([m for m in pa if m != "labels"], [m for m in pb if m != "labels"]):
                functional.append({"seed": s, "model_a": ma, "model_b": mb, "images": len(pa["labels"]),
                                   "disagreement": disagreement(pa[ma], pb[mb]),
                                   "error_consistency": error_consistency(pa[ma], pb[mb], pa["labels"])})
    return pd.DataFrame(rows), pd.DataFrame(functional)


def sections(values: pd.DataFrame, functional: pd.DataFrame, a: Side, b: Side) -> list[Section]:
    out = []
    means = values.groupby(["model_a", "layer_a", "model_b", "layer_b", "measure"], sort=False).value.mean()
    seeds = values.seed.nunique()
    for name in dict.fromkeys(values.measure):
        m = MEASURES[name]
        sub = means.xs(name, level="measure").reset_index()
        sub["A"] = sub.model_a if a.kind == "run" else sub.layer_a
        sub["B"] = sub.model_b if b.kind == "run" else sub.layer_b
        matrix = sub.pivot_table(index="A", columns="B", values="value", sort=False).reset_index()
        matrix = matrix.rename(columns={"A": f"A \\ B ({m.label})"})
        shown = format_frame(matrix, 3)
        out.append(Section(f"m-{name}", m.label, f"{m.reference}. {'Larger' if m.higher_is_similar else 'Smaller'} "
                           "is more similar; invariances in docs/similarity.md.",
                           table={"columns": list(shown.columns), "rows": shown.values.tolist()},
                           caption=f"Rows: {'layers' if a.kind == 'features' else 'regimes (latent)'} of A; "
                                   f"columns: of B; on {int(values.images.iloc[0])} images"
                                   + (f", mean over {seeds} seeds." if a.kind == "run" else ".")))
    if len(functional):
        f = functional.groupby(["model_a", "model_b"], sort=False)[list(FUNCTIONAL)].mean().reset_index()
        shown = format_frame(f.rename(columns={**FUNCTIONAL, "model_a": "A", "model_b": "B"}), 3)
        out.append(Section("functional", "Functional agreement of the final-layer probes",
                           "Disagreement: fraction of images the two probes classify differently. Error consistency "
                           "(Geirhos et al. 2020): Cohen's κ of their right/wrong vectors, 0 = chance overlap of "
                           "errors.",
                           table={"columns": list(shown.columns), "rows": shown.values.tolist()},
                           caption=f"On the {int(functional.images.iloc[0])} saved evaluation images, mean over "
                                   f"{functional.seed.nunique()} seeds."))
    elif a.kind == "features":
        out.append(Section("functional", "Functional agreement", bullets=[
            "Feature exports hold no predictions: disagreement and error consistency are computed between run "
            "directories (each regime's final-layer probe)."]))
    return out


def similarity(path_a: str | Path, path_b: str | Path, out: str | Path | None = None,
               measures: list[str] | None = None, images: int = 1000) -> Path:
    """Compare two feature exports or two run directories; write similarity.html and tables/ under ``out``
    (default reports/similarity-<timestamp>) and return the report's path."""
    chosen = list(dict.fromkeys(measures or DEFAULT_MEASURES))
    unknown = [m for m in chosen if m not in MEASURES]
    if unknown:
        raise ReplearnError(f"--measures names '{unknown[0]}', which is not a similarity measure",
                            f"choose from: {', '.join(MEASURES)} (or 'all')")
    if images < 20:
        raise ReplearnError(f"--images must be at least 20, got {images}", "pass --images 20 or more (default 1000)")
    target = Path(out) if out is not None else Path("reports") / f"similarity-{dt.datetime.now():%Y%m%d-%H%M%S}"
    check_out(target)
    a, b = load_side(path_a), load_side(path_b)
    seeds = check_same_images(a, b)
    values, functional = compute(a, b, seeds, chosen, images)
    found = sections(values, functional, a, b)
    (target / layout.TABLES).mkdir(parents=True, exist_ok=True)
    atomic_write_text(target / layout.table("similarity", "csv"), values.to_csv(index=False))
    if len(functional):
        atomic_write_text(target / layout.table("functional", "csv"), functional.to_csv(index=False))
    context = {"title": f"replearn — similarity of {a.path.name} and {b.path.name}",
               "run_dir": f"A = {a.path}, B = {b.path}", "dataset_name": "—", "state": "complete",
               "state_message": "", "complete": True, "wall_seconds": None,
               "sections": [dataclasses.asdict(s) for s in found], "unreadable": [], "not_written": [],
               "version": __version__, "rendered": dt.datetime.now().isoformat(timespec="seconds")}
    env = jinja2.Environment(loader=jinja2.PackageLoader("replearn.report", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    return atomic_write_text(target / REPORT, env.get_template("report.html.j2").render(**context))
