"""Helpers every test file may import (`from helpers import …`): paths, tiny synthetic datasets and configs, and the
bad-input harness. Fixtures stay in conftest.py."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from replearn.cli.main import main
from replearn.data import DEBIAN_DATASET_DIR

REPO_ROOT = Path(__file__).resolve().parents[1]


TEST_DATA = Path(__file__).resolve().parent / "data"


FMNIST_DIR = DEBIAN_DATASET_DIR / "fashion-mnist"


needs_fashion_mnist = pytest.mark.skipif(
    not (FMNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)


def make_blob_images(n: int, size: int = 8, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is a bright square in one of ``classes`` positions, plus noise (uint8)."""
    rng = np.random.RandomState(seed)
    y = np.arange(n) % classes
    x = rng.randint(0, 60, size=(n, size, size)).astype(np.uint8)
    half = size // 2
    corners = [(0, 0), (0, half), (half, 0), (half, half)]
    for i, label in enumerate(y):
        r, c = corners[label % 4]
        x[i, r : r + half, c : c + half] += 150
    return x, y


INTERPRETABILITY = ["attributions", "sanity", "faithfulness", "invariance", "robustness", "units"]


def tiny_config(npz: Path, **train: object) -> dict:
    """A raw config dict for a seconds-long run on the blob dataset. The interpretability analyses are left
    out (each has its own end-to-end test, which clears ``analysis.skip``): they would add seconds of
    figure drawing to every one of the many tiny runs."""
    return {
        "name": "tiny",
        "data": {"name": "npz", "root": str(npz), "val_fraction": 0.2},
        "model": {"channels": [4, 8], "latent_dim": 6},
        # one training process: whether auto starts a second one depends on the machine's measured speed, and
        # tests that count training states or log lines must not depend on that (test_second_process sets it)
        "train": {"epochs": 2, "batch_size": 16, "probe_train_images": 40, "second_process": "never", **train},
        "analysis": {
            "max_stage_features": 32,
            "projection_points": 0,
            "reconstructions": 4,
            "label_counts": [1, 5],
            "label_draws": 2,
            "analysis_points": 60,
            "probe_l2_grid": [1e-3, 1e-1],
            "knn_k_grid": [3],
            "figure_formats": ["png"],  # SVG/PDF copies are tested once (test_pipeline)
            "skip": list(INTERPRETABILITY),
        },
    }


def shared_run(tmp_path_factory: pytest.TempPathFactory, name: str, make) -> Path:
    """A run made once per test session and shared by every pytest-xdist worker: the first test to ask calls
    ``make(out)`` while the others wait on a file lock. Its users only read it."""
    from filelock import FileLock  # a dependency of torch

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared-runs"
    root.mkdir(parents=True, exist_ok=True)
    out, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            if out.exists():  # an earlier attempt that failed half-way
                import shutil

                shutil.rmtree(out)
            make(out)
            done.touch()
    return out


def default_digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default digits run (``replearn run --threads 1``: every default analysis, figures in every format),
    made once per session: the reference-metrics and browser tests both read it."""
    import subprocess

    def make(out: Path) -> None:
        subprocess.run(
            [sys.executable, "-m", "replearn.cli", "run", "--threads", "1", "--out", str(out), "--quiet"],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=600,
        )

    return shared_run(tmp_path_factory, "digits-default", make)


def interpretability_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch blob run with every analysis, the interpretability ones included (units with 8 optimisation
    steps, two corruption severities), made once per session in a fresh process: the attribution and
    interpretability tests read it, and the dependency test reads the top-level modules that process imported
    (``interpretability.modules`` beside it)."""
    import subprocess

    def make(out: Path) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        train_x, train_y = make_blob_images(120, seed=1)
        test_x, test_y = make_blob_images(60, seed=2)
        npz = out.parent / "interpretability-blobs.npz"
        np.savez(npz, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)
        raw = tiny_config(npz, epochs=1)
        raw["analysis"]["skip"] = []
        raw["analyses"] = {"units": {"steps": 8}, "robustness": {"severities": [1, 3]}}
        config = out.parent / "interpretability.yaml"
        config.write_text(yaml.safe_dump(raw))
        script = (
            "import sys; from replearn.cli.main import main; "
            f"code = main(['run', {str(config)!r}, '--out', {str(out)!r}, '--quiet']); "
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules}))); sys.exit(code)"
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        (out.parent / "interpretability.modules").write_text(done.stdout.strip().splitlines()[-1])

    return shared_run(tmp_path_factory, "interpretability", make)


