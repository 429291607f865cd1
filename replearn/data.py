"""Datasets by name, held in memory as tensors, with deterministic train / validation / test splits.

Validation is carved out of the training split (stratified, seeded); hyperparameters are chosen on it,
never on test. Every source goes through ``Dataset.from_arrays``, which rejects empty, single-class,
non-finite or wrongly shaped data with a one-line ``DataError``.
"""
from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from .config import DataConfig
from .errors import DataError

if TYPE_CHECKING:
    from .streaming import ImageStore

DEBIAN_DATASET_DIR = Path("/usr/share/datasets")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
}
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class Dataset:
    """Normalised images (N×C×H×W float32) and integer labels for each split, plus what describes them."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    pixel_range: tuple[float, float] = (0.0, 1.0)
    skipped: list[str] = field(default_factory=list)

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
        extra = {"streamed_from": getattr(self.train_x, "path", None)} if self.streamed else {}
        if self.skipped:
            extra["skipped_files"] = self.skipped
        return {"name": self.name, "source": self.source, "image_shape": list(self.image_shape),
                "num_classes": self.num_classes, "class_names": self.class_names, **counts,
                "pixel_mean": list(self.mean), "pixel_std": list(self.std), "pixel_range": list(self.pixel_range),
                **extra}

    def limited(self, n: int, seed: int) -> "Dataset":
        """This dataset with each split cut to a stratified, seeded subset of at most ``n`` images (0: all)."""
        parts: dict[str, object] = {}
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if n and len(y) > n:
                keep = stratified_subset(y.numpy(), n, seed)
                parts[f"{split}_x"] = x[torch.from_numpy(keep)] if isinstance(x, torch.Tensor) else x.subset(keep)
                parts[f"{split}_y"] = y[torch.from_numpy(keep)]
        return replace(self, **parts) if parts else self

    @classmethod
    def from_arrays(cls, name: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                    test_y: np.ndarray, class_names: list[str], cfg: DataConfig, source: str,
                    scale: float | None = None, layout: str | None = None) -> "Dataset":
        """Validate raw arrays (N×H×W, N×C×H×W or N×H×W×C) and split them. Pixel values are mapped to [0, 1]
        by dividing by ``scale``, or, when it is None, by the range the training images span (see
        ``pixel_range``). ``layout`` fixes the arrays' layout (a reader that knows it), else ``data.layout``."""
        train_x, layout = _as_images(name, "training", train_x, layout or cfg.layout)
        test_x, _ = _as_images(name, "test", test_x, layout)
        for split, x, y in (("training", train_x, train_y), ("test", test_x, test_y)):
            _check_labels(name, split, len(x), np.asarray(y), len(class_names))
        if train_x.shape[1:] != test_x.shape[1:]:
            raise DataError(f"{name}: training images are {train_x.shape[1:]} but test images are "
                            f"{test_x.shape[1:]}", "give both splits images of the same shape")
        train_y, test_y = np.asarray(train_y, dtype=np.int64), np.asarray(test_y, dtype=np.int64)
        train_idx, val_idx, test_idx = split_rows(name, train_y, test_y, cfg)
        if len(test_idx) < len(test_x):
            test_x, test_y = test_x[test_idx], test_y[test_idx]
        low, high = (0.0, float(scale)) if scale is not None else pixel_range(name, train_x[train_idx])
        span = high - low
        wide = train_x.dtype == np.float64 or span > 1e6 or abs(low) > 1e6

        def unit(x: np.ndarray) -> np.ndarray:
            work = x.astype(np.float64 if wide else np.float32)
            return ((work - low) / span).astype(np.float32)

        fit_x = unit(train_x[train_idx])
        mean, std = channel_stats(name, *channel_moments(fit_x), f"values span {low:g}..{high:g}")
        shape = (1, -1, 1, 1)
        mean32, std32 = np.float32(mean).reshape(shape), np.float32(std).reshape(shape)

        def prep(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy((unit(x) - mean32) / std32)

        return cls(name=name, train_x=prep(train_x[train_idx]), train_y=torch.from_numpy(train_y[train_idx]),
                   val_x=prep(train_x[val_idx]), val_y=torch.from_numpy(train_y[val_idx]),
                   test_x=prep(test_x), test_y=torch.from_numpy(test_y), class_names=list(class_names),
                   mean=mean, std=std, source=source, pixel_range=(low, high))

    @classmethod
    def streamed_from(cls, name: str, train_file: Path, train_y: np.ndarray, test_file: Path, test_y: np.ndarray,
                      class_names: list[str], cfg: DataConfig, source: str, skipped: list[str] | None = None,
                      train_rows: np.ndarray | None = None, test_rows: np.ndarray | None = None) -> "Dataset":
        """Splits of uint8 images that stay on disk (.npy files, N×C×H×W, of which ``train_rows`` and
        ``test_rows`` are the source's splits; default all) and are read batch by batch: the same splits and
        per-channel statistics as ``from_arrays`` on the same images."""
        from .streaming import ImageStore

        train_rows = np.arange(len(train_y)) if train_rows is None else np.asarray(train_rows)
        test_rows = np.arange(len(test_y)) if test_rows is None else np.asarray(test_rows)
        train_y = np.asarray(train_y, dtype=np.int64)[train_rows]
        test_y = np.asarray(test_y, dtype=np.int64)[test_rows]
        for split, y in (("training", train_y), ("test", test_y)):
            _check_labels(name, split, len(y), y, len(class_names))
        train_idx, val_idx, test_idx = split_rows(name, train_y, test_y, cfg)
        raw = ImageStore(train_file, train_rows[train_idx])  # unnormalised: pixels / 255 in float32, as in memory
        sums, squares = channel_moments(raw, chunk=256)
        mean, std = channel_stats(name, sums, squares, "uint8 images")

        def store(path: Path, rows: np.ndarray) -> ImageStore:
            return ImageStore(path, rows, mean, std)

        return cls(name=name, train_x=store(train_file, train_rows[train_idx]), train_y=torch.from_numpy(train_y[train_idx]),
                   val_x=store(train_file, train_rows[val_idx]), val_y=torch.from_numpy(train_y[val_idx]),
                   test_x=store(test_file, test_rows[test_idx]), test_y=torch.from_numpy(test_y[test_idx]),
                   class_names=list(class_names), mean=mean, std=std, source=source, pixel_range=(0.0, 255.0),
                   skipped=list(skipped or []))


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


# ---------------------------------------------------------------- IDX files

def read_idx(path: Path, limit: int | None = None) -> np.ndarray:
    """Read an IDX file (optionally gzipped), checking its header against its size and the declared size
    against ``limit`` bytes (default: half the available memory) before reading the data."""
    limit = available_memory() // 2 if limit is None else limit
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            magic = fh.read(4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in IDX_DTYPES:
                raise DataError(f"{path} is not an IDX file (bad magic number)",
                                "delete it and download the dataset again")
            ndim = magic[3]
            dims_raw = fh.read(4 * ndim)
            if ndim == 0 or len(dims_raw) < 4 * ndim:
                raise DataError(f"{path} has a truncated IDX header", "delete it and download the dataset again")
            dims = struct.unpack(f">{ndim}I", dims_raw)
            dtype = np.dtype(IDX_DTYPES[magic[2]])
            expected = math.prod(dims) * dtype.itemsize
            if expected > limit:
                raise DataError(f"{path} declares shape {dims} ({expected / 2**30:.1f} GiB), more than the "
                                f"{limit / 2**30:.1f} GiB of memory available", "check the file; it may be corrupted")
            raw = fh.read(expected + 1)
    except (OSError, EOFError, zlib.error) as exc:
        reason = "truncated" if isinstance(exc, EOFError) else "not a readable (gzip) file"
        raise DataError(f"{path} is {reason} ({type(exc).__name__})",
                        "delete it and download or reinstall the dataset") from None
    if len(raw) != expected:
        raise DataError(f"{path} holds {len(raw)}{'+' if len(raw) > expected else ''} data bytes but its header "
                        f"promises {expected} (shape {dims}); the file is truncated or corrupted",
                        "delete it and download the dataset again")
    return np.frombuffer(raw, dtype=dtype).reshape(dims)


def idx_search_dirs(name: str, root: str | None) -> list[Path]:
    """Where IDX files for ``name`` are looked for, in order."""
    dirs: list[Path] = []
    for base in (root, os.environ.get("REPLEARN_DATA")):
        if base:
            dirs += [Path(base), Path(base) / name]
    dirs.append(DEBIAN_DATASET_DIR / name)
    return list(dict.fromkeys(dirs))


def _find_idx(name: str, root: str | None, hint: str) -> dict[str, Path]:
    searched = idx_search_dirs(name, root)
    for d in searched:
        found = {}
        for key, stem in IDX_FILES.items():
            for candidate in (d / f"{stem}.gz", d / stem):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(IDX_FILES):
            return found
        if found:
            missing = sorted(set(IDX_FILES) - set(found))
            raise DataError(f"{name}: {d} holds only some IDX files; missing {', '.join(IDX_FILES[m] for m in missing)}",
                            "download the four *-idx*-ubyte.gz files into that directory")
    raise DataError(f"{name}: IDX files not found; looked in {', '.join(str(d) for d in searched)}", hint)


def _load_idx_dataset(name: str, cfg: DataConfig, class_names: list[str], hint: str) -> Dataset:
    files = _find_idx(name, cfg.root, hint)
    arrays = {key: read_idx(path) for key, path in files.items()}
    source = str(files["train_x"].parent)
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.ndim != 3:
            raise DataError(f"{files[f'{split}_x']} holds rank-{x.ndim} data, not images",
                            "check that the images and labels files were not swapped")
        if len(x) != len(y):
            raise DataError(f"{name}: {files[f'{split}_x'].name} has {len(x)} images but "
                            f"{files[f'{split}_y'].name} has {len(y)} labels",
                            "re-download both files so that they match")
    return Dataset.from_arrays(name, arrays["train_x"], arrays["train_y"], arrays["test_x"], arrays["test_y"],
                               class_names, cfg, source=source, scale=255.0)


def load_fashion_mnist(cfg: DataConfig) -> Dataset:
    return _load_idx_dataset("fashion-mnist", cfg, FASHION_CLASSES,
                             "run `apt-get install dataset-fashion-mnist`, or download the four IDX files from "
                             "github.com/zalandoresearch/fashion-mnist and pass --set data.root=DIR")


def load_mnist(cfg: DataConfig) -> Dataset:
    return _load_idx_dataset("mnist", cfg, [str(d) for d in range(10)],
                             "download the four MNIST IDX files (e.g. from a mirror of yann.lecun.com/exdb/mnist) "
                             "and pass --set data.root=DIR or set REPLEARN_DATA=DIR")


def load_digits(cfg: DataConfig) -> Dataset:
    """scikit-learn's bundled 8×8 digits; a fixed, stratified 30% of it is the test split."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = bunch.images.astype(np.float32)
    y = bunch.target.astype(np.int64)
    test_idx, train_idx = stratified_split(y, 0.3, seed=0)
    return Dataset.from_arrays("digits", x[train_idx], y[train_idx], x[test_idx], y[test_idx],
                               [str(d) for d in range(10)], cfg, source="sklearn.datasets.load_digits",
                               scale=16.0)


def load_npz(cfg: DataConfig) -> Dataset:
    """Your own arrays: an .npz file with train_x, train_y, test_x, test_y (and optional class_names)."""
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
        names = [str(c) for c in raw_names]
    elif n_classes > max(2 * distinct, distinct + 1000):
        raise DataError(f"{path}: labels go up to {n_classes - 1} but only {distinct} distinct values occur",
                        "relabel the classes as 0..K-1 (e.g. numpy.unique(y, return_inverse=True)), or save class_names")
    else:
        names = [str(c) for c in range(n_classes)]
    return Dataset.from_arrays("npz", arrays["train_x"], arrays["train_y"], arrays["test_x"], arrays["test_y"], names,
                               cfg, source=str(path))


MAX_INFLATION = 200  # images compress 2–20×; a member that inflates more is refused (a "zip bomb")


def available_memory() -> int:
    """Bytes of memory this process could still allocate (MemAvailable, else the physical size)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def read_npz_checked(path: Path, limit: int | None = None) -> dict[str, np.ndarray]:
    """Read an .npz file after checking every member's declared shape against its stored size and against
    ``limit`` bytes in all (default: half the available memory), and its compression ratio; a truncated,
    corrupted or oversized file raises a one-line DataError before anything large is allocated."""
    import zipfile

    limit = available_memory() // 2 if limit is None else limit
    fix = "save it again with numpy.savez(train_x=..., train_y=..., test_x=..., test_y=...)"
    try:
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.infolist() if m.filename.endswith(".npy")]
            total = 0
            for member in members:
                key = member.filename[:-4]
                with zf.open(member) as fh:
                    version = np.lib.format.read_magic(fh)
                    reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                              else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = reader(fh, max_header_size=10_000)
                if dtype.hasobject:
                    raise DataError(f"{path}: array '{key}' holds Python objects", "store numbers (and class names as strings)")
                declared = math.prod(shape) * dtype.itemsize
                total += declared
                if total > limit:
                    raise DataError(f"{path}: array '{key}' declares shape {shape} ({declared / 2**30:.1f} GiB); "
                                    f"the arrays would need more than the {limit / 2**30:.1f} GiB of memory available",
                                    "use a smaller dataset or subset, or free memory")
                if declared > member.file_size:
                    raise DataError(f"{path}: array '{key}' declares shape {shape} but stores only "
                                    f"{member.file_size} bytes (truncated or corrupted)", fix)
                if member.compress_size and member.file_size > 1 << 20 and \
                        member.file_size / member.compress_size > MAX_INFLATION:
                    raise DataError(f"{path}: array '{key}' inflates {member.file_size // member.compress_size}× "
                                    f"(from {member.compress_size:,} to {member.file_size:,} bytes), more than real "
                                    "images do", "save the real arrays (numpy.savez_compressed compresses images "
                                    "a few times at most)")
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zlib.error, zipfile.BadZipFile, NotImplementedError) as exc:
        raise DataError(f"{path} is not a readable .npz file ({type(exc).__name__}; truncated or corrupted?)",
                        fix) from None


