"""A dataset as replearn holds it: normalised train / validation / test splits, and how they are made.

Validation is carved out of the training split (stratified, seeded); hyperparameters are chosen on it,
never on test. Every source goes through ``Dataset.from_arrays`` (images in memory) or
``Dataset.streamed_from`` (uint8 images left on disk), which reject empty, single-class, non-finite or
wrongly shaped data with a one-line ``DataError``. A source may add an unlabelled split
(``Dataset.unlabelled_x``), normalised with the training split's statistics, that only label-free
regimes train on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Union

import numpy as np
import torch

from replearn.config.sections import DataConfig
from replearn.errors import DataError
from replearn.data.streaming import ImageStore

Images = Union[torch.Tensor, ImageStore]  # a split's images: in memory, or read from disk batch by batch


@dataclass
class LabelledArrays:
    """A source's images and labels as read: its training and test splits (N×H×W, N×C×H×W or N×H×W×C
    arrays, and one integer label per image), the class names, and optionally images without labels
    (same layout and pixel scale; normalised with the training split's statistics)."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_names: list[str]
    unlabelled_x: np.ndarray | None = None


@dataclass
class StoredSplits:
    """A source's uint8 images left on disk (.npy files, N×C×H×W) with one label per row of each file;
    ``train_rows`` and ``test_rows`` select the source's training and test splits (None: every row)."""

    train_file: Path
    train_y: np.ndarray
    test_file: Path
    test_y: np.ndarray
    class_names: list[str]
    train_rows: np.ndarray | None = None
    test_rows: np.ndarray | None = None


@dataclass
class Dataset:
    """Normalised images (N×C×H×W float32) and integer labels for each split, plus what describes them.

    ``unlabelled_x``, when a source provides it, holds images without labels (normalised with the training
    split's mean and standard deviation, like every split): ``unlabelled_x[index]`` gives a float32 batch
    for an int, slice, array or index tensor, and ``len`` and ``.shape`` work, whether it is a tensor or an
    ``ImageStore`` read from disk. Only label-free regimes may train on it."""

    name: str
    train_x: Images
    train_y: torch.Tensor
    val_x: Images
    val_y: torch.Tensor
    test_x: Images
    test_y: torch.Tensor
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    pixel_range: tuple[float, float] = (0.0, 1.0)
    skipped: list[str] = field(default_factory=list)
    unlabelled_x: Images | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def streamed(self) -> bool:
        """Whether the images are read from disk batch by batch rather than held in memory."""
        return not isinstance(self.train_x, torch.Tensor)

    def to_unit_range(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the (per-channel) normalisation, for showing images."""
        shape = (1, -1, 1, 1) if x.ndim == 4 else (-1, 1, 1)
        std, mean = torch.tensor(self.std).view(shape), torch.tensor(self.mean).view(shape)
        return (x * std + mean).clamp(0.0, 1.0)

    def summary(self) -> dict:
        counts = {s: int(getattr(self, f"{s}_y").numel()) for s in ("train", "val", "test")}
        if self.unlabelled_x is not None:
            counts["unlabelled"] = len(self.unlabelled_x)
        extra = {"streamed_from": getattr(self.train_x, "path", None)} if self.streamed else {}
        if self.skipped:
            extra["skipped_files"] = self.skipped
        return {"name": self.name, "source": self.source, "image_shape": list(self.image_shape),
                "num_classes": self.num_classes, "class_names": self.class_names, **counts,
                "pixel_mean": list(self.mean), "pixel_std": list(self.std), "pixel_range": list(self.pixel_range),
                **extra}

    def limited(self, n: int, seed: int) -> "Dataset":
        """This dataset with each labelled split cut to a stratified, seeded subset of at most ``n`` images
        (0: all); the unlabelled split, which no analysis reads, is kept as it is."""
        parts: dict[str, object] = {}
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if n and len(y) > n:
                keep = stratified_subset(y.numpy(), n, seed)
                parts[f"{split}_x"] = x[torch.from_numpy(keep)] if isinstance(x, torch.Tensor) else x.subset(keep)
                parts[f"{split}_y"] = y[torch.from_numpy(keep)]
        return replace(self, **parts) if parts else self

    @classmethod
    def from_arrays(cls, name: str, arrays: LabelledArrays, cfg: DataConfig, source: str,
                    scale: float | None = None, layout: str | None = None) -> "Dataset":
        """Validate raw arrays (N×H×W, N×C×H×W or N×H×W×C) and split them. Pixel values are mapped to [0, 1]
        by dividing by ``scale``, or, when it is None, by the range the training images span (see
        ``pixel_range``). ``layout`` fixes the arrays' layout (a reader that knows it), else ``data.layout``."""
        train_x, layout = _as_images(name, "training", arrays.train_x, layout or cfg.layout)
        test_x, _ = _as_images(name, "test", arrays.test_x, layout)
        class_names = arrays.class_names
        for split, x, y in (("training", train_x, arrays.train_y), ("test", test_x, arrays.test_y)):
            _check_labels(name, split, len(x), np.asarray(y), len(class_names))
        extra_x = None
        if arrays.unlabelled_x is not None:
            extra_x, _ = _as_images(name, "unlabelled", arrays.unlabelled_x, layout)
        for split, x in (("test", test_x), ("unlabelled", extra_x)):
            if x is not None and train_x.shape[1:] != x.shape[1:]:
                raise DataError(f"{name}: training images are {train_x.shape[1:]} but {split} images are "
                                f"{x.shape[1:]}", "give both splits images of the same shape" if split == "test"
                                else "give the unlabelled images the training images' shape")
        train_y, test_y = np.asarray(arrays.train_y, dtype=np.int64), np.asarray(arrays.test_y, dtype=np.int64)
        train_idx, val_idx, test_idx = split_rows(name, train_y, test_y, cfg)
        if len(test_idx) < len(test_x):
            test_x, test_y = test_x[test_idx], test_y[test_idx]
        low, high = (0.0, float(scale)) if scale is not None else pixel_range(name, train_x[train_idx])
        span = high - low
        wide = train_x.dtype == np.float64 or span > 1e6 or abs(low) > 1e6

        def unit(x: np.ndarray) -> np.ndarray:  # row-major whatever the file's order (STL-10's is column-major)
            work = x.astype(np.float64 if wide else np.float32, order="C")
            return ((work - low) / span).astype(np.float32, order="C")

        fit_x = unit(train_x[train_idx])
        mean, std = channel_stats(name, *channel_moments(fit_x), f"values span {low:g}..{high:g}")
        shape = (1, -1, 1, 1)
        mean32, std32 = np.float32(mean).reshape(shape), np.float32(std).reshape(shape)

        def prep(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy((unit(x) - mean32) / std32)

        return cls(name=name, train_x=prep(train_x[train_idx]), train_y=torch.from_numpy(train_y[train_idx]),
                   val_x=prep(train_x[val_idx]), val_y=torch.from_numpy(train_y[val_idx]),
                   test_x=prep(test_x), test_y=torch.from_numpy(test_y), class_names=list(class_names),
                   mean=mean, std=std, source=source, pixel_range=(low, high),
                   unlabelled_x=None if extra_x is None else prep(extra_x))

    @classmethod
    def streamed_from(cls, name: str, stored: StoredSplits, cfg: DataConfig, source: str,
                      skipped: list[str] | None = None) -> "Dataset":
        """Splits of uint8 images that stay on disk and are read batch by batch: the same splits and
        per-channel statistics as ``from_arrays`` on the same images."""
        train_file, test_file = stored.train_file, stored.test_file
        train_rows = np.arange(len(stored.train_y)) if stored.train_rows is None else np.asarray(stored.train_rows)
        test_rows = np.arange(len(stored.test_y)) if stored.test_rows is None else np.asarray(stored.test_rows)
        train_y = np.asarray(stored.train_y, dtype=np.int64)[train_rows]
        test_y = np.asarray(stored.test_y, dtype=np.int64)[test_rows]
        for split, y in (("training", train_y), ("test", test_y)):
            _check_labels(name, split, len(y), y, len(stored.class_names))
        train_idx, val_idx, test_idx = split_rows(name, train_y, test_y, cfg)
        raw = ImageStore(train_file, train_rows[train_idx])  # unnormalised: pixels / 255 in float32, as in memory
        sums, squares = channel_moments(raw, chunk=256)
        mean, std = channel_stats(name, sums, squares, "uint8 images")

        def store(path: Path, rows: np.ndarray) -> ImageStore:
            return ImageStore(path, rows, mean, std)

        return cls(name=name, train_x=store(train_file, train_rows[train_idx]),
                   train_y=torch.from_numpy(train_y[train_idx]),
                   val_x=store(train_file, train_rows[val_idx]), val_y=torch.from_numpy(train_y[val_idx]),
                   test_x=store(test_file, test_rows[test_idx]), test_y=torch.from_numpy(test_y[test_idx]),
                   class_names=list(stored.class_names), mean=mean, std=std, source=source,
                   pixel_range=(0.0, 255.0), skipped=list(skipped or []))


STREAMED_ANALYSIS_IMAGES = 10_000  # images per split analysed when the data are streamed and no cap is set


def analysis_view(data: Dataset, max_images_per_split: int, seed: int) -> Dataset:
    """The images whose features the analyses and probes use: ``analysis.max_images_per_split`` of each split
    (stratified), all of them when 0 — except for streamed data, where 0 means STREAMED_ANALYSIS_IMAGES, so
    that features (which are held in memory) stay bounded too."""
    cap = max_images_per_split or (STREAMED_ANALYSIS_IMAGES if data.streamed else 0)
    return data.limited(cap, seed)


def split_rows(name: str, train_y: np.ndarray, test_y: np.ndarray, cfg: DataConfig) -> tuple[np.ndarray, ...]:
    """Row indices (train, validation, test) into the source's training and test arrays: the configured
    subsets, then validation carved from train — stratified and seeded, from the labels alone."""
    train_rows = np.arange(len(train_y))
    if cfg.train_subset:
        train_rows = stratified_subset(train_y, cfg.train_subset, cfg.split_seed)
    test_rows = stratified_subset(test_y, cfg.test_subset, cfg.split_seed) if cfg.test_subset else np.arange(len(test_y))
    val_idx, train_idx = stratified_split(train_y[train_rows], cfg.val_fraction, cfg.split_seed)
    if len(train_idx) < 2 or len(val_idx) < 1 or len(np.unique(train_y[train_rows][train_idx])) < 2:
        raise DataError(f"{name}: only {len(train_rows)} training images — too few for a train/validation split",
                        "raise data.train_subset or use a larger dataset")
    return train_rows[train_idx], train_rows[val_idx], test_rows


def channel_moments(x: np.ndarray | ImageStore, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean of the pixels and of their squares (N×C×H×W, an array or a store read from disk),
    accumulated in float64 by chunks."""
    sums, squares = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for start in range(0, len(x), chunk):
        part = np.asarray(x[start:start + chunk], dtype=np.float64)
        sums += part.sum((0, 2, 3))
        squares += np.einsum("nchw,nchw->c", part, part)
    count = max(1, len(x) * x.shape[2] * x.shape[3])
    return sums / count, squares / count


def channel_stats(name: str, mean: np.ndarray, mean_square: np.ndarray, span: str) -> tuple[tuple[float, ...], ...]:
    """Per-channel mean and standard deviation (of pixels in [0, 1]) from their first two moments; a channel
    with no variance gets a standard deviation of 1."""
    mean, mean_square = np.asarray(mean, dtype=np.float64), np.asarray(mean_square, dtype=np.float64)
    std = np.sqrt(np.maximum(mean_square - mean ** 2, 0.0))
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        raise DataError(f"{name}: the training pixels' mean or standard deviation is not finite ({span})",
                        "rescale the images to [0, 1] or 0–255 before saving them")
    return tuple(float(m) for m in mean), tuple(float(s) if s > 0 else 1.0 for s in std)


def pixel_range(name: str, x: np.ndarray) -> tuple[float, float]:
    """The value range that maps to [0, 1]: (0, 1) for images already there, (0, 255) for 8-bit values
    (uint8, or floats or integers within 0–255), else the range the training images span."""
    if x.dtype == np.uint8:
        return 0.0, 255.0
    low, high = float(x.min()), float(x.max())
    if not (math.isfinite(low) and math.isfinite(high)) or not math.isfinite(high - low):
        raise DataError(f"{name}: pixel values span {low:g}..{high:g}, too wide a range to normalise",
                        "rescale the images to [0, 1] or 0–255 before saving them")
    if low >= 0 and high <= 1:
        return 0.0, 1.0
    if low >= 0 and 2 < high <= 255:
        return 0.0, 255.0
    return low, (high if high > low else low + 1.0)


def _as_images(name: str, split: str, x: np.ndarray, layout: str) -> tuple[np.ndarray, str]:
    """Images as N×C×H×W, with the layout used (decided from the training images' shape under 'auto')."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise DataError(f"{name}: {split} images are of type {x.dtype}, not numbers",
                        "store pixel values as uint8 (0–255) or floats (0–1)")
    if x.ndim == 3:
        x, layout = x[:, None], "channels-first"
    if x.ndim != 4:
        raise DataError(f"{name}: {split} images have rank {x.ndim} (shape {x.shape}); expected N×H×W, N×C×H×W "
                        "or N×H×W×C", "reshape the images to N×H×W (grey) or N×C×H×W")
    if layout == "auto":
        first, last = x.shape[1] in (1, 3, 4), x.shape[3] in (1, 3, 4)
        if first == last:
            dims = "×".join(map(str, x.shape[1:]))
            raise DataError(f"{name}: cannot tell which axis of the {dims} {split} images holds the channels"
                            f"{' (both could)' if first else ' (neither has 1, 3 or 4 entries)'}",
                            "set data.layout=channels-first (N×C×H×W) or data.layout=channels-last (N×H×W×C)")
        layout = "channels-first" if first else "channels-last"
    if layout == "channels-last":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if x.shape[0] == 0:
        raise DataError(f"{name}: the {split} split is empty", "give at least one image per class")
    if x.shape[2] < 2 or x.shape[3] < 2:
        raise DataError(f"{name}: {split} images are {x.shape[2]}×{x.shape[3]} pixels, too small for a conv encoder",
                        "use images of at least 2×2 pixels")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
        raise DataError(f"{name}: {bad} {split} images contain NaN or infinite pixels",
                        "clean or drop those images before training")
    return x, layout


def _check_labels(name: str, split: str, n_images: int, y: np.ndarray, num_classes: int) -> None:
    check_label_array(name, split, y, n_images)
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(f"{name}: {split} labels span {y.min()}..{y.max()} but there are {num_classes} classes",
                        "labels must be class indices 0..num_classes-1")
    if split == "training" and len(np.unique(y)) < 2:
        raise DataError(f"{name}: the training split has a single class", "a probe needs at least two classes")


def check_label_array(name: str, split: str, y: np.ndarray, n_images: int) -> None:
    """One integer label per image, as a 1-D array."""
    if y.ndim == 2 and y.shape[1] == 1 and len(y) == n_images:
        raise DataError(f"{name}: {split} labels have shape {y.shape}, a column rather than one label per image",
                        "save them as a 1-D array (labels.ravel())")
    if y.ndim != 1:
        raise DataError(f"{name}: {split} labels have shape {y.shape}; expected one label per image, shape ({n_images},)",
                        "save one integer class index per image as a 1-D array")
    if len(y) != n_images:
        raise DataError(f"{name}: {n_images} {split} images but {len(y)} labels",
                        "give exactly one label per image")
    if y.dtype.kind in "USO":
        raise DataError(f"{name}: {split} labels are text ({y.dtype}), not class indices",
                        "store labels as integers 0..K-1 and the names in a class_names array")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{name}: {split} labels are {y.dtype}, not integers", "store class indices as integers")


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (held_out, rest): ``fraction`` of each class held out, chosen by a seeded permutation.

    Per-class quotas are rounded by largest remainder so the held-out total is round(fraction · N);
    every class with two or more items keeps at least one item on each side.
    """
    rng = np.random.RandomState(seed)
    classes, counts = np.unique(y, return_counts=True)
    exact = fraction * counts
    quota = np.floor(exact).astype(int)
    short = int(round(fraction * len(y))) - int(quota.sum())
    if short > 0:
        quota[np.argsort(-(exact - quota), kind="stable")[:short]] += 1
    held, rest = [], []
    for c, n in zip(classes, quota):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        if len(idx) > 1:
            n = min(max(int(n), 1), len(idx) - 1)
        held.append(idx[:n])
        rest.append(idx[n:])
    return np.sort(np.concatenate(held)), np.sort(np.concatenate(rest))


def stratified_subset(y: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of a class-balanced subset of ``size`` items (all items if size >= len(y))."""
    if size >= len(y):
        return np.arange(len(y))
    held, _ = stratified_split(y, size / len(y), seed)
    return held


