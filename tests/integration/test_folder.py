"""The `folder` dataset (image-folder trees, decode cache) and streaming from disk (ImageStore)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from replearn.config.sections import DataConfig
from replearn.data import ImageStore, analysis_view, load_dataset
from replearn.data.imagefolder import cache as folder_cache
from replearn.data.imagefolder import decode as folder_decode
from replearn.errors import DataError


def write_tree(root: Path, images: np.ndarray, labels: np.ndarray, names=("cat", "dog", "eel")) -> None:
    """images (N×H×W grey or N×H×W×3) as root/<name of label>/<index>.png."""
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:05d}.png")


def grey_images(n: int, size: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    images = rng.integers(0, 90, (n, size, size), dtype=np.uint8) + (labels * 60)[:, None, None].astype(np.uint8)
    return images, labels


def cfg_for(root: Path, tmp_path: Path, val_fraction: float = 0.1, **options) -> DataConfig:
    """A folder dataset's config: the folder source's own options (image_size, …) go in plugin_options."""
    return DataConfig(name="folder", root=str(root), val_fraction=val_fraction,
                      plugin_options={"cache_dir": str(tmp_path / "cache"), **options})


def test_train_test_tree_loads_the_written_pixels_with_sorted_class_names(tmp_path):
    train_x, train_y = grey_images(60, seed=1)
    test_x, test_y = grey_images(30, seed=2)
    write_tree(tmp_path / "tree" / "train", train_x, train_y)
    write_tree(tmp_path / "tree" / "test", test_x, test_y)
    (tmp_path / "tree" / "train" / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "tree" / "train" / "cat" / ".hidden.png").write_bytes(b"junk")
    data = load_dataset(cfg_for(tmp_path / "tree", tmp_path, val_fraction=0.2))
    assert data.class_names == ["cat", "dog", "eel"] and data.image_shape == (1, 8, 8)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (48, 12, 30)
    # the test split is every test file, in file order (class by class); pixels are the file's bytes
    order = np.argsort(test_y, kind="stable")
    shown = (data.to_unit_range(data.test_x) * 255).round().squeeze(1).numpy().astype(np.uint8)
    np.testing.assert_array_equal(shown, test_x[order])
    np.testing.assert_array_equal(data.test_y.numpy(), test_y[order])


def test_flat_tree_holds_out_a_stratified_test_fraction(tmp_path):
    x, y = grey_images(90)
    write_tree(tmp_path / "flat", x, y)
    data = load_dataset(cfg_for(tmp_path / "flat", tmp_path, test_fraction=0.2))
    assert len(data.test_y) == 18 and np.bincount(data.test_y.numpy()).tolist() == [6, 6, 6]
    assert len(data.train_y) + len(data.val_y) == 72


def test_colour_images_get_per_channel_statistics_and_grey_files_become_rgb(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "colour"
    for i in range(30):
        rgb = np.stack([rng.integers(0, 50, (6, 6)), rng.integers(100, 150, (6, 6)), rng.integers(200, 256, (6, 6))], -1)
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb.astype(np.uint8)).save(root / f"c{i % 2}" / f"{i}.png")
    Image.fromarray(np.full((6, 6), 128, np.uint8)).save(root / "c0" / "grey.png")
    data = load_dataset(cfg_for(root, tmp_path))
    assert data.image_shape == (3, 6, 6)
    assert data.mean[0] < 0.2 < data.mean[1] < 0.6 < data.mean[2]  # each channel normalised by its own mean
    assert torch.allclose(data.train_x.mean((0, 2, 3)), torch.zeros(3), atol=0.15)
    restored = data.to_unit_range(data.train_x)
    assert 0 <= restored.min() and restored.max() <= 1 and restored[:, 2].mean() > restored[:, 0].mean() + 0.5


def test_resize_and_mixed_sizes(tmp_path):
    root = tmp_path / "mixed"
    for i in range(12):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        size = (10, 6) if i == 5 else (8, 8)
        Image.fromarray(np.full(size[::-1], 40 * (i % 2) + 20, np.uint8)).save(root / f"c{i % 2}" / f"{i}.png")
    with pytest.raises(DataError, match=r"images differ in size: .* is 8×8 but .*5\.png' is 10×6") as err:
        load_dataset(cfg_for(root, tmp_path))
    assert "data.image_size" in err.value.fix
    data = load_dataset(cfg_for(root, tmp_path, image_size=4, test_fraction=0.25))
    assert data.image_shape == (1, 4, 4)


def test_cache_is_reused_and_keyed_by_content(tmp_path, monkeypatch):
    x, y = grey_images(30)
    write_tree(tmp_path / "t", x, y)
    cfg = cfg_for(tmp_path / "t", tmp_path)
    first = load_dataset(cfg)
    assert len(list((tmp_path / "cache").glob("folder-*/meta.json"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(folder_decode, "decode", no_decoding)
    monkeypatch.setattr(folder_decode, "scan_headers", no_decoding)
    second = load_dataset(cfg)  # from the cache: neither headers nor pixels are decoded
    assert torch.equal(first.train_x, second.train_x)
    path = tmp_path / "t" / "dog" / "00001.png"
    Image.fromarray(255 - x[1]).save(path)  # same name, new content: a new cache, so decoding is needed
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset(cfg)


def test_a_corrupt_file_is_named_and_can_be_skipped(tmp_path):
    x, y = grey_images(2100)  # more than 8 chunks: decoded by worker processes
    write_tree(tmp_path / "many", x, y)
    bad = tmp_path / "many" / "eel" / "01001.png"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(DataError, match=r"1 of 2,100 image files cannot be decoded: '.*01001\.png'") as err:
        load_dataset(cfg_for(tmp_path / "many", tmp_path))
    assert "data.skip_bad_images=true" in err.value.fix
    assert not (tmp_path / "cache").exists()  # nothing half-made is left, not even the cache folder
    data = load_dataset(cfg_for(tmp_path / "many", tmp_path, skip_bad_images=True))
    assert len(data.train_y) + len(data.val_y) + len(data.test_y) == 2099
    assert data.summary()["skipped_files"][0].startswith("eel/01001.png")


def test_an_empty_class_folder_is_refused(tmp_path):
    x, y = grey_images(12)
    write_tree(tmp_path / "t", x, y)
    (tmp_path / "t" / "fox").mkdir()
    with pytest.raises(DataError, match=r"class folder '.*fox' holds no images"):
        load_dataset(cfg_for(tmp_path / "t", tmp_path))


def test_streamed_splits_equal_the_in_memory_ones(tmp_path):
    x, y = grey_images(300, size=40)  # 1.8 MiB as normalised float32: over a 1 MiB budget
    write_tree(tmp_path / "t", x, y)
    memory = load_dataset(cfg_for(tmp_path / "t", tmp_path, test_fraction=0.2))
    streamed = load_dataset(cfg_for(tmp_path / "t", tmp_path, test_fraction=0.2, memory_budget_mb=1))
    assert streamed.streamed and not memory.streamed
    assert streamed.mean == memory.mean and streamed.std == memory.std
    for split in ("train", "val", "test"):
        a, b = getattr(memory, f"{split}_x"), getattr(streamed, f"{split}_x")
        assert b.shape == a.shape and torch.equal(b[:], a)
        assert torch.equal(getattr(memory, f"{split}_y"), getattr(streamed, f"{split}_y"))
    picks = torch.tensor([17, 3, 3, 150])
    assert torch.equal(streamed.train_x[picks], memory.train_x[picks])
    view = analysis_view(streamed, 0, 0)  # streamed data are analysed on a bounded subset (here: all 240)
    assert len(view.train_y) == len(streamed.train_y)
    small = analysis_view(streamed, 30, 0)
    assert len(small.test_y) == 30 and np.bincount(small.test_y.numpy()).tolist() == [10, 10, 10]
    assert torch.equal(small.test_x[:], memory.limited(30, 0).test_x)


def test_store_reads_rows_in_any_order_with_repeats(tmp_path):
    images = np.arange(20 * 2 * 3 * 3, dtype=np.int64).reshape(20, 2, 3, 3).astype(np.uint8)
    path = tmp_path / "x.npy"
    np.save(path, images)
    store = ImageStore(path, np.array([7, 3, 4, 5, 19, 0]), mean=(0.5, 0.25), std=(0.5, 2.0))
    want = torch.from_numpy(images[[5, 19, 19, 7, 3]]).float() / 255
    want = (want - torch.tensor([0.5, 0.25]).view(1, 2, 1, 1)) / torch.tensor([0.5, 2.0]).view(1, 2, 1, 1)
    assert torch.equal(store[torch.tensor([3, 4, 4, 0, 1])], want)
    assert store.shape == (6, 2, 3, 3) and len(store[1:4]) == 3 and store[2].shape == (2, 3, 3)
    assert torch.equal(store.subset(np.array([4]))[:], want[1:2])


# ---------------------------------------------------------------- the decode cache is checked when read back


def _the_cache(tmp_path: Path) -> Path:
    (cache,) = (tmp_path / "cache").glob("folder-*")
    return cache


def _zero_pixels(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[folder_cache.HEADER_BYTES:] = bytes(len(data) - folder_cache.HEADER_BYTES)
    path.write_bytes(bytes(data))


def _in_place_of_the_cache(cache: Path) -> None:
    import shutil

    shutil.rmtree(cache)
    cache.write_text("junk")


DAMAGE = {
    "an array of another shape": lambda c: np.save(c / "all_x.npy", np.zeros((30, 1, 4, 4), np.uint8)),
    "float pixels": lambda c: np.save(c / "all_x.npy", np.load(c / "all_x.npy").astype(np.float32) / 255),
    "an array cut short": lambda c: (c / "all_x.npy").write_bytes((c / "all_x.npy").read_bytes()[:-64]),
    "labels of another length": lambda c: np.save(c / "all_y.npy", np.load(c / "all_y.npy")[:-1]),
    "labels rewritten": lambda c: np.save(c / "all_y.npy", np.zeros_like(np.load(c / "all_y.npy"))),
    "a missing array": lambda c: (c / "all_x.npy").unlink(),
    "zeroed pixels": lambda c: _zero_pixels(c / "all_x.npy"),
    "malformed meta.json": lambda c: (c / "meta.json").write_text("{'not': json"),
    "meta.json that is a list": lambda c: (c / "meta.json").write_text("[1, 2]"),
    "meta.json with a wrong shape": lambda c: (c / "meta.json").write_text(
        (c / "meta.json").read_text().replace('"shape": [\n    30', '"shape": [\n    31')),
    "a file in place of the cache folder": _in_place_of_the_cache,
}


def _no_decoding(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(folder_decode, "decode", refuse)
    monkeypatch.setattr(folder_decode, "scan_headers", refuse)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_cache_is_detected_rebuilt_and_then_reused(damage, tmp_path, capsys, monkeypatch):
    """Damaged caches once gave tracebacks, or (float or zeroed pixels) trained on garbage with exit 0 and
    were never repaired. Each fails its check against meta.json, is decoded again (one log line), and the
    repaired cache is then read without decoding."""
    monkeypatch.setattr("replearn.runtime.log._quiet", False)  # another test's --quiet may still be in force
    x, y = grey_images(30)
    write_tree(tmp_path / "t", x, y)
    cfg = cfg_for(tmp_path / "t", tmp_path)
    first = load_dataset(cfg)
    DAMAGE[damage](_the_cache(tmp_path))
    capsys.readouterr()
    again = load_dataset(cfg)
    err = capsys.readouterr().err
    assert err.count("failed its check (") == 1 and "decoding the images again" in err, err
    assert torch.equal(again.train_x, first.train_x) and torch.equal(again.test_y, first.test_y)
    assert not list((tmp_path / "cache").glob("*.stale-*")) and not list((tmp_path / "cache").glob("*.partial-*"))
    _no_decoding(monkeypatch)
    assert torch.equal(load_dataset(cfg).test_x, first.test_x)
    assert "failed its check" not in capsys.readouterr().err


def test_a_zeroed_streamed_cache_is_caught_by_its_sampled_checksum(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("replearn.runtime.log._quiet", False)
    x, y = grey_images(300, size=40)  # streamed under a 1 MiB budget: only sampled blocks are checked
    write_tree(tmp_path / "t", x, y)
    cfg = cfg_for(tmp_path / "t", tmp_path, memory_budget_mb=1)
    first = load_dataset(cfg)
    assert first.streamed
    _zero_pixels(_the_cache(tmp_path) / "all_x.npy")
    capsys.readouterr()
    again = load_dataset(cfg)
    assert "all_x.npy has other bytes than were written (sampled checksum)" in capsys.readouterr().err
    assert torch.equal(again.train_x[:], first.train_x[:])


def test_meta_json_records_what_each_array_holds(tmp_path):
    import json
    import zlib

    x, y = grey_images(30)
    write_tree(tmp_path / "t", x, y)
    load_dataset(cfg_for(tmp_path / "t", tmp_path))
    cache = _the_cache(tmp_path)
    meta = json.loads((cache / "meta.json").read_text())
    record = meta["arrays"]["all_x.npy"]
    pixels = np.load(cache / "all_x.npy")
    assert record["shape"] == [30, 1, 8, 8] and record["dtype"] == "uint8" and record["bytes"] == pixels.nbytes
    assert record["crc32"] == zlib.crc32(pixels.tobytes())
    assert meta["arrays"]["all_y.npy"]["crc32"] == zlib.crc32(np.load(cache / "all_y.npy").tobytes())


def test_a_failed_cache_write_leaves_nothing_behind(tmp_path, monkeypatch):
    import errno

    x, y = grey_images(30)
    write_tree(tmp_path / "t", x, y)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(folder_decode, "array_record", disk_full)
    with pytest.raises(DataError, match=r"could not be written in .* \(No space left on device\); nothing was kept"):
        load_dataset(cfg_for(tmp_path / "t", tmp_path))
    assert not (tmp_path / "cache").exists()


def test_data_too_large_for_memory_are_refused_before_anything_is_written(tmp_path, monkeypatch):
    """600 images at 1024 px once ended in a MemoryError traceback after decoding, leaving the cache."""
    x, y = grey_images(30)
    write_tree(tmp_path / "t", x, y)
    monkeypatch.setattr(folder_cache, "available_memory", lambda: 256 << 20)
    with pytest.raises(DataError, match=r"30 images of 1×1024×1024 would take 120.0 MiB as normalised float32 "
                                        r"\(about 480.0 MiB while loading\), more than the 256.0 MiB") as err:
        load_dataset(cfg_for(tmp_path / "t", tmp_path, image_size=1024))
    assert "data.memory_budget_mb=" in err.value.fix
    assert not (tmp_path / "cache").exists()
    data = load_dataset(cfg_for(tmp_path / "t", tmp_path, image_size=1024, memory_budget_mb=64))
    assert data.streamed and data.image_shape == (1, 1024, 1024)  # streamed, the same data fit
