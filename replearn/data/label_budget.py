"""The label budget (``train.labels_per_class``): a class-balanced, seeded subset of the labelled training
images that regimes trained with labels, and the probes, may use — the same subset for every regime of a
seed, so that comparisons stay paired, and a new draw for every seed, so that intervals over seeds include
the variation between draws. Subsets are nested: for a given seed, the budget of n labels per class is the
first n of the same per-class order, so it contains every smaller budget's images. The probes choose their
settings by cross-validation inside the subset (``probes.linear_probe`` with ``val=None``): no label beyond the
budget's is used to fit or to choose. Label-free regimes still train on every training image.

A regime trained on the subset cycles through it: its epochs are as long as the full training split's (each
labelled image recurs about N / n times per epoch), so every regime still takes the same number of
optimisation steps on the same schedule (the equal-steps budget).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from replearn.runtime import seeding
from replearn.errors import ConfigError
from replearn.runtime.seeding import derive_seed
from replearn.data.dataset import Dataset


def labelled_subset(y: np.ndarray, per_class: int, seed: int, class_names: list[str] | None = None,
                    num_classes: int | None = None) -> np.ndarray:
    """Sorted indices of ``per_class`` seeded random training images of every class of the dataset
    (``num_classes``, else as many as ``class_names`` or the labels give): the first ``per_class`` of one seeded
    order per class, so budgets are nested for a given ``seed``; refused (one line) when a class has fewer, or
    none (a class only the test split holds), so that the subset stays class-balanced."""
    y = np.asarray(y)
    classes = max(num_classes or 0, len(class_names or ()), int(y.max()) + 1 if len(y) else 0)
    counts = np.bincount(y, minlength=classes)
    present = list(range(classes))
    rarest = min(present, key=lambda c: counts[c])
    if counts[rarest] < per_class:
        name = class_names[rarest] if class_names and rarest < len(class_names) else str(rarest)
        held = (f"has only {counts[rarest]} training images" if counts[rarest] else
                "has no training image (the dataset's other splits hold it)")
        raise ConfigError(f"train.labels_per_class={per_class} but class '{name}' {held}",
                          f"set train.labels_per_class to at most {counts[rarest]}, or 0 for all"
                          if counts[rarest] else "give every class training images, or set train.labels_per_class=0")
    rng = np.random.RandomState(derive_seed((seed,), seeding.LABEL_BUDGET) % 2**32)
    picked = [rng.permutation(np.flatnonzero(y == c))[:per_class] for c in present]
    return np.sort(np.concatenate(picked))


class CycledImages:
    """Training images read through an index (the labelled subset repeated): ``x[i]`` is ``base[index[i]]`` for
    an int, slice or index tensor, like the tensors and ``ImageStore``s it wraps."""

    def __init__(self, base: Any, index: torch.Tensor) -> None:
        self.base, self.index = base, index

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.index), *self.base.shape[1:]))

    def __getitem__(self, idx: Any) -> torch.Tensor:
        rows = self.index[idx]
        if rows.ndim == 0:
            return torch.as_tensor(self.base[int(rows)])
        return torch.as_tensor(self.base[rows])


def cycled_index(subset: np.ndarray, length: int) -> torch.Tensor:
    """The subset repeated (in order) to ``length`` entries: the training order then permutes these."""
    return torch.from_numpy(np.resize(subset, max(length, len(subset))).astype(np.int64))


def training_view(data: Dataset, subset: np.ndarray) -> Dataset:
    """The data a regime trained with labels sees under the budget: only ``subset``'s images and labels,
    cycled to the length of the training split (so its epochs have as many steps as everyone else's)."""
    index = cycled_index(subset, len(data.train_y))
    return replace(data, train_x=CycledImages(data.train_x, index), train_y=data.train_y[index], unlabelled_x=None)


def analysis_train_view(data: Dataset, subset: np.ndarray) -> Dataset:
    """The data the analyses see under the budget: the training split cut to the labelled subset, so that
    every probe fits on the budget's labels (validation and test splits are unchanged)."""
    keep = torch.from_numpy(subset)
    x = data.train_x[keep] if isinstance(data.train_x, torch.Tensor) else data.train_x.subset(subset)
    return replace(data, train_x=x, train_y=data.train_y[keep])
