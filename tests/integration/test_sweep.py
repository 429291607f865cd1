"""`replearn sweep`: one run per grid value × seed under one sweep directory with a manifest; stopping a sweep
and running it again finishes only the missing runs; submitit's local executor (the SLURM backend's job
array) writes the same run directories as the local backend."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from replearn.cli.main import main

from helpers import REPO_ROOT, make_blob_images, shared_run, tiny_config


def tiny_base(tmp: Path) -> Path:
    """A seconds-long base config on blob images (one epoch, small analyses, PNG only)."""
    train_x, train_y = make_blob_images(90, seed=1)
    test_x, test_y = make_blob_images(45, seed=2)
    np.savez(tmp / "blobs.npz", train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)
    raw = tiny_config(tmp / "blobs.npz", epochs=1, probe_every_epoch=False)
    raw["analysis"].update(reconstructions=0, analysis_points=30)
    (tmp / "base.yaml").write_text(yaml.safe_dump(raw))
    return tmp / "base.yaml"


def write_spec(tmp: Path, **extra: object) -> Path:
    tiny_base(tmp)
    spec = {"name": "tiny", "base": "base.yaml", "grid": {"model.latent_dim": [4, 6]}, "seeds": [0],
            "threads": 1, "out": str(tmp / "sweep"), **extra}
    (tmp / "spec.yaml").write_text(yaml.safe_dump(spec))
    return tmp / "spec.yaml"


def shared_local_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny sweep of ``write_spec`` (two runs, local backend, side by side with one thread each), made once
    per session: the submitit comparison reads it, and the compare tests read a copy of it."""

    def make(out: Path) -> None:
        out.mkdir(parents=True)
        assert main(["sweep", str(write_spec(out, parallel=2)), "--quiet"]) == 0

    return shared_run(tmp_path_factory, "tiny-sweep", make) / "sweep"


def states(sweep: Path) -> dict[str, str]:
    return {r["name"]: r["state"] for r in json.loads((sweep / "sweep.json").read_text())["runs"]}


def status(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


def test_interrupted_sweep_then_rerun_finishes_only_the_missing_runs(tmp_path):
    spec = write_spec(tmp_path)
    sweep = tmp_path / "sweep"
    first, second = sweep / "latent_dim-4_seed0", sweep / "latent_dim-6_seed0"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MPLBACKEND": "Agg"}
    # Ctrl-C on a sweep in the foreground: SIGINT as a shell gives it, even when these tests were started in the
    # background (where the shell hands every descendant SIGINT ignored, and a signal between runs is lost)
    process = subprocess.Popen([sys.executable, "-m", "replearn.cli", "sweep", str(spec)], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if (first / "status.json").is_file() and status(first)["state"] == "complete":
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "sweep interrupted" in err and "latent_dim-4_seed0: complete" in err
    assert states(sweep)["latent_dim-4_seed0"] == "complete" and states(sweep)["latent_dim-6_seed0"] != "complete"
    finished = {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()}

    assert main(["sweep", str(spec), "--quiet"]) == 0
    assert states(sweep) == {"latent_dim-4_seed0": "complete", "latent_dim-6_seed0": "complete"}
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()} == finished, "a finished run was redone"
    assert status(second)["state"] == "complete"
    assert yaml.safe_load((second / "config.yaml").read_text())["model"]["latent_dim"] == 6
    assert yaml.safe_load((second / "config.yaml").read_text())["train"]["seeds"] == [0]
    manifest = json.loads((sweep / "sweep.json").read_text())
    assert manifest["keys"] == ["model.latent_dim"] and manifest["spec"]["seeds"] == [0]
    assert [r["values"] for r in manifest["runs"]] == [{"model.latent_dim": 4}, {"model.latent_dim": 6}]
    assert all("model.latent_dim=" in " ".join(r["overrides"]) for r in manifest["runs"])

    again = {p: p.stat().st_mtime_ns for p in sweep.rglob("*") if p.is_file() and p.name != "sweep.json"}
    assert main(["sweep", str(spec), "--quiet"]) == 0  # everything complete: nothing runs again
    assert {p: p.stat().st_mtime_ns for p in sweep.rglob("*") if p.is_file() and p.name != "sweep.json"} == again


def test_a_stop_while_a_finished_run_is_being_recorded_still_records_and_says_it(tmp_path, capsys, monkeypatch):
    """SIGINT can land after a run has finished and before the sweep has recorded it (the window the subprocess
    test above hits under load): the run is still recorded as complete and said to be, and the sweep stops."""
    from replearn.studies import backends

    spec = write_spec(tmp_path)
    say, interrupted = backends.Progress.say, []

    def say_once_interrupted(self, text):
        if text.startswith("latent_dim-4_seed0: complete") and not interrupted:
            interrupted.append(text)
            raise KeyboardInterrupt  # as if Ctrl-C came while this line was being written
        say(self, text)

    monkeypatch.setattr(backends.Progress, "say", say_once_interrupted)
    assert main(["sweep", str(spec)]) == 130
    err = capsys.readouterr().err
    assert interrupted and "latent_dim-4_seed0: complete" in err and "sweep interrupted" in err
    assert states(tmp_path / "sweep") == {"latent_dim-4_seed0": "complete", "latent_dim-6_seed0": "pending"}


def comparable(run: Path) -> dict[str, object]:
    """What two runs of the same config must share: config and results (timings left out)."""
    probes = pd.read_csv(run / "metrics" / "probes.csv").drop(columns=["seconds"])
    models = pd.read_csv(run / "metrics" / "models.csv").drop(columns=["train_seconds"], errors="ignore")
    return {"config": (run / "config.yaml").read_text(), "probes": probes.fillna(-1).to_dict("list"),
            "models": models.fillna(-1).to_dict("list")}


def test_slurm_job_array_through_submitit_local_executor_matches_the_local_side_by_side_backend(
    tmp_path, tmp_path_factory, capsys
):
    pytest.importorskip("submitit")
    local = shared_local_sweep(tmp_path_factory)  # the local reference: runs side by side, one thread each
    assert (local / "logs" / "latent_dim-4_seed0.log").is_file()
    slurm_spec = write_spec(tmp_path, backend="slurm", slurm={"cluster": "local", "timeout_min": 10},
                            base=str(local.parent / "base.yaml"), out=str(tmp_path / "slurm"))  # the same data file
    assert main(["sweep", str(slurm_spec), "--quiet"]) == 0, capsys.readouterr().err
    manifest = json.loads((tmp_path / "slurm" / "sweep.json").read_text())
    assert all(r["state"] == "complete" and r.get("job_id") for r in manifest["runs"])
    for name in ("latent_dim-4_seed0", "latent_dim-6_seed0"):
        assert comparable(local / name) == comparable(tmp_path / "slurm" / name), name


def test_dry_run_lists_the_runs_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny_base(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    assert main(["sweep", "--base", "base.yaml", "--grid", "model.channels=[4],[4,8]", "--grid",
                 "train.lr=0.01,0.001", "--seeds", "0,1", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 * 2 * 2 and sorted(tmp_path.rglob("*")) == before
    assert any("channels-4-8_lr-0.01_seed1" in line and "'model.channels=[4, 8]'" in line for line in lines)
