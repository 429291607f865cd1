"""Experiment configuration: small dataclasses, loaded from YAML and overridden with ``key=value``.

Every field carries its help text and its valid range, so validation, ``replearn run --help`` and the
docs all come from one place. Unknown keys, wrong types and out-of-range values raise ``ConfigError``.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

DEFAULT_REGIMES = ("supervised", "autoencoder")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")
BUDGETS = ("equal-steps", "per-regime")
LAYOUTS = ("auto", "channels-first", "channels-last")
MAX_SEED = 2**31 - 1  # numpy's and scikit-learn's seeds must fit in 32 bits; derived seeds add to them
RUN_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,79}")
MAX_YAML_NODES = 100_000  # a config expands to a few hundred; aliases can make 400 bytes expand to billions


def opt(default: Any, help: str, *, min: float | None = None, max: float | None = None,
        gt: float | None = None, choices: tuple | None = None, list_default: bool = False,
        may_be_empty: bool = False) -> Any:
    """A config field with its help text and bounds kept in the metadata (also for plug-in options)."""
    meta = {"help": help, "min": min, "max": max, "gt": gt, "choices": choices, "may_be_empty": may_be_empty}
    if list_default or isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


_f = opt


@dataclass
class DataConfig:
    name: str = _f("digits", "dataset name; `replearn datasets` lists them")
    root: str | None = _f(None, "directory holding the IDX files (default: $REPLEARN_DATA, then the "
                                "Debian dataset directory)")
    val_fraction: float = _f(0.1, "fraction of the training split held out for validation", gt=0.0, max=0.5)
    train_subset: int = _f(0, "use only this many training+validation images (0 = all)", min=0)
    test_subset: int = _f(0, "use only this many test images (0 = all)", min=0)
    split_seed: int = _f(0, "seed of the train/validation split and of subsets", min=0, max=MAX_SEED)
    layout: str = _f("auto", "axis order of 4-D image arrays (npz): channels-first N×C×H×W, channels-last N×H×W×C, "
                     "or auto (decided from which axis has 1, 3 or 4 entries; ambiguous shapes are refused)",
                     choices=LAYOUTS)
    cifar100_labels: str = _f("fine", "CIFAR-100's label set: the 100 fine classes or the 20 coarse superclasses",
                              choices=("fine", "coarse"))
    image_size: int = _f(0, "folder: resize every image so its shorter side is this many pixels, then centre-crop "
                            "it square (0 = keep the files' size, which must then be the same for all)", min=0, max=1024)
    skip_bad_images: bool = _f(False, "folder: skip image files that cannot be decoded (named in the log and in "
                                      "dataset.json) instead of stopping at the first")
    test_fraction: float = _f(0.2, "folder without train/ and test/ subfolders: the stratified fraction of each "
                                   "class held out as the test split", gt=0.0, max=0.5)
    cache_dir: str | None = _f(None, "where decoded image folders are cached (default: $REPLEARN_CACHE, else "
                                     "~/.cache/replearn)")
    memory_budget_mb: int = _f(0, "0: hold the dataset in memory. Otherwise, a folder dataset whose normalised "
                                  "images would take more than this many MiB is streamed from its uint8 cache on "
                                  "disk, batch by batch", min=0)


@dataclass
class ModelConfig:
    name: str = _f("conv", "encoder: a registered name (conv; resnet, with model.kwargs depth 8/18/34 and width) or "
                           "an import path package.module:Name")
    kwargs: dict[str, Any] = _f({}, "extra keyword arguments for the encoder (model.channels and model.kernel_size "
                                    "go to encoders whose signature takes them)")
    channels: list[int] = _f([16, 32, 64], "output channels of each conv stage (one stage per entry)",
                             min=1, list_default=True)
    kernel_size: int = _f(3, "convolution kernel size (odd)", min=1, max=9)
    latent_dim: int = _f(32, "dimension of the latent vector after the last stage", min=1)
    layers: list[str] = _f([], "for a plain nn.Module given by import path in model.name (e.g. "
                               "torchvision.models:resnet18): the module paths of the layers to analyse, read with "
                               "forward hooks; its output is 'latent' (model.kwargs go to the factory as they are)",
                           list_default=True, may_be_empty=True)


@dataclass
class TrainConfig:
    regimes: list[str] = _f(list(DEFAULT_REGIMES), "regimes to train from the same initial encoder: registered names "
                            "(supervised, autoencoder, denoising, vae, contrastive, joint) or import paths "
                            "package.module:Name; options under regimes.<name>.<key>", list_default=True)
    epochs: int = _f(20, "training epochs of every regime (the same number of optimisation steps for each)", min=0)
    budget: str = _f("equal-steps", "equal-steps: every regime trains train.epochs; per-regime: regimes.<name>.epochs "
                     "may give a regime another budget (the report states it)", choices=BUDGETS)
    batch_size: int = _f(64, "minibatch size", min=1)
    optimizer: str = _f("adam", "optimizer", choices=OPTIMIZERS)
    lr: float = _f(3e-3, "peak learning rate", gt=0.0, max=10.0)
    weight_decay: float = _f(0.0, "weight decay (L2)", min=0.0)
    schedule: str = _f("cosine", "learning-rate schedule over all steps", choices=SCHEDULES)
    seeds: list[int] = _f([0], "model seeds; every regime of one seed starts from the same initial weights",
                          min=0, max=MAX_SEED, list_default=True)
    device: str = _f("auto", "auto picks CUDA when present, else CPU", choices=DEVICES)
    augment: bool = _f(False, "random horizontal flips and shifts of up to 2 pixels while training (only for "
                              "classes that a mirror image keeps, e.g. clothing; not digits)")
    probe_every_epoch: bool = _f(True, "fit a latent linear probe on the validation split after each epoch")
    probe_train_images: int = _f(5000, "training images used by the per-epoch probe", min=10)


@dataclass
class AnalysisConfig:
    max_stage_features: int = _f(1024, "stage outputs are average-pooled to at most this many features", min=1)
    probe_l2_grid: list[float] = _f([1e-5, 1e-4, 1e-3, 1e-2],
                                    "L2 penalties tried by the linear probe; chosen on validation",
                                    min=0.0, list_default=True)
    probe_max_iter: int = _f(500, "L-BFGS iteration cap per linear-probe fit", min=1)
    probe_tol: float = _f(3e-4, "a linear probe has converged when no gradient entry exceeds this "
                          "(scikit-learn's default is 1e-4: 3e-4 moves Fashion-MNIST probe accuracies < 0.1 pp "
                          "at 60% of the cost)", gt=0.0)
    probe_selection: str = _f("best", "how the linear probe's penalty is chosen on validation: the best, or "
                              "one-se, the strongest within one standard error of the best (stable when penalties "
                              "score within a few validation images of each other)", choices=("best", "one-se"))
    knn_k_grid: list[int] = _f([10, 20], "neighbour counts tried by the kNN probe; chosen on validation",
                               min=1, list_default=True)
    knn_temperature: float = _f(0.07, "temperature of the kNN vote weights exp(sim / T)", gt=0.0)
    label_counts: list[int] = _f([1, 5, 10, 50, 100], "labels per class given to the label-efficiency probes "
                                 "(plus all labels)", min=1, list_default=True)
    label_draws: int = _f(5, "random draws of the labelled images per label count", min=1)
    max_images_per_split: int = _f(0, "features for the analyses are extracted from at most this many images of "
                                      "each split, a stratified subset (0 = all; streamed data: 10,000)", min=0)
    analysis_points: int = _f(5000, "test images used by CKA, dimension and clustering analyses", min=10)
    cka_batch_size: int = _f(1000, "minibatch size of the unbiased-HSIC CKA estimator", min=4)
    projection_points: int = _f(5000, "test images embedded in 2-D with UMAP", min=0)
    projection_neighbors: int = _f(15, "UMAP neighbourhood size", min=2)
    umap_backend: str = _f("replearn", "replearn: the built-in torch UMAP (fast, no numba); umap-learn: the reference "
                           "implementation (pip install 'replearn[umap]'; ~25 s of import and compilation)",
                           choices=("replearn", "umap-learn"))
    reconstructions: int = _f(10, "test images shown with their autoencoder reconstructions", min=0)
    figure_formats: list[str] = _f(["png", "svg", "pdf"], "files written for every report figure under figures/ "
                                   "(the report embeds its PNGs either way; SVG and PDF are for papers and take most "
                                   "of the rendering time)", choices=("png", "svg", "pdf"), list_default=True)


@dataclass
class Config:
    name: str = _f("digits", "run name, used in the run directory name")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    regimes: dict[str, dict[str, Any]] = field(default_factory=dict, metadata={
        "help": "options of each regime, by regime name (see `replearn run --help`)"})
    selection: dict[str, str] = field(default_factory=dict, metadata={
        "help": "how each regime's options were chosen, by regime name (free text, e.g. 'RankMe on validation, "
                "label-free'); shown in the report's Protocol section"})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def regime_objects(self) -> list[Any]:
        """The configured regimes, each with its validated options."""
        from .regimes import make_regime, regime_name

        return [make_regime(spec, self.regimes.get(regime_name(spec))) for spec in self.train.regimes]

    def epochs_for(self, regime: Any) -> int:
        """Epochs of a regime (object or name): its own ``epochs`` option, else ``train.epochs``."""
        if isinstance(regime, str):
            regime = next(r for r in self.regime_objects() if r.name == regime)
        epochs = getattr(regime.options, "epochs", None)
        return self.train.epochs if epochs is None else epochs


def _section_classes() -> dict[str, type]:
    return {f.name: f.default_factory for f in dataclasses.fields(Config)
            if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory)}


# keys that were renamed: old key -> the text of the fix
RENAMED = {"train.autoencoder_epochs": "use regimes.autoencoder.epochs (every regime has its own epochs option)"}


def field_docs() -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) for every config key, for --help and the docs."""
    rows = []
    sections = _section_classes()
    for f in dataclasses.fields(Config):
        if f.name in sections:
            rows += _class_docs(sections[f.name], f.name)
        elif f.name == "name":
            rows.append((f.name, "str", f.default, f.metadata["help"]))
    from .regimes import REGIMES

    for name, cls in REGIMES.items():
        rows += _class_docs(cls.Options, f"regimes.{name}")
    return rows


