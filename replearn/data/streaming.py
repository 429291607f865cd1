"""Images that stay on disk: uint8 N×C×H×W arrays in .npy files (or in a raw file of a published format,
such as STL-10's column-major ``*_X.bin``), read batch by batch and normalised on the fly.

An ``ImageStore`` indexes like the float32 tensor a ``Dataset`` split otherwise holds (``len``, ``shape``,
``x[i]``, ``x[a:b]``, ``x[index_tensor]``), so the training loop, evaluation and feature extraction run on it
unchanged, and memory stays bounded by the batch size whatever the dataset's size. Rows are read with
``os.pread`` into fresh buffers rather than through a memory map: pages of a map that the process has touched
count towards its resident memory until the kernel reclaims them, so a pass over a large file would look
(and, under a cgroup limit, act) like loading it.
"""
from __future__ import annotations

import hashlib
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from replearn.errors import DataError


@dataclass(frozen=True)
class FileLayout:
    """Where the uint8 images of a file are: ``count`` images of ``image_shape`` (C×H×W, as returned) from
    byte ``offset`` on, each stored C×H×W, or C×W×H (each channel column by column) when ``transposed``."""

    offset: int
    count: int
    image_shape: tuple[int, int, int]
    transposed: bool = False

    @property
    def stored_shape(self) -> tuple[int, int, int]:
        c, h, w = self.image_shape
        return (c, w, h) if self.transposed else (c, h, w)


def npy_file_layout(path: Path) -> FileLayout:
    """The layout of a uint8, C-ordered N×C×H×W .npy file (raises a DataError for anything else)."""
    shape, offset = npy_layout(path)
    return FileLayout(offset, shape[0], tuple(shape[1:]))  # type: ignore[arg-type]


