"""The ``folder`` dataset: an image-folder tree, decoded once in parallel and cached as uint8 arrays.

Layouts: ``ROOT/<class>/<images>`` (a stratified ``data.test_fraction`` of each class becomes the test split)
or ``ROOT/train/<class>/…`` with ``ROOT/test/<class>/…``. Classes are the sorted folder names; images may sit
in nested folders; hidden files and files that are not images are ignored. Decoding (Pillow, in worker
processes) happens once: the arrays are cached under ``data.cache_dir`` in a folder named by a hash of every
file's path and bytes and of the decoding settings, so a second run reads the cache instead of decoding, and
any changed, added or removed file makes a new cache. A dataset too large for ``data.memory_budget_mb`` is
streamed from that cache (``replearn.data.streaming``). The settings below are the source's own options
(``data.image_size``, ``data.skip_bad_images``, ``data.test_fraction``, ``data.cache_dir``,
``data.memory_budget_mb``).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ... import parallel
from ...config import DataConfig
from ...errors import DataError
from ...log import log, progress_bar
from ...options import opt
from ..imagedecode import GREY_MODES, decode, scan_headers
from ..dataset import Dataset, LabelledArrays, StoredSplits, stratified_split
from .base import DatasetSource, register_dataset

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
CACHE_VERSION = 1
CHUNK = 256  # files per worker task
HEADER_BYTES = 256  # .npy header written with room to spare, so it can be rewritten after skipped files


@dataclass
class FolderOptions:
    image_size: int = opt(0, "resize every image so its shorter side is this many pixels, then centre-crop "
                             "it square (0 = keep the files' size, which must then be the same for all)",
                          min=0, max=1024)
    skip_bad_images: bool = opt(False, "skip image files that cannot be decoded (named in the log and in "
                                       "dataset.json) instead of stopping at the first")
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

    def load(self, cfg: DataConfig) -> Dataset:
        return load_folder(cfg, self.options)


@dataclass
class FolderSplit:
    """Image files and their class indices, in a fixed order."""

    files: list[Path]
    labels: np.ndarray


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _class_dirs(root: Path) -> list[Path]:
    return sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)


def _images_under(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath, f) for f in sorted(filenames) if _is_image(Path(f)))
    return found


def scan_tree(root: Path, class_names: list[str] | None = None) -> tuple[FolderSplit, list[str]]:
    """Files and labels of a ``root/<class>/…`` tree; refuses a tree without class folders or with an empty one."""
    classes = _class_dirs(root)
    if not classes:
        loose = sum(1 for f in root.iterdir() if f.is_file() and _is_image(f))
        where = f" ({loose} images lie directly in it)" if loose else ""
        raise DataError(f"folder dataset '{root}' has no class folders{where}",
                        "put each class's images in a subfolder named after the class: ROOT/<class>/*.png")
    names = class_names or [d.name for d in classes]
    index = {name: i for i, name in enumerate(names)}
    files, labels = [], []
    for folder in classes:
        if folder.name not in index:
            raise DataError(f"'{folder}' is a class that the training folder does not have",
                            f"use the training split's classes ({', '.join(names[:10])}{', …' if len(names) > 10 else ''})")
        images = _images_under(folder)
        if not images:
            raise DataError(f"class folder '{folder}' holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})",
                            "add images to it or remove the folder")
        files.extend(images)
        labels.extend([index[folder.name]] * len(images))
    return FolderSplit(files, np.asarray(labels, dtype=np.int64)), names


def scan_folder(root: Path) -> tuple[dict[str, FolderSplit], list[str]]:
    """The splits present in the tree (``train`` and ``test``, or ``all``) and the class names."""
    if not root.is_dir():
        raise DataError(f"folder dataset '{root}' is not a directory", "pass --set data.root=DIR (a folder of class folders)")
    if (root / "train").is_dir() and (root / "test").is_dir():
        train, names = scan_tree(root / "train")
        test, _ = scan_tree(root / "test", names)
        return {"train": train, "test": test}, names
    every, names = scan_tree(root)
    if len(names) < 2:
        raise DataError(f"folder dataset '{root}' has a single class folder ('{names[0]}')",
                        "a probe needs at least two classes: one subfolder per class")
    return {"all": every}, names


def content_key(root: Path, splits: dict[str, FolderSplit], options: FolderOptions, progress: bool = True) -> str:
    """A hash of every file's relative path and bytes and of the settings that change the decoded arrays."""
    digest = hashlib.sha256(f"replearn-folder-v{CACHE_VERSION} size={options.image_size} "
                            f"skip={options.skip_bad_images}".encode())
    total = sum(len(s.files) for s in splits.values())
    with progress_bar(total, "hashing image files", enabled=progress and total > 5000) as bar:
        for split, part in splits.items():
            for path, label in zip(part.files, part.labels.tolist()):
                data = path.read_bytes()
                digest.update(f"\0{split}\0{path.relative_to(root)}\0{label}\0{len(data)}\0".encode("utf-8", "replace"))
                digest.update(data)
                bar.update(1)
    return digest.hexdigest()[:24]


