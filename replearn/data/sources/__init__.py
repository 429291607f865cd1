"""The built-in dataset sources, one module each; importing a module registers its sources in ``DATASETS``.
A new built-in dataset is one new module here plus one line below."""
from __future__ import annotations

from replearn.data.sources.base import (DATASETS, DatasetSource, NoOptions, data_keys, dataset_class, dataset_status,
                   load_dataset, make_dataset_source, register_dataset)

from replearn.data.sources import digits  # noqa: E402,F401  (registration, in the order `replearn datasets` lists them)
from replearn.data.sources import idx  # noqa: E402,F401
from replearn.data.sources import npz  # noqa: E402,F401
from replearn.data.sources import cifar  # noqa: E402,F401
from replearn.data.sources import folder  # noqa: E402,F401
from replearn.data.sources import stl10  # noqa: E402,F401

__all__ = ["DATASETS", "DatasetSource", "NoOptions", "data_keys", "dataset_class", "dataset_status",
           "load_dataset", "make_dataset_source", "register_dataset"]
