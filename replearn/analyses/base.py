"""What an analysis is to replearn: it computes tables and arrays from the features extracted once per
model, and renders its own report sections from the saved files alone.

``compute`` runs once per seed on a ``SeedContext`` and returns tables (appended across seeds to
``metrics/<table>.csv``); arrays it saves go to ``artifacts/``. ``finish`` runs once after every seed
(e.g. seed-vs-seed similarity). ``sections`` reads a finished (or interrupted) run through
``RunArtifacts`` and returns report sections; it never recomputes. Adding an analysis is one module with
an ``Analysis`` subclass under ``@register_analysis("name")``; the report orders sections by ``order``.

An analysis declares what it reads of others in ``requires`` (their names: the analyses whose tables,
saved files or memory it uses), and its own options as an ``Options`` dataclass of ``opt`` fields, set in
a config as ``analyses.<name>.<key>``; ``order.ordered_analyses`` derives the computing order from
``requires`` and validates the options. A user's own analysis needs no edit inside replearn: it is named
by import path (``analysis.extra: [mypkg.checks:MyAnalysis]``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import pandas as pd
import torch

from replearn.rundir import io as artifacts
from replearn.rundir.io import atomic_write_text, load_npz, read_json, save_npz
from replearn.config.sections import Config
from replearn.errors import ConfigError
from replearn.config.options import safe_load_bounded
from replearn.config.registry import Registry
from replearn.analyses.exports import VectorExports
from replearn.rundir import layout

Features = dict[str, dict[str, torch.Tensor]]  # layer -> split -> (N × D) features

BASELINE_STYLES = {"pixels": ("raw pixels", "#7f7f7f"), "pca": ("PCA of pixels", "#bcbd22"),
                   "random": ("random-init encoder", "#8c564b")}


@dataclass
class ModelInfo:
    """A model whose features are analysed: a baseline, the untrained encoder, or a trained regime."""

    name: str
    label: str
    color: str
    kind: str  # "baseline" (seed-independent), "random" or "regime"
    trained_with_labels: bool = False
    reconstructs: bool = False
    standardize: bool = True  # probes and clustering scale each feature to unit variance (False: PCA components)


def baseline_models() -> list[ModelInfo]:
    return [ModelInfo("pixels", *BASELINE_STYLES["pixels"], "baseline"),
            ModelInfo("pca", *BASELINE_STYLES["pca"], "baseline", standardize=False),
            ModelInfo("random", *BASELINE_STYLES["random"], "random")]


@dataclass
class Section:
    """One block of the report: a title, a reading guide, and any of bullets, figures, a table, code."""

    id: str
    title: str
    guide: str = ""
    bullets: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    table: dict[str, Any] | None = None
    code: str | None = None
    caption: str = ""


def final_layer(layers: dict[str, Any]) -> str:
    """The layer that stands for a model's representation: its latent, or the input for raw pixels."""
    return "latent" if "latent" in layers else "input"


@dataclass
class RunContext:
    """What all seeds of one run share: the config, the models and each analysis's memory across seeds."""

    cfg: Config
    run_dir: Path
    models: list[ModelInfo]
    progress: bool = True
    memory: dict[str, dict[Any, Any]] = field(default_factory=dict)

    def seeds(self) -> list[int]:
        return list(self.cfg.train.seeds)


@dataclass
class SeedContext:
    """Everything an analysis of one seed may use. ``fresh`` lists the models to analyse one by one this
    seed: the seed-independent baselines only in the first seed."""

    run: RunContext
    seed: int
    data: Any
    features: dict[str, Features]
    encoders: dict[str, torch.nn.Module]
    fresh: list[str]
    points: np.ndarray
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    heads: dict[str, torch.nn.Module] = field(default_factory=dict)  # each trained regime's head (eval mode)

    @property
    def cfg(self) -> Config:
        return self.run.cfg

    @property
    def first_seed(self) -> bool:
        return self.seed == self.run.cfg.train.seeds[0]

    @property
    def labels(self) -> dict[str, torch.Tensor]:
        return {"train": self.data.train_y, "val": self.data.val_y, "test": self.data.test_y}

    def regimes(self) -> list[str]:
        return [m.name for m in self.run.models if m.kind == "regime" and m.name in self.features]

    def memory(self, analysis: str) -> dict[Any, Any]:
        return self.run.memory.setdefault(analysis, {})

    def standardize(self, model: str) -> bool:
        """Whether probes and clustering give the model's features unit variance each (see ``ModelInfo``)."""
        return next((m.standardize for m in self.run.models if m.name == model), True)

    def save(self, name: str, **arrays: np.ndarray) -> Path:
        return save_npz(self.run.run_dir / layout.seed_artifact(name, self.seed), **arrays)