def _class_docs(cls: type, prefix: str) -> list[tuple[str, str, Any, str]]:
    hints = typing.get_type_hints(cls)
    rows = []
    for sub in dataclasses.fields(cls):
        default = sub.default if sub.default is not dataclasses.MISSING else sub.default_factory()
        rows.append((f"{prefix}.{sub.name}", _type_name(hints[sub.name]), default, sub.metadata["help"]))
    return rows


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _all_keys() -> list[str]:
    return [row[0] for row in field_docs()]


def _unknown_key(key: str) -> ConfigError:
    if key in RENAMED:
        return ConfigError(f"config key '{key}' no longer exists", RENAMED[key])
    close = difflib.get_close_matches(key, _all_keys(), n=1, cutoff=0.5) if len(key) <= 100 else []
    hint = f"did you mean '{close[0]}'?" if close else "see `replearn run --help` for the valid keys"
    return ConfigError(f"unknown config key {_excerpt(key)}", hint)


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert a YAML/CLI value to the field's declared type, or raise a ConfigError naming both."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0])
    if origin is list:
        if isinstance(value, str) and "," in value:  # --set key=1e-3,1e-2 means the list [1e-3, 1e-2]
            value = [yaml.safe_load(part) if part.strip() else part for part in value.split(",")]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(key, v, args[0]) for v in value]
    if origin is dict:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return dict(value)
        raise ConfigError(f"config key '{key}' must be a mapping of names to values, got {_excerpt(value)}",
                          f"write {key} as 'name: value' lines or {{name: value}}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"config key '{key}' must be of type {_type_name(tp)}, got {_excerpt(value)}",
                      f"set {key} to a{'n' if _type_name(tp)[0] in 'aeiou' else ''} {_type_name(tp)} value"
                      + (", or a list as [a, b]" if isinstance(value, str) and "," in value else ""))


