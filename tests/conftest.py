"""Shared fixtures: tiny synthetic datasets and configs, and the Fashion-MNIST skip marker."""

from __future__ import annotations

import compileall
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from replearn.config.sections import config_from_dict
from helpers import make_blob_images, tiny_config

torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_configure(config: pytest.Config) -> None:
    """Compile replearn's modules to bytecode once, before any worker starts: the tests start about 150
    processes that import replearn, and where the environment sets PYTHONDONTWRITEBYTECODE (as CI's does) each
    would otherwise compile every module from source again (a quarter of a second each)."""
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist), not each worker
        compileall.compile_dir(Path(__file__).resolve().parents[1] / "replearn", quiet=1)


@pytest.fixture
def blob_npz(tmp_path: Path) -> Path:
    """An .npz dataset (96 train / 30 test, 8×8, 3 classes) readable by the 'npz' loader."""
    train_x, train_y = make_blob_images(96, seed=1)
    test_x, test_y = make_blob_images(30, seed=2)
    path = tmp_path / "blobs.npz"
    np.savez(path, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)
    return path


@pytest.fixture
def tiny_cfg(blob_npz: Path):
    return config_from_dict(tiny_config(blob_npz))


# Files in the order pytest-xdist hands them to its workers (--dist loadfile gives each file to one worker, in
# collection order): the longest first, so that no worker is left with a long file while the other sits idle at
# the end (longest-processing-time-first scheduling).
LONGEST_FIRST = (
    "integration/test_docs.py",
    "reliability/test_reliability.py",
    "integration/test_pipeline.py",
    "integration/test_sweep.py",
    "integration/test_distributed_faults.py",
    "integration/test_distributed.py",
)
DIRECTORY_ORDER = ("integration", "reliability", "cli", "contract", "unit")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def weight(item: pytest.Item) -> tuple[int, int]:
        path = Path(str(item.fspath)).as_posix()
        named = next((i for i, suffix in enumerate(LONGEST_FIRST) if path.endswith(suffix)), len(LONGEST_FIRST))
        folder = next((i for i, d in enumerate(DIRECTORY_ORDER) if f"/tests/{d}/" in path), len(DIRECTORY_ORDER))
        return named, folder

    items.sort(key=weight)  # stable: the tests of one file keep their order
