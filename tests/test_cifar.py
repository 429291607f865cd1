"""CIFAR-10/100 in both official layouts, written here to the published byte format (no download), and a
crafted pickle that must be refused without running its code."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from replearn.config import DataConfig
from replearn.data import load_dataset
from replearn.data.cifar_format import safe_unpickle
from replearn.errors import DataError

TEN = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def images(n: int, seed: int) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (n, 3, 32, 32)).astype(np.uint8)


def write_cifar10_binary(root: Path, per_batch: int = 20) -> tuple[np.ndarray, np.ndarray]:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    xs, ys = [], []
    for i, name in enumerate([f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]):
        x, y = images(per_batch, i), np.arange(per_batch, dtype=np.uint8) % 10
        records = np.concatenate([y[:, None], x.reshape(per_batch, -1)], axis=1)  # label byte, R, G, B planes
        (folder / name).write_bytes(records.tobytes())
        xs.append(x), ys.append(y)
    (folder / "batches.meta.txt").write_text("\n".join(TEN) + "\n\n")
    return np.concatenate(xs), np.concatenate(ys)


def write_cifar10_python(root: Path, per_batch: int = 20) -> tuple[np.ndarray, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    xs, ys = [], []
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        x, y = images(per_batch, i), [int(v) for v in np.arange(per_batch) % 10]
        batch = {b"batch_label": b"batch", b"labels": y, b"data": x.reshape(per_batch, -1), b"filenames": [b"a.png"] * per_batch}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        xs.append(x), ys.append(np.array(y))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.encode() for n in TEN],
                                                        b"num_vis": 3072}, protocol=2))
    return np.concatenate(xs), np.concatenate(ys)


def write_cifar100(root: Path, layout: str, n: int = 200) -> dict[str, np.ndarray]:
    fine = np.arange(n) % 100
    coarse = fine // 5
    x = images(n, 7)
    if layout == "binary":
        folder = root / "cifar-100-binary"
        folder.mkdir(parents=True)
        records = np.concatenate([coarse[:, None], fine[:, None], x.reshape(n, -1)], axis=1).astype(np.uint8)
        for name in ("train.bin", "test.bin"):
            (folder / name).write_bytes(records.tobytes())
        (folder / "fine_label_names.txt").write_text("\n".join(f"fine{i}" for i in range(100)))
        (folder / "coarse_label_names.txt").write_text("\n".join(f"coarse{i}" for i in range(20)))
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        batch = {b"data": x.reshape(n, -1), b"fine_labels": fine.tolist(), b"coarse_labels": coarse.tolist()}
        for name in ("train", "test"):
            (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                                                    b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}))
    return {"x": x, "fine": fine, "coarse": coarse}


@pytest.mark.parametrize("writer, layout", [(write_cifar10_binary, "binary"), (write_cifar10_python, "python")])
def test_cifar10_both_layouts_load_with_shapes_labels_and_names(tmp_path, writer, layout):
    x, y = writer(tmp_path)
    data = load_dataset(DataConfig(name="cifar10", root=str(tmp_path), val_fraction=0.1))
    assert data.image_shape == (3, 32, 32) and data.class_names == TEN
    assert len(data.train_y) + len(data.val_y) == 100 and len(data.test_y) == 20
    assert f"({layout} layout)" in data.source
    # the test split is the last batch, in order: labels and (un-normalised) pixels are the file's
    assert np.array_equal(data.test_y.numpy(), y[-20:])
    restored = np.round(data.to_unit_range(data.test_x).numpy() * 255).astype(np.uint8)
    assert np.array_equal(restored, x[-20:])


@pytest.mark.parametrize("layout", ["binary", "python"])
def test_cifar100_fine_and_coarse_labels(tmp_path, layout):
    truth = write_cifar100(tmp_path, layout)
    fine = load_dataset(DataConfig(name="cifar100", root=str(tmp_path), val_fraction=0.5))
    coarse = load_dataset(DataConfig(name="cifar100", root=str(tmp_path), val_fraction=0.5,
                                     plugin_options={"cifar100_labels": "coarse"}))
    assert fine.num_classes == 100 and fine.class_names[:2] == ["fine0", "fine1"]
    assert coarse.num_classes == 20 and coarse.class_names[-1] == "coarse19"
    assert np.array_equal(fine.test_y.numpy(), truth["fine"]) and np.array_equal(coarse.test_y.numpy(), truth["coarse"])


def test_crafted_cifar_pickle_is_refused_without_running_code(tmp_path):
    target = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {target}",))

    write_cifar10_python(tmp_path)
    evil = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    evil.write_bytes(pickle.dumps({b"data": Payload(), b"labels": []}))
    with pytest.raises(DataError, match="was refused: it is not a plain CIFAR pickle"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path)))
    assert not target.exists()
    with pytest.raises(DataError):
        safe_unpickle(evil)
    pickle.loads(evil.read_bytes())  # the same bytes unpickled unsafely do run the code: the payload is real
    assert target.exists()


def test_missing_or_partial_cifar_files_are_named(tmp_path):
    with pytest.raises(DataError, match="files not found"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path)))
    write_cifar10_binary(tmp_path)
    (tmp_path / "cifar-10-batches-bin" / "data_batch_4.bin").unlink()
    with pytest.raises(DataError, match="missing data_batch_4.bin"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path)))
    truncated = tmp_path / "cifar-10-batches-bin" / "data_batch_2.bin"
    write_cifar10_binary(tmp_path / "again")
    cut = tmp_path / "again" / "cifar-10-batches-bin" / "data_batch_2.bin"
    cut.write_bytes(cut.read_bytes()[:-5])
    with pytest.raises(DataError, match="not a whole number of 3073-byte records"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path / "again")))
    assert truncated.exists()
