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

import hashlib
import json
import math
import os
import re
import shutil
import socket
import stat
import struct
import time
import unicodedata
import zlib
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from replearn.runtime import threads as parallel
from replearn.config.sections import DataConfig
from replearn.errors import DataError
from replearn.runtime.log import log, progress_bar
from replearn.config.options import opt
from replearn.data.dataset import Dataset, LabelledArrays, StoredSplits, stratified_split
from replearn.data.imagedecode import (GREY_MODES, MAX_FILE_BYTES, decode, file_digest, file_kind, map_chunks, scan_headers,
                           sigterm_interrupts, signals_held)
from replearn.data.readers import available_memory
from replearn.data.streaming import data_crc32, read_npy_header, sampled_digest
from replearn.data.sources.base import DatasetSource, register_dataset
from replearn.rundir import layout

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
CACHE_VERSION = 2
CHUNK = 256  # files per worker task at most …
CHUNK_BYTES = 32 << 20  # … and at most this many decoded bytes per task
HEADER_BYTES = 256  # .npy header written with room to spare, so it can be rewritten after skipped files
MAX_TREE_ENTRIES = 5_000_000  # directory entries one walk examines at most
MAX_META_BYTES = 64 << 20
LOAD_PEAK_FACTOR = 4  # loading into memory briefly needs about this many normalised float32 copies
CACHE_FIX = "set data.cache_dir (or $REPLEARN_CACHE) to a folder you can write to"


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


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: control and format characters (escape sequences, bidi
    overrides, line breaks) and bytes that were not UTF-8 are shown as ``\\x1b``-style escapes."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte of a name that is not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def _show(path: Path | str) -> str:
    return printable(str(path))


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return " ".join(str(exc).split())[:120] or type(exc).__name__


def _size(nbytes: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:,.1f} {unit}"
    return f"{int(nbytes)} bytes"


def is_image_name(name: str) -> bool:
    """Whether a file of this name is read as an image: a known suffix, not hidden."""
    return Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith(".")


# ---------------------------------------------------------------- the walk


