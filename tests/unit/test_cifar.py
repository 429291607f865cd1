"""CIFAR-10/100 in both official layouts, written here to the published byte format (no download), a
crafted pickle that must be refused without running its code, and files whose labels, data or size do not
match the format, refused before any array is built from them."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from replearn.config.sections import DataConfig
from replearn.data import load_dataset
from replearn.data.cifar_format import check_labels, records_in, safe_unpickle
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


# ---------------------------------------------------------------- the format checked before arrays are built


@pytest.mark.parametrize("labels, fragment", [
    (["cat"] * 20, "[0] is 'cat' (str)"),
    ([0] * 19 + [None], "[19] is None (NoneType)"),
    ([True] * 20, "[0] is True (bool)"),
    ([0.0] * 20, "[0] is 0.0 (float)"),
    ([[0]] * 20, "[0] is a list of 1 items"),
    ([2**64] * 20, "includes the label 18446744073709551616"),
    ([-1] * 20, "includes the label -1"),
    ([10] * 20, "includes the label 10, but the labels are class indices 0..9"),
    (list(range(10)), "holds 10 labels for 20 images"),
    (np.zeros((20, 1), np.int64), "not one class index per image"),
    (np.zeros(20, np.float32), "is a float32 array"),
    ({b"a": 1}, "is a dict of 1 items, not a list of class indices"),
])
def test_cifar_labels_must_be_class_indices(labels, fragment):
    with pytest.raises(DataError) as caught:
        check_labels(labels, 20, 10, "batch 'labels'")
    assert fragment in str(caught.value)


def test_cifar_labels_as_ints_numpy_ints_or_an_integer_array_load():
    expected = np.arange(20) % 10
    for labels in ([int(v) for v in expected], [np.int64(v) for v in expected], expected.astype(np.uint8)):
        out = check_labels(labels, 20, 10, "labels")
        assert out.dtype == np.int64 and np.array_equal(out, expected)


def test_cifar_pickles_larger_than_the_format_allows_are_refused_before_reading(tmp_path):
    path = tmp_path / "big"
    path.write_bytes(pickle.dumps({b"data": b"x" * 5000}))
    with pytest.raises(DataError, match="more than the 1,000 a CIFAR file of that name can"):
        safe_unpickle(path, limit=1000)
    assert safe_unpickle(path)[b"data"] == b"x" * 5000
    assert records_in("train.bin") == records_in("train") == 50_000 and records_in("data_batch_3") == 10_000


def test_only_latin1_text_to_bytes_is_allowed_in_a_cifar_pickle(tmp_path):
    path = tmp_path / "codec"
    path.write_bytes(b"\x80\x02c_codecs\nencode\nq\x00X\x03\x00\x00\x00abcX\x06\x00\x00\x00latin1\x86R.")
    assert safe_unpickle(path) == b"abc"  # how Python 2 pickles (the official files) store bytes
    path.write_bytes(b"\x80\x02c_codecs\nencode\nq\x00X\x03\x00\x00\x00abcX\x04\x00\x00\x00zlib\x86R.")
    with pytest.raises(DataError, match="_codecs.encode with encoding 'zlib' is not allowed"):
        safe_unpickle(path)


def test_label_names_that_would_expand_are_not_decoded(tmp_path):
    write_cifar10_python(tmp_path)
    big = b"n" * 10_000
    meta = tmp_path / "cifar-10-batches-py" / "batches.meta"
    meta.write_bytes(pickle.dumps({b"label_names": [big] * 10}, protocol=2))  # shared: 10 kB on disk
    data = load_dataset(DataConfig(name="cifar10", root=str(tmp_path)))
    assert data.class_names == [str(i) for i in range(10)]  # names too long for a class name: numbered instead


def test_cifar_binary_size_is_checked_against_the_format_before_reading(tmp_path):
    write_cifar10_binary(tmp_path)
    batch = tmp_path / "cifar-10-batches-bin" / "data_batch_5.bin"
    with open(batch, "r+b") as fh:
        fh.truncate(10_001 * 3073)
    with pytest.raises(DataError, match="holds 10,001 records of 3073 bytes; a CIFAR file of that name holds at most"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path)))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_an_unreadable_cifar_file_is_named(tmp_path):
    write_cifar10_python(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").chmod(0)
    with pytest.raises(DataError, match=r"test_batch cannot be read \(Permission denied\)"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path)))


def test_a_cifar_file_the_system_refuses_to_read_is_named(tmp_path, monkeypatch):
    """The same as above for any user (root reads every file): the read itself fails with PermissionError."""
    write_cifar10_binary(tmp_path)

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(np, "fromfile", refuse)
    with pytest.raises(DataError, match=r"data_batch_1.bin cannot be read \(Permission denied\) — fix: check that"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path)))
