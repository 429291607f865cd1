"""Bad inputs of `replearn similarity` (B360–B379): mismatched image sets, sizes and shapes, checked like the main
catalogue (tests/cli/test_bad_inputs.py): exit status 2, one line naming the problem and the fix, no traceback,
nothing on disk changed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import helpers
from replearn.rundir.io import RUN_FORMAT, RUN_MARKER
from replearn.data.streaming import image_fingerprints


def export(tmp: Path, name: str, n: int = 40, seed: int = 0, images_seed: int = 0, labels_seed: int = 0,
           fingerprints: bool = True, **arrays: np.ndarray) -> str:
    """A feature export as `replearn features` writes it (two layers of the test split), over n images."""
    rng = np.random.default_rng(seed)
    images = np.random.default_rng(images_seed).random((n, 1, 8, 8)).astype(np.float32)
    content = {"stage1.test": rng.normal(size=(n, 16)).astype(np.float32),
               "latent.test": rng.normal(size=(n, 4)).astype(np.float32),
               "labels.test": np.random.default_rng(labels_seed).integers(0, 3, n), "layers": np.array(["stage1", "latent"])}
    if fingerprints:
        content["images.test"] = image_fingerprints(images)
    content.update(arrays)
    path = tmp / f"{name}.npz"
    np.savez(path, **content)
    return str(path)


def run(tmp: Path, name: str, seeds: tuple[int, ...] = (0,), dataset: str = "digits", points_seed: int = 0) -> str:
    """A run directory with what `replearn similarity` reads: the marker, config, dataset.json and saved latents."""
    path = tmp / name
    (path / "artifacts").mkdir(parents=True)
    (path / RUN_MARKER).write_text(json.dumps({"format": RUN_FORMAT, "name": name}))
    (path / "config.yaml").write_text("name: x\n")
    (path / "dataset.json").write_text(json.dumps({"name": dataset, "test": 50}))
    for seed in seeds:
        points = np.sort(np.random.default_rng(points_seed).choice(50, 30, replace=False))
        np.savez(path / "artifacts" / f"cka_features_seed{seed}.npz", points=points, labels=points % 3,
                 supervised=np.random.default_rng(seed).normal(size=(30, 4)).astype(np.float32))
    return str(path)


def similarity(*args: str) -> list[str]:
    return ["similarity", *args]


CASES = [
    ("B360", "similarity: two exports of different test images", lambda t: similarity(export(t, "a"), export(t, "b", images_seed=1)), "the exports are of different test images (40 of 40 differ)"),
    ("B361", "similarity: two exports without image fingerprints whose labels differ", lambda t: similarity(export(t, "a", fingerprints=False), export(t, "b", fingerprints=False, labels_seed=1)), "their labels differ"),
    ("B362", "similarity: two exports of different numbers of images", lambda t: similarity(export(t, "a"), export(t, "b", n=30)), "different numbers of test images (40 vs 30)"),
    ("B363", "similarity: an export whose layer is not images × features", lambda t: similarity(export(t, "a"), export(t, "b", **{"stage1.test": np.zeros((40, 4, 2, 2))})), "layer 'stage1' has shape (40, 4, 2, 2), not images × features"),
    ("B364", "similarity: an export whose layers hold different numbers of images", lambda t: similarity(export(t, "a"), export(t, "b", **{"latent.test": np.zeros((39, 4))})), "its layers hold different numbers of images"),
    ("B365", "similarity: an export whose image fingerprints do not match its layers", lambda t: similarity(export(t, "a"), export(t, "b", **{"images.test": np.zeros(5, dtype=np.int64)})), "'images.test' has shape (5,), but the layers hold 40 images"),
    ("B366", "similarity: an .npz without any test-split layer", lambda t: similarity(export(t, "a"), _only_labels(t)), "holds no '<layer>.test' arrays"),
    ("B367", "similarity: a file that is not an .npz", lambda t: similarity(export(t, "a"), _text_file(t)), "is not a readable .npz file"),
    ("B368", "similarity: an export and a run directory", lambda t: similarity(export(t, "a"), run(t, "r")), "is a features input and"),
    ("B369", "similarity: runs on different datasets", lambda t: similarity(run(t, "r1"), run(t, "r2", dataset="fashion-mnist")), "the runs are on different image sets"),
    ("B370", "similarity: runs that saved latents of different test images", lambda t: similarity(run(t, "r1"), run(t, "r2", points_seed=1)), "saved latents of different test images"),
    ("B371", "similarity: runs with no seed in common", lambda t: similarity(run(t, "r1", seeds=(0,)), run(t, "r2", seeds=(1,))), "share no seed"),
    ("B372", "similarity: a folder that is neither an export nor a run", lambda t: similarity(export(t, "a"), str(_folder(t))), "is neither a feature export (.npz) nor a replearn run directory"),
    ("B373", "similarity: an input that does not exist", lambda t: similarity(export(t, "a"), str(t / "missing.npz")), "missing.npz' does not exist"),
    ("B374", "similarity: a measure that does not exist", lambda t: similarity(export(t, "a"), export(t, "b"), "--measures", "linear_cka,cosine"), "--measures names 'cosine', which is not a similarity measure"),
    ("B375", "similarity: fewer than 20 images", lambda t: similarity(export(t, "a"), export(t, "b"), "--images", "5"), "--images must be at least 20, got 5"),
    ("B376", "similarity: --out a folder that is not an earlier similarity report", lambda t: similarity(export(t, "a"), export(t, "b"), "--out", str(_folder(t))), "is a folder that is not an earlier similarity report"),
]


def _only_labels(tmp: Path) -> str:
    np.savez(tmp / "labels_only.npz", **{"labels.test": np.zeros(40, dtype=np.int64)})
    return str(tmp / "labels_only.npz")


def _text_file(tmp: Path) -> str:
    (tmp / "notes.npz").write_text("not a zip archive\n")
    return str(tmp / "notes.npz")


def _folder(tmp: Path) -> Path:
    (tmp / "folder").mkdir(exist_ok=True)
    (tmp / "folder" / "keep.txt").write_text("mine\n")
    return tmp / "folder"


@pytest.mark.parametrize("case_id, what, build, fragment", CASES, ids=[c[0] for c in CASES])
def test_similarity_bad_input_answers_in_one_line(case_id, what, build, fragment, tmp_path, capsys, monkeypatch):
    helpers.assert_refused_in_one_line(case_id, what, build, fragment, tmp_path, capsys, monkeypatch)


def test_similarity_case_ids_are_unique_in_order_and_in_range():
    ids = [case_id for case_id, *_ in CASES]
    assert ids == sorted(set(ids), key=lambda i: int(i[1:])) and all(360 <= int(i[1:]) <= 379 for i in ids)


def test_the_same_exports_are_accepted(tmp_path):
    """The fixtures above are refused for the reason each case names: unchanged, the two exports compare."""
    from replearn.cli.main import main
    assert main(similarity(export(tmp_path, "a"), export(tmp_path, "b", seed=1), "--out", str(tmp_path / "o"))) == 0
    assert (tmp_path / "o" / "similarity.html").is_file()
