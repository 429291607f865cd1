"""CIFAR-10 and CIFAR-100 from their official distributions, read directly (no torchvision): the file format.

Two layouts exist for each: the binary one (``cifar-10-batches-bin``: ``data_batch_1..5.bin`` and
``test_batch.bin``, each record a label byte then 3,072 pixel bytes, red, green, blue planes of 32×32;
``cifar-100-binary``: ``train.bin`` / ``test.bin`` with a coarse and a fine label byte) and the Python one
(``cifar-10-batches-py``, ``cifar-100-python``: pickled dicts, the files torchvision downloads). Pickles
are read by ``SafeUnpickler``, which builds only plain containers, bytes and NumPy arrays and refuses
every other global, so a crafted file cannot run code.

Every file is checked against the format before an array is built from it: its size against the records
a file of that name holds (10,000 per batch, 50,000 in CIFAR-100's train file), a pickle's ``data`` as an
N×3072 uint8 array and its labels as N whole numbers below the number of classes — so a label that is text,
``None``, a float, a nested list or a number beyond int64 is named in one line, and a small file that would
expand (shared references, a sparse file) is refused before anything large is allocated.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from replearn.errors import DataError

RECORD_PIXELS = 3 * 32 * 32
LAYOUTS = {
    10: {"binary": ("cifar-10-batches-bin", [f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"]),
         "python": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"])},
    100: {"binary": ("cifar-100-binary", ["train.bin"], ["test.bin"]),
          "python": ("cifar-100-python", ["train"], ["test"])},
}
BATCH_RECORDS, CIFAR100_TRAIN_RECORDS = 10_000, 50_000
PICKLE_OVERHEAD_PER_RECORD = 512  # a record's label, file name and pickle opcodes, generously
META_BYTES = 1 << 20  # label-name files are a few kB
NAME_CHARACTERS = 200
REFETCH = "download and unpack the archive again"
# the only globals a CIFAR pickle needs: NumPy's array reconstruction, and text-to-bytes for protocol-2 files
SAFE_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}
LATIN1_NAMES = ("latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1")


def _latin1_encode(text: Any, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python-2 pickles use it (a str to its Latin-1 bytes), and nothing more."""
    if not isinstance(text, str) or str(encoding).lower().replace("_", "-") not in LATIN1_NAMES:
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {str(encoding)[:40]!r} is not allowed")
    return text.encode("latin1", errors="strict")


class SafeUnpickler(pickle.Unpickler):
    """Unpickles plain containers, numbers, strings, bytes and NumPy arrays; refuses any other class or function."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if (module, name) in SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")


def records_in(name: str) -> int:
    """How many records (images) a CIFAR file of this name holds at most."""
    return CIFAR100_TRAIN_RECORDS if name.startswith("train") else BATCH_RECORDS


def file_size(path: Path) -> int:
    """The size of a dataset file, or a one-line DataError when it cannot be read."""
    try:
        return path.stat().st_size
    except OSError as exc:
        raise _unreadable(path, exc) from None


def read_file_bytes(path: Path, limit: int) -> bytes:
    """A file's bytes, refused (one line) when it is larger than ``limit`` or cannot be read."""
    size = file_size(path)
    if size > limit:
        raise DataError(f"{path} holds {size:,} bytes, more than the {limit:,} a CIFAR file of that name can",
                        f"{REFETCH}; this is not an official CIFAR file")
    try:
        with open(path, "rb") as fh:
            return fh.read(limit + 1)
    except OSError as exc:
        raise _unreadable(path, exc) from None


def _unreadable(path: Path, exc: OSError) -> DataError:
    return DataError(f"{path} cannot be read ({exc.strerror or type(exc).__name__})",
                     "check that the file exists and that you may read it")


def safe_unpickle(path: Path, limit: int = 1 << 30) -> Any:
    """The object a CIFAR pickle holds, built by ``SafeUnpickler`` from at most ``limit`` bytes."""
    raw = read_file_bytes(path, limit)
    try:
        return SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"{path} was refused: it is not a plain CIFAR pickle ({exc})",
                        "use the official CIFAR files (or the binary layout); a pickle that needs other "
                        "classes could run code when loaded") from None
    except Exception as exc:  # noqa: BLE001 — nothing in it can run code; any other failure is a damaged file
        raise DataError(f"{path} is not a readable CIFAR pickle ({type(exc).__name__}; truncated?)", REFETCH) from None


def find_cifar(classes: int, search: list[Path]) -> tuple[str, Path]:
    """(layout, folder) of the first CIFAR-``classes`` distribution found under the search directories."""
    for base in search:
        for layout, (folder, train, test) in LAYOUTS[classes].items():
            for candidate in (base / folder, base):
                present = [f for f in train + test if (candidate / f).is_file()]
                if len(present) == len(train + test):
                    return layout, candidate
                if present and candidate.name == folder:
                    missing = sorted(set(train + test) - set(present))
                    raise DataError(f"cifar{classes}: {candidate} holds only some files; missing {', '.join(missing)}",
                                    "download and unpack the whole archive again")
    looked = ", ".join(str(d) for d in search)
    binary, python = LAYOUTS[classes]["binary"][0], LAYOUTS[classes]["python"][0]
    raise DataError(f"cifar{classes}: files not found (looked for {binary}/ or {python}/ in {looked})",
                    "unpack the official archive from https://www.cs.toronto.edu/~kriz/cifar.html and pass "
                    "--set data.root=DIR")


