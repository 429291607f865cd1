import gzip
import inspect
import struct

import numpy as np
import pytest

from replearn.config.sections import DataConfig, config_from_dict
from replearn.data import (Dataset, LabelledArrays, dataset_status, idx_search_dirs, load_dataset,
                           make_dataset_source, read_idx, stratified_split, stratified_subset)
from replearn.errors import ConfigError, DataError

from helpers import make_blob_images


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
    monkeypatch.setattr("replearn.data.readers.DEBIAN_DATASET_DIR", tmp_path / "debian")
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
        Dataset.from_arrays("t", LabelledArrays(x, y, np.zeros((4, 8, 8)), np.arange(4) % 2, ["a", "b"]), DataConfig(),
                            "test")


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


def _npz_dataset(tmp_path, name, x, tx, **cfg):
    _, y = make_blob_images(len(x), seed=1)
    _, ty = make_blob_images(len(tx), seed=2)
    np.savez(tmp_path / name, train_x=x, train_y=y, test_x=tx, test_y=ty)
    return load_dataset(DataConfig(name="npz", root=str(tmp_path / name), val_fraction=0.2, **cfg))


@pytest.mark.parametrize("scale, dtype", [(1.0, np.float32), (1e30, np.float32), (1e300, np.float64),
                                          (-1.0, np.float32)])
def test_pixel_range_is_detected_so_any_scale_gives_the_same_images(tmp_path, scale, dtype):
    """uint8, float 0–255, and the same images scaled far beyond float32's range (or negated) all become the
    same standardised tensors; none may silently become white images or an infinite standard deviation."""
    x, _ = make_blob_images(60, seed=1)
    tx, _ = make_blob_images(20, seed=2)
    reference = _npz_dataset(tmp_path, "u8.npz", x, tx)
    as_255 = _npz_dataset(tmp_path, "f255.npz", x.astype(np.float32), tx.astype(np.float32))
    assert as_255.pixel_range == (0.0, 255.0)
    for split in ("train_x", "val_x", "test_x"):
        assert torch_close(getattr(as_255, split), getattr(reference, split))
    scaled = _npz_dataset(tmp_path, "scaled.npz", x.astype(dtype) * scale, tx.astype(dtype) * scale)
    assert np.isfinite(scaled.std).all() and min(scaled.std) > 0
    sign = 1.0 if scale > 0 else -1.0
    for split in ("train_x", "val_x", "test_x"):
        assert torch_close(getattr(scaled, split), sign * getattr(reference, split), atol=1e-4)


def torch_close(a, b, atol=1e-5) -> bool:
    import torch

    return bool(torch.allclose(a, b, atol=atol))


def test_channels_last_colour_images_are_read_as_channels_last(tmp_path):
    rng = np.random.RandomState(0)
    x = rng.randint(0, 256, (60, 3, 10, 12)).astype(np.uint8)
    tx = rng.randint(0, 256, (20, 3, 10, 12)).astype(np.uint8)
    first = _npz_dataset(tmp_path, "nchw.npz", x, tx)
    last = _npz_dataset(tmp_path, "nhwc.npz", x.transpose(0, 2, 3, 1), tx.transpose(0, 2, 3, 1))
    assert first.image_shape == last.image_shape == (3, 10, 12)
    assert torch_close(first.train_x, last.train_x) and torch_close(first.test_x, last.test_x)
    square = rng.randint(0, 256, (60, 3, 8, 3)).astype(np.uint8)  # both axes could hold the channels
    with pytest.raises(DataError, match="cannot tell which axis"):
        _npz_dataset(tmp_path, "ambiguous.npz", square, square[:20])
    told = _npz_dataset(tmp_path, "told.npz", square, square[:20], layout="channels-last")
    assert told.image_shape == (3, 3, 8)


USER_SOURCE = '''
from dataclasses import dataclass

import numpy as np

from replearn.data import Dataset, DatasetSource, LabelledArrays
from replearn.config.options import opt


@dataclass
class BlobOptions:
    size: int = opt(8, "image side in pixels", min=4, max=32)
    brightness: float = opt(1.0, "pixel scale", gt=0.0)


class BlobSource(DatasetSource):
    description = "blobs made on the fly"
    Options = BlobOptions

    def load(self, cfg):
        rng = np.random.RandomState(0)
        n, size = 60, self.options.size
        y = np.arange(n) % 3
        x = rng.rand(n, size, size).astype(np.float32) * self.options.brightness
        x[np.arange(n), y, 0] += 2.0
        unlabelled = rng.rand(10, size, size).astype(np.float32)
        arrays = LabelledArrays(x[:40], y[:40], x[40:], y[40:], ["a", "b", "c"], unlabelled_x=unlabelled)
        return Dataset.from_arrays("blobs", arrays, cfg, source="made by BlobSource", scale=3.0)

    def status(self, root):
        return "made on the fly"


NOT_A_SOURCE = 42
'''