class TreeWalk:
    """One walk over a dataset's folders. Links are followed, but no folder is read twice (a link back to a
    folder already read, or to the dataset root or a folder above it, is left out: loops end), no file
    counts twice (two links to one file), only regular files are taken, and at most MAX_TREE_ENTRIES
    entries are examined. ``skipped`` lists what was left out on purpose, ``problems`` what could not be
    read (folders or files without permission, links whose target is missing, files too large), each with
    the reason."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.skipped: list[tuple[Path, str]] = []
        self.problems: list[tuple[Path, str]] = []
        self.entries = 0
        self.folders: dict[tuple[int, int], Path] = {}
        self.files: dict[tuple[int, int], Path] = {}
        self.above: set[tuple[int, int]] = set()  # the root and every folder that holds it
        real = Path(os.path.realpath(root))
        for folder in (real, *real.parents):
            try:
                info = os.stat(folder)
            except OSError:
                continue
            self.above.add((info.st_dev, info.st_ino))

    def listing(self, folder: Path) -> list[str]:
        """The sorted names in ``folder``, hidden ones left out; OSError if it cannot be read, a DataError
        once the walk has examined more than MAX_TREE_ENTRIES entries."""
        names = []
        with os.scandir(folder) as entries:
            for entry in entries:
                self.entries += 1
                if self.entries > MAX_TREE_ENTRIES:
                    raise DataError(f"the folder tree under '{_show(self.root)}' holds more than "
                                    f"{MAX_TREE_ENTRIES:,} entries (stopped in '{_show(folder)}'; a link to a large "
                                    "part of the file system?)",
                                    "point data.root at the dataset itself, or remove the links that lead out of it")
                if not entry.name.startswith("."):
                    names.append(entry.name)
        return sorted(names)

    def read_folder(self, folder: Path, required: bool = False) -> tuple[list[Path], list[Path]]:
        """The image files and the folders in ``folder`` that the walk has not met yet. A folder that cannot
        be read is a problem, or a DataError when ``required`` (a class folder or the root)."""
        try:
            names = self.listing(folder)
        except OSError as exc:
            if required:
                raise DataError(f"folder '{_show(folder)}' cannot be read ({_why(exc)})",
                                "make it readable (e.g. chmod u+rx), or move it out of data.root") from None
            self.problems.append((folder, f"a folder: {_why(exc)}"))
            return [], []
        images, folders = [], []
        for name in names:
            path = folder / name
            kind = self.classify(path)
            if kind == "folder":
                folders.append(path)
            elif kind == "image":
                images.append(path)
        return images, folders

    def classify(self, path: Path) -> str | None:
        """"folder" or "image" the first time the walk meets a folder or an image file (links followed);
        None for anything else, recorded in ``skipped`` or ``problems`` when it is left out."""
        try:
            info = os.stat(path)
        except OSError as exc:
            self._unreachable(path, exc)
            return None
        key = (info.st_dev, info.st_ino)
        if stat.S_ISDIR(info.st_mode):
            return "folder" if self._first_visit(path, key) else None
        if not is_image_name(path.name):
            return None
        if not stat.S_ISREG(info.st_mode):
            self.skipped.append((path, f"not a regular file but {file_kind(info.st_mode)}"))
            return None
        if info.st_size > MAX_FILE_BYTES:
            self.problems.append((path, f"{_size(info.st_size)}, larger than an image file may be "
                                        f"({_size(MAX_FILE_BYTES)})"))
            return None
        if info.st_ino and key in self.files:
            self.skipped.append((path, f"the same file as '{_show(self.files[key])}' (linked twice)"))
            return None
        self.files[key] = path
        return "image"

    def _first_visit(self, path: Path, key: tuple[int, int]) -> bool:
        if key in self.above:
            self.skipped.append((path, "a link back to a folder that holds the dataset (a loop)"))
            return False
        if key in self.folders:
            self.skipped.append((path, f"the folder '{_show(self.folders[key])}' again, already read"))
            return False
        self.folders[key] = path
        return True

    def _unreachable(self, path: Path, exc: OSError) -> None:
        try:
            target = os.readlink(path)
        except OSError:  # not a link: the entry itself cannot be examined
            self.problems.append((path, _why(exc)))
            return
        why = (f"a link to '{_show(target)}', which does not exist" if isinstance(exc, FileNotFoundError)
               else f"a link that cannot be followed: {_why(exc)}")
        (self.problems if is_image_name(path.name) else self.skipped).append((path, why))


def images_under(folder: Path, walk: TreeWalk) -> list[Path]:
    """The image files in ``folder`` and below it, each once, in a fixed order (a folder's files sorted,
    then its sub-folders, depth first); a DataError if ``folder`` itself cannot be read."""
    found: list[Path] = []
    stack = [folder]
    while stack:
        current = stack.pop()
        images, folders = walk.read_folder(current, required=current is folder)
        found.extend(images)
        stack.extend(reversed(folders))
    return found


@dataclass
class FolderSplit:
    """Image files and their class indices, in a fixed order."""

    files: list[Path]
    labels: np.ndarray


@dataclass
class FolderTree:
    """What the walk of a dataset's folder found: each split's image files and labels, the class names (as
    printed), what was left out on purpose (``skipped``) and what could not be read (``problems``)."""

    splits: dict[str, FolderSplit]
    class_names: list[str]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def count(self) -> int:
        """The number of image files in all splits."""
        return sum(len(s.files) for s in self.splits.values())


def scan_tree(root: Path, walk: TreeWalk, class_names: list[str] | None = None) -> tuple[FolderSplit, list[str]]:
    """Files and labels of a ``root/<class>/…`` tree and its class folders' names; refuses a tree without
    class folders or with a class that holds no image."""
    loose, classes = walk.read_folder(root, required=True)
    if not classes:
        where = f" ({len(loose)} images lie directly in it)" if loose else ""
        raise DataError(f"folder dataset '{_show(root)}' has no class folders{where}",
                        "put each class's images in a subfolder named after the class: ROOT/<class>/*.png")
    names = class_names or [d.name for d in classes]
    index = {name: i for i, name in enumerate(names)}
    files, labels = [], []
    for folder in classes:
        if folder.name not in index:
            shown = ", ".join(printable(n) for n in names[:10]) + (", …" if len(names) > 10 else "")
            raise DataError(f"'{_show(folder)}' is a class that the training folder does not have",
                            f"use the training split's classes ({shown})")
        problems_before = len(walk.problems)
        images = images_under(folder, walk)
        if not images:
            unread = walk.problems[problems_before:]
            why = (f" that can be read: '{_show(unread[0][0])}' ({unread[0][1]})" if unread else
                   f" (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
            raise DataError(f"class folder '{_show(folder)}' holds no images{why}",
                            "add images to it or remove the folder")
        files.extend(images)
        labels.extend([index[folder.name]] * len(images))
    return FolderSplit(files, np.asarray(labels, dtype=np.int64)), names


def _check_root(root: Path) -> None:
    try:
        info = os.stat(root)
    except (FileNotFoundError, NotADirectoryError):
        info = None
    except OSError as exc:
        raise DataError(f"folder dataset '{_show(root)}' cannot be read ({_why(exc)})",
                        "make it readable (e.g. chmod u+rx), or pass --set data.root=DIR") from None
    if info is None or not stat.S_ISDIR(info.st_mode):
        raise DataError(f"folder dataset '{_show(root)}' is not a directory",
                        "pass --set data.root=DIR (a folder of class folders)")


def scan_folder(root: Path) -> FolderTree:
    """The splits present in the tree (``train`` and ``test``, or ``all``), the class names and what the
    walk left out or could not read."""
    _check_root(root)
    walk = TreeWalk(root)
    split_folders = [root / "train", root / "test"]
    if all(os.path.isdir(f) for f in split_folders):
        for folder in split_folders:
            if walk.classify(folder) != "folder":
                raise DataError(f"'{_show(folder)}' cannot be used as a split: {walk.skipped[-1][1]}",
                                "give train/ and test/ folders of their own")
        train, names = scan_tree(split_folders[0], walk)
        test, _ = scan_tree(split_folders[1], walk, names)
        splits = {"train": train, "test": test}
    else:
        every, names = scan_tree(root, walk)
        if len(names) < 2:
            raise DataError(f"folder dataset '{_show(root)}' has a single class folder ('{printable(names[0])}')",
                            "a probe needs at least two classes: one subfolder per class")
        splits = {"all": every}
    return FolderTree(splits, [printable(n) for n in names], walk.skipped, walk.problems)


# ---------------------------------------------------------------- hashing, unreadable files


def content_key(root: Path, splits: dict[str, FolderSplit], options: FolderOptions,
                progress: bool = True) -> tuple[str, list[tuple[Path, str]]]:
    """A hash of every readable file's relative path and bytes and of the settings that change the decoded
    arrays, and the files that could not be read (with why). Each file is read in blocks, to its size."""
    digest = hashlib.sha256(f"replearn-folder-v{CACHE_VERSION} size={options.image_size} "
                            f"skip={options.skip_bad_images}".encode())
    unreadable: list[tuple[Path, str]] = []
    total = sum(len(s.files) for s in splits.values())
    with progress_bar(total, "hashing image files", enabled=progress and total > 5000) as bar:
        for split, part in splits.items():
            for path, label in zip(part.files, part.labels.tolist()):
                try:
                    size, file_hash = file_digest(str(path))
                except (OSError, ValueError) as exc:
                    unreadable.append((path, _why(exc)))
                else:
                    name = str(path.relative_to(root)).encode("utf-8", "surrogateescape")
                    digest.update(b"\0" + split.encode() + b"\0" + name + f"\0{label}\0{size}\0".encode() + file_hash)
                bar.update(1)
    return digest.hexdigest()[:24], unreadable


def _unreadable(root: Path, problems: list[tuple[Path, str]]) -> DataError:
    path, why = problems[0]
    more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
    entries = "entry" if len(problems) == 1 else "entries"
    return DataError(f"{len(problems)} {entries} of the folder dataset '{_show(root)}' cannot be read: "
                     f"'{_show(path)}' ({why}){more}",
                     "make them readable (chmod), repair or remove them, or pass --set data.skip_bad_images=true "
                     "to leave them out")


def set_aside(root: Path, tree: FolderTree, unreadable: list[tuple[Path, str]], options: FolderOptions) -> None:
    """Refuse a tree with entries that cannot be read, or, with ``data.skip_bad_images``, leave them out."""
    tree.problems = tree.problems + unreadable
    if tree.problems and not options.skip_bad_images:
        raise _unreadable(root, tree.problems)
    gone = {path for path, _ in unreadable}
    for split, part in tree.splits.items():
        keep = [f not in gone for f in part.files]
        tree.splits[split] = FolderSplit([f for f, k in zip(part.files, keep) if k], part.labels[keep])
    if any(not len(part.files) for part in tree.splits.values()):
        raise DataError(f"no image of the folder dataset '{_show(root)}' can be read", "check the files")


# ---------------------------------------------------------------- the cache folder, memory and disk


def cache_root(options: FolderOptions) -> Path:
    """``data.cache_dir``, else ``$REPLEARN_CACHE``, else ``$XDG_CACHE_HOME/replearn`` (``~/.cache/replearn``)."""
    if options.cache_dir:
        return Path(options.cache_dir).expanduser()
    if os.environ.get("REPLEARN_CACHE"):
        return Path(os.environ["REPLEARN_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "replearn"


def _existing(folder: Path) -> tuple[Path, os.stat_result]:
    """The nearest of ``folder`` and the folders above it that exists, and its status."""
    for candidate in (folder, *folder.parents):
        try:
            return candidate, os.stat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            continue
    raise DataError(f"no part of the cache folder '{_show(folder)}' exists", CACHE_FIX)


def cache_folder_problem(folder: Path) -> str | None:
    """Why a cache cannot be written under ``folder`` (a file in the way, no write permission, a read-only
    file system), or None; checked before anything is written."""
    try:
        existing, info = _existing(folder)
    except OSError as exc:
        return f"'{_show(folder)}' cannot be examined ({_why(exc)})"
    if not stat.S_ISDIR(info.st_mode):
        return f"'{_show(existing)}' is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"'{_show(existing)}' cannot be written (no permission, or a read-only file system)"
    return None


def free_space(folder: Path) -> int:
    """Bytes free for this user on the file system that holds ``folder``."""
    return shutil.disk_usage(folder).free


def streams(count: int, image_shape: tuple[int, ...], options: FolderOptions) -> bool:
    """Whether ``count`` images of ``image_shape`` are streamed from disk (over ``data.memory_budget_mb``)."""
    normalised = 4 * count * math.prod(image_shape)
    return bool(options.memory_budget_mb) and normalised > options.memory_budget_mb * 2**20


def check_fits(count: int, image_shape: tuple[int, ...], options: FolderOptions, cache: Path | None) -> None:
    """Refuse, before anything is written, images that are held in memory but whose normalised copy would
    not fit in the memory available, and (``cache`` given: it is about to be made) a cache that would not
    fit on its disk."""
    pixels = count * math.prod(image_shape)
    shape = "×".join(map(str, image_shape))
    if not streams(count, image_shape, options):
        need, have = LOAD_PEAK_FACTOR * 4 * pixels, available_memory()
        if need > have:
            budget = max(1, have // 2**20 // (2 * LOAD_PEAK_FACTOR))
            raise DataError(f"the folder's {count:,} images of {shape} would take {_size(4 * pixels)} as normalised "
                            f"float32 (about {_size(need)} while loading), more than the {_size(have)} of memory "
                            "available", f"stream them from disk with --set data.memory_budget_mb={budget}, or "
                                         "set a smaller data.image_size")
    if cache is not None:
        existing, _ = _existing(cache)
        free = free_space(existing)
        if pixels + (1 << 20) > free:
            raise DataError(f"the decoded-image cache of {count:,} images of {shape} needs {_size(pixels)}, but only "
                            f"{_size(free)} is free in '{_show(existing)}'",
                            "free disk space, or set data.cache_dir to a disk with room")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64] or "host"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _remove(path: Path) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except OSError:
            pass


def remove_stale(folder: Path) -> None:
    """Remove what processes of this machine that no longer run (killed before they could clean up) left
    in the cache folder: half-made caches (``*.partial-<host>-<pid>``) and damaged ones set aside."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        for marker in (f".partial-{_host()}-", f".stale-{_host()}-"):
            head, found, pid = name.rpartition(marker)
            if found and head.startswith("folder-") and pid.isdigit() and int(pid) != os.getpid() \
                    and not _running(int(pid)):
                _remove(folder / name)