def write_yaml(tmp: Path, raw: object, name: str = "exp.yaml") -> str:
    path = tmp / name
    path.write_text(yaml.safe_dump(raw) if not isinstance(raw, str) else raw)
    return str(path)


def blobs_npz(tmp: Path, train_x=None, train_y=None, test_x=None, test_y=None, name="blobs.npz") -> Path:
    x, y = make_blob_images(96, seed=1)
    tx, ty = make_blob_images(30, seed=2)
    arrays = {
        "train_x": x if train_x is None else train_x,
        "train_y": y if train_y is None else train_y,
        "test_x": tx if test_x is None else test_x,
        "test_y": ty if test_y is None else test_y,
    }
    path = tmp / name
    np.savez(path, **arrays)
    return path


def tiny(tmp: Path, **sections) -> dict:
    raw = tiny_config(blobs_npz(tmp))
    raw["analysis"]["label_counts"] = [1, 5]
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def idx_dir(tmp: Path, n_train=40, n_labels=None) -> Path:
    root = tmp / "idx"
    root.mkdir()
    x, y = make_blob_images(n_train, classes=4)
    write_idx(root / "train-images-idx3-ubyte.gz", x)
    write_idx(root / "train-labels-idx1-ubyte.gz", y[:n_labels] if n_labels else y)
    write_idx(root / "t10k-images-idx3-ubyte.gz", x[:20])
    write_idx(root / "t10k-labels-idx1-ubyte.gz", y[:20])
    return root


def idx_run(tmp: Path, root: Path) -> list[str]:
    raw = tiny(tmp, data={"name": "mnist", "root": str(root)})
    return ["run", write_yaml(tmp, raw), "--out", str(tmp / "out")]


_FINISHED: list[Path] = []


def finished_run(tmp: Path, fresh: bool = False, name: str = "done") -> Path:
    """A finished one-epoch tiny run at ``tmp / name``: a copy of one trained once per test process (its config
    names that run's blob file, outside ``tmp``), or with ``fresh`` one trained here on ``tmp / "blobs.npz"``."""
    import shutil
    import tempfile

    if fresh:
        out = tmp / name
        raw = tiny(tmp, train={"epochs": 1, "probe_every_epoch": False})
        assert main(["run", write_yaml(tmp, raw, "done.yaml"), "--out", str(out), "--quiet"]) == 0
        return out
    if not _FINISHED:
        _FINISHED.append(finished_run(Path(tempfile.mkdtemp(prefix="replearn-finished-")), fresh=True))
    shutil.copytree(_FINISHED[0], tmp / name, symlinks=True)
    return tmp / name


def checkpoint(tmp: Path, payload: dict, name="model.pt") -> Path:
    path = tmp / name
    torch.save(payload, path)
    return path


def replearn_payload(channels=(4, 8), weights_from=(4, 8), in_shape=(1, 8, 8)) -> dict:
    from replearn.config.sections import model_config
    from replearn.encoders import build_encoder

    enc = build_encoder(model_config(channels=list(weights_from), latent_dim=6), in_shape, 0)
    return {
        "format": "replearn-checkpoint",
        "kind": "model",
        "regime": "supervised",
        "seed": 0,
        "encoder": enc.state_dict(),
        "in_shape": list(in_shape),
        "config": {
            "name": "x",
            "data": {"name": "digits"},
            "model": {"channels": list(channels), "kernel_size": 3, "latent_dim": 6},
        },
    }