def _excerpt(value: Any, limit: int = 60) -> str:
    """A bounded repr for messages: a value built from YAML aliases can be huge."""
    if isinstance(value, (list, tuple, dict)):
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of {len(str(value)) if value.bit_length() < 10_000 else 'thousands of'} digits"
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + "…"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _check_range(key: str, value: Any, meta: dict) -> None:
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not value and not meta.get("may_be_empty"):
        raise ConfigError(f"config key '{key}' must not be an empty list", f"give {key} at least one value")
    for v in values:
        if v is None:
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"config key '{key}' must be finite, got {v}", f"set {key} to a finite number")
        shown = _excerpt(v)
        if meta["choices"] is not None and v not in meta["choices"]:
            close = difflib.get_close_matches(str(v)[:100], [str(c) for c in meta["choices"]], n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"config key '{key}' has invalid value {shown}",
                              f"{hint}choose one of: {', '.join(meta['choices'])}")
        if meta["min"] is not None and v < meta["min"]:
            raise ConfigError(f"config key '{key}' must be >= {meta['min']}, got {shown}",
                              f"set {key} to at least {meta['min']}")
        if meta["gt"] is not None and v <= meta["gt"]:
            raise ConfigError(f"config key '{key}' must be > {meta['gt']}, got {shown}",
                              f"set {key} to a value above {meta['gt']}")
        if meta["max"] is not None and v > meta["max"]:
            raise ConfigError(f"config key '{key}' must be <= {meta['max']}, got {shown}",
                              f"set {key} to at most {meta['max']}")


