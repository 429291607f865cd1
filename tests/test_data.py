import gzip
import struct

import numpy as np
import pytest

from replearn.config import DataConfig
from replearn.data import Dataset, idx_search_dirs, load_dataset, read_idx, stratified_split, stratified_subset
from replearn.errors import DataError

from conftest import make_blob_images


def write_idx(path, array: np.ndarray, compress: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


def write_idx_dataset(root, n_train=40, n_test=20):
    x, y = make_blob_images(n_train, size=8, classes=4)
    tx, ty = make_blob_images(n_test, size=8, classes=4, seed=3)
    write_idx(root / "train-images-idx3-ubyte.gz", x)
    write_idx(root / "train-labels-idx1-ubyte.gz", y)
    write_idx(root / "t10k-images-idx3-ubyte.gz", tx)
    write_idx(root / "t10k-labels-idx1-ubyte.gz", ty)
    return x, y


def test_read_idx_round_trip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for compress in (True, False):
        path = tmp_path / ("a.gz" if compress else "a.idx")
        write_idx(path, array, compress)
        np.testing.assert_array_equal(read_idx(path), array)


def test_read_idx_truncated_and_bad_magic(tmp_path):
    array = np.ones((5, 4, 4), np.uint8)
    path = tmp_path / "x.idx"
    write_idx(path, array, compress=False)
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataError, match="truncated or corrupted"):
        read_idx(path)
    path.write_bytes(b"\x12\x34\x08\x03" + b"\0" * 20)
    with pytest.raises(DataError, match="bad magic"):
        read_idx(path)
    gz = tmp_path / "y.gz"
    write_idx(gz, array)
    gz.write_bytes(gz.read_bytes()[:15])
    with pytest.raises(DataError, match="truncated|not a readable"):
        read_idx(gz)


def test_idx_dataset_loads_from_root_with_splits(tmp_path):
    x, y = write_idx_dataset(tmp_path)
    data = load_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path), val_fraction=0.25))
    assert len(data.train_y) + len(data.val_y) == 40 and len(data.test_y) == 20
    assert data.image_shape == (1, 8, 8)
    # normalisation statistics come from the training part only
    assert abs(float(data.train_x.mean())) < 1e-4 and abs(float(data.train_x.std()) - 1) < 1e-2
    # every class appears in validation, and validation is disjoint from training
    assert set(data.val_y.tolist()) == {0, 1, 2, 3}
    train_rows = {r.tobytes() for r in data.train_x.numpy()}
    assert not any(r.tobytes() in train_rows for r in data.val_x.numpy())


def test_splits_are_deterministic(tmp_path):
    write_idx_dataset(tmp_path)
    cfg = DataConfig(name="fashion-mnist", root=str(tmp_path), val_fraction=0.25, split_seed=3)
    a, b = load_dataset(cfg), load_dataset(cfg)
    assert (a.val_x == b.val_x).all() and (a.train_y == b.train_y).all()


def test_missing_files_say_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setattr("replearn.data.DEBIAN_DATASET_DIR", tmp_path / "debian")
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path / "nowhere")))
    line = info.value.one_line()
    assert str(tmp_path / "nowhere") in line and str(tmp_path / "debian" / "fashion-mnist") in line
    assert "apt-get install dataset-fashion-mnist" in line


def test_partial_files_named(tmp_path):
    write_idx_dataset(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte"):
        load_dataset(DataConfig(name="mnist", root=str(tmp_path)))


def test_count_mismatch(tmp_path):
    write_idx_dataset(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(39, np.uint8))
    with pytest.raises(DataError, match="40 images but .* 39 labels"):
        load_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path)))


def test_env_var_is_searched(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLEARN_DATA", str(tmp_path))
    assert tmp_path / "mnist" in idx_search_dirs("mnist", None)


def test_unknown_dataset_suggests():
    with pytest.raises(DataError, match="did you mean 'fashion-mnist'"):
        load_dataset(DataConfig(name="fashion_mnist"))


@pytest.mark.parametrize("x, y, fragment", [
    (np.zeros((10, 2, 2, 8, 8)), np.arange(10) % 2, "rank 5"),
    (np.full((10, 8, 8), np.nan, np.float32), np.arange(10) % 2, "NaN"),
    (np.zeros((10, 8, 8)), np.zeros(10, int), "single class"),
    (np.zeros((0, 8, 8)), np.zeros(0, int), "empty"),
    (np.zeros((10, 8, 8)), np.arange(9) % 2, "10 training images but 9 labels"),
])
def test_bad_arrays(x, y, fragment):
    with pytest.raises(DataError, match=fragment):
        Dataset.from_arrays("t", x, y, np.zeros((4, 8, 8)), np.arange(4) % 2, ["a", "b"], DataConfig(), "test")


def test_stratified_split_keeps_class_proportions():
    y = np.repeat(np.arange(5), [100, 50, 20, 10, 20])
    held, rest = stratified_split(y, 0.2, seed=0)
    assert len(set(held) & set(rest)) == 0 and len(held) + len(rest) == len(y)
    counts = np.bincount(y[held], minlength=5)
    np.testing.assert_array_equal(counts, [20, 10, 4, 2, 4])
    sub = stratified_subset(y, 50, seed=1)
    assert len(sub) == 50 and len(np.unique(y[sub])) == 5


def test_digits_default_split():
    data = load_dataset(DataConfig())
    assert data.image_shape == (1, 8, 8) and data.num_classes == 10
    assert len(data.train_y) + len(data.val_y) + len(data.test_y) == 1797
