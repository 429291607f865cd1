"""The ``digits`` dataset: scikit-learn's bundled 8×8 handwritten digits (no download)."""
from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from replearn.config.sections import DataConfig
from replearn.data.dataset import Dataset, LabelledArrays, stratified_split
from replearn.data.sources.base import DatasetSource, register_dataset


def load_bundled_digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits' images (1797 × 8 × 8, values 0–16) and labels, read from the file scikit-learn bundles as
    ``load_digits`` reads it, without importing scikit-learn (1.2 s); through ``load_digits`` where the file
    is not at its usual place."""
    spec = importlib.util.find_spec("sklearn")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt") as handle:
                table = np.loadtxt(handle, delimiter=",")
            return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target


@register_dataset("digits")
class Digits(DatasetSource):
    """scikit-learn's bundled 8×8 digits; a fixed, stratified 30% of it is the test split."""

    description = "scikit-learn's bundled 8×8 handwritten digits (1,797 images; no download)"

    def load(self, cfg: DataConfig) -> Dataset:
        images, target = load_bundled_digits()
        x = images.astype(np.float32)
        y = target.astype(np.int64)
        test_idx, train_idx = stratified_split(y, 0.3, seed=0)
        arrays = LabelledArrays(x[train_idx], y[train_idx], x[test_idx], y[test_idx], [str(d) for d in range(10)])
        return Dataset.from_arrays("digits", arrays, cfg, source="sklearn.datasets.load_digits", scale=16.0)

    def status(self, root: str | None) -> str:
        return "bundled"
