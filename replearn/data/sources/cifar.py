"""CIFAR-10 and CIFAR-100 from the official binary or Python files (read by ``replearn.data.cifar_format``);
10% of train is validation by default."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from replearn.config.sections import DataConfig
from replearn.errors import DataError
from replearn.config.options import opt
from replearn.data.cifar_format import find_cifar, read_cifar
from replearn.data.dataset import Dataset, LabelledArrays
from replearn.data.readers import idx_search_dirs
from replearn.data.sources.base import DatasetSource, not_found, register_dataset


class CifarSource(DatasetSource):
    """CIFAR-``classes`` in either official layout, found in ``idx_search_dirs``."""

    classes: ClassVar[int] = 10

    def fine_labels(self) -> bool:
        return True

    def load(self, cfg: DataConfig) -> Dataset:
        name = self.name
        layout, folder = find_cifar(self.classes, idx_search_dirs(name, cfg.root))
        train_x, train_y, test_x, test_y, names = read_cifar(self.classes, folder, layout, fine=self.fine_labels())
        label_set = f" ({'fine' if self.fine_labels() else 'coarse'} labels)" if self.classes == 100 else ""
        return Dataset.from_arrays(name, LabelledArrays(train_x, train_y, test_x, test_y, names), cfg,
                                   source=f"{folder} ({layout} layout){label_set}", scale=255.0,
                                   layout="channels-first")

    def status(self, root: str | None) -> str:
        try:
            layout, folder = find_cifar(self.classes, idx_search_dirs(self.name, root))
        except DataError:
            return not_found(self.name, root)
        return f"found in {folder} ({layout} layout)"


@register_dataset("cifar10")
class Cifar10(CifarSource):
    description = ("32×32 colour images of 10 classes, 50k train / 10k test (official binary or Python files, "
                   "from data.root)")
    classes = 10


@dataclass
class Cifar100Options:
    cifar100_labels: str = opt("fine", "CIFAR-100's label set: the 100 fine classes or the 20 coarse superclasses",
                               choices=("fine", "coarse"))


@register_dataset("cifar100")
class Cifar100(CifarSource):
    description = "32×32 colour images of 100 fine (or 20 coarse: data.cifar100_labels) classes, 50k train / 10k test"
    classes = 100
    Options = Cifar100Options

    def fine_labels(self) -> bool:
        return self.options.cifar100_labels == "fine"