@pytest.fixture
def user_source(tmp_path, monkeypatch):
    (tmp_path / "userdata").mkdir()
    (tmp_path / "userdata" / "__init__.py").write_text("")
    (tmp_path / "userdata" / "blobs.py").write_text(USER_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "userdata.blobs:BlobSource"


def test_a_users_dataset_by_import_path_loads_with_its_options_checked(user_source):
    cfg = config_from_dict({"data": {"name": user_source, "size": 12, "val_fraction": 0.25}}).data
    source = make_dataset_source(cfg)
    assert source.options.size == 12 and source.options.brightness == 1.0
    data = source.load(cfg)
    assert data.image_shape == (1, 12, 12) and data.class_names == ["a", "b", "c"]
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (30, 10, 20)
    assert load_dataset(cfg).summary()["unlabelled"] == 10
    assert dataset_status(user_source) == "made on the fly"
    with pytest.raises(ConfigError, match=r"data.size' must be <= 32"):
        load_dataset(DataConfig(name=user_source, plugin_options={"size": 64}))
    with pytest.raises(ConfigError, match="did you mean 'data.brightness'"):
        load_dataset(DataConfig(name=user_source, plugin_options={"brightnes": 2.0}))


def test_an_import_path_to_something_else_is_refused(user_source):
    with pytest.raises(ConfigError, match="names a int, not a DatasetSource") as info:
        load_dataset(DataConfig(name="userdata.blobs:NOT_A_SOURCE"))
    assert "\n" not in info.value.one_line()
    with pytest.raises(ConfigError, match="has no attribute"):
        load_dataset(DataConfig(name="userdata.blobs:Missing"))


def test_built_in_options_and_unknown_keys():
    with pytest.raises(ConfigError, match="did you mean 'data.val_fraction'"):
        load_dataset(DataConfig(name="digits", plugin_options={"val_fractoin": 0.2}))
    with pytest.raises(ConfigError, match="unknown config key 'data.image_size'"):
        load_dataset(DataConfig(name="digits", plugin_options={"image_size": 32}))  # a folder option, not digits'
    with pytest.raises(ConfigError, match="data.cifar100_labels' has invalid value 'medium'"):
        load_dataset(DataConfig(name="cifar100", plugin_options={"cifar100_labels": "medium"}))


def test_unlabelled_split_is_normalised_with_the_training_statistics_and_only_then_summarised():
    rng = np.random.RandomState(0)
    x, y = make_blob_images(60, seed=1)
    tx, ty = make_blob_images(20, seed=2)
    extra = rng.randint(0, 256, (7, 8, 8)).astype(np.uint8)
    plain = Dataset.from_arrays("t", LabelledArrays(x, y, tx, ty, ["a", "b", "c"]), DataConfig(), "test")
    data = Dataset.from_arrays("t", LabelledArrays(x, y, tx, ty, ["a", "b", "c"], unlabelled_x=extra),
                               DataConfig(), "test")
    assert "unlabelled" not in plain.summary() and plain.unlabelled_x is None
    assert data.summary()["unlabelled"] == 7 and data.mean == plain.mean and data.std == plain.std
    want = (extra[:, None].astype(np.float32) / 255 - data.mean[0]) / data.std[0]
    np.testing.assert_allclose(data.unlabelled_x.numpy(), want, rtol=1e-6, atol=1e-6)
    with pytest.raises(DataError, match="but unlabelled images are"):
        Dataset.from_arrays("t", LabelledArrays(x, y, tx, ty, ["a", "b", "c"], unlabelled_x=extra[:, :4]),
                            DataConfig(), "test")


def test_no_public_dataset_function_takes_more_than_eight_parameters():
    for fn in (Dataset.from_arrays, Dataset.streamed_from):
        assert len(inspect.signature(fn).parameters) <= 8, fn
