"""The ``digits`` dataset: scikit-learn's bundled 8×8 handwritten digits (no download)."""
from __future__ import annotations

import numpy as np

from replearn.config.sections import DataConfig
from replearn.data.dataset import Dataset, LabelledArrays, stratified_split
from replearn.data.sources.base import DatasetSource, register_dataset


@register_dataset("digits")
class Digits(DatasetSource):
    """scikit-learn's bundled 8×8 digits; a fixed, stratified 30% of it is the test split."""

    description = "scikit-learn's bundled 8×8 handwritten digits (1,797 images; no download)"

    def load(self, cfg: DataConfig) -> Dataset:
        from sklearn.datasets import load_digits as sk_digits

        bunch = sk_digits()
        x = bunch.images.astype(np.float32)
        y = bunch.target.astype(np.int64)
        test_idx, train_idx = stratified_split(y, 0.3, seed=0)
        arrays = LabelledArrays(x[train_idx], y[train_idx], x[test_idx], y[test_idx], [str(d) for d in range(10)])
        return Dataset.from_arrays("digits", arrays, cfg, source="sklearn.datasets.load_digits", scale=16.0)

    def status(self, root: str | None) -> str:
        return "bundled"
