"""Resolving a config's plug-ins: the dataset, the encoder, the regimes and the analyses it names, each
found in its registry (or imported by path) and its own options validated against its ``Options``.

``config.py`` never imports a plug-in; this is where a config meets them, when an ``Experiment`` is built
(and for ``--help``, which lists every registered plug-in's options).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from replearn.analyses import ANALYSES, Analysis, default_analyses, ordered_analyses
from replearn.config.sections import Config, field_docs
from replearn.data import DATASETS, DatasetSource, make_dataset_source
from replearn.encoders import ENCODERS, encoder_kwargs
from replearn.errors import ConfigError
from replearn.config.options import option_docs, options_dict
from replearn.regimes import REGIMES, Regime, make_regime, regime_name


@dataclass
class Plugins:
    """Every plug-in one config names, resolved, with validated options; ``config`` records them all."""

    config: Config
    dataset: DatasetSource
    regimes: list[Regime]
    analyses: list[Analysis]

    def epochs_for(self, regime: Regime | str) -> int:
        """A regime's epochs: its own ``epochs`` option, else ``train.epochs``."""
        if isinstance(regime, str):
            regime = next(r for r in self.regimes if r.name == regime)
        epochs = getattr(regime.options, "epochs", None)
        return self.config.train.epochs if epochs is None else epochs

    def regime(self, name: str) -> Regime:
        for regime in self.regimes:
            if regime.name == name:
                return regime
        raise ConfigError(f"regime '{name}' is not trained by this experiment",
                          f"choose one of: {', '.join(r.name for r in self.regimes)}")


def resolve(cfg: Config) -> Plugins:
    """Resolve and validate every plug-in ``cfg`` names; the returned config records each one's options in
    full (defaults included), as config.yaml will."""
    dataset = make_dataset_source(cfg.data)
    model_options = _encoder_options(cfg)
    regimes = [make_regime(spec, cfg.regimes.get(regime_name(spec))) for spec in cfg.train.regimes]
    _check_regimes(cfg, regimes)
    analyses = ordered_analyses(default_analyses(cfg.analysis.skip) + list(cfg.analysis.extra), cfg.analyses)  # checks their options
    resolved = dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, plugin_options=options_dict(dataset.options)),
        model=model_options, regimes={r.name: _set_options(r.options) for r in regimes},
        analyses={a.name: _set_options(a.options) for a in analyses if options_dict(a.options)})
    return Plugins(resolved, dataset, regimes, analyses)


def _set_options(options: Any) -> dict[str, Any]:
    """Every option of a plug-in with the value it runs with (defaults included), leaving out those that
    are unset (None: e.g. a regime's epochs, which then follows train.epochs)."""
    return {k: v for k, v in options_dict(options).items() if v is not None}


def _encoder_options(cfg: Config) -> Any:
    """The model section with the encoder's own options validated (and filled in, for an encoder that
    declares ``Options``)."""
    model = cfg.model
    if model.layers:
        return model
    factory = ENCODERS.get(model.name)
    kwargs = encoder_kwargs(factory, model, (1, 1, 1))
    if not dataclasses.is_dataclass(getattr(factory, "Options", None)):
        return model
    own = {k: v for k, v in kwargs.items() if k not in ("in_shape", "latent_dim")}
    return dataclasses.replace(model, kwargs={}, plugin_options=own)


def _check_regimes(cfg: Config, regimes: list[Regime]) -> None:
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
        known = [n for n in unused if n in REGIMES]
        hint = (f"add {known[0]} to train.regimes, or drop its options" if known
                else f"options are keyed by regime name: {', '.join(names)}")
        raise ConfigError(f"config section 'regimes' has options for '{unused[0]}', which train.regimes does not "
                          "train", hint)


def plugin_docs() -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) of every key: the sections', then each registered plug-in's own options."""
    rows = list(field_docs())
    for name, cls in DATASETS.items():
        rows += [(f"{key} [dataset {name}]", *rest) for key, *rest in option_docs(cls.Options, "data")]
    for name, factory in ENCODERS.items():
        if dataclasses.is_dataclass(getattr(factory, "Options", None)):
            rows += [(f"{key} [encoder {name}]", *rest) for key, *rest in option_docs(factory.Options, "model")]
    for name, cls in REGIMES.items():
        rows += option_docs(cls.Options, f"regimes.{name}")
    for name, cls in ANALYSES.items():
        rows += option_docs(cls.Options, f"analyses.{name}")
    return rows
