"""A sweep: the cross product of swept config values × seeds, one ordinary run directory each, under one
sweep directory with a manifest (``sweep.json``).

A spec (YAML, or the ``--grid`` options of ``replearn sweep``) names a base config, fixed overrides, the grid
and the seeds; ``plan_sweep`` turns it into cells and validates every cell's config (plug-ins resolved,
values checked) before anything is written, so that a typo in the fourth value of a grid is refused before
the first run starts. Running a sweep again skips finished runs and resumes interrupted ones
(``sweep_backends``).

    name: bottleneck                 # default: the spec file's name
    base: fashion_mnist              # a bundled experiment or a YAML path (relative to the spec file)
    set: {train.epochs: 5}           # fixed overrides of every run
    grid: {model.latent_dim: [8, 32, 128]}
    seeds: [0, 1, 2]
    backend: local                   # or slurm
    parallel: 1                      # local: runs side by side
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from replearn.rundir.io import RUN_MARKER, read_json
from replearn.config.sections import apply_overrides, config_from_dict, load_config, load_yaml, resolve_config_path
from replearn.errors import ConfigError, ReplearnError
from replearn.experiment.experiment import Experiment
from replearn.config.options import safe_load_bounded
from replearn.experiment.plugins import resolve
from replearn.rundir.directory import first_difference
from replearn.rundir import layout

MANIFEST = layout.SWEEP_MANIFEST
from replearn.runtime.log import log
from replearn.rundir.directory import check_not_in_use

MAX_RUNS = 1000  # runs a sweep plans unless its spec raises max_runs: each is checked, then trained, one by one
SPEC_KEYS = {"name": "the sweep's name (default: the spec file's name)",
             "base": "the base config: a bundled experiment's name or a YAML path",
             "set": "fixed overrides of every run, key: value",
             "grid": "the swept keys, each with a list of values",
             "seeds": "the seeds, a list such as [0, 1, 2]",
             "backend": "local or slurm",
             "parallel": "local backend: runs side by side (default 1)",
             "threads": "threads per run (default: the cores split between parallel runs)",
             "slurm": "slurm backend: submitit parameters (timeout_min, cpus_per_task, slurm_partition, …)",
             "out": "the sweep directory (default reports/sweeps/<name>)",
             "max_runs": f"the most runs the sweep may plan (default {MAX_RUNS}; raise it for a larger grid)"}
BACKENDS = ("local", "slurm")
NOT_SWEPT = ("name", "train.seeds")


@dataclass
class Cell:
    """One run of a sweep: its swept values, its seed, the overrides applied to the base and its config."""

    name: str
    values: dict[str, Any]
    seed: int
    overrides: list[str]
    config: dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass
class Sweep:
    """A validated sweep: where it goes, how it runs, and its cells in order."""

    name: str
    base: str
    fixed: dict[str, Any]
    grid: dict[str, list[Any]]
    seeds: list[int]
    backend: str
    parallel: int
    threads: int | None
    slurm: dict[str, Any]
    out: Path
    cells: list[Cell]

    def spec(self) -> dict[str, Any]:
        """The spec as run (every default filled in), for the manifest."""
        return {"name": self.name, "base": self.base, "set": self.fixed, "grid": self.grid, "seeds": self.seeds,
                "backend": self.backend, "parallel": self.parallel, "threads": self.threads, "slurm": self.slurm,
                "out": str(self.out)}


def flow(value: Any) -> str:
    """A value as YAML on one line, as ``--set key=VALUE`` parses it back."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, allow_unicode=True).strip()
    return text[:-3].strip() if text.endswith("...") else text