def raw_file_layout(path: Path, image_shape: tuple[int, int, int], transposed: bool, fix: str) -> FileLayout:
    """The layout of a headerless file of uint8 images of ``image_shape`` (C×H×W), refused with a DataError
    (whose fix is ``fix``) when it is missing or not a whole number of images."""
    image_bytes = math.prod(image_shape)
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise DataError(f"{path} cannot be read ({type(exc).__name__})", fix) from None
    if size == 0 or size % image_bytes:
        raise DataError(f"{path} holds {size:,} bytes, not a whole number of {image_bytes:,}-byte "
                        f"{'×'.join(map(str, image_shape))} images (truncated or not this dataset)", fix)
    return FileLayout(0, size // image_bytes, tuple(image_shape), transposed)  # type: ignore[arg-type]


def read_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """Shape, dtype, Fortran order and data offset from a .npy file's header (a header of more than 10 kB is
    refused); raises OSError or ValueError for a file that is not one."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(fh, max_header_size=10_000)
        return tuple(shape), dtype, bool(fortran), fh.tell()


def npy_layout(path: Path) -> tuple[tuple[int, ...], int]:
    """Shape and data offset of a uint8, C-ordered .npy file (raises a DataError for anything else)."""
    try:
        shape, dtype, fortran, offset = read_npy_header(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable .npy file ({type(exc).__name__})",
                        "delete it so that it is made again") from None
    if dtype != np.uint8 or fortran or len(shape) != 4:
        raise DataError(f"{path} holds {dtype} data of shape {shape}, not uint8 N×C×H×W images",
                        "delete it so that it is made again")
    if os.path.getsize(path) < offset + math.prod(shape):
        raise DataError(f"{path} is shorter than its header says (truncated)", "delete it so that it is made again")
    return shape, offset


SAMPLE_BLOCKS = 64
SAMPLE_BYTES = 16 << 10


def sampled_digest(path: Path, offset: int, nbytes: int) -> str:
    """A digest of ``nbytes`` (the data's size) and of SAMPLE_BLOCKS blocks spread evenly over the data from
    ``offset`` on, the first and last included: read in constant time however large the file, it tells
    data that were zeroed, overwritten or cut short from what was written."""
    digest = hashlib.blake2b(str(nbytes).encode(), digest_size=16)
    step = max(SAMPLE_BYTES, (nbytes - SAMPLE_BYTES) // max(1, SAMPLE_BLOCKS - 1))
    starts = sorted({min(i * step, max(0, nbytes - SAMPLE_BYTES)) for i in range(SAMPLE_BLOCKS)})
    fd = os.open(path, os.O_RDONLY)
    try:
        for start in starts:
            digest.update(os.pread(fd, min(SAMPLE_BYTES, nbytes - start), offset + start))
    finally:
        os.close(fd)
    return digest.hexdigest()


def data_crc32(path: Path, offset: int, nbytes: int) -> int:
    """The CRC-32 of ``nbytes`` bytes of a file from ``offset`` on, read in blocks (about 3 GB/s)."""
    crc = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        done = 0
        while done < nbytes:
            block = os.pread(fd, min(8 << 20, nbytes - done), offset + done)
            if not block:
                break
            crc = zlib.crc32(block, crc)
            done += len(block)
    finally:
        os.close(fd)
    return crc


def vanished(path: str, exc: OSError | None = None) -> DataError:
    """The one-line error for a file of images that was deleted, cut short or made unreadable while a run
    was reading it."""
    what = ("was deleted while the run was reading it" if isinstance(exc, FileNotFoundError) else
            f"could not be read ({exc.strerror or type(exc).__name__})" if exc is not None else
            "ended early: it was cut short while the run was reading it")
    return DataError(f"the image file '{path}' {what}",
                     "run the command again (an interrupted run continues with replearn run --resume RUN_DIR): "
                     "a decoded-image cache is then checked and made again from the image files")


class ImageStore:
    """Rows ``rows`` of the uint8 images in ``path``, read on demand and returned as normalised float32
    tensors: ``(x / 255 - mean[c]) / std[c]`` per channel (no normalisation when ``mean`` is None).
    ``layout`` says where the images sit in the file (default: a .npy file's header says it)."""

    dtype = torch.float32

    def __init__(self, path: Path, rows: np.ndarray, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, layout: FileLayout | None = None) -> None:
        self.path = str(path)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.mean = None if mean is None else tuple(mean)
        self.std = None if std is None else tuple(std)
        self.layout = layout if layout is not None else npy_file_layout(Path(path))
        self._offset = self.layout.offset
        self._image_shape = tuple(self.layout.image_shape)
        self._image_bytes = math.prod(self._image_shape)
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= self.layout.count):
            raise DataError(f"{path} holds {self.layout.count} images, fewer than its index needs",
                            "delete the cache so that it is made again")

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), *self._image_shape))

    def __getitem__(self, index: int | slice | np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(index, (int, np.integer)):
            return self[np.array([index])][0]
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        x = torch.from_numpy(self.read(self.rows[index])).float().div_(255.0)
        if self.mean is not None:
            shape = (1, -1, 1, 1)
            x.sub_(torch.tensor(self.mean).view(shape)).div_(torch.tensor(self.std).view(shape))
        return x

    def subset(self, positions: np.ndarray) -> "ImageStore":
        """The same images at ``positions`` of this store (no data is read)."""
        return ImageStore(Path(self.path), self.rows[positions], self.mean, self.std, self.layout)

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The uint8 images at file rows ``rows`` (in that order): sorted, read in contiguous runs, reordered."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), *self.layout.stored_shape), dtype=np.uint8)
        if not len(rows):
            return out.reshape(len(rows), *self._image_shape)
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        flat = out.reshape(len(rows), -1)
        breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:  # deleted or made unreadable under the run: not a full disk
            raise vanished(self.path, exc) from None
        try:
            for run in np.split(np.arange(len(rows)), breaks):
                first, count = int(ordered[run[0]]), len(run)
                want = count * self._image_bytes
                data = os.pread(fd, want, self._offset + first * self._image_bytes)
                if len(data) != want:
                    raise vanished(self.path)
                flat[order[run]] = np.frombuffer(data, dtype=np.uint8).reshape(count, -1)
        except OSError as exc:
            raise vanished(self.path, exc) from None
        finally:
            os.close(fd)
        return np.ascontiguousarray(out.transpose(0, 1, 3, 2)) if self.layout.transposed else out


def image_fingerprints(images: Any) -> np.ndarray:
    """One 63-bit fingerprint per image (BLAKE2b of its bytes), so that two exports can be checked to hold the
    same images in the same order."""
    array = np.ascontiguousarray(np.asarray(images))
    return np.array([int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little") >> 1
                     for row in array.reshape(len(array), -1)], dtype=np.int64)