class Exploit:
    """Unpickling this object would create a file (stands in for arbitrary code)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def plugin_module(tmp: Path, name: str, body: str) -> str:
    """A user's module in the (test's) working directory, importable by ``name:Attr``."""
    (tmp / f"{name}.py").write_text(body)
    return name


def png_tree(tmp: Path, n: int = 30, sizes=None, empty_class: bool = False, corrupt: int | None = None) -> Path:
    """An image-folder tree of n 8×8 grey PNGs in 3 classes (optionally other sizes, an empty class, a
    truncated file)."""
    from PIL import Image

    root = tmp / "images"
    x, y = make_blob_images(n, seed=3)
    for i, (image, label) in enumerate(zip(x, y)):
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        size = (sizes or {}).get(i)
        Image.fromarray(image if size is None else np.resize(image, size)).save(folder / f"{i:05d}.png")
    if empty_class:
        (root / "class9").mkdir()
    if corrupt is not None:
        path = root / f"class{y[corrupt]}" / f"{corrupt:05d}.png"
        path.write_bytes(path.read_bytes()[:50])
    return root


def folder_run(tmp: Path, root: Path, *extra: str) -> list[str]:
    return [
        "run",
        write_yaml(tmp, tiny(tmp, data={"name": "folder", "root": str(root), "cache_dir": str(tmp / "cache")})),
        "--out",
        str(tmp / "run"),
        *extra,
    ]


def fingerprint(root: Path) -> dict[str, object]:
    """Every path under ``root`` with its content hash; a file this user may not read is identified by its
    size, mode and modification time instead."""

    def state(p: Path) -> object:
        if not p.is_file():
            return "dir"
        try:
            return hashlib.sha256(p.read_bytes()).hexdigest()
        except PermissionError:
            return (p.stat().st_size, p.stat().st_mode, p.stat().st_mtime_ns)

    return {str(p.relative_to(root)): state(p) for p in sorted(root.rglob("*"))}


def assert_refused_in_one_line(case_id, what, build, fragment, tmp_path, capsys, monkeypatch):
    """The bad-input harness every catalogue file uses: the command ``build(tmp_path)`` returns exits 2 with one
    line naming the problem (``fragment``) and the fix, no traceback, and nothing on disk changed."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # importing a user's module must not add a cache file
    monkeypatch.setattr("replearn.data.readers.DEBIAN_DATASET_DIR", tmp_path / "no-debian")
    monkeypatch.delenv("REPLEARN_DATA", raising=False)
    argv = build(tmp_path)
    capsys.readouterr()
    before = fingerprint(tmp_path)
    started = time.monotonic()
    code = main(argv)
    seconds = time.monotonic() - started
    err = capsys.readouterr().err.strip()
    assert code == 2, f"{case_id} {what}: exit {code}, stderr {err!r}"
    assert seconds < 30, f"{case_id}: took {seconds:.1f}s to refuse"
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("replearn: error: ") and " — fix: " in err, err
    assert fragment in err, f"{case_id}: {fragment!r} not in {err!r}"
    assert fingerprint(tmp_path) == before, f"{case_id}: files on disk changed"
    assert not (tmp_path / "pwned").exists()


def overlapping_labels(fig, close: bool = True) -> list[tuple[str, str]]:
    """Pairs of visible, non-empty texts of ``fig`` whose drawn boxes intersect by more than a pixel each way
    (the figure is closed afterwards unless ``close`` is False)."""
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    # tick labels exist for ticks outside the axis's view too; only those of the ticks drawn count
    tick_labels, drawn = set(), set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                tick_labels |= {id(tick.label1), id(tick.label2)}
            if ax.axison and ax.get_visible():  # axis("off") or a hidden panel: none of its tick labels is drawn
                for tick in axis._update_ticks():
                    drawn |= {id(tick.label1), id(tick.label2)}
    texts = []
    for text in fig.findobj(Text):
        if not text.get_visible() or not text.get_text().strip():
            continue
        if id(text) in tick_labels and id(text) not in drawn:
            continue
        if text.axes is not None and not text.axes.get_visible():
            continue
        box = text.get_window_extent(renderer)
        if box.width > 0 and box.height > 0:
            texts.append((text.get_text(), box))
    bad = []
    for i, (a, box_a) in enumerate(texts):
        for b, box_b in texts[i + 1 :]:
            dx = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
            dy = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
            if dx > 1 and dy > 1:
                bad.append((a, b))
    if close:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return bad