def load_spec(path: str | Path) -> dict[str, Any]:
    """A sweep spec file as a mapping (bounded YAML), with its file's name as the default name."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep spec '{path}' does not exist or is not a file",
                          "give the path of a sweep YAML file (docs/studies.md), or use --base and --grid")
    try:
        raw = safe_load_bounded(path.read_text(encoding="utf-8"), f"sweep spec '{path}'")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"sweep spec '{path}' is not valid YAML{where}", "check the 'key: value' syntax there") from None
    except UnicodeDecodeError:
        raise ConfigError(f"sweep spec '{path}' is not UTF-8 text", "save it as a UTF-8 YAML file") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"sweep spec '{path}' must be a mapping of keys (base, grid, seeds, …), not a "
                          f"{type(raw).__name__}", "see docs/studies.md for the format")
    raw = dict(raw)
    raw.setdefault("name", path.stem)
    base = raw.get("base")
    if isinstance(base, str) and (path.parent / base).is_file():
        raw["base"] = str(path.parent / base)
    return raw


def parse_list(text: str, what: str) -> list[Any]:
    """``v1,v2,…`` (each a YAML value, lists in brackets) as a list."""
    try:
        values = safe_load_bounded(f"[{text}]", what)
    except yaml.YAMLError:
        raise ConfigError(f"{what} '{text[:60]}' is not a comma-separated list of values",
                          "write e.g. 8,16,32 or [16,32],[16,32,64]") from None
    return values


def spec_from_options(base: str | None, grid: list[str], seeds: str | None, sets: list[str]) -> dict[str, Any]:
    """A spec from the command line: ``--base``, ``--grid key=v1,v2``, ``--seeds 0,1`` and ``--set key=value``."""
    raw: dict[str, Any] = {"base": base or "digits", "grid": {}, "set": {}}
    for text in grid:
        key, sep, values = text.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--grid '{text[:60]}' is not of the form key=v1,v2", "write e.g. --grid model.latent_dim=8,16,32")
        raw["grid"][key.strip()] = parse_list(values, f"--grid {key.strip()}")
    for text in sets:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set '{text[:60]}' is not of the form key=value", "write e.g. --set train.epochs=3")
        raw["set"][key.strip()] = safe_load_bounded(value, f"--set {key.strip()}") if value.strip() else ""
    raw["seeds"] = parse_list(seeds, "--seeds") if seeds is not None else list(load_config(raw["base"]).train.seeds)
    return raw


def _check_keys(raw: dict[str, Any]) -> None:
    unknown = [k for k in raw if k not in SPEC_KEYS]
    if unknown:
        raise ConfigError(f"unknown sweep spec key '{unknown[0]}'",
                          "use only " + ", ".join(SPEC_KEYS) + " (config keys go under set: or grid:)")
    for key in ("base", "grid", "seeds"):
        if raw.get(key) is None:
            raise ConfigError(f"the sweep spec has no '{key}'", f"add {key}: ({SPEC_KEYS[key]})")
    if not isinstance(raw["base"], str) or not raw["base"].strip():
        raise ConfigError("sweep spec 'base' must be a config name or path", "write e.g. base: fashion_mnist")
    if not isinstance(raw.get("name"), str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", raw["name"]):
        raise ConfigError(f"sweep name {str(raw.get('name'))[:60]!r} is not a plain name",
                          "use letters, digits, '.', '_' and '-' only, e.g. name: bottleneck")


def _check_grid(grid: Any, fixed: dict[str, Any]) -> dict[str, list[Any]]:
    if not isinstance(grid, dict) or not grid:
        raise ConfigError("the sweep's grid is empty or not a mapping", "give at least one key with a list of values, "
                          "e.g. grid: {model.latent_dim: [8, 32]}")
    out = {}
    for key, values in grid.items():
        key = str(key)
        if key in NOT_SWEPT:
            raise ConfigError(f"'{key}' cannot be swept in the grid", "list the seeds under seeds: (the run name is set "
                              "by the sweep)")
        if key in fixed:
            raise ConfigError(f"'{key}' is both in set: and in grid:", "keep it in one of them")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid key '{key}' needs a non-empty list of values, got {flow(values)[:60]}",
                              f"write e.g. {key}: [value1, value2]")
        if len({flow(v) for v in values}) != len(values):
            raise ConfigError(f"grid key '{key}' lists a value twice", "give each value once")
        out[key] = values
    return out


def _check_seeds(seeds: Any) -> list[int]:
    ok = isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                    for s in seeds)
    if not ok or len(set(seeds)) != len(seeds):
        raise ConfigError(f"sweep seeds must be a non-empty list of different whole numbers ≥ 0, got {flow(seeds)[:60]}",
                          "write e.g. seeds: [0, 1, 2]")
    return list(seeds)


def _check_backend(raw: dict[str, Any]) -> tuple[str, int, int | None, dict[str, Any]]:
    backend = raw.get("backend", "local")
    if backend not in BACKENDS:
        raise ConfigError(f"unknown sweep backend {str(backend)[:40]!r}", "use backend: local or backend: slurm")
    parallel, threads, slurm = raw.get("parallel", 1), raw.get("threads"), raw.get("slurm") or {}
    if not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 1:
        raise ConfigError(f"parallel must be a whole number ≥ 1, got {str(parallel)[:40]}",
                          "set parallel: 1 (one run after another) or more")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ConfigError(f"threads must be a whole number ≥ 1, got {str(threads)[:40]}", "set threads: 1 or more, "
                          "or leave it out to split the cores between parallel runs")
    if not isinstance(slurm, dict):
        raise ConfigError("the sweep's slurm: must be a mapping of submitit parameters",
                          "write e.g. slurm: {timeout_min: 60, cpus_per_task: 4}")
    if slurm and backend != "slurm":
        raise ConfigError("the sweep spec has slurm: parameters but backend is local", "set backend: slurm, or remove slurm:")
    if backend == "slurm":
        check_slurm(slurm)
    return backend, parallel, threads, dict(slurm)


def slug(value: Any) -> str:
    """A value as a piece of a directory name: lists joined by '-', anything else reduced to safe characters."""
    text = "-".join(slug(v) for v in value) if isinstance(value, list) else flow(value)
    text = re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")
    return text[:40] or "x"


def cell_names(grid: dict[str, list[Any]], combos: list[dict[str, Any]]) -> list[str]:
    """A directory name for each combination of values: 'latent_dim-8', or the full key where short ones clash."""
    short = [k.split(".")[-1] for k in grid]
    labels = [k if short.count(k.split(".")[-1]) > 1 else k.split(".")[-1] for k in grid]
    names = ["_".join(f"{label}-{slug(combo[k])}" for label, k in zip(labels, grid)) for combo in combos]
    if len(set(names)) < len(names):  # values that differ only in characters a directory name leaves out
        names = [f"{n}-{hashlib.sha1(json.dumps(c, sort_keys=True, default=str).encode()).hexdigest()[:6]}"
                 for n, c in zip(names, combos)]
    return names


def combinations(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    combos: list[dict[str, Any]] = [{}]
    for key, values in grid.items():
        combos = [{**c, key: v} for c in combos for v in values]
    return combos


def build_cells(base: str, fixed: dict[str, Any], grid: dict[str, list[Any]], seeds: list[int]) -> list[Cell]:
    """Every combination × seed, each combination's config resolved now (a bad value in any cell is refused
    here); two values that resolve to the same config (1 and 1.0) are refused as the same run planned twice."""
    raw = load_yaml(base)
    fixed_overrides = [f"{k}={flow(v)}" for k, v in fixed.items()]
    cells = []
    combos = combinations(grid)
    progress = PlanProgress(len(combos), "configs resolved")
    resolved: dict[str, dict[str, Any]] = {}
    for name, combo in zip(cell_names(grid, combos), combos):
        overrides = fixed_overrides + [f"{k}={flow(v)}" for k, v in combo.items()]
        try:
            config = resolve(config_from_dict(apply_overrides(raw, overrides + [f"train.seeds=[{seeds[0]}]"]))) \
                .config.to_dict()
        except ReplearnError as exc:
            where = ", ".join(f"{k}={flow(v)}" for k, v in combo.items())
            raise ConfigError(f"sweep run {where} seed {seeds[0]}: {exc.problem}", exc.fix) from None
        key = json.dumps({k: v for k, v in config.items() if k != "name"}, sort_keys=True, default=str)
        if key in resolved:
            _same_run(grid, resolved[key], combo)
        resolved[key] = combo
        for seed in seeds:  # the seed changes train.seeds only: the resolved config is copied, not rebuilt
            seeded = {**config, "train": {**config.get("train", {}), "seeds": [seed]}}
            cells.append(Cell(f"{name}_seed{seed}", combo, seed, overrides + [f"train.seeds=[{seed}]"], seeded))
        progress.step()
    return cells


def _same_run(grid: dict[str, list[Any]], first: dict[str, Any], second: dict[str, Any]) -> None:
    key = next(k for k in grid if flow(first[k]) != flow(second[k]))
    raise ConfigError(f"grid key '{key}' lists {flow(first[key])} and {flow(second[key])}, which are the same value "
                      "once read (the two runs would be one run planned twice)", "give each value once")


class PlanProgress:
    """Lines on stderr while a large sweep is planned (every tenth of the work, from ``SHOWN_FROM`` items on)."""

    SHOWN_FROM = 50

    def __init__(self, total: int, what: str) -> None:
        self.total, self.what, self.done, self.started = total, what, 0, time.perf_counter()
        self.next_report = max(1, total // 10)

    def step(self) -> None:
        self.done += 1
        if self.total >= self.SHOWN_FROM and (self.done >= self.next_report or self.done == self.total):
            log(f"planning the sweep: {self.done:,}/{self.total:,} {self.what} "
                f"({time.perf_counter() - self.started:.0f}s)")
            self.next_report = self.done + max(1, self.total // 10)


def plan_sweep(raw: dict[str, Any], out: str | Path | None = None) -> Sweep:
    """Validate a spec and every cell's config; nothing is written."""
    _check_keys(raw)
    fixed = raw.get("set") or {}
    if not isinstance(fixed, dict):
        raise ConfigError("the sweep's set: must be a mapping of config keys to values",
                          "write e.g. set: {train.epochs: 5}")
    fixed = {str(k): v for k, v in fixed.items()}
    for key in fixed:
        if key in NOT_SWEPT:
            raise ConfigError(f"'{key}' cannot be set in a sweep", "list the seeds under seeds:")
    grid = _check_grid(raw["grid"], fixed)
    seeds = _check_seeds(raw["seeds"])
    _check_count(grid, seeds, raw.get("max_runs", MAX_RUNS))
    backend, parallel, threads, slurm = _check_backend(raw)
    base = str(resolve_config_path(raw["base"]).resolve())
    target = Path(out or raw.get("out") or Path("reports") / "sweeps" / raw["name"])
    if target.is_dir() and (target / MANIFEST).is_file():
        check_not_in_use(target, "sweep directory")  # before the configs are built and the data checked
    sweep = Sweep(raw["name"], base, fixed, grid, seeds, backend, parallel, threads, slurm, target,
                  build_cells(base, fixed, grid, seeds))
    check_sweep_dir(sweep)
    check_cells_fit(sweep.cells)
    return sweep