def build_section(cls: type, section: str, values: dict[str, Any]) -> Any:
    """An instance of the dataclass ``cls`` from ``values``, with every key's type and range checked."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in values.items():
        key = f"{section}.{name}"
        if name not in fields:
            raise _unknown_key(key)
        coerced = _coerce(key, value, hints[name])
        _check_range(key, coerced, fields[name].metadata)
        kwargs[name] = coerced
    return cls(**kwargs)


def _validate_whole(cfg: Config) -> Config:
    if cfg.model.kernel_size % 2 == 0:
        raise ConfigError(f"config key 'model.kernel_size' must be odd, got {cfg.model.kernel_size}",
                          "use 3, 5 or 7 so that convolutions keep the image size")
    if len(set(cfg.train.regimes)) != len(cfg.train.regimes):
        raise ConfigError("config key 'train.regimes' lists a regime twice", "list each regime once")
    if len(set(cfg.train.seeds)) != len(cfg.train.seeds):
        raise ConfigError("config key 'train.seeds' lists a seed twice", "list each seed once")
    if not RUN_NAME_PATTERN.fullmatch(cfg.name):
        raise ConfigError(f"config key 'name' must be a plain name of at most 80 characters, got {_excerpt(cfg.name)}",
                          "use letters, digits, '.', '+', '-' and '_', starting with a letter or digit "
                          "(it becomes part of a directory name and of printed commands)")
    if cfg.analysis.umap_backend == "umap-learn":
        import importlib.util

        try:
            missing = importlib.util.find_spec("umap") is None
        except ValueError:  # a module entry set to None (blocked)
            missing = True
        if missing:
            raise ConfigError("config key 'analysis.umap_backend' is umap-learn, but umap-learn is not installed",
                              "pip install 'replearn[umap]', or set analysis.umap_backend=replearn")
    from .encoders import ENCODERS

    ENCODERS.get(cfg.model.name)
    regimes = cfg.regime_objects()
    names = [r.name for r in regimes]
    if len(set(names)) != len(names):
        raise ConfigError(f"config key 'train.regimes' names two regimes called {names}",
                          "list each regime once (give a plug-in regime its own `name`)")
    if cfg.train.budget == "equal-steps":
        for regime in regimes:
            epochs = getattr(regime.options, "epochs", None)
            if epochs is not None and epochs != cfg.train.epochs:
                raise ConfigError(f"regimes.{regime.name}.epochs={epochs} gives {regime.name} another budget than "
                                  f"train.epochs={cfg.train.epochs}, but train.budget is equal-steps",
                                  "drop it so that every regime trains as long, or set train.budget=per-regime")
    stray = sorted(set(cfg.selection) - set(names))
    if stray:
        raise ConfigError(f"config section 'selection' describes '{stray[0]}', which train.regimes does not train",
                          f"describe only trained regimes ({', '.join(names)})")
    unused = sorted(set(cfg.regimes) - set(names))
    if unused:
        from .regimes import REGIMES

        known = [n for n in unused if n in REGIMES]
        hint = (f"add {known[0]} to train.regimes, or drop its options" if known
                else f"options are keyed by regime name: {', '.join(names)}")
        raise ConfigError(f"config section 'regimes' has options for '{unused[0]}', which train.regimes does not "
                          "train", hint)
    return cfg


def config_from_dict(raw: dict[str, Any] | None) -> Config:
    """Build and validate a Config from a nested dict (e.g. parsed YAML)."""
    raw = dict(raw or {})
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a mapping of sections to keys", "see experiments/digits.yaml")
    sections = _section_classes()
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        if name in sections:
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ConfigError(f"config section '{name}' must be a mapping, got {_excerpt(value)}",
                                  f"write '{name}:' followed by indented 'key: value' lines")
            kwargs[name] = build_section(sections[name], name, value)
        elif name == "name":
            kwargs["name"] = _coerce("name", value, str)
        elif name == "regimes":
            kwargs["regimes"] = _regime_options(value)
        elif name == "selection":
            if value is not None and not (isinstance(value, dict) and all(isinstance(v, str) for v in value.values())):
                raise ConfigError("config section 'selection' must map regime names to a sentence each",
                                  "write e.g. 'selection:' then '  vae: RankMe on the validation split (label-free)'")
            kwargs["selection"] = {str(k): v for k, v in (value or {}).items()}
        else:
            raise _unknown_key(str(name))
    return _validate_whole(Config(**kwargs))


def _regime_options(value: Any) -> dict[str, dict[str, Any]]:
    """The raw ``regimes:`` section: a mapping of regime names to option mappings (validated per regime)."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, dict) or v is None for v in value.values()):
        raise ConfigError("config section 'regimes' must map regime names to their options",
                          "write e.g. 'regimes:' then '  vae: {beta: 4.0}'")
    return {str(k): dict(v or {}) for k, v in value.items()}