def install(partial: Path, cache: Path, replace: bool) -> None:
    """Move a finished cache into place by renaming it. With ``replace``, what is there (a damaged cache)
    is moved aside first, then removed; otherwise a cache another process has just put there is kept."""
    stale = None
    if replace and os.path.lexists(cache):
        stale = cache.with_name(f"{cache.name}.stale-{_host()}-{os.getpid()}")
        os.rename(cache, stale)
    try:
        os.rename(partial, cache)
    except OSError:
        if not os.path.isdir(cache):
            raise
        shutil.rmtree(partial, ignore_errors=True)
    finally:
        if stale is not None:
            _remove(stale)


# ---------------------------------------------------------------- reading a cache back


def _read_meta(cache: Path) -> Any:
    with open(cache / layout.CACHE_META, "rb") as fh:
        text = fh.read(MAX_META_BYTES + 1)
    if len(text) > MAX_META_BYTES:
        raise ValueError(f"larger than {_size(MAX_META_BYTES)}")
    return json.loads(text)


def _shape(value: Any, ndim: int) -> bool:
    return isinstance(value, list) and len(value) == ndim and all(type(v) is int and v >= 0 for v in value)


def meta_problem(meta: Any, tree: FolderTree) -> str | None:
    """Why a cache's ``meta.json`` does not describe the tree's decoded arrays, or None."""
    if not isinstance(meta, dict) or meta.get("format") != CACHE_VERSION:
        return "meta.json is not a mapping of this version's format"
    if meta.get("class_names") != tree.class_names or meta.get("splits") != list(tree.splits):
        return "meta.json names other classes or splits"
    if not isinstance(meta.get("colour"), bool) or not isinstance(meta.get("skipped"), list) \
            or not all(isinstance(s, str) for s in meta["skipped"]) or not isinstance(meta.get("arrays"), dict):
        return "meta.json is malformed"
    shapes = set()
    for split in meta["splits"]:
        x, y = meta["arrays"].get(f"{split}_x.npy"), meta["arrays"].get(f"{split}_y.npy")
        if not isinstance(x, dict) or not isinstance(y, dict) or not _shape(x.get("shape"), 4) \
                or not _shape(y.get("shape"), 1):
            return f"meta.json does not describe the {split} arrays"
        if x["shape"][0] != y["shape"][0] or not x["shape"][0]:
            return f"meta.json gives {x['shape'][0]} {split} images but {y['shape'][0]} labels"
        shapes.add(tuple(x["shape"][1:]))
    if len(shapes) != 1:
        return "meta.json gives the splits images of different shapes"
    return None


