"""The runs a cross-run comparison reads: found from sweep directories (their manifest) and plain run
directories, with the config keys that differ between them and how they are laid out — the swept key on
the x axis, runs that differ only in their seed pooled into one point, and runs on another dataset,
encoder or value of a further swept key in panels of their own (side by side, never averaged)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from replearn.analyses import RunArtifacts
from replearn.rundir.io import RUN_MARKER, read_json
from replearn.errors import RunDirError
from replearn.config.options import safe_load_bounded
from replearn.studies.sweep import MANIFEST, flow
from replearn.rundir import layout as run_files

IGNORED = ("name", "train.seeds")  # differ between the runs of a sweep by design
# settings that change only what a run shows, writes or logs, or where its files are, never a number compared
REPORT_ONLY = ("analysis.figure_formats", "analysis.tensorboard", "analysis.reconstructions", "analysis.skip",
               "analysis.extra", "train.probe_every_epoch", "train.probe_train_images", "train.collective_timeout",
               "data.root")
REPORT_ONLY_PREFIXES = ("selection.",)
# analysis.* settings that belong to one built-in analysis: a run that skipped it did not use them
ANALYSIS_OWNERS = {"analysis.projection_points": "projection", "analysis.projection_neighbors": "projection",
                   "analysis.umap_backend": "projection", "analysis.label_counts": "label_efficiency",
                   "analysis.label_draws": "label_efficiency", "analysis.cka_batch_size": "similarity",
                   "analysis.twonn_points": "dimensions"}
SIDE_BY_SIDE = ("data.name", "model.name")  # never on one axis, never averaged
ZERO_MEANS_ALL = ("train.labels_per_class", "data.train_subset", "data.test_subset")  # 0: every image, drawn last


@dataclass
class RunEntry:
    """One run directory: its flattened config, seeds, state and saved artifacts."""

    path: Path
    label: str
    config: dict[str, Any]
    seeds: list[int]
    state: str
    artifacts: RunArtifacts = field(repr=False)

    @property
    def has_results(self) -> bool:
        return self.artifacts.csv("probes") is not None


def flatten(raw: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as {"section.key": value}; lists are values."""
    if not isinstance(raw, dict):
        return {prefix.rstrip("."): raw} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        out.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) and value else {f"{prefix}{key}": value})
    return out


def read_run(path: Path, label: str) -> RunEntry:
    """A run directory as a RunEntry (its config read with the bounded YAML loader; nothing is imported)."""
    try:
        raw = safe_load_bounded((path / run_files.CONFIG).read_text(encoding="utf-8"), f"{path}/{run_files.CONFIG}")
    except Exception:  # noqa: BLE001 — a damaged config: refused with the fix below
        raw = None
    if not isinstance(raw, dict):
        raise RunDirError(f"'{path / 'config.yaml'}' cannot be read as a config", "leave that run out of the comparison")
    config = flatten(raw)
    seeds = config.get("train.seeds") if isinstance(config.get("train.seeds"), list) else []
    artifacts = RunArtifacts(path)
    return RunEntry(path, label, config, [s for s in seeds if isinstance(s, int)],
                    str(artifacts.status.get("state", "unknown")), artifacts)