def _check_count(grid: dict[str, list[Any]], seeds: list[int], most: Any) -> None:
    """Refuse, before any config is built, a grid of more runs than ``most`` (``max_runs``)."""
    if not isinstance(most, int) or isinstance(most, bool) or most < 1:
        raise ConfigError(f"max_runs must be a whole number ≥ 1, got {str(most)[:40]}",
                          f"write e.g. max_runs: {MAX_RUNS}")
    runs = math.prod(len(values) for values in grid.values()) * len(seeds)
    if runs > most:
        shape = " × ".join(str(len(values)) for values in grid.values())
        raise ConfigError(f"the sweep plans {runs:,} runs ({shape} values × {len(seeds)} seeds), more than max_runs "
                          f"({most:,})", "sweep fewer values, or set max_runs: in the spec to allow more")


def check_cells_fit(cells: list[Cell]) -> None:
    """Run the checks a run starts with (the model, regimes and analyses fit the data) once per grid point, each
    distinct dataset loaded once: a value that only fails against the data is refused before any run."""
    points: dict[str, Cell] = {}
    for cell in cells:
        key = json.dumps({**cell.config, "train": {**cell.config.get("train", {}), "seeds": None}}, sort_keys=True,
                         default=str)
        points.setdefault(key, cell)
    by_data = sorted(points.values(), key=lambda c: json.dumps(c.config.get("data"), sort_keys=True, default=str))
    progress = PlanProgress(len(by_data), "grid points checked against their data")
    loaded_for, data, source, preflown = None, None, None, set()
    for cell in by_data:
        try:
            experiment = Experiment(config_from_dict(cell.config), out=Path("unused"), progress=False)
            data_key = json.dumps(cell.config.get("data"), sort_keys=True, default=str)
            if data_key != loaded_for:
                data, loaded_for = None, None  # the previous dataset is let go before the next is loaded
                source = experiment.plugins.dataset
                data, loaded_for = source.load(experiment.config.data), data_key
            try:
                experiment.check_data(data, preflown)
            except BaseException:  # refused: a cache the source made for these data goes too
                source.discard()
                raise
        except ReplearnError as exc:
            raise ConfigError(f"sweep run {cell.name}: {exc.problem}", exc.fix) from None
        progress.step()


