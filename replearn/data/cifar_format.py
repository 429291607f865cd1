"""CIFAR-10 and CIFAR-100 from their official distributions, read directly (no torchvision): the file format.

Two layouts exist for each: the binary one (``cifar-10-batches-bin``: ``data_batch_1..5.bin`` and
``test_batch.bin``, each record a label byte then 3,072 pixel bytes, red, green, blue planes of 32×32;
``cifar-100-binary``: ``train.bin`` / ``test.bin`` with a coarse and a fine label byte) and the Python one
(``cifar-10-batches-py``, ``cifar-100-python``: pickled dicts, the files torchvision downloads). Pickles
are read by ``SafeUnpickler``, which builds only plain containers, bytes and NumPy arrays and refuses
every other global, so a crafted file cannot run code.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

RECORD_PIXELS = 3 * 32 * 32
LAYOUTS = {
    10: {"binary": ("cifar-10-batches-bin", [f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"]),
         "python": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"])},
    100: {"binary": ("cifar-100-binary", ["train.bin"], ["test.bin"]),
          "python": ("cifar-100-python", ["train"], ["test"])},
}
# the only globals a CIFAR pickle needs: NumPy's array reconstruction
SAFE_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class SafeUnpickler(pickle.Unpickler):
    """Unpickles plain containers, numbers, strings, bytes and NumPy arrays; refuses any other class or function."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")


def safe_unpickle(path: Path) -> Any:
    try:
        return SafeUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"{path} was refused: it is not a plain CIFAR pickle ({exc})",
                        "use the official CIFAR files (or the binary layout); a pickle that needs other "
                        "classes could run code when loaded") from None
    except (EOFError, ValueError, TypeError, IndexError, MemoryError, OSError) as exc:
        raise DataError(f"{path} is not a readable CIFAR pickle ({type(exc).__name__}; truncated?)",
                        "download the dataset again") from None


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


def _binary_split(folder: Path, files: list[str], label_bytes: int, label_index: int) -> tuple[np.ndarray, np.ndarray]:
    record = label_bytes + RECORD_PIXELS
    images, labels = [], []
    for name in files:
        raw = np.fromfile(folder / name, dtype=np.uint8)
        if raw.size == 0 or raw.size % record:
            raise DataError(f"{folder / name} holds {raw.size} bytes, not a whole number of {record}-byte records "
                            "(truncated or not CIFAR)", "download and unpack the archive again")
        rows = raw.reshape(-1, record)
        labels.append(rows[:, label_index].astype(np.int64))
        images.append(rows[:, label_bytes:].reshape(-1, 3, 32, 32))
    return np.concatenate(images), np.concatenate(labels)


def _python_split(folder: Path, files: list[str], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in files:
        batch = safe_unpickle(folder / name)
        if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
            raise DataError(f"{folder / name} lacks the 'data' or '{label_key.decode()}' entry",
                            "download and unpack the archive again")
        data = np.asarray(batch[b"data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != RECORD_PIXELS:
            raise DataError(f"{folder / name}: 'data' is {data.dtype} {data.shape}, not N×3072 bytes",
                            "download and unpack the archive again")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _names(folder: Path, layout: str, classes: int, fine: bool) -> list[str]:
    if layout == "binary":
        name = "batches.meta.txt" if classes == 10 else ("fine_label_names.txt" if fine else "coarse_label_names.txt")
        path = folder / name
        if path.is_file():
            return [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
                    if line.strip()]
    else:
        path = folder / ("batches.meta" if classes == 10 else "meta")
        key = b"label_names" if classes == 10 else (b"fine_label_names" if fine else b"coarse_label_names")
        if path.is_file():
            meta = safe_unpickle(path)
            if isinstance(meta, dict) and isinstance(meta.get(key), list):
                return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in meta[key]]
    return []


def read_cifar(classes: int, folder: Path, layout: str, fine: bool = True
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(train_x, train_y, test_x, test_y, class_names) of CIFAR-``classes``; images N×3×32×32 uint8."""
    _, train, test = LAYOUTS[classes][layout]
    if layout == "binary":
        label_bytes, index = (1, 0) if classes == 10 else (2, 1 if fine else 0)
        train_x, train_y = _binary_split(folder, train, label_bytes, index)
        test_x, test_y = _binary_split(folder, test, label_bytes, index)
    else:
        key = b"labels" if classes == 10 else (b"fine_labels" if fine else b"coarse_labels")
        train_x, train_y = _python_split(folder, train, key)
        test_x, test_y = _python_split(folder, test, key)
    count = classes if classes == 10 or fine else 20
    names = _names(folder, layout, classes, fine)
    if len(names) != count:
        names = [str(i) for i in range(count)]
    return train_x, train_y, test_x, test_y, names
