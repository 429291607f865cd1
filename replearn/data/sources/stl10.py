"""STL-10 from its official binary distribution (``stl10_binary.tar.gz``), read directly.

The archive unpacks to ``stl10_binary/``: ``train_X.bin`` (5,000 images), ``train_y.bin``, ``test_X.bin``
(8,000), ``test_y.bin``, ``unlabeled_X.bin`` (100,000) and ``class_names.txt``. Images are uint8, 3×96×96,
with no header; each channel is stored column by column (the published reader transposes the last two
axes). Labels are one byte each, 1..10. The labelled splits are read into memory like CIFAR's; the
unlabelled images (11 GiB as float32) stay on disk and are read and normalised batch by batch
(``ImageStore``), with the training split's statistics, for the label-free regimes only.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from replearn.config.sections import DataConfig
from replearn.errors import DataError
from replearn.config.options import opt
from replearn.data.dataset import Dataset, LabelledArrays
from replearn.data.readers import idx_search_dirs
from replearn.data.streaming import ImageStore, raw_file_layout
from replearn.data.sources.base import DatasetSource, not_found, register_dataset

IMAGE_SHAPE = (3, 96, 96)
IMAGE_BYTES = math.prod(IMAGE_SHAPE)  # 27,648
LABELLED_FILES = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")
UNLABELLED_FILE = "unlabeled_X.bin"
MOST_IMAGES = {"train": 5_000, "test": 8_000, "unlabeled": 100_000}  # what the published files hold
CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
FIX = ("download stl10_binary.tar.gz from https://cs.stanford.edu/~acoates/stl10/ and unpack it again "
       "(pass --set data.root=DIR)")


@dataclass
class Stl10Options:
    unlabelled: int = opt(100_000, "how many of STL-10's 100,000 unlabelled images (the first ones of "
                                   "unlabeled_X.bin) the label-free regimes also train on; 0 = none", min=0)


@register_dataset("stl10")
class Stl10(DatasetSource):
    description = ("96×96 colour images of 10 classes, 5k train / 8k test, plus 100k unlabelled images for the "
                   "label-free regimes (data.unlabelled; official binary files)")
    Options = Stl10Options

    def load(self, cfg: DataConfig) -> Dataset:
        folder = find_stl10(cfg.root)
        train_x, train_y = read_split(folder, "train")
        test_x, test_y = read_split(folder, "test")
        arrays = LabelledArrays(train_x, train_y, test_x, test_y, class_names(folder))
        data = Dataset.from_arrays("stl10", arrays, cfg, source=str(folder), scale=255.0, layout="channels-first")
        if not self.options.unlabelled:
            return data
        path = folder / UNLABELLED_FILE
        if not path.is_file():
            raise DataError(f"stl10: {path} is missing (the unlabelled images)",
                            f"{FIX}, or set data.unlabelled=0 to train without them")
        layout = raw_file_layout(path, IMAGE_SHAPE, transposed=True, fix=FIX)
        check_count(path, layout.count, "unlabeled")
        rows = np.arange(min(self.options.unlabelled, layout.count))
        return replace(data, unlabelled_x=ImageStore(path, rows, data.mean, data.std, layout))

    def status(self, root: str | None) -> str:
        try:
            folder = find_stl10(root)
        except DataError:
            return not_found("stl10", root)
        extra = "" if (folder / UNLABELLED_FILE).is_file() else f" (without {UNLABELLED_FILE})"
        return f"found in {folder}{extra}"


def find_stl10(root: str | None) -> Path:
    """The first folder holding the labelled STL-10 files: each search directory, then its stl10_binary/."""
    searched = [c for d in idx_search_dirs("stl10", root) for c in (d, d / "stl10_binary")]
    for candidate in dict.fromkeys(searched):
        present = [f for f in LABELLED_FILES if (candidate / f).is_file()]
        if len(present) == len(LABELLED_FILES):
            return candidate
        if present:
            missing = [f for f in LABELLED_FILES if f not in present]
            raise DataError(f"stl10: {candidate} holds only some files; missing {', '.join(missing)}", FIX)
    raise DataError(f"stl10: files not found (looked for {LABELLED_FILES[0]} in "
                    f"{', '.join(str(d) for d in dict.fromkeys(searched))})", FIX)


def read_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The images (N×3×96×96 uint8, rows then columns: a view of the memory-mapped file) and labels 0..9."""
    x_path, y_path = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    count = raw_file_layout(x_path, IMAGE_SHAPE, transposed=True, fix=FIX).count
    check_count(x_path, count, split)
    try:  # the label file's size is checked before it is read: one byte a label, one label an image
        label_bytes = os.path.getsize(y_path)
    except OSError as exc:
        raise DataError(f"stl10: {y_path} cannot be read ({exc.strerror or type(exc).__name__})", FIX) from None
    if label_bytes != count:
        raise DataError(f"stl10: {x_path.name} has {count:,} images but {y_path.name} has {label_bytes:,} labels "
                        "(one byte each)", FIX)
    images = np.memmap(x_path, dtype=np.uint8, mode="r", shape=(count, *IMAGE_SHAPE)).transpose(0, 1, 3, 2)
    try:
        labels = np.fromfile(y_path, dtype=np.uint8, count=count)
    except OSError as exc:
        raise DataError(f"stl10: {y_path} cannot be read ({exc.strerror or type(exc).__name__})", FIX) from None
    if len(labels) != count:
        raise DataError(f"stl10: {y_path.name} changed while it was read ({len(labels):,} of {count:,} labels)", FIX)
    if labels.min() < 1 or labels.max() > len(CLASSES):
        raise DataError(f"stl10: {y_path} holds labels {labels.min()}..{labels.max()}, not 1..{len(CLASSES)}",
                        FIX)
    return images, labels.astype(np.int64) - 1


def check_count(path: Path, count: int, split: str) -> None:
    """Refuse a file holding more images than STL-10's file of that split does (before anything is allocated)."""
    most = MOST_IMAGES[split]
    if count > most:
        raise DataError(f"stl10: {path} holds {count:,} images of {IMAGE_BYTES:,} bytes; STL-10's {path.name} holds "
                        f"at most {most:,} (a damaged file or not STL-10)", FIX)


def class_names(folder: Path) -> list[str]:
    """The names in class_names.txt (one a line), else STL-10's published ones."""
    path = folder / "class_names.txt"
    if path.is_file() and os.path.getsize(path) < 1 << 16:
        names = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
                 if line.strip()]
        if len(names) == len(CLASSES):
            return names
    return list(CLASSES)