def _load_cifar(classes: int, cfg: DataConfig) -> Dataset:
    """CIFAR-10/100 from the official binary or Python files (``replearn.cifar``); 10% of train is validation."""
    from .cifar import find_cifar, read_cifar

    name = f"cifar{classes}"
    layout, folder = find_cifar(classes, idx_search_dirs(name, cfg.root))
    train_x, train_y, test_x, test_y, names = read_cifar(classes, folder, layout, fine=cfg.cifar100_labels == "fine")
    label_set = f" ({cfg.cifar100_labels} labels)" if classes == 100 else ""
    return Dataset.from_arrays(name, train_x, train_y, test_x, test_y, names, cfg,
                               source=f"{folder} ({layout} layout){label_set}", scale=255.0, layout="channels-first")


def load_cifar10(cfg: DataConfig) -> Dataset:
    return _load_cifar(10, cfg)


def load_cifar100(cfg: DataConfig) -> Dataset:
    return _load_cifar(100, cfg)


def _load_folder(cfg: DataConfig) -> Dataset:
    from .folder import load_folder

    return load_folder(cfg)


DATASETS: dict[str, tuple[Callable[[DataConfig], Dataset], str]] = {
    "digits": (load_digits, "scikit-learn's bundled 8×8 handwritten digits (1,797 images; no download)"),
    "fashion-mnist": (load_fashion_mnist, "Zalando's 28×28 clothing images, 60k train / 10k test (IDX files)"),
    "mnist": (load_mnist, "28×28 handwritten digits, 60k train / 10k test (IDX files)"),
    "npz": (load_npz, "your own arrays in an .npz file given by data.root"),
    "cifar10": (load_cifar10, "32×32 colour images of 10 classes, 50k train / 10k test (official binary or "
                              "Python files, from data.root)"),
    "folder": (_load_folder, "your own image-folder tree ROOT/<class>/*.png|jpg|… (or ROOT/train/… and ROOT/test/…) "
                             "from data.root, decoded once and cached; streamed when over data.memory_budget_mb"),
    "cifar100": (load_cifar100, "32×32 colour images of 100 fine (or 20 coarse: data.cifar100_labels) classes, "
                                "50k train / 10k test"),
}


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load the dataset named in the config, or raise a DataError listing the known names."""
    if cfg.name not in DATASETS:
        import difflib

        close = difflib.get_close_matches(cfg.name, list(DATASETS), n=1, cutoff=0.4)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise DataError(f"unknown dataset '{cfg.name}'", f"{hint}choose one of: {', '.join(DATASETS)}")
    return DATASETS[cfg.name][0](cfg)


def dataset_status(name: str, root: str | None = None) -> str:
    """One phrase saying whether the dataset's files are available here."""
    if name == "digits":
        return "bundled"
    if name in ("npz", "folder"):
        return "needs data.root"
    if name.startswith("cifar"):
        from .cifar import find_cifar

        try:
            layout, folder = find_cifar(int(name[5:]), idx_search_dirs(name, root))
        except DataError:
            return "not found (looked in " + ", ".join(str(d) for d in idx_search_dirs(name, root)) + ")"
        return f"found in {folder} ({layout} layout)"
    try:
        files = _find_idx(name, root, "")
    except Exception:
        return "not found (looked in " + ", ".join(str(d) for d in idx_search_dirs(name, root)) + ")"
    return f"found in {files['train_x'].parent}"