def _sweep_runs(path: Path) -> tuple[list[RunEntry], list[str], list[str]]:
    try:
        manifest = read_json(path / MANIFEST)
        runs, keys = manifest["runs"], [str(k) for k in manifest["keys"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise RunDirError(f"'{path / MANIFEST}' is damaged", "run the sweep again to rewrite it") from None
    entries, notes = [], []
    if not isinstance(runs, list) or not all(isinstance(run, dict) for run in runs):
        raise RunDirError(f"'{path / MANIFEST}' is damaged", "run the sweep again to rewrite it")
    for run in runs:
        run_dir = path / str(run.get("dir", ""))
        if not inside(run_dir, path):
            raise RunDirError(f"'{path / MANIFEST}' names the run directory '{str(run.get('dir'))[:80]}', which is not "
                              "inside the sweep", "run the sweep again to rewrite its manifest, or compare the run "
                                                  "directory itself")
        if (run_dir / RUN_MARKER).is_file() and (run_dir / run_files.CONFIG).is_file():
            entries.append(read_run(run_dir, f"{path.name}/{run_dir.name}"))
        else:
            notes.append(f"{path.name}/{run.get('name')}: not started")
    return entries, keys, notes


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` names a folder below ``folder`` without climbing out of it (no absolute path, no ``..``);
    a run folder inside the sweep that is a link is followed, as the sweep's owner made it."""
    try:
        rel = path.relative_to(folder)
    except ValueError:
        return False
    return bool(rel.parts) and ".." not in rel.parts and rel.parts != (".",)


def find_runs(paths: list[str | Path]) -> tuple[list[RunEntry], list[str], list[str]]:
    """Every run under the given sweep or run directories (each once), the sweeps' swept keys, and notes on
    runs that are missing. Anything else is refused."""
    if not paths:
        raise RunDirError("no run or sweep directory given", "pass at least one, e.g. replearn compare reports/sweeps/NAME")
    runs: dict[Path, RunEntry] = {}
    swept: list[str] = []
    notes: list[str] = []
    for given in map(Path, paths):
        if not given.is_dir():
            raise RunDirError(f"'{given}' does not exist or is not a directory",
                              "pass directories made by `replearn run` or `replearn sweep`")
        if (given / MANIFEST).is_file():
            entries, keys, missing = _sweep_runs(given)
            swept += [k for k in keys if k not in swept]
            notes += missing
        elif (given / RUN_MARKER).is_file() and (given / run_files.CONFIG).is_file():
            entries = [read_run(given, given.name)]
        else:
            raise RunDirError(f"'{given}' is neither a replearn run nor a sweep directory (no {RUN_MARKER} or {MANIFEST})",
                              "pass directories made by `replearn run` or `replearn sweep`")
        for entry in entries:
            runs.setdefault(entry.path.resolve(), entry)
    if not runs:
        raise RunDirError("the given sweep has no run started yet", "run the sweep first (replearn sweep SPEC)")
    return list(runs.values()), swept, notes


def applies(run: RunEntry, key: str) -> bool:
    """Whether ``key`` is a setting ``run`` used: present in its config, and not an option of an analysis it
    skipped (analyses.<name>.*, or an analysis.* setting of that analysis)."""
    if key not in run.config:
        return False
    skipped = run.config.get("analysis.skip")
    skipped = set(map(str, skipped)) if isinstance(skipped, list) else set()
    owner = key.split(".")[1] if key.startswith("analyses.") else ANALYSIS_OWNERS.get(key)
    return owner not in skipped


def varying_keys(runs: list[RunEntry], swept: list[str]) -> list[str]:
    """The swept keys, then every other config key whose value differs between the runs that used it (seeds,
    settings that matter only to the report, options of analyses a run skipped and of plug-ins a run did not
    use aside)."""
    keys = list(dict.fromkeys(k for r in runs for k in r.config))

    def differs(key: str) -> bool:
        if key in swept:
            return len({flow(r.config.get(key)) for r in runs}) > 1
        if key in IGNORED or key in REPORT_ONLY or key.startswith(REPORT_ONLY_PREFIXES):
            return False
        return len({flow(r.config.get(key)) for r in runs if applies(r, key)}) > 1

    differing = [k for k in keys if differs(k)]
    return [k for k in swept if k in differing] + [k for k in differing if k not in swept]


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class Layout:
    """Where each run goes: its panel (values of the side-by-side keys) and its x value (the swept key)."""

    x_key: str | None
    panel_keys: list[str]
    varying: list[str]
    numeric: bool
    x_values: list[Any]
    panels: list[str]
    groups: dict[tuple[str, str], list[RunEntry]]

    def x_label(self, value: Any) -> str:
        if self.x_key in ZERO_MEANS_ALL and value == 0:
            return "all"
        return flow(value) if self.x_key else "all runs"

    def x_position(self, value: Any) -> float:
        if self.numeric and self.x_key in ZERO_MEANS_ALL and value == 0:  # "all": right of the largest budget
            largest = max([float(v) for v in self.x_values if v != 0], default=1.0)
            return largest * 4 if largest > 0 else 1.0
        if self.numeric:
            return float(value)
        labels = [self.x_label(v) for v in self.x_values]
        return float(labels.index(self.x_label(value)))


PANEL_VALUE_CHARS = 24


def short_value(value: Any) -> str:
    """A config value as a panel shows it: an import path by its last name, long values cut."""
    text = flow(value)
    if isinstance(value, str) and (":" in text or "." in text) and " " not in text:
        text = text.replace(":", ".").rstrip(".").rsplit(".", 1)[-1]
    return text if len(text) <= PANEL_VALUE_CHARS else text[:PANEL_VALUE_CHARS - 1] + "…"


def panel_name(run: RunEntry, keys: list[str]) -> str:
    """The short label of a run's panel: each side-by-side key by its last part, with its value."""
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={short_value(run.config.get(k))}" for k in keys) or "all runs"


def layout(runs: list[RunEntry], swept: list[str]) -> Layout:
    """The x key (the first swept key that is not a dataset or encoder), the panels and the groups of runs."""
    varying = varying_keys(runs, swept)
    x_key = next((k for k in varying if k not in SIDE_BY_SIDE), None)
    panel_keys = [k for k in varying if k != x_key]
    values: list[Any] = []
    for run in runs:
        value = run.config.get(x_key) if x_key else None
        if flow(value) not in {flow(v) for v in values}:
            values.append(value)
    numeric = x_key is not None and all(is_number(v) for v in values)
    if numeric:
        values.sort(key=lambda v: (x_key in ZERO_MEANS_ALL and v == 0, v))
    groups: dict[tuple[str, str], list[RunEntry]] = {}
    for run in runs:
        key = (panel_name(run, panel_keys), flow(run.config.get(x_key)) if x_key else "all runs")
        groups.setdefault(key, []).append(run)
    panels = list(dict.fromkeys(p for p, _ in groups))
    return Layout(x_key, panel_keys, varying, numeric, values, panels, groups)
