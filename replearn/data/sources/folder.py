"""The ``folder`` dataset: an image-folder tree, decoded once in parallel and cached as uint8 arrays.

Layouts: ``ROOT/<class>/<images>`` (a stratified ``data.test_fraction`` of each class becomes the test split)
or ``ROOT/train/<class>/…`` with ``ROOT/test/<class>/…``. Classes are the sorted folder names; images may sit
in nested folders; hidden files and files that are not images are ignored.

The walk does not trust the file system: links to files and folders are followed (datasets are often
assembled with them), but no folder is read twice and no file counts twice, so a link loop, or a link back
to the dataset or to ``/``, ends instead of multiplying images; only regular files are read (a fifo or a
device named ``x.png`` is left out), each read is bounded, a walk stops with an error after
``MAX_TREE_ENTRIES`` entries, and what was left out is logged and listed in ``dataset.json``. Files and
folders that cannot be read stop the load with their names (``data.skip_bad_images`` leaves them out), and
names are printed with control characters escaped.

Decoding (Pillow, in worker processes that end with the run) happens once: the arrays are cached under
``data.cache_dir`` in a folder named by a hash of every file's path and bytes and of the decoding settings,
written under a temporary name and renamed into place, with a ``meta.json`` that records each array's
shape, dtype, size and checksums. A cache is checked against it when read (shape, dtype, length, and the
checksum of every byte when the data are loaded into memory, of sampled blocks when they are streamed);
one that fails is decoded again. Before anything is written, the data are checked against the memory
available and the cache against the free disk. A dataset too large for ``data.memory_budget_mb`` is
streamed from the cache (``replearn.data.streaming``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from replearn.config.sections import DataConfig
from replearn.errors import DataError
from replearn.runtime.log import log
from replearn.config.options import opt
from replearn.data.dataset import Dataset, LabelledArrays, StoredSplits, stratified_split
from replearn.data.imagedecode import (sigterm_interrupts)
from replearn.data.sources.base import DatasetSource, register_dataset
from replearn.data.imagefolder.walk import _show
from replearn.data.imagefolder.cache import streams, _remove
from replearn.data.imagefolder.decode import decode_folder


@dataclass
class FolderOptions:
    image_size: int = opt(0, "resize every image so its shorter side is this many pixels, then centre-crop "
                             "it square (0 = keep the files' size, which must then be the same for all)",
                          min=0, max=1024)
    skip_bad_images: bool = opt(False, "skip image files that cannot be decoded, and files and folders that "
                                       "cannot be read (named in the log and in dataset.json), instead of "
                                       "stopping at the first")
    test_fraction: float = opt(0.2, "folder without train/ and test/ subfolders: the stratified fraction of each "
                                    "class held out as the test split", gt=0.0, max=0.5)
    cache_dir: str | None = opt(None, "where decoded image folders are cached (default: $REPLEARN_CACHE, else "
                                      "~/.cache/replearn)")
    memory_budget_mb: int = opt(0, "0: hold the dataset in memory. Otherwise, a folder dataset whose normalised "
                                   "images would take more than this many MiB is streamed from its uint8 cache on "
                                   "disk, batch by batch", min=0)


@register_dataset("folder")
class Folder(DatasetSource):
    description = ("your own image-folder tree ROOT/<class>/*.png|jpg|… (or ROOT/train/… and ROOT/test/…) from "
                   "data.root, decoded once and cached; streamed when over data.memory_budget_mb")
    Options = FolderOptions

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.made: list[Path] = []

    def load(self, cfg: DataConfig) -> Dataset:
        """The dataset (``load_folder``); if loading fails after a cache was made, the cache goes too."""
        self.made = []
        try:
            return load_folder(cfg, self.options, self.made)
        except BaseException:  # refused after its cache was made: nothing is left behind
            self.discard()
            raise

    def discard(self) -> None:
        """Remove the cache the last ``load`` made, and the folders made for it (the run refused its data)."""
        made, self.made = self.made, []
        if made:
            _remove(made[0])
        for folder in made[1:]:
            try:
                folder.rmdir()
            except OSError:
                break


# ---------------------------------------------------------------- names, sizes, reasons


# ---------------------------------------------------------------- the walk


# ---------------------------------------------------------------- hashing, unreadable files


# ---------------------------------------------------------------- the cache folder, memory and disk


# ---------------------------------------------------------------- reading a cache back


# ---------------------------------------------------------------- decoding into a new cache


# ---------------------------------------------------------------- the dataset


def _dataset(root: Path, cache: Path, meta: dict, cfg: DataConfig, options: FolderOptions) -> Dataset:
    """The dataset from a checked cache: split, held in memory or streamed."""
    if "all" in meta["splits"]:
        labels = np.load(cache / "all_y.npy")
        test_rows, train_rows = stratified_split(labels, options.test_fraction, cfg.split_seed)
        sources = {"train": ("all", train_rows), "test": ("all", test_rows)}
    else:
        sources = {s: (s, None) for s in ("train", "test")}
    source = f"{_show(root)} (decoded cache {_show(cache)})"
    x_files = {s: cache / f"{file}_x.npy" for s, (file, _) in sources.items()}
    y_all = {s: np.load(cache / f"{file}_y.npy") for s, (file, _) in sources.items()}
    rows = {s: r for s, (_, r) in sources.items()}
    shapes = [meta["arrays"][f"{s}_x.npy"]["shape"] for s in meta["splits"]]
    if streams(sum(s[0] for s in shapes), tuple(shapes[0][1:]), options):
        log(f"{_show(root)}: streaming from disk (normalised images over data.memory_budget_mb="
            f"{options.memory_budget_mb})")
        stored = StoredSplits(x_files["train"], y_all["train"], x_files["test"], y_all["test"], meta["class_names"],
                              train_rows=rows["train"], test_rows=rows["test"])
        return Dataset.streamed_from("folder", stored, cfg, source)
    arrays = {}
    for s in ("train", "test"):
        x = np.load(x_files[s], mmap_mode="r")
        arrays[s] = (np.asarray(x if rows[s] is None else x[rows[s]]),
                     y_all[s] if rows[s] is None else y_all[s][rows[s]])
    labelled = LabelledArrays(arrays["train"][0], arrays["train"][1], arrays["test"][0], arrays["test"][1],
                              meta["class_names"])
    return Dataset.from_arrays("folder", labelled, cfg, source=source, scale=255.0, layout="channels-first")


def load_folder(cfg: DataConfig, options: FolderOptions, made_now: list[Path] | None = None) -> Dataset:
    """The ``folder`` dataset: decoded (or read from a checked cache), split, held in memory or streamed;
    a cache made now (and the folders made for it) is added to ``made_now``. SIGTERM while it loads stops
    it as Ctrl-C does, workers and half-made cache included."""
    if not cfg.root:
        raise DataError("dataset 'folder' needs a directory", "pass --set data.root=DIR (a folder of class folders)")
    root = Path(cfg.root).expanduser()
    with sigterm_interrupts():
        cache, meta, tree = decode_folder(root, options, made_now)
        data = _dataset(root, cache, meta, cfg, options)
    left_out = [f"{_show(path.relative_to(root))}: {why}" for path, why in tree.skipped + tree.problems]
    if left_out:
        more = f" and {len(left_out) - 1} more (listed in dataset.json)" if len(left_out) > 1 else ""
        log(f"warning: {_show(root)}: left out {left_out[0]}{more}")
    data.skipped = left_out + list(meta["skipped"])
    return data
