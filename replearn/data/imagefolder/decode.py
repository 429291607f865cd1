"""Decoding an image folder into the cache: headers checked first, images decoded in bounded chunks by worker
processes and written into .npy files, unreadable files set aside or named."""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import time
import zlib
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from replearn.data.imagedecode import GREY_MODES, decode, map_chunks, scan_headers, signals_held
from replearn.data.imagefolder.cache import (
    CACHE_FIX,
    CACHE_VERSION,
    HEADER_BYTES,
    _host,
    cache_folder_problem,
    cache_root,
    check_fits,
    content_key,
    install,
    read_cache,
    remove_stale,
)
from replearn.data.imagefolder.walk import FolderSplit, FolderTree, _show, _why, scan_folder
from replearn.data.streaming import read_npy_header, sampled_digest
from replearn.errors import DataError
from replearn.rundir import layout
from replearn.runtime import threads as parallel
from replearn.runtime.log import log, progress_bar

if TYPE_CHECKING:  # the source's options, whose module imports this one
    from replearn.data.sources.folder import FolderOptions


CHUNK = 256  # files per worker task at most …


CHUNK_BYTES = 32 << 20  # … and at most this many decoded bytes per task


def _unreadable(root: Path, problems: list[tuple[Path, str]]) -> DataError:
    path, why = problems[0]
    more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
    entries = "entry" if len(problems) == 1 else "entries"
    return DataError(
        f"{len(problems)} {entries} of the folder dataset '{_show(root)}' cannot be read: "
        f"'{_show(path)}' ({why}){more}",
        "make them readable (chmod), repair or remove them, or pass --set data.skip_bad_images=true to leave them out",
    )


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


def _chunks(files: list[Path], per_chunk: int | None = None) -> list[list[str]]:
    names = [str(f) for f in files]
    per_chunk = per_chunk or CHUNK
    return [names[i : i + per_chunk] for i in range(0, len(names), per_chunk)]


def _bad_files(root: Path, bad: list[tuple[Path, str]], total: int) -> DataError:
    path, reason = bad[0]
    more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
    return DataError(
        f"{len(bad)} of {total:,} image files cannot be decoded: '{_show(path)}' ({reason}){more}",
        "replace or delete them, or pass --set data.skip_bad_images=true to leave them out",
    )


