"""STL-10 from files written here in the published binary format (stl10_binary/: *_X.bin, uint8 3×96×96
images stored column by column, *_y.bin labels 1..10, class_names.txt), without downloading anything."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from replearn.cli.main import main
from replearn.config.sections import DataConfig, config_from_dict
from replearn.data import DATASETS, ImageStore, dataset_status, load_dataset
from replearn.errors import ConfigError, DataError

NAMES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def images(n: int, seed: int) -> np.ndarray:
    """n images (N×3×96×96, rows then columns) with an asymmetric mark: the top row of channel 0 is white,
    the left column of channel 0 black, so reading the file without its transpose would show."""
    x = np.random.RandomState(seed).randint(30, 220, (n, 3, 96, 96)).astype(np.uint8)
    x[:, 0, 0, :] = 255
    x[:, 0, 1:, 0] = 0
    return x


def write_bin(path: Path, x: np.ndarray) -> None:
    """The published byte order: each channel column by column (C×W×H), as the reference reader expects."""
    path.write_bytes(np.ascontiguousarray(x.transpose(0, 1, 3, 2)).tobytes())


def write_stl10(root: Path, n_train: int = 30, n_test: int = 20, n_unlabelled: int = 50) -> dict:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    truth = {"train_x": images(n_train, 1), "test_x": images(n_test, 2), "unlabelled": images(n_unlabelled, 3),
             "train_y": (np.arange(n_train) % 10 + 1).astype(np.uint8),
             "test_y": ((np.arange(n_test) * 3) % 10 + 1).astype(np.uint8)}
    for split in ("train", "test"):
        write_bin(folder / f"{split}_X.bin", truth[f"{split}_x"])
        (folder / f"{split}_y.bin").write_bytes(truth[f"{split}_y"].tobytes())
    write_bin(folder / "unlabeled_X.bin", truth["unlabelled"])
    (folder / "class_names.txt").write_text("\n".join(NAMES) + "\n")
    return truth


@pytest.fixture
def no_system_data(tmp_path, monkeypatch):
    monkeypatch.setattr("replearn.data.readers.DEBIAN_DATASET_DIR", tmp_path / "no-debian")
    monkeypatch.delenv("REPLEARN_DATA", raising=False)


def stl10(root: Path, **options) -> DataConfig:
    return DataConfig(name="stl10", root=str(root), val_fraction=0.1, plugin_options=options)


def as_bytes(data, x: torch.Tensor) -> np.ndarray:
    return np.round(data.to_unit_range(x).numpy() * 255).astype(np.uint8)


def test_images_labels_and_names_read_back_as_written(tmp_path, no_system_data):
    truth = write_stl10(tmp_path)
    data = load_dataset(stl10(tmp_path))
    assert data.image_shape == (3, 96, 96) and data.class_names == NAMES
    assert len(data.train_y) + len(data.val_y) == 30 and len(data.test_y) == 20
    assert data.source == str(tmp_path / "stl10_binary")
    # the test split is the file, in order: pixels (orientation included) and labels 1..10 as 0..9
    shown = as_bytes(data, data.test_x)
    np.testing.assert_array_equal(shown, truth["test_x"])
    assert (shown[:, 0, 0, :] == 255).all() and (shown[:, 0, 1:, 0] == 0).all()
    np.testing.assert_array_equal(data.test_y.numpy(), truth["test_y"].astype(np.int64) - 1)
    assert sorted(set(data.train_y.tolist()) | set(data.val_y.tolist())) == list(range(10))
    # normalised per channel with the training part's statistics
    assert torch.allclose(data.train_x.mean((0, 2, 3)), torch.zeros(3), atol=1e-3)
    # row-major in memory, although the file is column-major (strided images slow every layer, and break views)
    assert data.train_x.is_contiguous() and data.test_x.is_contiguous()


def test_unlabelled_split_is_served_lazily_and_normalised_with_the_training_statistics(tmp_path, no_system_data):
    truth = write_stl10(tmp_path)
    data = load_dataset(stl10(tmp_path))
    store = data.unlabelled_x
    assert isinstance(store, ImageStore) and len(store) == 50 and store.shape == (50, 3, 96, 96)
    assert data.summary()["unlabelled"] == 50 and data.summary()["train"] == len(data.train_y)
    mean, std = torch.tensor(data.mean).view(1, 3, 1, 1), torch.tensor(data.std).view(1, 3, 1, 1)
    want = (torch.from_numpy(truth["unlabelled"]).float() / 255 - mean) / std
    picks = torch.tensor([49, 0, 7, 7, 23])
    assert torch.allclose(store[picks], want[picks], atol=1e-6)
    assert torch.allclose(store[:], want, atol=1e-6) and store[3].shape == (3, 96, 96)
    assert torch.allclose(store.subset(np.array([2, 40]))[:], want[[2, 40]], atol=1e-6)
    np.testing.assert_array_equal(as_bytes(data, store[:5]), truth["unlabelled"][:5])


def test_the_unlabelled_option_limits_or_drops_the_split(tmp_path, no_system_data):
    write_stl10(tmp_path)
    assert len(load_dataset(stl10(tmp_path, unlabelled=20)).unlabelled_x) == 20
    assert len(load_dataset(stl10(tmp_path, unlabelled=10**6)).unlabelled_x) == 50  # at most what the file holds
    none = load_dataset(stl10(tmp_path, unlabelled=0))
    assert none.unlabelled_x is None and "unlabelled" not in none.summary()
    (tmp_path / "stl10_binary" / "unlabeled_X.bin").unlink()  # not needed without unlabelled images
    assert load_dataset(stl10(tmp_path, unlabelled=0)).unlabelled_x is None
    with pytest.raises(DataError, match="unlabeled_X.bin is missing") as info:
        load_dataset(stl10(tmp_path))
    assert "data.unlabelled=0" in info.value.fix


def test_found_directly_in_root_and_reported_by_status(tmp_path, no_system_data):
    write_stl10(tmp_path)
    assert dataset_status("stl10", str(tmp_path)) == f"found in {tmp_path / 'stl10_binary'}"
    assert dataset_status("stl10", str(tmp_path / "stl10_binary")) == f"found in {tmp_path / 'stl10_binary'}"
    assert load_dataset(stl10(tmp_path / "stl10_binary")).num_classes == 10
    assert dataset_status("stl10", str(tmp_path / "elsewhere")).startswith("not found (looked in")


@pytest.mark.parametrize("file, cut, fragment", [
    ("train_X.bin", 5, r"train_X.bin holds 829,435 bytes, not a whole number of 27,648-byte"),
    ("unlabeled_X.bin", 27_648 * 2 + 1, r"unlabeled_X.bin holds 1,327,103 bytes"),
    ("test_y.bin", 1, r"test_X.bin has 20 images but test_y.bin has 19 labels"),
])
def test_a_truncated_file_is_named_in_one_line(tmp_path, no_system_data, file, cut, fragment):
    write_stl10(tmp_path)
    path = tmp_path / "stl10_binary" / file
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(DataError, match=fragment) as info:
        load_dataset(stl10(tmp_path))
    assert "\n" not in info.value.one_line() and "stl10_binary.tar.gz" in info.value.fix


def test_missing_files_and_bad_labels(tmp_path, no_system_data):
    with pytest.raises(DataError, match=r"stl10: files not found \(looked for train_X.bin in") as info:
        load_dataset(stl10(tmp_path))
    assert str(tmp_path / "stl10_binary") in info.value.problem and "--set data.root=DIR" in info.value.fix
    write_stl10(tmp_path)
    (tmp_path / "stl10_binary" / "test_y.bin").unlink()
    with pytest.raises(DataError, match="holds only some files; missing test_y.bin"):
        load_dataset(stl10(tmp_path))
    (tmp_path / "stl10_binary" / "test_y.bin").write_bytes(np.zeros(20, np.uint8).tobytes())  # 0-based by mistake
    with pytest.raises(DataError, match=r"test_y.bin holds labels 0..0, not 1..10"):
        load_dataset(stl10(tmp_path))


def test_an_unknown_option_suggests_the_closest(tmp_path, no_system_data):
    write_stl10(tmp_path)
    cfg = config_from_dict({"data": {"name": "stl10", "root": str(tmp_path), "unlabeled": 5}})
    with pytest.raises(ConfigError, match="unknown config key 'data.unlabeled'") as info:
        load_dataset(cfg.data)
    assert info.value.fix == "did you mean 'data.unlabelled'?"
    with pytest.raises(ConfigError, match="data.unlabelled' must be >= 0"):
        load_dataset(stl10(tmp_path, unlabelled=-1))


def test_registered_and_listed_with_its_option(tmp_path, no_system_data, capsys):
    write_stl10(tmp_path)
    assert "stl10" in DATASETS.names()
    assert main(["datasets", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"status: found in {tmp_path / 'stl10_binary'}" in out and "data.unlabelled (int, default 100000)" in out