def array_problem(path: Path, record: dict, dtype: str, full: bool) -> str | None:
    """Why the array file ``path`` is not the one ``record`` (from meta.json) describes, or None: its dtype,
    shape and size, then the CRC-32 of all its bytes (``full``) or a digest of sampled blocks."""
    try:
        shape, found, fortran, offset = read_npy_header(path)
        size = os.path.getsize(path)
    except FileNotFoundError:
        return "is missing"
    except (OSError, ValueError) as exc:
        return f"is not a readable .npy file ({_why(exc)})"
    if found != np.dtype(dtype) or fortran:
        return f"holds {found} data, not {dtype}"
    if list(shape) != record["shape"]:
        return f"has shape {list(shape)}, not {record['shape']}"
    nbytes = math.prod(shape) * found.itemsize
    if size != offset + nbytes:
        return f"holds {size:,} bytes, not {offset + nbytes:,}"
    if full and data_crc32(path, offset, nbytes) != record.get("crc32"):
        return "has other bytes than were written (checksum)"
    if not full and sampled_digest(path, offset, nbytes) != record.get("sample"):
        return "has other bytes than were written (sampled checksum)"
    return None


def read_cache(cache: Path, tree: FolderTree, options: FolderOptions) -> tuple[dict | None, str]:
    """The metadata of the cache at ``cache`` if it is whole and describes the tree, else None and why
    not ("" when there is no cache). Refuses data that would not fit in memory before reading them."""
    try:
        if not os.path.lexists(cache):
            return None, ""
        meta = _read_meta(cache)
    except (OSError, ValueError) as exc:
        return None, f"meta.json cannot be read: {_why(exc)}"
    problem = meta_problem(meta, tree)
    if problem:
        return None, problem
    shapes = [meta["arrays"][f"{s}_x.npy"]["shape"] for s in meta["splits"]]
    count, image_shape = sum(s[0] for s in shapes), tuple(shapes[0][1:])
    check_fits(count, image_shape, options, None)
    full = not streams(count, image_shape, options)  # in memory: every byte is read anyway
    for split in meta["splits"]:
        for name, dtype in ((f"{split}_x.npy", "uint8"), (f"{split}_y.npy", "int64")):
            problem = array_problem(cache / name, meta["arrays"][name], dtype, full or dtype == "int64")
            if problem:
                return None, f"{name} {problem}"
    return meta, ""