def safe_load_bounded(text: str, what: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys and documents whose aliases expand past
    ``MAX_YAML_NODES`` nodes (a "billion laughs" file), before anything is constructed."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise ConfigError(f"{what} is nested too deeply", "write the config as plain sections of key: value lines") from None
        if node is None:
            return None
        _check_yaml_nodes(node, what)
        try:
            return loader.construct_document(node)
        except (ValueError, OverflowError, RecursionError) as exc:
            raise ConfigError(f"{what} holds a value YAML cannot represent ({type(exc).__name__})",
                              "check for extremely long numbers or deep nesting") from None
    finally:
        loader.dispose()


def _check_yaml_nodes(root: yaml.Node, what: str) -> None:
    """Count the nodes of the alias-expanded document (shared subtrees counted as often as they are used,
    computed without expanding them) and refuse a mapping that gives one key twice."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[id(node)] = 1
            continue
        children = ([c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode)
                    else list(node.value))
        if children_done:
            total = 1 + sum(sizes.get(id(c), 0) for c in children)
            sizes[id(node)] = total
            if total > MAX_YAML_NODES:
                raise ConfigError(f"{what} expands to more than {MAX_YAML_NODES:,} values through its YAML aliases "
                                  f"(&anchor / *alias)", "write the values out instead of nesting aliases")
            continue
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if key.value in seen:
                        raise ConfigError(f"{what} gives the key {_excerpt(key.value)} twice in one mapping "
                                          f"(line {key.start_mark.line + 1})",
                                          "keep one of them: a repeated key or section would silently replace the "
                                          "earlier one")
                    seen.add(key.value)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into (["a", "b"], parsed value); values are parsed as YAML scalars or lists."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value", "write e.g. --set train.epochs=3")
    key, value_text = text.split("=", 1)
    key = key.strip()
    try:
        value = safe_load_bounded(value_text, f"override {_excerpt(key)}") if value_text.strip() else ""
    except yaml.YAMLError:
        value = value_text
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of the nested dict with each ``key=value`` override applied."""
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    sections = _section_classes()
    for text in overrides:
        path, value = parse_override(text)
        dotted = ".".join(path)
        if len(path) == 1 and path[0] == "name":
            merged["name"] = value
        elif len(path) == 2 and path[0] == "selection":
            merged["selection"] = {**(merged.get("selection") or {}), path[1]: str(value)}
        elif len(path) == 2 and path[0] in sections:
            section = merged.setdefault(path[0], {}) or {}
            merged[path[0]] = section
            section[path[1]] = value
        elif len(path) == 3 and (path[0] == "regimes" or path[:2] == ["model", "kwargs"]):
            outer = merged.setdefault(path[0], {}) or {}
            merged[path[0]] = outer = dict(outer)
            inner = dict(outer.get(path[1]) or {})
            inner[path[2]] = value
            outer[path[1]] = inner
        else:
            raise _unknown_key(dotted)
    return merged


def bundled_experiments() -> dict[str, Path]:
    """The experiment files installed with replearn, by name (``replearn run fashion_mnist``)."""
    folder = Path(__file__).resolve().parent / "experiments"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def resolve_config_path(path: str | Path) -> Path:
    """A config file as given, or a bundled experiment's name (``fashion_mnist``, with or without .yaml)."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(f"config path '{path}' is a directory, not a YAML file",
                          "give the path of the experiment's .yaml file inside it")
    bundled = bundled_experiments()
    name = path.name[:-5] if path.name.endswith(".yaml") else path.name
    if name in bundled and (len(path.parts) == 1 or path.parent.name == "experiments"):
        return bundled[name]
    known = ", ".join(bundled) or "none installed"
    raise ConfigError(f"config file '{path}' does not exist",
                      f"give a path to a YAML file or the name of a bundled experiment ({known})")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file (or a bundled experiment by name) into a nested dict, with one-line errors for
    missing or malformed files."""
    path = resolve_config_path(path)
    try:
        text = path.read_text(encoding="utf-8")
        raw = safe_load_bounded(text, f"config file '{path}'")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file '{path}' is not valid YAML{where}",
                          "check the indentation and the 'key: value' syntax there") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file '{path}' is not UTF-8 text", "save it as a UTF-8 YAML file") from None
    except OSError as exc:
        raise ConfigError(f"config file '{path}' cannot be read ({exc.strerror or type(exc).__name__})",
                          "check the file's permissions") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of sections, not a {type(raw).__name__}",
                          "see experiments/digits.yaml for the layout")
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a config file (or the defaults) and apply ``key=value`` overrides."""
    raw = load_yaml(path) if path is not None else {}
    return config_from_dict(apply_overrides(raw, overrides or []))


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