def cache_root(options: FolderOptions) -> Path:
    """``data.cache_dir``, else ``$REPLEARN_CACHE``, else ``$XDG_CACHE_HOME/replearn`` (``~/.cache/replearn``)."""
    if options.cache_dir:
        return Path(options.cache_dir).expanduser()
    if os.environ.get("REPLEARN_CACHE"):
        return Path(os.environ["REPLEARN_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "replearn"


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """A version-1.0 .npy header for uint8 C-order data, padded to a fixed HEADER_BYTES."""
    text = "{'descr': '|u1', 'fortran_order': False, 'shape': %r, }" % (tuple(shape),)
    body = text.ljust(HEADER_BYTES - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


def _run_chunks(fn: Callable[..., list], chunks: list[list[str]], *args: Any) -> Iterator[list]:
    """``fn(chunk, *args)`` for each chunk, in order: in worker processes when there are many files."""
    workers = parallel.task_workers(len(chunks), phase="image decoding")
    if workers == 1 or len(chunks) < 8:
        for chunk in chunks:
            yield fn(chunk, *args)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # fork, as torch's DataLoader does on Linux: a spawned worker would re-run the user's main script
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        yield from pool.map(fn, chunks, *[[a] * len(chunks) for a in args])


def _chunks(files: list[Path]) -> list[list[str]]:
    names = [str(f) for f in files]
    return [names[i:i + CHUNK] for i in range(0, len(names), CHUNK)]


def _bad_files(root: Path, bad: list[tuple[Path, str]], total: int) -> DataError:
    path, reason = bad[0]
    more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
    return DataError(f"{len(bad)} of {total:,} image files cannot be decoded: '{path}' ({reason}){more}",
                     "replace or delete them, or pass --set data.skip_bad_images=true to leave them out")


def check_headers(root: Path, splits: dict[str, FolderSplit], options: FolderOptions) -> tuple[bool, list[tuple[Path, str]]]:
    """Whether any image is in colour, and the files whose headers cannot be read; refuses mixed sizes
    when no ``data.image_size`` is set."""
    files = [f for s in splits.values() for f in s.files]
    headers = [h for part in _run_chunks(scan_headers, _chunks(files)) for h in part]
    bad = [(f, h) for f, h in zip(files, headers) if isinstance(h, str)]
    good = [(f, h) for f, h in zip(files, headers) if not isinstance(h, str)]
    if bad and not options.skip_bad_images:
        raise _bad_files(root, bad, len(files))
    if not good:
        raise DataError(f"none of the {len(files):,} image files in '{root}' can be decoded", "check the files")
    if not options.image_size:
        first_path, (_, w0, h0) = good[0]
        for path, (_, w, h) in good:
            if (w, h) != (w0, h0):
                raise DataError(f"images differ in size: '{first_path}' is {w0}×{h0} but '{path}' is {w}×{h}",
                                f"set data.image_size (e.g. --set data.image_size={min(w0, h0, w, h)}) to resize "
                                "them, shorter side then centre crop")
    colour = any(mode not in GREY_MODES for _, (mode, _, _) in good)
    return colour, bad


def decode_split(root: Path, part: FolderSplit, options: FolderOptions, colour: bool, skip: set[Path],
                 out_dir: Path, split: str) -> list[tuple[Path, str]]:
    """Decode one split's images straight into ``out_dir/<split>_x.npy`` (and its labels), chunk by chunk,
    so memory stays bounded; returns the files that failed (skipped when allowed)."""
    files = [f for f in part.files if f not in skip]
    labels = part.labels[[f not in skip for f in part.files]]
    bad: list[tuple[Path, str]] = []
    kept: list[int] = []
    shape: tuple[int, ...] | None = None
    path = out_dir / f"{split}_x.npy"
    with open(path, "wb") as fh, progress_bar(len(files), f"decoding {split} images") as bar:
        fh.write(b"\0" * HEADER_BYTES)
        position = 0
        for chunk in _run_chunks(decode, _chunks(files), options.image_size, colour):
            for item in chunk:
                if isinstance(item, str):
                    bad.append((files[position], item))
                else:
                    if shape is None:
                        shape = item.shape
                    if item.shape != shape:  # headers agreed, the decoded pixels did not: a broken file
                        bad.append((files[position], f"decodes to {item.shape[1]}×{item.shape[2]}"))
                    else:
                        fh.write(item.tobytes())
                        kept.append(position)
                position += 1
            bar.update(len(chunk))
        if bad and not options.skip_bad_images:
            raise _bad_files(root, bad, len(files))
        if shape is None:
            raise DataError(f"none of the {split} images in '{root}' can be decoded", "check the files")
        fh.seek(0)
        fh.write(_npy_header((len(kept), *shape)))
    np.save(out_dir / f"{split}_y.npy", labels[kept])
    return bad


def decode_folder(root: Path, options: FolderOptions) -> tuple[Path, dict, list[str]]:
    """The cache folder holding the decoded tree (made now if missing), its metadata, and the class names."""
    try:
        import PIL  # noqa: F401 - only checked here; the workers import it
    except ImportError:
        raise DataError("the folder dataset needs Pillow to read image files",
                        "pip install 'replearn[images]' (or pip install Pillow)") from None
    splits, names = scan_folder(root)
    started = time.perf_counter()
    key = content_key(root, splits, options)
    cache = cache_root(options) / f"folder-{key}"
    meta_path = cache / "meta.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            log(f"{root}: decoded images read from the cache {cache} (hashing {time.perf_counter() - started:.1f} s)")
            return cache, meta, names
        except (OSError, ValueError):
            pass
    total = sum(len(s.files) for s in splits.values())
    colour, bad = check_headers(root, splits, options)
    skip = {f for f, _ in bad}
    partial = cache.with_name(f"{cache.name}.partial-{os.getpid()}")
    made = [d for d in (partial, *partial.parents) if not d.exists()]  # removed again if decoding fails
    try:
        partial.mkdir(parents=True, exist_ok=True)
        for split, part in splits.items():
            bad += decode_split(root, part, options, colour, skip, partial, split)
        meta = {"root": str(root), "class_names": names, "splits": list(splits), "colour": colour,
                "image_size": options.image_size, "skipped": [f"{f.relative_to(root)}: {why}" for f, why in bad],
                "decode_seconds": round(time.perf_counter() - started, 2)}
        (partial / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            partial.rename(cache)
        except OSError:  # another process finished the same cache first
            shutil.rmtree(partial, ignore_errors=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        for folder in made[1:]:
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    if bad:
        log(f"warning: skipped {len(bad)} image files that cannot be decoded, e.g. {meta['skipped'][0]}")
    log(f"{root}: decoded {total - len(bad):,} images in {time.perf_counter() - started:.1f} s, cached in {cache}")
    return cache, meta, names


def load_folder(cfg: DataConfig, options: FolderOptions) -> Dataset:
    """The ``folder`` dataset: decoded (or read from the cache), split, held in memory or streamed."""
    if not cfg.root:
        raise DataError("dataset 'folder' needs a directory", "pass --set data.root=DIR (a folder of class folders)")
    root = Path(cfg.root).expanduser()
    cache, meta, names = decode_folder(root, options)
    if "all" in meta["splits"]:
        labels = np.load(cache / "all_y.npy")
        test_rows, train_rows = stratified_split(labels, options.test_fraction, cfg.split_seed)
        sources = {"train": ("all", train_rows), "test": ("all", test_rows)}
    else:
        sources = {s: (s, None) for s in ("train", "test")}
    skipped = meta.get("skipped", [])
    source = f"{root} (decoded cache {cache})"
    x_files = {s: cache / f"{file}_x.npy" for s, (file, _) in sources.items()}
    y_all = {s: np.load(cache / f"{file}_y.npy") for s, (file, _) in sources.items()}
    rows = {s: r for s, (_, r) in sources.items()}
    shape = np.load(x_files["train"], mmap_mode="r").shape
    images = len(y_all["train"]) + (len(y_all["test"]) if x_files["test"] != x_files["train"] else 0)
    normalised_mib = 4 * shape[1] * shape[2] * shape[3] * images / 2**20
    if options.memory_budget_mb and normalised_mib > options.memory_budget_mb:
        log(f"{root}: streaming from disk ({normalised_mib:,.0f} MiB normalised > data.memory_budget_mb="
            f"{options.memory_budget_mb})")
        stored = StoredSplits(x_files["train"], y_all["train"], x_files["test"], y_all["test"], names,
                              train_rows=rows["train"], test_rows=rows["test"])
        return Dataset.streamed_from("folder", stored, cfg, source, skipped=skipped)
    arrays = {}
    for s in ("train", "test"):
        x = np.load(x_files[s], mmap_mode="r")
        arrays[s] = (np.asarray(x if rows[s] is None else x[rows[s]]),
                     y_all[s] if rows[s] is None else y_all[s][rows[s]])
    labelled = LabelledArrays(arrays["train"][0], arrays["train"][1], arrays["test"][0], arrays["test"][1], names)
    data = Dataset.from_arrays("folder", labelled, cfg, source=source, scale=255.0, layout="channels-first")
    data.skipped = list(skipped)
    return data