@dataclass
class NoOptions:
    """The options of an analysis that declares none."""


class Analysis:
    """Base class of analyses; every method has a do-nothing default.

    ``requires``: names of the analyses whose tables (``ctx.tables``), files in the run directory or
    memory (``run.memory``) this one reads; they compute first, and a run without them is refused.
    ``Options``: a dataclass of ``opt(default, help, …)`` fields, given as ``analyses.<name>.<key>`` and
    checked like any config section; the instance's values are ``self.options``."""

    name: ClassVar[str] = ""
    order: ClassVar[int] = 50
    requires: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type] = NoOptions

    def __init__(self, options: Any = None) -> None:
        self.options = options if options is not None else self.Options()

    def check(self, cfg: Config, data: Any, layers: list[str]) -> None:
        """Refuse, before anything is written, options that this run's data (a ``Dataset``) or encoder (its
        layer names, input first) cannot satisfy: raise a ``ConfigError`` naming the option and the fix."""

    def compute(self, ctx: SeedContext) -> dict[str, pd.DataFrame]:
        return {}

    def finish(self, run: RunContext) -> dict[str, pd.DataFrame]:
        return {}

    def sections(self, run: "RunArtifacts") -> list[Section]:
        return []


def check_analysis(obj: Any, path: str) -> type[Analysis]:
    """What an import path names, if it can be an analysis: a subclass of Analysis whose ``Options`` is a
    dataclass and whose ``requires`` is a tuple of names."""
    if not (isinstance(obj, type) and issubclass(obj, Analysis)):
        what = f"the class {obj.__name__}" if isinstance(obj, type) else f"a {type(obj).__name__}"
        raise ConfigError(f"analysis import path '{path}' names {what}, not an Analysis",
                          "point it at a subclass of replearn.analyses.Analysis")
    if not (isinstance(obj.Options, type) and dataclasses.is_dataclass(obj.Options)):
        raise ConfigError(f"analysis '{path}' declares Options that are not a dataclass",
                          "decorate its Options class with @dataclass and declare each option with "
                          "replearn.config.options.opt")
    if not (isinstance(obj.requires, tuple) and all(isinstance(r, str) for r in obj.requires)):
        raise ConfigError(f"analysis '{path}' declares requires as {type(obj.requires).__name__}, not a tuple "
                          "of analysis names", "write requires = ('probes',) with the names of the analyses it reads from")
    return obj


ANALYSES: Registry[type[Analysis]] = Registry("analysis", check_analysis)


def register_analysis(name: str) -> Callable[[type[Analysis]], type[Analysis]]:
    def add(cls: type[Analysis]) -> type[Analysis]:
        cls.name = name
        return ANALYSES.register(name)(cls)

    return add


