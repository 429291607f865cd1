"""What a dataset source is to replearn, and the registry of them.

A source reads one kind of dataset files and returns a ``Dataset`` (``load``), and says in a phrase
whether its files are here (``status``, shown by ``replearn datasets``). Its own settings are an
``Options`` dataclass of ``opt(...)`` fields, written by the user as ``data.<key>`` beside the keys every
dataset has (``data.root``, ``data.val_fraction``, …) and checked like any config key.

Adding one is one file with a ``DatasetSource`` subclass under ``@register_dataset("name")`` plus its
import in ``sources/__init__.py``; a user's own source comes in by import path
(``data.name: mypkg.data:MySource``).
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from replearn.config.sections import PLUGIN_OPTIONS, DataConfig
from replearn.errors import ConfigError, DataError
from replearn.config.options import build_options
from replearn.config.registry import Registry, is_import_path
from replearn.data.dataset import Dataset
from replearn.data.readers import idx_search_dirs


@dataclass
class NoOptions:
    """The options of a source that has none of its own."""


class DatasetSource:
    """Base class of dataset sources. Subclasses set ``description`` (and ``Options`` if they have
    settings) and implement ``load``; ``status`` says whether the files are available here."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions

    def __init__(self, options: Any = None) -> None:
        self.options = options if options is not None else self.Options()

    def load(self, cfg: DataConfig) -> Dataset:
        """The dataset, split and normalised (``Dataset.from_arrays`` or ``Dataset.streamed_from``)."""
        raise NotImplementedError

    def status(self, root: str | None) -> str:
        """One phrase saying whether the dataset's files are available here (``root``: data.root)."""
        return "needs data.root"

    def discard(self) -> None:
        """Remove what the last ``load`` wrote (a cache it made), called when the run refuses the data, so
        that a refused run leaves the disk as it was. Most sources write nothing."""


def not_found(name: str, root: str | None) -> str:
    """The status of a source whose files were looked for in ``idx_search_dirs`` and not found."""
    return "not found (looked in " + ", ".join(str(d) for d in idx_search_dirs(name, root)) + ")"


def check_dataset(obj: Any, path: str) -> type[DatasetSource]:
    """What a ``data.name`` import path names must be: a DatasetSource subclass with dataclass Options."""
    if not (isinstance(obj, type) and issubclass(obj, DatasetSource)):
        raise ConfigError(f"dataset import path '{path}' names a {type(obj).__name__}, not a DatasetSource",
                          "point it at a subclass of replearn.data.DatasetSource")
    if not (isinstance(obj.Options, type) and dataclasses.is_dataclass(obj.Options)):
        raise ConfigError(f"dataset import path '{path}': {obj.__name__}.Options is not a dataclass",
                          "declare the source's options as a @dataclass of opt(...) fields")
    return obj


DATASETS: Registry[type[DatasetSource]] = Registry("dataset", check_dataset)


def register_dataset(name: str) -> Callable[[type[DatasetSource]], type[DatasetSource]]:
    """Class decorator: register a DatasetSource subclass under ``name`` (which also becomes its ``name``)."""
    def add(cls: type[DatasetSource]) -> type[DatasetSource]:
        cls.name = name
        return DATASETS.register(name)(cls)

    return add


def dataset_class(name: str) -> type[DatasetSource]:
    """The source registered as ``name``, or the class an import path names; an unknown name raises a
    DataError that suggests the closest registered one."""
    if isinstance(name, str) and name and not is_import_path(name) and name not in DATASETS:
        close = difflib.get_close_matches(name, DATASETS.names(), n=1, cutoff=0.4)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise DataError(f"unknown dataset '{name[:200]}'",
                        f"{hint}choose one of: {', '.join(DATASETS.names())}, or give an import path "
                        "package.module:Name")
    return DATASETS.get(name)


COMMON_KEYS = tuple(f"data.{f.name}" for f in dataclasses.fields(DataConfig) if f.name != PLUGIN_OPTIONS)


def data_keys(name: str) -> list[str]:
    """The keys of the data section that dataset ``name`` accepts (without ``data.``): those every dataset
    has, then its own options."""
    own = [f.name for f in dataclasses.fields(dataset_class(name).Options)]
    return [key[len("data."):] for key in COMMON_KEYS] + own


def make_dataset_source(cfg: DataConfig) -> DatasetSource:
    """The source ``data.name`` names, with the config's other data keys checked against its ``Options``
    (an unknown key suggests the closest of those and of the keys every dataset has)."""
    cls = dataset_class(cfg.name)
    options = build_options(cls.Options, "data", dict(cfg.plugin_options), known=COMMON_KEYS)
    return cls(options)


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load the dataset the config names, or raise a one-line DataError / ConfigError saying why not."""
    return make_dataset_source(cfg).load(cfg)


def dataset_status(name: str, root: str | None = None) -> str:
    """One phrase saying whether the dataset's files are available here."""
    cls = dataset_class(name)
    return cls(cls.Options()).status(root)
