"""Experiment configuration as plain data: small dataclass sections, loaded from YAML and ``key=value``.

Every key carries its help text and valid range (declared with ``replearn.config.options.opt``), so validation,
``replearn run --help`` and the docs come from one place. This module never imports a plug-in: the keys a
dataset, encoder, regime or analysis declares for itself are kept here as raw mappings (``data.<key>``,
``model.<key>``, ``regimes.<name>.<key>``, ``analyses.<name>.<key>``) and checked against the plug-in's
own ``Options`` when an ``Experiment`` resolves it (``replearn.experiment.plugins``).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from replearn.errors import ConfigError
from replearn.config.options import build_options, coerce, excerpt, option_docs, opt, safe_load_bounded, unknown_key

DEFAULT_REGIMES = ("supervised", "autoencoder")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")
BUDGETS = ("equal-steps", "per-regime")
LAYOUTS = ("auto", "channels-first", "channels-last")
PRECISIONS = ("fp32", "bf16")
MAX_SEED = 2**31 - 1  # numpy's and scikit-learn's seeds must fit in 32 bits; derived seeds add to them
RUN_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,79}")

_f = opt
PLUGIN_OPTIONS = "plugin_options"  # the field of an open section that holds its plug-in's own keys


@dataclass
class DataConfig:
    name: str = _f("digits", "dataset: a registered name (`replearn datasets` lists them) or an import path package.module:Name")
    root: str | None = _f(None, "where the dataset's files are (a directory, or a file for npz; default: "
                                "$REPLEARN_DATA, then the Debian dataset directory)")
    val_fraction: float = _f(0.1, "fraction of the training split held out for validation", gt=0.0, max=0.5)
    train_subset: int = _f(0, "use only this many training+validation images (0 = all)", min=0)
    test_subset: int = _f(0, "use only this many test images (0 = all)", min=0)
    split_seed: int = _f(0, "seed of the train/validation split and of subsets", min=0, max=MAX_SEED)
    layout: str = _f("auto", "axis order of 4-D image arrays (npz): channels-first N×C×H×W, channels-last N×H×W×C, "
                     "or auto (decided from which axis has 1, 3 or 4 entries; ambiguous shapes are refused)",
                     choices=LAYOUTS)
    plugin_options: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "the dataset's own options, written as further data.<key> lines (see `replearn datasets`)"})


@dataclass
class ModelConfig:
    name: str = _f("conv", "encoder: a registered name (conv, with model.channels and model.kernel_size; resnet, "
                           "with model.depth 10/18/34 and model.width) or an import path package.module:Name")
    kwargs: dict[str, Any] = _f({}, "keyword arguments for an encoder that declares no options of its own (a class "
                                    "or factory given by import path); for one that does, more of its options")
    latent_dim: int = _f(32, "dimension of the latent vector after the last stage", min=1)
    layers: list[str] = _f([], "for a plain nn.Module given by import path in model.name (e.g. "
                               "torchvision.models:resnet18): the module paths of the layers to analyse, read with "
                               "forward hooks; its output is 'latent' (model.kwargs go to the factory as they are)",
                           list_default=True, may_be_empty=True)
    plugin_options: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "the encoder's own options, written as further model.<key> lines (conv: channels, kernel_size)"})


@dataclass
class TrainConfig:
    regimes: list[str] = _f(list(DEFAULT_REGIMES), "regimes to train from the same initial encoder: registered names "
                            "(supervised, autoencoder, denoising, vae, contrastive, joint) or import paths "
                            "package.module:Name; options under regimes.<name>.<key>", list_default=True)
    epochs: int = _f(20, "training epochs of every regime (the same number of optimisation steps for each)", min=0)
    budget: str = _f("equal-steps", "equal-steps: every regime trains train.epochs; per-regime: regimes.<name>.epochs "
                     "may give a regime another budget (the report states it)", choices=BUDGETS)
    batch_size: int = _f(64, "minibatch size", min=1)
    optimizer: str = _f("adam", "optimizer: adam, adamw, or sgd with momentum 0.9 (replearn.training.optimizers: "
                                "torch.optim's arithmetic bit for bit, without its torch._dynamo import)",
                        choices=OPTIMIZERS)
    lr: float = _f(3e-3, "peak learning rate", gt=0.0, max=10.0)
    weight_decay: float = _f(0.0, "weight decay (L2)", min=0.0)
    schedule: str = _f("cosine", "learning-rate schedule over all steps", choices=SCHEDULES)
    seeds: list[int] = _f([0], "model seeds; every regime of one seed starts from the same initial weights",
                          min=0, max=MAX_SEED, list_default=True)
    device: str = _f("auto", "auto picks CUDA when present, else CPU", choices=DEVICES)
    augment: bool = _f(False, "random horizontal flips and shifts of up to 2 pixels while training (only for "
                              "classes that a mirror image keeps, e.g. clothing; not digits)")
    second_process: str = _f("auto", "train some of a seed's regimes in a second process while this one trains the "
                             "others (the same weights, bit for bit): auto does so on the CPU with two or more cores "
                             "when each regime trains on one thread and the data take under 1 GiB; always; never",
                             choices=("auto", "always", "never"))
    probe_every_epoch: bool = _f(True, "fit a latent linear probe on the validation split after each epoch")
    probe_train_images: int = _f(5000, "training images used by the per-epoch probe", min=10)
    precision: str = _f("fp32", "fp32, or bf16: the training step's forward pass and loss under bfloat16 autocast "
                        "(CUDA or CPU; weights, optimiser and evaluation stay float32; recorded in environment.json)",
                        choices=PRECISIONS)
    backend: str = _f("auto", "collective backend when several processes train (torchrun or --nproc): auto is NCCL "
                      "on CUDA and gloo on the CPU", choices=("auto", "gloo", "nccl"))
    sync_batchnorm: bool = _f(False, "with several processes, batch norm statistics over the whole global batch "
                                     "(SyncBatchNorm; NCCL only) instead of each process's share")
    collective_timeout: float = _f(600.0, "seconds a process waits in a collective for the others before it stops "
                                          "with an error (a process that died never hangs the run)", gt=0.0)
    labels_per_class: int = _f(0, "label budget: regimes trained with labels, and every probe, see only this many "
                               "labelled training images per class (a class-balanced subset drawn anew for each "
                               "seed, nested across budgets, the same for every regime of a seed; cycled so that "
                               "every regime still takes the same steps; probes choose their settings by "
                               "cross-validation inside it), while label-free regimes train on every image; "
                               "0 = all labels", min=0)


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
    knn_eval_points: int = _f(10000, "validation and test images the kNN probe classifies, a stratified subset of "
                                     "each (its search costs training images × these × features; 0 = all)", min=0)
    label_counts: list[int] = _f([1, 5, 10, 50, 100], "labels per class given to the label-efficiency probes "
                                 "(plus all labels)", min=1, list_default=True)
    label_draws: int = _f(5, "random draws of the labelled images per label count", min=1)
    max_images_per_split: int = _f(0, "features for the analyses are extracted from at most this many images of "
                                      "each split, a stratified subset (0 = all; streamed data: 10,000)", min=0)
    analysis_points: int = _f(5000, "test images used by CKA, dimension and clustering analyses", min=10)
    twonn_points: int = _f(2000, "of those, the TwoNN intrinsic dimension uses at most this many, a stratified "
                                 "subset (its neighbour search costs these² × features)", min=3)
    cka_batch_size: int = _f(1000, "minibatch size of the unbiased-HSIC CKA estimator", min=4)
    projection_points: int = _f(5000, "test images embedded in 2-D with UMAP", min=0)
    projection_neighbors: int = _f(15, "UMAP neighbourhood size", min=2)
    umap_backend: str = _f("replearn", "replearn: the built-in torch UMAP (fast, no numba); umap-learn: the reference "
                           "implementation (pip install 'replearn[umap]'; ~25 s of import and compilation)",
                           choices=("replearn", "umap-learn"))
    reconstructions: int = _f(10, "test images shown with their autoencoder reconstructions", min=0)
    skip: list[str] = _f([], "built-in analyses to leave out (e.g. [projection, attributions] for a quick sweep "
                             "cell); the report leaves out their sections", list_default=True, may_be_empty=True)
    extra: list[str] = _f([], "further analyses to compute beside the built-in ones: registered names or import "
                              "paths package.module:Name (their options under analyses.<name>.<key>)",
                          list_default=True, may_be_empty=True)
    tensorboard: bool = _f(False, "also write TensorBoard logs under <run dir>/tensorboard/ (replearn run "
                                  "--tensorboard): loss, metrics and per-layer gradient norms per step and epoch, "
                                  "weight histograms per epoch, each model's test latents for the embedding "
                                  "projector (pip install 'replearn[tensorboard]')")
    figure_formats: list[str] = _f(["png", "svg", "pdf"], "files written for every report figure under figures/ "
                                   "(the report embeds its PNGs either way; SVG and PDF are for papers and take most "
                                   "of the rendering time)", choices=("png", "svg", "pdf"), list_default=True)
    draw_ahead: str = _f("auto", "draw each analysis's report sections in a second process as soon as its files are "
                                 "final, while the last seed's later analyses compute (the report is the same "
                                 "either way): auto does so with two or more cores when those analyses are "
                                 "predicted to take 5 s or more (a second process costs ~3 CPU-seconds); always; never",
                         choices=("auto", "always", "never"))


@dataclass
class Config:
    name: str = _f("digits", "run name, used in the run directory name")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    regimes: dict[str, dict[str, Any]] = field(default_factory=dict, metadata={
        "help": "options of each regime, by regime name (see `replearn run --help`)"})
    analyses: dict[str, dict[str, Any]] = field(default_factory=dict, metadata={
        "help": "options of each analysis, by analysis name (see `replearn run --help`)"})
    selection: dict[str, str] = field(default_factory=dict, metadata={
        "help": "how each regime's options were chosen, by regime name (free text, e.g. 'RankMe on validation, "
                "label-free'); shown in the report's Protocol section"})

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as written to config.yaml: each open section's plug-in options sit among its keys."""
        raw = dataclasses.asdict(self)
        for section in OPEN_SECTIONS:
            raw[section].update(raw[section].pop(PLUGIN_OPTIONS))
        return raw