def _binary_split(folder: Path, files: list[str], label_bytes: int, label_index: int,
                  num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    record = label_bytes + RECORD_PIXELS
    images, labels = [], []
    for name in files:
        path = folder / name
        size = file_size(path)
        if size == 0 or size % record:
            raise DataError(f"{path} holds {size} bytes, not a whole number of {record}-byte records "
                            "(truncated or not CIFAR)", REFETCH)
        if size // record > records_in(name):
            raise DataError(f"{path} holds {size // record:,} records of {record} bytes; a CIFAR file of that name "
                            f"holds at most {records_in(name):,}", f"{REFETCH}; this is not an official CIFAR file")
        try:
            raw = np.fromfile(path, dtype=np.uint8, count=size)
        except OSError as exc:
            raise _unreadable(path, exc) from None
        if raw.size != size:
            raise DataError(f"{path} changed while it was read ({raw.size} of {size} bytes)", REFETCH)
        rows = raw.reshape(-1, record)
        found = rows[:, label_index]
        if found.max() >= num_classes:
            raise DataError(f"{path}: a label byte is {int(found.max())}, but the labels are class indices "
                            f"0..{num_classes - 1}", f"{REFETCH}; this is not an official CIFAR file")
        labels.append(found.astype(np.int64))
        images.append(rows[:, label_bytes:].reshape(-1, 3, 32, 32))
    return np.concatenate(images), np.concatenate(labels)


def _python_split(folder: Path, files: list[str], label_key: bytes, num_classes: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in files:
        path = folder / name
        most = records_in(name)
        batch = safe_unpickle(path, most * (RECORD_PIXELS + PICKLE_OVERHEAD_PER_RECORD) + (1 << 20))
        if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
            raise DataError(f"{path} lacks the 'data' or '{label_key.decode()}' entry", REFETCH)
        data = batch[b"data"]
        if not isinstance(data, np.ndarray):
            raise DataError(f"{path}: 'data' is a {type(data).__name__}, not a NumPy array of N×3072 bytes", REFETCH)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != RECORD_PIXELS or not 0 < len(data) <= most:
            raise DataError(f"{path}: 'data' is {data.dtype} {data.shape}, not N×3072 bytes with N from 1 to "
                            f"{most:,}", REFETCH)
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(check_labels(batch[label_key], len(data), num_classes, f"{path}: '{label_key.decode()}'"))
    return np.concatenate(images), np.concatenate(labels)


def check_labels(labels: Any, n: int, num_classes: int, where: str) -> np.ndarray:
    """A pickle's labels as an int64 array, after checking that they are ``n`` whole numbers from 0 to
    ``num_classes - 1`` (a list of ints, as the official files hold, or a 1-D integer array)."""
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DataError(f"{where} is a {labels.dtype} array of shape {labels.shape}, not one class index per "
                            "image", REFETCH)
        values = labels
    elif isinstance(labels, (list, tuple)):
        bad = next((i for i, v in enumerate(labels) if type(v) is not int and not isinstance(v, np.integer)), None)
        if bad is not None:
            raise DataError(f"{where}[{bad}] is {_shown(labels[bad])}, not a class index", REFETCH)
        values = labels
    else:
        raise DataError(f"{where} is {_shown(labels)}, not a list of class indices", REFETCH)
    if len(values) != n:
        raise DataError(f"{where} holds {len(values)} labels for {n} images", REFETCH)
    low, high = (min(values), max(values)) if len(values) else (0, 0)
    if low < 0 or high >= num_classes:
        raise DataError(f"{where} includes the label {low if low < 0 else high}, but the labels are class indices "
                        f"0..{num_classes - 1}", REFETCH)
    return np.asarray(values, dtype=np.int64)


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        return f"a {type(value).__name__} of {len(value)} items"
    text = repr(value)
    return f"{text if len(text) <= 40 else text[:40] + '…'} ({type(value).__name__})"


def _names(folder: Path, layout: str, classes: int, fine: bool, count: int) -> list[str]:
    """The class names the distribution ships (or [] when they are missing or malformed)."""
    if layout == "binary":
        name = "batches.meta.txt" if classes == 10 else ("fine_label_names.txt" if fine else "coarse_label_names.txt")
        path = folder / name
        if path.is_file():
            text = read_file_bytes(path, META_BYTES).decode("utf-8", errors="replace")
            return [line.strip()[:NAME_CHARACTERS] for line in text.splitlines() if line.strip()]
        return []
    path = folder / ("batches.meta" if classes == 10 else "meta")
    key = b"label_names" if classes == 10 else (b"fine_label_names" if fine else b"coarse_label_names")
    if not path.is_file():
        return []
    meta = safe_unpickle(path, META_BYTES)
    names = meta.get(key) if isinstance(meta, dict) else None
    # the list is checked before any name is decoded: a small pickle may repeat one large name many times
    if not isinstance(names, list) or len(names) != count or \
            not all(isinstance(n, (bytes, str)) and len(n) <= NAME_CHARACTERS for n in names):
        return []
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def read_cifar(classes: int, folder: Path, layout: str, fine: bool = True
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(train_x, train_y, test_x, test_y, class_names) of CIFAR-``classes``; images N×3×32×32 uint8."""
    _, train, test = LAYOUTS[classes][layout]
    count = classes if classes == 10 or fine else 20
    if layout == "binary":
        label_bytes, index = (1, 0) if classes == 10 else (2, 1 if fine else 0)
        train_x, train_y = _binary_split(folder, train, label_bytes, index, count)
        test_x, test_y = _binary_split(folder, test, label_bytes, index, count)
    else:
        key = b"labels" if classes == 10 else (b"fine_labels" if fine else b"coarse_labels")
        train_x, train_y = _python_split(folder, train, key, count)
        test_x, test_y = _python_split(folder, test, key, count)
    names = _names(folder, layout, classes, fine, count)
    if len(names) != count:
        names = [str(i) for i in range(count)]
    return train_x, train_y, test_x, test_y, names