class RunArtifacts:
    """Read-only view of a run directory for the report: tables, JSON and arrays, each read once; a file
    that is missing or unreadable reads as None and is named in ``unreadable``.

    Inside ``tracking()`` every file, file list and run-level value a section reads is recorded with a
    fingerprint of its content (``fingerprint``), so that sections drawn early, while later analyses were
    still computing (``report.predraw``), are reused only if everything they read is unchanged."""

    TRACKED = ("dataset", "environment", "status", "summary", "models", "config")

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.unreadable: list[str] = []
        self.not_written: list[str] = []
        self.vector_exports = VectorExports()
        self.reads: dict[str, str] | None = None  # what sections read inside tracking(): key -> fingerprint
        self._values: dict[str, Any] = {}
        self._digests: dict[str, str] = {}
        self.dataset = self.json_file(layout.DATASET, dict) or {}
        self.environment = self.json_file(layout.ENVIRONMENT, dict) or {}
        self.status = self.json_file(layout.STATUS, dict) or {"state": "unknown"}
        self.summary = self.json_file(layout.SUMMARY, dict) or {}
        self.models = self._models(self.json_file(layout.MODELS, list) or [])
        self.config = self._config()
        analysis = self.config.get("analysis")
        formats = analysis.get("figure_formats") if isinstance(analysis, dict) else None
        everything = ["png", "svg", "pdf"]
        self.figure_formats = [f for f in everything if isinstance(formats, list) and f in formats] or everything

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("_values")
        if values is None or name not in values:
            raise AttributeError(name)
        self._record(f"value:{name}", lambda: self._digests.setdefault(name, _digest_value(values[name])))
        return values[name]

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.TRACKED:
            self._values[name] = value
            self._digests.pop(name, None)
        else:
            super().__setattr__(name, value)

    @contextlib.contextmanager
    def tracking(self) -> Iterator[dict[str, str]]:
        """Record what is read inside the block: yields the mapping it fills (key -> content fingerprint)."""
        outer, self.reads = self.reads, {}
        try:
            yield self.reads
        finally:
            inner, self.reads = self.reads, outer
            if outer is not None:
                outer.update({k: v for k, v in inner.items() if k not in outer})

    def _record(self, key: str, fingerprint: Callable[[], str]) -> None:
        if self.reads is not None and key not in self.reads:
            self.reads[key] = fingerprint()

    def fingerprint(self, key: str) -> str:
        """The current fingerprint of a key ``tracking`` recorded: a file's content hash ("file:<rel>"), the
        names a pattern matches ("glob:<rel pattern>") or a run-level value ("value:<name>")."""
        kind, _, rest = key.partition(":")
        if kind == "file":
            return _digest_file(self.run_dir / rest)
        if kind == "glob":
            return _digest_value(sorted(p.name for p in self.run_dir.glob(rest)))
        if kind == "value" and rest in self._values:
            return self._digests.setdefault(rest, _digest_value(self._values[rest]))
        return "unknown"

    def _track_file(self, path: Path) -> None:
        self._record(f"file:{path.relative_to(self.run_dir).as_posix()}", lambda: _digest_file(path))

    def _track_glob(self, pattern: str) -> None:
        self._record(f"glob:{pattern}", lambda: self.fingerprint(f"glob:{pattern}"))

    def _config(self) -> dict[str, Any]:
        """The run's resolved config as plain data, read once with the bounded loader (no plug-in is imported);
        empty when it cannot be read."""
        try:
            raw = safe_load_bounded((self.run_dir / layout.CONFIG).read_text(encoding="utf-8"), layout.CONFIG)
        except Exception:  # damaged, foreign or hostile: the report shows what it can without it
            return {}
        return raw if isinstance(raw, dict) else {}

    def _models(self, raw: list) -> list[ModelInfo]:
        known = {f.name for f in dataclasses.fields(ModelInfo)}
        models = []
        for entry in raw:
            try:
                models.append(ModelInfo(**{k: v for k, v in entry.items() if k in known}))
            except (TypeError, AttributeError):
                self._note(self.run_dir / layout.MODELS, "an entry is not a model description")
                return baseline_models()
        return models or baseline_models()

    def _note(self, path: Path, reason: str) -> None:
        note = f"{path.relative_to(self.run_dir)} ({reason})"
        if note not in self.unreadable:
            self.unreadable.append(note)

    def json_file(self, rel: str, kind: type | None = None) -> Any:
        """A JSON file's content, or None (named in ``unreadable``) when it does not parse or, given ``kind``,
        holds another type (a list where a mapping belongs)."""
        path = self.run_dir / rel
        self._track_file(path)
        if not path.is_file():
            return None
        try:
            value = read_json(path)
        except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
            self._note(path, type(exc).__name__)
            return None
        if kind is not None and not isinstance(value, kind):
            self._note(path, f"a {type(value).__name__} where a {'mapping' if kind is dict else kind.__name__} belongs")
            return None
        return value

    def export(self, rel: str, data: bytes) -> None:
        """Write a file for papers (figures/, tables/) into the run directory; if that is not possible the
        report says so instead of failing."""
        try:  # through the module, so that a test can make every write fail as on a full disk
            artifacts.atomic_write_bytes(self.run_dir / rel, data)
        except OSError as exc:
            note = f"{rel.split('/')[0]}/ could not be written ({exc.strerror or type(exc).__name__})"
            if note not in self.not_written:
                self.not_written.append(note)

    def finish_exports(self) -> None:
        """Wait for the figures' SVG and PDF copies; files that could not be written are named in
        ``not_written``."""
        for note in self.vector_exports.finish():
            if note not in self.not_written:
                self.not_written.append(note)

    def metrics_json(self, name: str) -> Any:
        return self.json_file(f"{layout.METRICS}/{name}")

    def csv(self, name: str) -> pd.DataFrame | None:
        """``metrics/<name>.csv`` as a DataFrame, or None when absent, empty or unreadable."""
        self._track_file(self.run_dir / layout.metrics_table(name))
        return self._csv(name)

    @functools.lru_cache(maxsize=None)
    def _csv(self, name: str) -> pd.DataFrame | None:
        path = self.run_dir / layout.metrics_table(name)
        if not path.is_file() or path.stat().st_size == 0:
            return None
        try:
            with open(path, "rb") as fh:
                fh.seek(-1, 2)
                if fh.read(1) != b"\n":  # replearn ends every table with a newline: the file was cut short
                    self._note(path, "truncated")
                    return None
            frame = pd.read_csv(path)
        except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            self._note(path, type(exc).__name__)
            return None
        return frame if len(frame) else None

    def csvs(self, pattern: str) -> list[tuple[str, pd.DataFrame]]:
        """Every ``metrics/<pattern>`` CSV that reads, with its file stem."""
        out = []
        self._track_glob(f"{layout.METRICS}/{pattern}")
        for path in sorted((self.run_dir / layout.METRICS).glob(pattern)):
            frame = self.csv(path.stem)
            if frame is not None:
                out.append((path.stem, frame))
        return out

    def arrays(self, name: str) -> list[tuple[int, dict[str, np.ndarray]]]:
        """``artifacts/<name>_seed<S>.npz`` of every seed that reads, by seed."""
        out = []
        self._track_glob(f"{layout.ARTIFACTS}/{layout.seed_artifact_pattern(name)}")
        for path in (self.run_dir / layout.ARTIFACTS).glob(layout.seed_artifact_pattern(name)):
            match = re.fullmatch(rf"{re.escape(name)}_seed(\d+)\.npz", path.name)
            if not match:
                continue
            self._track_file(path)
            try:
                out.append((int(match.group(1)), load_npz(path)))
            except Exception as exc:  # a truncated or foreign file: skip it and say so
                self._note(path, type(exc).__name__)
        return sorted(out, key=lambda item: item[0])

    def first_arrays(self, name: str) -> dict[str, np.ndarray] | None:
        found = self.arrays(name)
        return found[0][1] if found else None

    def info(self, model: str) -> ModelInfo:
        for m in self.models:
            if m.name == model:
                return m
        return ModelInfo(model, model, "#7f7f7f", "regime")

    def style(self, model: str) -> tuple[str, str]:
        info = self.info(model)
        return info.label, info.color

    def styles(self) -> dict[str, tuple[str, str]]:
        return {m.name: (m.label, m.color) for m in self.models}

    def order(self, names: list[str]) -> list[str]:
        """``names`` in the run's model order (baselines, random, then regimes as configured)."""
        rank = {m.name: i for i, m in enumerate(self.models)}
        return sorted(dict.fromkeys(names), key=lambda n: (rank.get(n, len(rank)), n))

    def regimes(self) -> list[str]:
        return [m.name for m in self.models if m.kind == "regime"]

    def layer_order(self) -> list[str]:
        """Layer names by depth: input, the stages, latent (from the probe or dimension table)."""
        for table in ("probes", "dimensions"):
            frame = self.csv(table)
            if frame is not None and {"layer", "depth"} <= set(frame.columns):
                # a baseline's single layer (PCA's "latent") has its own depth: the deepest use of a name wins
                return list(frame.groupby("layer").depth.max().sort_values(kind="stable").index)
        return []


def _digest_file(path: Path) -> str:
    """A file's content hash, or "missing"."""
    try:
        return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
    except OSError:
        return "missing"


def _digest_value(value: Any) -> str:
    """A JSON-like value's content hash (dataclasses as their fields)."""
    def plain(obj: Any) -> Any:
        return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) and not isinstance(obj, type) else repr(obj)

    text = json.dumps(value, sort_keys=True, default=plain)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def write_models(run_dir: Path, models: list[ModelInfo]) -> None:
    atomic_write_text(run_dir / layout.MODELS, json.dumps([asdict(m) for m in models], indent=2) + "\n")
