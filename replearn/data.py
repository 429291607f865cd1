"""Datasets by name, held in memory as tensors, with deterministic train / validation / test splits.

Validation is carved out of the training split (stratified, seeded); hyperparameters are chosen on it,
never on test. Every source goes through ``Dataset.from_arrays``, which rejects empty, single-class,
non-finite or wrongly shaped data with a one-line ``DataError``.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .config import DataConfig
from .errors import DataError

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
    mean: float
    std: float
    source: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_unit_range(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation, for showing images."""
        return (x * self.std + self.mean).clamp(0.0, 1.0)

    def summary(self) -> dict:
        counts = {s: int(getattr(self, f"{s}_y").numel()) for s in ("train", "val", "test")}
        return {"name": self.name, "source": self.source, "image_shape": list(self.image_shape),
                "num_classes": self.num_classes, "class_names": self.class_names, **counts,
                "pixel_mean": self.mean, "pixel_std": self.std}

    @classmethod
    def from_arrays(cls, name: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                    test_y: np.ndarray, class_names: list[str], cfg: DataConfig, source: str,
                    scale: float = 1.0) -> "Dataset":
        """Validate raw arrays (N×H×W or N×C×H×W, pixel values / ``scale`` in [0, 1]) and split them."""
        train_x = _as_images(name, "training", train_x)
        test_x = _as_images(name, "test", test_x)
        for split, x, y in (("training", train_x, train_y), ("test", test_x, test_y)):
            _check_labels(name, split, x, np.asarray(y), len(class_names))
        if train_x.shape[1:] != test_x.shape[1:]:
            raise DataError(f"{name}: training images are {train_x.shape[1:]} but test images are "
                            f"{test_x.shape[1:]}", "give both splits images of the same shape")
        train_y, test_y = np.asarray(train_y, dtype=np.int64), np.asarray(test_y, dtype=np.int64)
        rng_seed = cfg.split_seed
        if cfg.train_subset:
            keep = stratified_subset(train_y, cfg.train_subset, rng_seed)
            train_x, train_y = train_x[keep], train_y[keep]
        if cfg.test_subset:
            keep = stratified_subset(test_y, cfg.test_subset, rng_seed)
            test_x, test_y = test_x[keep], test_y[keep]
        val_idx, train_idx = stratified_split(train_y, cfg.val_fraction, rng_seed)
        if len(train_idx) < 2 or len(val_idx) < 1 or len(np.unique(train_y[train_idx])) < 2:
            raise DataError(f"{name}: only {len(train_y)} training images — too few for a train/validation split",
                            "raise data.train_subset or use a larger dataset")
        fit_x = train_x[train_idx].astype(np.float32) / scale
        mean, std = float(fit_x.mean()), float(fit_x.std()) or 1.0

        def prep(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy((x.astype(np.float32) / scale - mean) / std)

        return cls(name=name, train_x=prep(train_x[train_idx]), train_y=torch.from_numpy(train_y[train_idx]),
                   val_x=prep(train_x[val_idx]), val_y=torch.from_numpy(train_y[val_idx]),
                   test_x=prep(test_x), test_y=torch.from_numpy(test_y), class_names=list(class_names),
                   mean=mean, std=std, source=source)


def _as_images(name: str, split: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{name}: {split} images have rank {x.ndim} (shape {x.shape}); expected N×H×W or N×C×H×W",
                        "reshape the images to N×H×W (grey) or N×C×H×W")
    if x.shape[0] == 0:
        raise DataError(f"{name}: the {split} split is empty", "give at least one image per class")
    if x.shape[2] < 2 or x.shape[3] < 2:
        raise DataError(f"{name}: {split} images are {x.shape[2]}×{x.shape[3]} pixels, too small for a conv encoder",
                        "use images of at least 2×2 pixels")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
        raise DataError(f"{name}: {bad} {split} images contain NaN or infinite pixels",
                        "clean or drop those images before training")
    return x


def _check_labels(name: str, split: str, x: np.ndarray, y: np.ndarray, num_classes: int) -> None:
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{name}: {len(x)} {split} images but {y.size} labels",
                        "re-download the dataset so that image and label files match")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{name}: {split} labels are {y.dtype}, not integers", "store class indices as integers")
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(f"{name}: {split} labels span {y.min()}..{y.max()} but there are {num_classes} classes",
                        "labels must be class indices 0..num_classes-1")
    if split == "training" and len(np.unique(y)) < 2:
        raise DataError(f"{name}: the training split has a single class", "a probe needs at least two classes")


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

def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped), checking its header against its size."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        reason = "truncated" if isinstance(exc, EOFError) else "not a readable (gzip) file"
        raise DataError(f"{path} is {reason} ({type(exc).__name__})",
                        "delete it and download or reinstall the dataset") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)", "delete it and download the dataset again")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path} has a truncated IDX header", "delete it and download the dataset again")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path} holds {len(raw) - header} data bytes but its header promises {expected} "
                        f"(shape {dims}); the file is truncated or corrupted",
                        "delete it and download the dataset again")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


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
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zlib.error) as exc:
        raise DataError(f"{path} is not a readable .npz file ({type(exc).__name__})",
                        "save it with numpy.savez(train_x=..., train_y=..., test_x=..., test_y=...)") from None
    missing = [k for k in IDX_FILES if k not in arrays]
    if missing:
        raise DataError(f"{path} lacks the arrays {', '.join(missing)}",
                        "save it with numpy.savez(train_x=..., train_y=..., test_x=..., test_y=...)")
    n_classes = int(max(arrays["train_y"].max(initial=0), arrays["test_y"].max(initial=0))) + 1
    names = [str(c) for c in arrays["class_names"]] if "class_names" in arrays else [str(c) for c in range(n_classes)]
    x = arrays["train_x"]
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    return Dataset.from_arrays("npz", x, arrays["train_y"], arrays["test_x"], arrays["test_y"], names, cfg,
                               source=str(path), scale=scale)


DATASETS: dict[str, tuple[Callable[[DataConfig], Dataset], str]] = {
    "digits": (load_digits, "scikit-learn's bundled 8×8 handwritten digits (1,797 images; no download)"),
    "fashion-mnist": (load_fashion_mnist, "Zalando's 28×28 clothing images, 60k train / 10k test (IDX files)"),
    "mnist": (load_mnist, "28×28 handwritten digits, 60k train / 10k test (IDX files)"),
    "npz": (load_npz, "your own arrays in an .npz file given by data.root"),
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
    if name == "npz":
        return "needs data.root"
    try:
        files = _find_idx(name, root, "")
    except Exception:
        return "not found (looked in " + ", ".join(str(d) for d in idx_search_dirs(name, root)) + ")"
    return f"found in {files['train_x'].parent}"