OPEN_SECTIONS = ("data", "model")  # sections whose extra keys belong to the plug-in they name


def section_classes() -> dict[str, type]:
    """The sections of a config that are dataclasses, by name."""
    return {f.name: f.default_factory for f in dataclasses.fields(Config)
            if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory)}


def field_docs() -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) for every key of the sections themselves (plug-ins' keys: ``plugins``)."""
    rows = []
    for f in dataclasses.fields(Config):
        if f.name in section_classes():
            rows += [row for row in option_docs(section_classes()[f.name], f.name)
                     if not row[0].endswith("." + PLUGIN_OPTIONS)]
        elif f.name == "name":
            rows.append((f.name, "str", f.default, f.metadata["help"]))
    return rows


def build_section(cls: type, section: str, values: dict[str, Any]) -> Any:
    """A section from raw values; an open section keeps the keys it does not declare for its plug-in."""
    if section in OPEN_SECTIONS and isinstance(values, dict):
        declared = {f.name for f in dataclasses.fields(cls)} - {PLUGIN_OPTIONS}
        extra = {k: v for k, v in values.items() if k not in declared}
        if PLUGIN_OPTIONS in extra:
            raise unknown_key(f"{section}.{PLUGIN_OPTIONS}", [], f"write the plug-in's options as {section}.<key>")
        built = build_options(cls, section, {k: v for k, v in values.items() if k in declared})
        built.plugin_options = {str(k): v for k, v in extra.items()}
        return built
    return build_options(cls, section, values, known=[row[0] for row in field_docs()])


def data_config(**keys: Any) -> DataConfig:
    """The ``data`` section from keyword values as YAML would give them (the dataset's own keys included)."""
    return build_section(DataConfig, "data", keys)


def model_config(**keys: Any) -> ModelConfig:
    """The ``model`` section from keyword values as YAML would give them (the encoder's own keys included)."""
    return build_section(ModelConfig, "model", keys)


def _validate_whole(cfg: Config) -> Config:
    """Checks across keys that need no plug-in (those are in ``plugins.resolve``)."""
    if len(set(cfg.train.regimes)) != len(cfg.train.regimes):
        raise ConfigError("config key 'train.regimes' lists a regime twice", "list each regime once")
    if len(set(cfg.train.seeds)) != len(cfg.train.seeds):
        raise ConfigError("config key 'train.seeds' lists a seed twice", "list each seed once")
    if not RUN_NAME_PATTERN.fullmatch(cfg.name):
        raise ConfigError(f"config key 'name' must be a plain name of at most 80 characters, got {excerpt(cfg.name)}",
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
    return cfg


def config_from_dict(raw: dict[str, Any] | None) -> Config:
    """Build a Config from a nested dict (e.g. parsed YAML), every section's own keys validated."""
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError("the config must be a mapping of sections to keys", "see experiments/digits.yaml")
    sections = section_classes()
    kwargs: dict[str, Any] = {}
    for name, value in dict(raw or {}).items():
        if name in sections:
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ConfigError(f"config section '{name}' must be a mapping, got {excerpt(value)}",
                                  f"write '{name}:' followed by indented 'key: value' lines")
            kwargs[name] = build_section(sections[name], name, value)
        elif name == "name":
            kwargs["name"] = coerce("name", value, str)
        elif name in ("regimes", "analyses"):
            kwargs[name] = _plugin_sections(name, value)
        elif name == "selection":
            if value is not None and not (isinstance(value, dict) and all(isinstance(v, str) for v in value.values())):
                raise ConfigError("config section 'selection' must map regime names to a sentence each",
                                  "write e.g. 'selection:' then '  vae: RankMe on the validation split (label-free)'")
            kwargs["selection"] = {str(k): v for k, v in (value or {}).items()}
        else:
            raise unknown_key(str(name), [row[0] for row in field_docs()] + ["regimes", "analyses", "selection"])
    return _validate_whole(Config(**kwargs))


def _plugin_sections(section: str, value: Any) -> dict[str, dict[str, Any]]:
    """The raw ``regimes:`` or ``analyses:`` section: plug-in names to option mappings (validated per plug-in)."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, dict) or v is None for v in value.values()):
        example = "vae: {beta: 4.0}" if section == "regimes" else "projection: {points: 2000}"
        raise ConfigError(f"config section '{section}' must map {section} by name to their options",
                          f"write e.g. '{section}:' then '  {example}'")
    return {str(k): dict(v or {}) for k, v in value.items()}


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into (["a", "b"], parsed value); values are parsed as YAML scalars or lists."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value", "write e.g. --set train.epochs=3")
    key, value_text = text.split("=", 1)
    key = key.strip()
    try:
        value = safe_load_bounded(value_text, f"override {excerpt(key)}") if value_text.strip() else ""
    except yaml.YAMLError:
        value = value_text
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of the nested dict with each ``key=value`` override applied."""
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    sections = section_classes()
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
        elif len(path) == 3 and (path[0] in ("regimes", "analyses") or path[:2] == ["model", "kwargs"]):
            outer = merged.setdefault(path[0], {}) or {}
            merged[path[0]] = outer = dict(outer)
            inner = dict(outer.get(path[1]) or {})
            inner[path[2]] = value
            outer[path[1]] = inner
        else:
            raise unknown_key(dotted, [row[0] for row in field_docs()])
    return merged


def bundled_experiments() -> dict[str, Path]:
    """The experiment files installed with replearn, by name (``replearn run fashion_mnist``); the sweep specs
beside them (``*_sweep.yaml``, for ``replearn sweep``) are not experiments."""
    folder = Path(__file__).resolve().parent.parent / "experiments"
    return {p.stem: p for p in sorted(folder.glob("*.yaml")) if not p.stem.endswith("_sweep")} if folder.is_dir() else {}


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
