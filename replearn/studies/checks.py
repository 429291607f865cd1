"""What `replearn compare` checks of the runs it reads, before it writes anything: every table and array a run
contributes (its columns, their types and ranges, the arrays' lengths, the colours of models.json), each file read
only below a stated size; and runs that are copies of one another (the same config and seeds), which would
otherwise be pooled as if they were independent seeds.

A run whose file fails a check is refused in one line naming the file and the column (``RunDirError``): a report
drawn from it would show numbers that mean nothing. Absent files are not errors — a run that stopped early simply
contributes less.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from replearn.errors import DataError, RunDirError
from replearn.rundir import layout

if TYPE_CHECKING:
    from replearn.studies.runs import RunEntry

TABLE_LIMIT = 64 << 20  # bytes: a run's largest table (probes.csv of a deep model over many seeds) is far below
ARRAYS_LIMIT = 512 << 20  # bytes an array file may declare (predictions and latents of a test split)
MODELS_LIMIT = 1 << 20  # bytes of models.json


@dataclass(frozen=True)
class TableSpec:
    """The columns compare reads from a table: text ones, numeric ones, and the range of some numeric ones."""

    text: tuple[str, ...]
    numbers: tuple[str, ...]
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)


ACCURACY = (0.0, 1.0)
TABLES = {
    "probes": TableSpec(("model", "layer", "probe"), ("seed", "depth", "test_accuracy", "val_accuracy"),
                        {"test_accuracy": ACCURACY, "val_accuracy": ACCURACY}),
    # a run's CKA comes from the unbiased HSIC estimator (similarity.minibatch_cka), which is not bounded for a layer
    # that all but collapsed (a depth-study run wrote −6·10⁻⁶ and 1.014): any finite number is what a run can write
    "cka": TableSpec(("pair", "layer_a", "layer_b"), ("cka",), {"cka": (-np.inf, np.inf)}),
    "dimensions": TableSpec(("model", "layer"), ("depth",)),
}
PATTERNS = {  # tables of which a run has one per regime and seed
    "grad_init_*.csv": TableSpec(("regime", "layer"), ("grad_norm",)),
    "train_*_seed*.csv": TableSpec((), ()),  # its grad_norm_* columns: numbers (checked by prefix)
}
ARRAYS = ("predictions", "cka_features")


def refuse(path: Path, problem: str) -> RunDirError:
    return RunDirError(f"'{path}' {problem}", "leave that run out of the comparison, or run it again to rewrite the "
                                              "file")


def check_size(path: Path, limit: int) -> None:
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise refuse(path, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    if size > limit:
        raise refuse(path, f"is {size / 2**20:,.0f} MiB, more than a run writes ({limit / 2**20:,.0f} MiB at most)")


def check_table(path: Path, frame: pd.DataFrame | None, spec: TableSpec) -> None:
    """The columns ``spec`` names are there, numeric ones hold numbers (blank allowed) in their range."""
    if frame is None:
        return
    missing = [c for c in spec.text + spec.numbers if c not in frame.columns]
    if missing:
        raise refuse(path, f"has no '{missing[0]}' column (columns: {', '.join(map(str, frame.columns))[:200]})")
    numbers = list(spec.numbers) + [c for c in frame.columns if str(c).startswith("grad_norm")]
    for column in numbers:
        values = frame[column]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            bad = next((v for v in values if not _number(v)), values.iloc[0])
            raise refuse(path, f"column '{column}' holds {str(bad)[:40]!r}, not a number")
        low, high = spec.ranges.get(column, (-np.inf, np.inf))
        finite = values.dropna()
        outside = finite[(finite < low) | (finite > high) | ~np.isfinite(finite)] if len(finite) else finite
        if column in spec.ranges and len(outside):
            bad = float(outside.iloc[0])
            where = f"outside {low:g}..{high:g}" if np.isfinite(bad) else "not a finite number"
            raise refuse(path, f"column '{column}' holds {bad:g}, {where}")
    for column in spec.text:
        if frame[column].isna().any():
            raise refuse(path, f"column '{column}' has an empty cell (row {int(frame[column].isna().argmax()) + 2})")


def _number(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def check_models(path: Path) -> None:
    """models.json: a list of models whose label is text and whose colour is a colour matplotlib draws."""
    if not path.is_file():
        return
    check_size(path, MODELS_LIMIT)
    from matplotlib.colors import is_color_like

    try:
        models = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise refuse(path, f"cannot be read as JSON ({type(exc).__name__})") from None
    if not isinstance(models, list):
        raise refuse(path, f"holds a {type(models).__name__}, not a list of models")
    for entry in models:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise refuse(path, "holds an entry that is not a model description (no 'name')")
        color = entry.get("color", "#7f7f7f")
        if not isinstance(color, str) or not is_color_like(color):
            raise refuse(path, f"gives model '{entry['name'][:40]}' the colour {str(color)[:40]!r}, which is not a "
                               "colour")
        if not isinstance(entry.get("label", ""), str):
            raise refuse(path, f"gives model '{entry['name'][:40]}' a label that is not text")


def check_arrays(path: Path) -> None:
    """An artifacts .npz: declared sizes within ``ARRAYS_LIMIT``; its per-image arrays all of one length."""
    from replearn.data.readers import read_npz_checked

    try:
        arrays = read_npz_checked(path, limit=ARRAYS_LIMIT)
    except DataError as exc:
        raise refuse(path, exc.problem.replace(f"{path}: ", "")) from None
    except Exception as exc:  # noqa: BLE001 — not an npz at all
        raise refuse(path, f"cannot be read as arrays ({type(exc).__name__})") from None
    lengths = {key: (value.shape[0] if value.ndim else -1) for key, value in arrays.items()}
    if len(set(lengths.values())) > 1:
        first, *_ = lengths
        other = next(k for k in lengths if lengths[k] != lengths[first])
        raise refuse(path, f"holds arrays of different lengths ('{first}': {lengths[first]}, '{other}': "
                           f"{lengths[other]}); each holds one value per test image")


def check_run(run: "RunEntry") -> None:
    """Every file of ``run`` compare reads, checked (and the tables read, within bounds) before anything is
    written."""
    root = run.path
    check_models(root / layout.MODELS)
    for name, spec in TABLES.items():
        path = root / layout.metrics_table(name)
        if path.is_file():
            check_size(path, TABLE_LIMIT)
            check_table(path, _read(run, path), spec)
    for pattern, spec in PATTERNS.items():
        for path in sorted((root / layout.METRICS).glob(pattern)):
            check_size(path, TABLE_LIMIT)
            check_table(path, _read(run, path), spec)
    for name in ARRAYS:
        for path in sorted((root / layout.ARTIFACTS).glob(layout.seed_artifact_pattern(name))):
            check_size(path, ARRAYS_LIMIT)
            check_arrays(path)


def _read(run: "RunEntry", path: Path) -> pd.DataFrame | None:
    """The table as the comparison will read it (the run's cached reader): None when empty or unreadable."""
    return run.artifacts.csv(path.stem)


def check_duplicates(runs: list["RunEntry"]) -> None:
    """Refuse two runs with the same config and seeds (a copied run folder): pooled, they would count one run's
    numbers twice, as if they were two seeds, with an interval too narrow."""
    seen: dict[str, "RunEntry"] = {}
    for run in runs:
        key = json.dumps({k: v for k, v in run.config.items() if k != "name"}, sort_keys=True, default=str)
        if key in seen:
            first = seen[key]
            raise RunDirError(f"'{first.path}' and '{run.path}' are the same run (the same config and seeds "
                              f"{', '.join(map(str, run.seeds)) or '—'}): pooled they would count as two seeds",
                              "pass only one of them; to repeat a run, give it other seeds (--seeds or train.seeds)")
        seen[key] = run