def check_headers(
    root: Path, splits: dict[str, FolderSplit], options: FolderOptions
) -> tuple[tuple[int, int, int], list[tuple[Path, str]]]:
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
                raise DataError(
                    f"images differ in size: '{_show(first_path)}' is {w0}×{h0} but '{_show(path)}' is {w}×{h}",
                    f"set data.image_size (e.g. --set data.image_size={min(w0, h0, w, h)}) to "
                    "resize them, shorter side then centre crop",
                )
    channels = 3 if any(mode not in GREY_MODES for _, (mode, _, _) in good) else 1
    side = options.image_size
    return ((channels, side, side) if side else (channels, h0, w0)), bad


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """A version-1.0 .npy header for uint8 C-order data, padded to a fixed HEADER_BYTES."""
    text = "{'descr': '|u1', 'fortran_order': False, 'shape': %r, }" % (tuple(shape),)
    body = text.ljust(HEADER_BYTES - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


def _write_images(
    fh: Any, results: Iterator[list], files: list[Path], image_shape: tuple[int, ...], bar: Any
) -> tuple[list[tuple[Path, str]], list[int], int]:
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
    return {
        "shape": list(shape),
        "dtype": str(dtype),
        "bytes": nbytes,
        "crc32": crc,
        "sample": sampled_digest(path, offset, nbytes),
    }


def decode_split(
    root: Path,
    part: FolderSplit,
    options: FolderOptions,
    image_shape: tuple[int, int, int],
    skip: set[Path],
    out_dir: Path,
    split: str,
) -> tuple[list[tuple[Path, str]], dict]:
    """Decode one split's images straight into ``out_dir/<split>_x.npy`` (and its labels), chunk by chunk,
    so memory stays bounded; returns the files that failed (skipped when allowed) and the arrays' records."""
    files = [f for f in part.files if f not in skip]
    labels = part.labels[[f not in skip for f in part.files]]
    chunks = _chunks(files, max(1, min(CHUNK, CHUNK_BYTES // math.prod(image_shape))))
    workers = parallel.task_workers(len(chunks), phase="image decoding")
    path = out_dir / f"{split}_x.npy"
    with (
        open(path, "wb") as fh,
        progress_bar(len(files), f"decoding {split} images") as bar,
        closing(map_chunks(decode, chunks, (options.image_size, image_shape[0] == 3), workers)) as results,
    ):
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
    records = {
        f"{split}_x.npy": array_record(path, crc),
        f"{split}_y.npy": array_record(out_dir / f"{split}_y.npy", zlib.crc32(kept_labels.tobytes())),
    }
    return bad, records


def _decode_into(
    partial: Path,
    root: Path,
    tree: FolderTree,
    options: FolderOptions,
    image_shape: tuple[int, int, int],
    bad: list[tuple[Path, str]],
) -> dict:
    """Decode every split into the folder ``partial`` and write its meta.json; returns the metadata."""
    started = time.perf_counter()
    skip = {f for f, _ in bad}
    arrays: dict[str, dict] = {}
    for split, part in tree.splits.items():
        failed, records = decode_split(root, part, options, image_shape, skip, partial, split)
        bad = bad + failed
        arrays.update(records)
    meta = {
        "format": CACHE_VERSION,
        "root": _show(root),
        "class_names": tree.class_names,
        "splits": list(tree.splits),
        "colour": image_shape[0] == 3,
        "image_size": options.image_size,
        "arrays": arrays,
        "skipped": [f"{_show(f.relative_to(root))}: {why}" for f, why in bad],
        "decode_seconds": round(time.perf_counter() - started, 2),
    }
    (partial / layout.CACHE_META).write_text(json.dumps(meta, indent=1))
    return meta


def build_cache(
    root: Path, tree: FolderTree, options: FolderOptions, cache: Path, damage: str, made_now: list[Path]
) -> dict:
    """Decode the tree into a new cache at ``cache`` (replacing a damaged one, ``damage`` saying why it
    failed its check): written under a temporary name and renamed into place; whatever stops it (an
    error, a signal) leaves nothing behind. Checks the cache folder, the memory and the disk first.
    ``made_now`` receives the cache and the folders made for it, innermost first."""
    problem = cache_folder_problem(cache.parent)
    if problem:
        what = (
            f"the decoded-image cache '{_show(cache)}' is damaged ({damage}) and"
            if damage
            else "the decoded-image cache"
        )
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
            raise DataError(
                f"the decoded-image cache could not be written in '{_show(cache.parent)}' "
                f"({_why(exc)}); nothing was kept",
                f"free disk space, or {CACHE_FIX}",
            ) from None
        raise
    return meta


def decode_folder(
    root: Path, options: FolderOptions, made_now: list[Path] | None = None
) -> tuple[Path, dict, FolderTree]:
    """The cache folder holding the decoded tree (made now if missing or damaged: then it and the folders
    made for it are added to ``made_now``), its metadata, and the tree's scan."""
    try:
        import PIL  # noqa: F401 - only checked here; the workers import it
    except ImportError:
        raise DataError(
            "the folder dataset needs Pillow to read image files",
            "pip install 'replearn[images]' (or pip install Pillow)",
        ) from None
    tree = scan_folder(root)
    started = time.perf_counter()
    key, unreadable = content_key(root, tree.splits, options)
    set_aside(root, tree, unreadable, options)
    cache = cache_root(options) / f"folder-{key}"
    meta, damage = read_cache(cache, tree, options)
    if meta is not None:
        log(
            f"{_show(root)}: decoded images read from the cache {_show(cache)} "
            f"(hashing {time.perf_counter() - started:.1f} s)"
        )
        return cache, meta, tree
    meta = build_cache(root, tree, options, cache, damage, made_now if made_now is not None else [])
    if meta["skipped"]:
        log(f"warning: skipped {len(meta['skipped'])} image files that cannot be decoded, e.g. {meta['skipped'][0]}")
    kept = sum(meta["arrays"][f"{s}_y.npy"]["shape"][0] for s in meta["splits"])
    log(f"{_show(root)}: decoded {kept:,} images in {time.perf_counter() - started:.1f} s, cached in {_show(cache)}")
    return cache, meta, tree
