"""Two processes (torchrun, gloo, on the CPU) against one: the same global batch gives the same model, one copy
of every file, checkpoints that `replearn probe` loads; a one-process run resumes under two; bf16 autocast.
Signals and a rank that dies: test_distributed_faults.py.

Tolerances: without batch norm anywhere (the conv encoder with ``model.batch_norm: false`` and the
supervised regime's linear head) every parameter after 3 epochs (27 steps of Adam) agrees with the
one-process run to 1e-5 — the only difference is the order of a two-term float sum. With batch norm each
process normalises its own half of the batch, so the models differ slightly: their linear-probe accuracies
(the per-epoch latent probe on 100 validation digits, the final probes on 200 test digits) agree to within 0.06.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import replearn.training.loop
from replearn import Experiment
from replearn.rundir.io import read_json
from replearn.cli.main import main

from helpers import INTERPRETABILITY

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "replearn"]
PARAMETER_TOLERANCE, PROBE_TOLERANCE = 1e-5, 0.06
TIMING_COLUMNS = ("train_seconds", "train_images_per_s", "seconds", "wall_seconds")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def digits_config(tmp: Path, name: str, **model: object) -> Path:
    """A digits run of seconds: 300 training, 100 validation and 200 test images, 3 epochs, cheap analyses."""
    raw = {"name": name, "data": {"name": "digits", "train_subset": 400, "test_subset": 200, "val_fraction": 0.25},
           "model": {"channels": [8, 16], "latent_dim": 8, **model},
           "train": {"epochs": 3, "batch_size": 64, "probe_train_images": 200, "regimes": ["supervised", "autoencoder"]},
           "analysis": {"max_stage_features": 64, "projection_points": 0, "reconstructions": 2, "label_counts": [5],
                        "label_draws": 1, "analysis_points": 100, "probe_l2_grid": [1e-3], "knn_k_grid": [5],
                        "figure_formats": ["png"], "skip": list(INTERPRETABILITY)}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def files(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}


def latent_probes(run_dir: Path) -> pd.Series:
    probes = pd.read_csv(run_dir / "metrics" / "probes.csv")
    rows = probes[(probes.layer == "latent") & (probes.probe == "linear")]
    return rows.set_index("model").test_accuracy


def metrics(run_dir: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for path in sorted((run_dir / "metrics").glob("*.csv")):
        frame = pd.read_csv(path)
        out[path.name] = frame.drop(columns=[c for c in frame.columns if c in TIMING_COLUMNS])
    return out


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> tuple[Path, Path]:
    """A digits config whose encoder has no batch norm, and its one-process run."""
    tmp = tmp_path_factory.mktemp("plain")
    config = digits_config(tmp, "plain", batch_norm=False)
    assert main(["run", str(config), "--out", str(tmp / "one"), "--quiet", "--threads", "1"]) == 0
    return config, tmp / "one"


def assert_same_supervised_weights(one: Path, two: Path) -> None:
    one_ckpt, two_ckpt = (torch.load(d / "checkpoints" / "supervised_seed0.pt", weights_only=True) for d in (one, two))
    for part in ("encoder", "head"):
        for key, value in one_ckpt[part].items():
            assert torch.allclose(value, two_ckpt[part][key], atol=PARAMETER_TOLERANCE, rtol=0), f"{part}.{key}"


def test_two_processes_train_the_model_one_process_trains(plain, tmp_path, monkeypatch):
    config, one = plain
    monkeypatch.chdir(tmp_path)
    two = subprocess.run([sys.executable, "-m", "replearn", "run", str(config), "--out", "two", "--quiet",
                          "--threads", "1", "--nproc", "2"], capture_output=True, text=True, env=ENV, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.split() == ["two/report.html"]  # rank 1 prints nothing; rank 0 the report path
    assert_same_supervised_weights(one, Path("two"))
    # the autoencoder's mirrored decoder has batch norm: each rank normalises its own share
    assert (latent_probes(one) - latent_probes(Path("two"))).abs().max() <= PROBE_TOLERANCE
    assert files(one) == files(Path("two"))  # one copy of every file, nothing per rank
    environment = read_json(Path("two") / "environment.json")
    assert (environment["world_size"], environment["backend"], environment["precision"]) == (2, "gloo", "fp32")
    assert read_json(one / "environment.json")["world_size"] == 1
    for regime in ("supervised", "autoencoder"):
        assert main(["probe", f"two/checkpoints/{regime}_seed0.pt", "--dataset", "digits", "--layer", "latent",
                     "--json", f"probe_{regime}.json", "--threads", "1"]) == 0


@pytest.mark.slow
def test_a_one_process_run_interrupted_mid_epoch_resumes_with_two_processes(plain, tmp_path, monkeypatch):
    """A resume under another number of processes is supported: the global batches do not depend on it."""
    config, one = plain
    original = replearn.training.loop.step_generator

    def interrupt_at_step_5(*args, **kwargs):
        interrupt_at_step_5.calls += 1
        if interrupt_at_step_5.calls == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    interrupt_at_step_5.calls = 0
    monkeypatch.setattr(replearn.training.loop, "step_generator", interrupt_at_step_5)
    assert main(["run", str(config), "--out", str(tmp_path / "moved"), "--quiet", "--threads", "1"]) == 130
    state = torch.load(tmp_path / "moved" / "checkpoints" / "supervised_seed0.state.pt", weights_only=True)
    assert (state["epoch"], state["step_in_epoch"], state["world_size"]) == (0, 5, 1)
    resumed = subprocess.run([sys.executable, "-m", "replearn", "run", "--resume", str(tmp_path / "moved"), "--quiet",
                              "--nproc", "2"], capture_output=True, text=True, env=ENV, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_supervised_weights(one, tmp_path / "moved")
    want = metrics(one)["train_supervised_seed0.csv"].drop(columns=["threads"], errors="ignore")
    got = metrics(tmp_path / "moved")["train_supervised_seed0.csv"].drop(columns=["threads"], errors="ignore")
    pd.testing.assert_frame_equal(want, got, check_exact=False, rtol=1e-5, atol=1e-6)


def trained_row(tmp_path: Path, precision: str) -> tuple[pd.Series, list[torch.dtype], dict]:
    experiment = Experiment(digits_config(tmp_path, precision), [f"train.precision={precision}", "train.epochs=1",
                                                                 "train.regimes=[supervised]"],
                            out=tmp_path / precision, progress=False)
    experiment.prepare()
    seen: list[torch.dtype] = []
    experiment.initial_encoder(0).register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    experiment.train("supervised", 0)  # trains a copy of the initial encoder, hook included
    row = pd.read_csv(tmp_path / precision / "metrics" / "train_supervised_seed0.csv").iloc[-1]
    return row, seen, read_json(tmp_path / precision / "environment.json")


def test_bf16_autocast_runs_on_the_cpu_and_is_recorded(tmp_path):
    bf16, seen, environment = trained_row(tmp_path, "bf16")
    fp32, seen32, _ = trained_row(tmp_path, "fp32")
    assert torch.bfloat16 in seen and torch.bfloat16 not in seen32  # training steps ran under autocast
    assert bf16.train_loss != fp32.train_loss and abs(bf16.train_loss - fp32.train_loss) < 0.05
    assert abs(bf16.val_loss - fp32.val_loss) < 0.05
    assert (environment["precision"], environment["world_size"], environment["device"]) == ("bf16", 1, "cpu")