# ---------------------------------------------------------------- decoding into a new cache


def _chunks(files: list[Path], per_chunk: int | None = None) -> list[list[str]]:
    names = [str(f) for f in files]
    per_chunk = per_chunk or CHUNK
    return [names[i:i + per_chunk] for i in range(0, len(names), per_chunk)]


def _bad_files(root: Path, bad: list[tuple[Path, str]], total: int) -> DataError:
    path, reason = bad[0]
    more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
    return DataError(f"{len(bad)} of {total:,} image files cannot be decoded: '{_show(path)}' ({reason}){more}",
                     "replace or delete them, or pass --set data.skip_bad_images=true to leave them out")


def check_headers(root: Path, splits: dict[str, FolderSplit],
                  options: FolderOptions) -> tuple[tuple[int, int, int], list[tuple[Path, str]]]:
    """The decoded images' shape (C×H×W: C is 3 if any image is in colour) and the files whose headers
    cannot be read; refuses mixed sizes when no ``data.image_size`` is set."""
    files = [f for s in splits.values() for f in s.files]
    chunks = _chunks(files)
    workers = parallel.task_workers(len(chunks), phase="image decoding")
    with closing(map_chunks(scan_headers, chunks, (), workers)) as results:
        headers = [h for part in results for h in part]
    bad = [(f, h) for f, h in zip(files, headers) if isinstance(h, str)]
    good = [(f, h) for f, h in zip(files, headers) if not isinstance(h, str)]
    if bad and not options.skip_bad_images:
        raise _bad_files(root, bad, len(files))
    if not good:
        raise DataError(f"none of the {len(files):,} image files in '{_show(root)}' can be decoded", "check the files")
    first_path, (_, w0, h0) = good[0]
    if not options.image_size:
        for path, (_, w, h) in good:
            if (w, h) != (w0, h0):
                raise DataError(f"images differ in size: '{_show(first_path)}' is {w0}×{h0} but '{_show(path)}' is "
                                f"{w}×{h}", f"set data.image_size (e.g. --set data.image_size={min(w0, h0, w, h)}) to "
                                            "resize them, shorter side then centre crop")
    channels = 3 if any(mode not in GREY_MODES for _, (mode, _, _) in good) else 1
    side = options.image_size
    return ((channels, side, side) if side else (channels, h0, w0)), bad


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """A version-1.0 .npy header for uint8 C-order data, padded to a fixed HEADER_BYTES."""
    text = "{'descr': '|u1', 'fortran_order': False, 'shape': %r, }" % (tuple(shape),)
    body = text.ljust(HEADER_BYTES - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


def _write_images(fh: Any, results: Iterator[list], files: list[Path], image_shape: tuple[int, ...],
                  bar: Any) -> tuple[list[tuple[Path, str]], list[int], int]:
    """Decoded images from ``results`` appended to ``fh``: the files that failed, the positions kept and the
    CRC-32 of the bytes written."""
    bad: list[tuple[Path, str]] = []
    kept: list[int] = []
    crc, position = 0, 0
    for chunk in results:
        for item in chunk:
            if isinstance(item, str):
                bad.append((files[position], item))
            elif item.shape != image_shape:  # headers agreed, the decoded pixels did not: a broken file
                bad.append((files[position], f"decodes to {item.shape[1]}×{item.shape[2]}"))
            else:
                data = item.tobytes()
                fh.write(data)
                crc = zlib.crc32(data, crc)
                kept.append(position)
            position += 1
        bar.update(len(chunk))
    return bad, kept, crc


def array_record(path: Path, crc: int) -> dict:
    """What meta.json records of an array file: shape, dtype, data bytes, CRC-32 and sampled digest."""
    shape, dtype, _, offset = read_npy_header(path)
    nbytes = math.prod(shape) * dtype.itemsize
    return {"shape": list(shape), "dtype": str(dtype), "bytes": nbytes, "crc32": crc,
            "sample": sampled_digest(path, offset, nbytes)}


def decode_split(root: Path, part: FolderSplit, options: FolderOptions, image_shape: tuple[int, int, int],
                 skip: set[Path], out_dir: Path, split: str) -> tuple[list[tuple[Path, str]], dict]:
    """Decode one split's images straight into ``out_dir/<split>_x.npy`` (and its labels), chunk by chunk,
    so memory stays bounded; returns the files that failed (skipped when allowed) and the arrays' records."""
    files = [f for f in part.files if f not in skip]
    labels = part.labels[[f not in skip for f in part.files]]
    chunks = _chunks(files, max(1, min(CHUNK, CHUNK_BYTES // math.prod(image_shape))))
    workers = parallel.task_workers(len(chunks), phase="image decoding")
    path = out_dir / f"{split}_x.npy"
    with open(path, "wb") as fh, progress_bar(len(files), f"decoding {split} images") as bar, \
            closing(map_chunks(decode, chunks, (options.image_size, image_shape[0] == 3), workers)) as results:
        fh.write(b"\0" * HEADER_BYTES)
        bad, kept, crc = _write_images(fh, results, files, image_shape, bar)
        if bad and not options.skip_bad_images:
            raise _bad_files(root, bad, len(files))
        if not kept:
            raise DataError(f"none of the {split} images in '{_show(root)}' can be decoded", "check the files")
        fh.seek(0)
        fh.write(_npy_header((len(kept), *image_shape)))
    kept_labels = np.ascontiguousarray(labels[kept], dtype=np.int64)
    np.save(out_dir / f"{split}_y.npy", kept_labels)
    records = {f"{split}_x.npy": array_record(path, crc),
               f"{split}_y.npy": array_record(out_dir / f"{split}_y.npy", zlib.crc32(kept_labels.tobytes()))}
    return bad, records


def _decode_into(partial: Path, root: Path, tree: FolderTree, options: FolderOptions,
                 image_shape: tuple[int, int, int], bad: list[tuple[Path, str]]) -> dict:
    """Decode every split into the folder ``partial`` and write its meta.json; returns the metadata."""
    started = time.perf_counter()
    skip = {f for f, _ in bad}
    arrays: dict[str, dict] = {}
    for split, part in tree.splits.items():
        failed, records = decode_split(root, part, options, image_shape, skip, partial, split)
        bad = bad + failed
        arrays.update(records)
    meta = {"format": CACHE_VERSION, "root": _show(root), "class_names": tree.class_names,
            "splits": list(tree.splits), "colour": image_shape[0] == 3, "image_size": options.image_size,
            "arrays": arrays, "skipped": [f"{_show(f.relative_to(root))}: {why}" for f, why in bad],
            "decode_seconds": round(time.perf_counter() - started, 2)}
    (partial / layout.CACHE_META).write_text(json.dumps(meta, indent=1))
    return meta


def build_cache(root: Path, tree: FolderTree, options: FolderOptions, cache: Path, damage: str,
                made_now: list[Path]) -> dict:
    """Decode the tree into a new cache at ``cache`` (replacing a damaged one, ``damage`` saying why it
    failed its check): written under a temporary name and renamed into place; whatever stops it (an
    error, a signal) leaves nothing behind. Checks the cache folder, the memory and the disk first.
    ``made_now`` receives the cache and the folders made for it, innermost first."""
    problem = cache_folder_problem(cache.parent)
    if problem:
        what = f"the decoded-image cache '{_show(cache)}' is damaged ({damage}) and" if damage else \
            "the decoded-image cache"
        raise DataError(f"{what} cannot be written in '{_show(cache.parent)}': {problem}", CACHE_FIX)
    image_shape, bad = check_headers(root, tree.splits, options)
    check_fits(tree.count - len(bad), image_shape, options, cache.parent)
    if damage:
        log(f"warning: the decoded-image cache {_show(cache)} failed its check ({damage}); decoding the images again")
    remove_stale(cache.parent)
    partial = cache.with_name(f"{cache.name}.partial-{_host()}-{os.getpid()}")
    made = [d for d in (partial, *partial.parents) if not os.path.lexists(d)]  # removed again if decoding fails
    try:
        partial.mkdir(parents=True, exist_ok=True)
        meta = _decode_into(partial, root, tree, options, image_shape, bad)
        install(partial, cache, replace=bool(damage))
        made_now.extend([cache, *made[1:]])
    except BaseException as exc:
        with signals_held():  # a second signal must not leave the half-made cache behind
            shutil.rmtree(partial, ignore_errors=True)
            for folder in made[1:]:
                try:
                    folder.rmdir()
                except OSError:
                    break
        if isinstance(exc, OSError):
            raise DataError(f"the decoded-image cache could not be written in '{_show(cache.parent)}' "
                            f"({_why(exc)}); nothing was kept", f"free disk space, or {CACHE_FIX}") from None
        raise
    return meta


def decode_folder(root: Path, options: FolderOptions,
                  made_now: list[Path] | None = None) -> tuple[Path, dict, FolderTree]:
    """The cache folder holding the decoded tree (made now if missing or damaged: then it and the folders
    made for it are added to ``made_now``), its metadata, and the tree's scan."""
    try:
        import PIL  # noqa: F401 - only checked here; the workers import it
    except ImportError:
        raise DataError("the folder dataset needs Pillow to read image files",
                        "pip install 'replearn[images]' (or pip install Pillow)") from None
    tree = scan_folder(root)
    started = time.perf_counter()
    key, unreadable = content_key(root, tree.splits, options)
    set_aside(root, tree, unreadable, options)
    cache = cache_root(options) / f"folder-{key}"
    meta, damage = read_cache(cache, tree, options)
    if meta is not None:
        log(f"{_show(root)}: decoded images read from the cache {_show(cache)} "
            f"(hashing {time.perf_counter() - started:.1f} s)")
        return cache, meta, tree
    meta = build_cache(root, tree, options, cache, damage, made_now if made_now is not None else [])
    if meta["skipped"]:
        log(f"warning: skipped {len(meta['skipped'])} image files that cannot be decoded, e.g. {meta['skipped'][0]}")
    kept = sum(meta["arrays"][f"{s}_y.npy"]["shape"][0] for s in meta["splits"])
    log(f"{_show(root)}: decoded {kept:,} images in {time.perf_counter() - started:.1f} s, cached in {_show(cache)}")
    return cache, meta, tree


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
