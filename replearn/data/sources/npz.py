"""The ``npz`` dataset: your own arrays in an .npz file (train_x, train_y, test_x, test_y, optional
class_names), read after checking every member's declared size (``read_npz_checked``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from replearn.config.sections import DataConfig
from replearn.errors import DataError
from replearn.data.dataset import Dataset, LabelledArrays, check_label_array
from replearn.data.readers import IDX_FILES, read_npz_checked
from replearn.data.sources.base import DatasetSource, register_dataset


@register_dataset("npz")
class Npz(DatasetSource):
    description = "your own arrays in an .npz file given by data.root"

    def load(self, cfg: DataConfig) -> Dataset:
        if not cfg.root:
            raise DataError("dataset 'npz' needs a file", "pass --set data.root=path/to/arrays.npz")
        path = Path(cfg.root)
        if not path.is_file():
            raise DataError(f"npz dataset file '{path}' does not exist", "check data.root")
        arrays = read_npz_checked(path)
        missing = [k for k in IDX_FILES if k not in arrays]
        if missing:
            raise DataError(f"{path} lacks the arrays {', '.join(missing)}",
                            "save it with numpy.savez(train_x=..., train_y=..., test_x=..., test_y=...)")
        names = npz_class_names(path, arrays)
        labelled = LabelledArrays(arrays["train_x"], arrays["train_y"], arrays["test_x"], arrays["test_y"], names)
        return Dataset.from_arrays("npz", labelled, cfg, source=str(path))


def npz_class_names(path: Path, arrays: dict[str, np.ndarray]) -> list[str]:
    """The saved class_names, else 0..K-1 from the labels (whose shape and type are checked first)."""
    for split, key in (("training", "train"), ("test", "test")):  # shape and type, before the names are built
        labels = arrays[f"{key}_y"]
        check_label_array("npz", split, labels, len(labels) if labels.ndim else 0)
    labels = np.concatenate([arrays["train_y"], arrays["test_y"]])  # image counts are checked with the images
    if labels.size and labels.min() < 0:
        raise DataError(f"{path}: labels include {labels.min()}", "labels must be class indices 0..K-1")
    distinct = len(np.unique(labels))
    n_classes = int(labels.max(initial=0)) + 1
    if "class_names" in arrays:
        raw_names = arrays["class_names"]
        if raw_names.ndim != 1 or raw_names.dtype.kind not in "USiuf":
            raise DataError(f"{path}: class_names has shape {raw_names.shape} and type {raw_names.dtype}",
                            "save class_names as a 1-D array of strings, one per class")
        return [str(c) for c in raw_names]
    if n_classes > max(2 * distinct, distinct + 1000):
        raise DataError(f"{path}: labels go up to {n_classes - 1} but only {distinct} distinct values occur",
                        "relabel the classes as 0..K-1 (e.g. numpy.unique(y, return_inverse=True)), or save class_names")
    return [str(c) for c in range(n_classes)]