def check_sweep_dir(sweep: Sweep) -> None:
    """Refuse a directory that is not this sweep's: a file, a foreign non-empty folder, one another replearn
    process is writing to, or a run made with another config than its cell's."""
    out = sweep.out
    if out.exists() and not out.is_dir():
        raise ConfigError(f"sweep directory '{out}' exists and is a file", "choose another out: directory")
    check_not_in_use(out, "sweep directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ConfigError(f"'{out}' is not empty and is not a sweep directory (no {MANIFEST})",
                          "choose another out: directory")
    for cell in sweep.cells:
        path = out / cell.name
        if path.exists() and not (path / RUN_MARKER).is_file() and (not path.is_dir() or any(path.iterdir())):
            raise ConfigError(f"'{path}' exists and is not a replearn run", "move it away, or choose another out:")
        if (path / RUN_MARKER).is_file():
            try:
                started = read_json(path / RUN_MARKER).get("config")
            except (OSError, ValueError, AttributeError):
                started = None
            changed = first_difference(started, cell.config) if isinstance(started, dict) else None
            if changed is not None:
                key, before, now = changed
                raise ConfigError(f"run '{path}' was made with {key}={before}, this sweep asks for {now}",
                                  "choose another out: for the changed sweep, or move the old runs away")


def check_slurm(params: dict[str, Any]) -> None:
    """Refuse, before anything is written, a slurm backend without submitit or with parameters it rejects."""
    try:
        import submitit
    except ImportError:
        raise ConfigError("the slurm backend needs submitit, which is not installed",
                          "pip install 'replearn[slurm]', or use backend: local") from None
    if not isinstance(params.get("wait", True), bool):
        raise ConfigError("slurm: wait must be true or false", "write wait: true to wait for the jobs, false to return")
    options = {k: v for k, v in params.items() if k not in ("cluster", "wait")}
    with tempfile.TemporaryDirectory() as folder:
        try:
            executor = submitit.AutoExecutor(folder=folder, cluster=params.get("cluster", "slurm"))
        except Exception as exc:  # noqa: BLE001 — no SLURM here (no srun), or an unknown cluster name
            detail = " ".join(str(exc).split())[:200]
            raise ConfigError(f"submitit cannot submit to cluster {params.get('cluster', 'slurm')!r} here ({detail})",
                              "run the sweep on a SLURM login node, or set slurm: {cluster: local} to run the job "
                              "array on this machine") from None
        try:
            executor.update_parameters(**options)
        except Exception as exc:  # noqa: BLE001 — submitit's own check of its parameters
            detail = " ".join(str(exc).split())[:200]
            raise ConfigError(f"submitit refuses the sweep's slurm: parameters ({detail})",
                              "use submitit's names: timeout_min, mem_gb, cpus_per_task, gpus_per_node, "
                              "slurm_partition, slurm_array_parallelism, …") from None
