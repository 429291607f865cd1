"""MNIST and Fashion-MNIST: the four IDX files each is published as (optionally gzipped)."""
from __future__ import annotations

from typing import ClassVar

from replearn.config.sections import DataConfig
from replearn.errors import DataError
from replearn.data.dataset import Dataset, LabelledArrays
from replearn.data.readers import find_idx, read_idx
from replearn.data.sources.base import DatasetSource, not_found, register_dataset

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


class IdxSource(DatasetSource):
    """A dataset of four IDX files (train/t10k images and labels) found by ``idx_search_dirs``."""

    class_names: ClassVar[list[str]] = []
    hint: ClassVar[str] = ""  # how to get the files, when they are not found

    def load(self, cfg: DataConfig) -> Dataset:
        return load_idx_dataset(self.name, cfg, self.class_names, self.hint)

    def status(self, root: str | None) -> str:
        try:
            files = find_idx(self.name, root, "")
        except DataError:
            return not_found(self.name, root)
        return f"found in {files['train_x'].parent}"


def load_idx_dataset(name: str, cfg: DataConfig, class_names: list[str], hint: str) -> Dataset:
    files = find_idx(name, cfg.root, hint)
    arrays = {key: read_idx(path) for key, path in files.items()}
    source = str(files["train_x"].parent)
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.ndim != 3:
            raise DataError(f"{files[f'{split}_x']} holds rank-{x.ndim} data, not images",
                            "check that the images and labels files were not swapped")
        if len(x) != len(y):
            raise DataError(f"{name}: {files[f'{split}_x'].name} has {len(x)} images but "
                            f"{files[f'{split}_y'].name} has {len(y)} labels",
                            "re-download both files so that they match")
    labelled = LabelledArrays(arrays["train_x"], arrays["train_y"], arrays["test_x"], arrays["test_y"], class_names)
    return Dataset.from_arrays(name, labelled, cfg, source=source, scale=255.0)


@register_dataset("fashion-mnist")
class FashionMnist(IdxSource):
    description = "Zalando's 28×28 clothing images, 60k train / 10k test (IDX files)"
    class_names = FASHION_CLASSES
    hint = ("run `apt-get install dataset-fashion-mnist`, or download the four IDX files from "
            "github.com/zalandoresearch/fashion-mnist and pass --set data.root=DIR")


@register_dataset("mnist")
class Mnist(IdxSource):
    description = "28×28 handwritten digits, 60k train / 10k test (IDX files)"
    class_names = [str(d) for d in range(10)]
    hint = ("download the four MNIST IDX files (e.g. from a mirror of yann.lecun.com/exdb/mnist) "
            "and pass --set data.root=DIR or set REPLEARN_DATA=DIR")
