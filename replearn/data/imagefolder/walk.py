"""Walking an image folder safely: which files are images, which folders are classes, and the bounded, loop-free walk
that finds them (symlinks, unreadable folders and huge trees answered in one line)."""

from __future__ import annotations

import os
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from replearn.data.imagedecode import MAX_FILE_BYTES, file_kind
from replearn.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


MAX_TREE_ENTRIES = 5_000_000  # directory entries one walk examines at most


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
                    raise DataError(
                        f"the folder tree under '{_show(self.root)}' holds more than "
                        f"{MAX_TREE_ENTRIES:,} entries (stopped in '{_show(folder)}'; a link to a large "
                        "part of the file system?)",
                        "point data.root at the dataset itself, or remove the links that lead out of it",
                    )
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
                raise DataError(
                    f"folder '{_show(folder)}' cannot be read ({_why(exc)})",
                    "make it readable (e.g. chmod u+rx), or move it out of data.root",
                ) from None
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
        """ "folder" or "image" the first time the walk meets a folder or an image file (links followed);
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
            self.problems.append(
                (path, f"{_size(info.st_size)}, larger than an image file may be ({_size(MAX_FILE_BYTES)})")
            )
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
        why = (
            f"a link to '{_show(target)}', which does not exist"
            if isinstance(exc, FileNotFoundError)
            else f"a link that cannot be followed: {_why(exc)}"
        )
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
        raise DataError(
            f"folder dataset '{_show(root)}' has no class folders{where}",
            "put each class's images in a subfolder named after the class: ROOT/<class>/*.png",
        )
    names = class_names or [d.name for d in classes]
    index = {name: i for i, name in enumerate(names)}
    files, labels = [], []
    for folder in classes:
        if folder.name not in index:
            shown = ", ".join(printable(n) for n in names[:10]) + (", …" if len(names) > 10 else "")
            raise DataError(
                f"'{_show(folder)}' is a class that the training folder does not have",
                f"use the training split's classes ({shown})",
            )
        problems_before = len(walk.problems)
        images = images_under(folder, walk)
        if not images:
            unread = walk.problems[problems_before:]
            why = (
                f" that can be read: '{_show(unread[0][0])}' ({unread[0][1]})"
                if unread
                else f" (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
            )
            raise DataError(
                f"class folder '{_show(folder)}' holds no images{why}", "add images to it or remove the folder"
            )
        files.extend(images)
        labels.extend([index[folder.name]] * len(images))
    return FolderSplit(files, np.asarray(labels, dtype=np.int64)), names


def _check_root(root: Path) -> None:
    try:
        info = os.stat(root)
    except (FileNotFoundError, NotADirectoryError):
        info = None
    except OSError as exc:
        raise DataError(
            f"folder dataset '{_show(root)}' cannot be read ({_why(exc)})",
            "make it readable (e.g. chmod u+rx), or pass --set data.root=DIR",
        ) from None
    if info is None or not stat.S_ISDIR(info.st_mode):
        raise DataError(
            f"folder dataset '{_show(root)}' is not a directory", "pass --set data.root=DIR (a folder of class folders)"
        )


def scan_folder(root: Path) -> FolderTree:
    """The splits present in the tree (``train`` and ``test``, or ``all``), the class names and what the
    walk left out or could not read."""
    _check_root(root)
    walk = TreeWalk(root)
    split_folders = [root / "train", root / "test"]
    if all(os.path.isdir(f) for f in split_folders):
        for folder in split_folders:
            if walk.classify(folder) != "folder":
                raise DataError(
                    f"'{_show(folder)}' cannot be used as a split: {walk.skipped[-1][1]}",
                    "give train/ and test/ folders of their own",
                )
        train, names = scan_tree(split_folders[0], walk)
        test, _ = scan_tree(split_folders[1], walk, names)
        splits = {"train": train, "test": test}
    else:
        every, names = scan_tree(root, walk)
        if len(names) < 2:
            raise DataError(
                f"folder dataset '{_show(root)}' has a single class folder ('{printable(names[0])}')",
                "a probe needs at least two classes: one subfolder per class",
            )
        splits = {"all": every}
    return FolderTree(splits, [printable(n) for n in names], walk.skipped, walk.problems)
