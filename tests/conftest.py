"""Shared fixtures: tiny synthetic datasets and configs, and the Fashion-MNIST skip marker."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from replearn.config.sections import config_from_dict
from replearn.data import DEBIAN_DATASET_DIR

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = Path(__file__).resolve().parent / "data"

FMNIST_DIR = DEBIAN_DATASET_DIR / "fashion-mnist"
needs_fashion_mnist = pytest.mark.skipif(
    not (FMNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


def make_blob_images(n: int, size: int = 8, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is a bright square in one of ``classes`` positions, plus noise (uint8)."""
    rng = np.random.RandomState(seed)
    y = np.arange(n) % classes
    x = rng.randint(0, 60, size=(n, size, size)).astype(np.uint8)
    half = size // 2
    corners = [(0, 0), (0, half), (half, 0), (half, half)]
    for i, label in enumerate(y):
        r, c = corners[label % 4]
        x[i, r:r + half, c:c + half] += 150
    return x, y


@pytest.fixture
def blob_npz(tmp_path: Path) -> Path:
    """An .npz dataset (96 train / 30 test, 8×8, 3 classes) readable by the 'npz' loader."""
    train_x, train_y = make_blob_images(96, seed=1)
    test_x, test_y = make_blob_images(30, seed=2)
    path = tmp_path / "blobs.npz"
    np.savez(path, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)
    return path


INTERPRETABILITY = ["attributions", "sanity", "faithfulness", "invariance", "robustness", "units"]


def tiny_config(npz: Path, **train: object) -> dict:
    """A raw config dict for a seconds-long run on the blob dataset. The interpretability analyses are left
    out (each has its own end-to-end test, which clears ``analysis.skip``): they would add seconds of
    figure drawing to every one of the many tiny runs."""
    return {"name": "tiny",
            "data": {"name": "npz", "root": str(npz), "val_fraction": 0.2},
            "model": {"channels": [4, 8], "latent_dim": 6},
            "train": {"epochs": 2, "batch_size": 16, "probe_train_images": 40, **train},
            "analysis": {"max_stage_features": 32, "projection_points": 0, "reconstructions": 4,
                         "label_counts": [1, 5], "label_draws": 2, "analysis_points": 60,
                         "probe_l2_grid": [1e-3, 1e-1], "knn_k_grid": [3],
                         "figure_formats": ["png"],  # SVG/PDF copies are tested once (test_pipeline)
                         "skip": list(INTERPRETABILITY)}}


@pytest.fixture
def tiny_cfg(blob_npz: Path):
    return config_from_dict(tiny_config(blob_npz))
