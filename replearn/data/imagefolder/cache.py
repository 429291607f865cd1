"""The decode cache of an image folder: where it lives, whether it is whole and describes the tree, the space and
memory it needs, and installing a finished one atomically (stale partial caches of dead processes removed)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import socket
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from replearn.data.imagedecode import file_digest
from replearn.data.imagefolder.walk import FolderSplit, FolderTree, _show, _size, _why
from replearn.data.readers import available_memory
from replearn.data.streaming import data_crc32, read_npy_header, sampled_digest
from replearn.errors import DataError
from replearn.rundir import layout
from replearn.runtime.log import progress_bar

if TYPE_CHECKING:  # the source's options, whose module imports this one
    from replearn.data.sources.folder import FolderOptions


CACHE_VERSION = 2


HEADER_BYTES = 256  # .npy header written with room to spare, so it can be rewritten after skipped files


MAX_META_BYTES = 64 << 20


LOAD_PEAK_FACTOR = 4  # loading into memory briefly needs about this many normalised float32 copies


CACHE_FIX = "set data.cache_dir (or $REPLEARN_CACHE) to a folder you can write to"


def content_key(
    root: Path, splits: dict[str, FolderSplit], options: FolderOptions, progress: bool = True
) -> tuple[str, list[tuple[Path, str]]]:
    """A hash of every readable file's relative path and bytes and of the settings that change the decoded
    arrays, and the files that could not be read (with why). Each file is read in blocks, to its size."""
    digest = hashlib.sha256(
        f"replearn-folder-v{CACHE_VERSION} size={options.image_size} skip={options.skip_bad_images}".encode()
    )
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
            raise DataError(
                f"the folder's {count:,} images of {shape} would take {_size(4 * pixels)} as normalised "
                f"float32 (about {_size(need)} while loading), more than the {_size(have)} of memory "
                "available",
                f"stream them from disk with --set data.memory_budget_mb={budget}, or set a smaller data.image_size",
            )
    if cache is not None:
        existing, _ = _existing(cache)
        free = free_space(existing)
        if pixels + (1 << 20) > free:
            raise DataError(
                f"the decoded-image cache of {count:,} images of {shape} needs {_size(pixels)}, but only "
                f"{_size(free)} is free in '{_show(existing)}'",
                "free disk space, or set data.cache_dir to a disk with room",
            )


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
            if (
                found
                and head.startswith("folder-")
                and pid.isdigit()
                and int(pid) != os.getpid()
                and not _running(int(pid))
            ):
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
    if (
        not isinstance(meta.get("colour"), bool)
        or not isinstance(meta.get("skipped"), list)
        or not all(isinstance(s, str) for s in meta["skipped"])
        or not isinstance(meta.get("arrays"), dict)
    ):
        return "meta.json is malformed"
    shapes = set()
    for split in meta["splits"]:
        x, y = meta["arrays"].get(f"{split}_x.npy"), meta["arrays"].get(f"{split}_y.npy")
        if (
            not isinstance(x, dict)
            or not isinstance(y, dict)
            or not _shape(x.get("shape"), 4)
            or not _shape(y.get("shape"), 1)
        ):
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
