"""Readers of the published dataset file formats that more than one source uses: IDX files (MNIST and
Fashion-MNIST), checked .npz archives, and the directories dataset files are looked for in. Each checks a
file's declared sizes against its real size and the memory available before reading it, so a truncated,
corrupted or oversized file gives a one-line ``DataError`` rather than a crash or a huge allocation."""
from __future__ import annotations

import gzip
import math
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from replearn.errors import DataError

DEBIAN_DATASET_DIR = Path("/usr/share/datasets")
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
}
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


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


def find_idx(name: str, root: str | None, hint: str) -> dict[str, Path]:
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
