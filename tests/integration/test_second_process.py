"""Training some regimes in a second process (``experiment.second_process``) gives the run exactly what
training them in the run's own process gives: the same weights bit for bit, the same metrics; and when the
second process dies mid-training, the run trains what it left from its saved state, to the same weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from helpers import tiny_config
from replearn.config.sections import config_from_dict
from replearn.errors import ReplearnError
from replearn.experiment.experiment import Experiment
from replearn.experiment.second_process import regimes_for_second_process
from replearn.rundir import layout
from replearn.rundir.directory import RunDir
from replearn.runtime import log

EPOCHS = 6


def _run(npz: Path, out: Path, choice: str, **train: object) -> Experiment:
    config = config_from_dict(tiny_config(npz, epochs=EPOCHS, second_process=choice, **train))
    experiment = Experiment(config, out=out, progress=False)
    experiment.run()
    return experiment


def _weights(out: Path, regime: str) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(RunDir(out).checkpoint(regime, 0), weights_only=False)
    return {
        **{f"encoder.{k}": v for k, v in checkpoint["encoder"].items()},
        **{f"head.{k}": v for k, v in checkpoint["head"].items()},
    }


def _same_training(a: Path, b: Path) -> None:
    for regime in ("supervised", "autoencoder"):
        wa, wb = _weights(a, regime), _weights(b, regime)
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa), f"{regime}: weights differ"
        ma, mb = (pd.read_csv(RunDir(d).train_metrics(regime, 0)) for d in (a, b))
        timing = [c for c in ma.columns if "seconds" in c or "per_s" in c]
        pd.testing.assert_frame_equal(ma.drop(columns=timing), mb.drop(columns=timing))
    models = [pd.read_csv(d / "metrics" / "models.csv") for d in (a, b)]
    pd.testing.assert_frame_equal(*(m[[c for c in m.columns if "seconds" not in c]] for m in models))


@pytest.fixture(autouse=True)
def _logged(monkeypatch):
    """The run's log lines on stderr (another test in this process may have made it quiet)."""
    monkeypatch.setattr(log, "_quiet", False)


def _first_epoch_written(metrics: Path) -> bool:
    """Whether a regime's metrics CSV holds its header and its first epoch."""
    return metrics.exists() and len(metrics.read_text().splitlines()) >= 2


def _start_run(config: Path, out: Path, **streams: int) -> subprocess.Popen:
    """``replearn run CONFIG --out OUT`` in its own process, once its autoencoder (trained in the second process)
    has written its first epoch."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "replearn.cli", "run", str(config), "--out", str(out)], cwd=config.parent, **streams
    )
    metrics, deadline = RunDir(out).train_metrics("autoencoder", 0), time.monotonic() + 120
    while not _first_epoch_written(metrics) and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc


def test_a_regime_trained_in_the_second_process_has_the_same_weights(blob_npz, tmp_path, capsys):
    _run(blob_npz, tmp_path / "here", "never")
    assert "parallel process" not in capsys.readouterr().err
    _run(blob_npz, tmp_path / "beside", "always")
    err = capsys.readouterr().err
    assert "seed 0: autoencoder trained in a parallel process" in err
    assert f"autoencoder seed 0 epoch {EPOCHS}/{EPOCHS}" in err, "its epoch lines reach the run's log"
    assert "did not finish" not in err
    _same_training(tmp_path / "here", tmp_path / "beside")


def _children_training(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b"training_worker" in command:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the second process through /proc")
def test_a_second_process_that_dies_leaves_its_regime_to_the_run(blob_npz, tmp_path, capsys):
    _run(blob_npz, tmp_path / "here", "never")
    capsys.readouterr()
    beside = tmp_path / "beside"
    metrics = RunDir(beside).train_metrics("autoencoder", 0)
    killed = []

    def kill_after_its_first_epoch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if _first_epoch_written(metrics):
                for pid in _children_training(os.getpid()):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.005)

    watcher = threading.Thread(target=kill_after_its_first_epoch, daemon=True)
    watcher.start()
    _run(blob_npz, beside, "always")
    watcher.join()
    err = capsys.readouterr().err
    assert killed, "the second process was found and killed during its training"
    assert "the second process did not finish autoencoder" in err and "training it here" in err
    _same_training(tmp_path / "here", beside)


def test_auto_leaves_a_run_too_small_to_gain_in_one_process(blob_npz, tmp_path):
    experiment = Experiment(
        config_from_dict(tiny_config(blob_npz, second_process="auto")), out=tmp_path / "small", progress=False
    )
    experiment.load_data()
    assert regimes_for_second_process(experiment, 0) == [], "seconds of training: imports would cost more"
    always = Experiment(
        config_from_dict(tiny_config(blob_npz, second_process="always")), out=tmp_path / "a", progress=False
    )
    always.load_data()
    assert [r.name for r in regimes_for_second_process(always, 0)] == ["autoencoder"]
    three = Experiment(
        config_from_dict(
            tiny_config(blob_npz, second_process="always", regimes=["supervised", "autoencoder", "denoising"])
        ),
        out=tmp_path / "b",
        progress=False,
    )
    three.load_data()
    assert [r.name for r in regimes_for_second_process(three, 0)] == ["denoising"], "the later half"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the second process through /proc")
def test_a_stopped_run_stops_its_second_process_and_resumes_to_the_same_weights(blob_npz, tmp_path):
    raw = tiny_config(blob_npz, epochs=EPOCHS, second_process="always", batch_size=8)
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(raw))
    full = subprocess.run(
        [sys.executable, "-m", "replearn.cli", "run", str(config), "--out", str(tmp_path / "full"), "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert full.returncode == 0, full.stderr

    cut = tmp_path / "cut"
    proc = _start_run(config, cut, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    children = _children_training(proc.pid)
    proc.send_signal(signal.SIGTERM)  # to the run alone: it stops the second process itself
    _, err = proc.communicate(timeout=120)
    err = err.decode()
    assert proc.returncode == 130, err
    assert children, "the second process was running when the run was stopped"
    assert not any(Path(f"/proc/{pid}").exists() for pid in children), "no second process outlives the run"
    finished = {r for r in ("supervised", "autoencoder") if RunDir(cut).checkpoint(r, 0).exists()}
    states = {p.name.split("_seed")[0] for p in (cut / "checkpoints").glob("*.state.pt")}
    assert "autoencoder" in finished | states, "the second process saved where it was"
    assert finished | states == {"supervised", "autoencoder"} and not finished & states

    resumed = subprocess.run(
        [sys.executable, "-m", "replearn.cli", "run", "--resume", str(cut), "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    _same_training(tmp_path / "full", cut)
    if "autoencoder" in states:  # trained on in the resumed run's second process: its thread choice is recorded
        phases = json.loads((cut / "environment.json").read_text())["threads"]["phases"]
        assert "training autoencoder" in phases


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the second process through /proc")
def test_a_second_process_whose_run_is_killed_stops_with_its_state_saved(blob_npz, tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(tiny_config(blob_npz, epochs=40, second_process="always", batch_size=8)))
    cut = tmp_path / "cut"
    proc = _start_run(config, cut, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children = _children_training(proc.pid)
    proc.kill()  # no chance to stop anything: the pipe it held closes
    proc.wait()
    assert children
    deadline = time.monotonic() + 60
    while any(Path(f"/proc/{pid}").exists() for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{pid}").exists() for pid in children), "it stopped instead of training on"
    assert not RunDir(cut).checkpoint("autoencoder", 0).exists(), "it stopped before its 40 epochs"
    assert RunDir(cut).train_state("autoencoder", 0).exists(), "with its training state saved for a resume"


def test_a_run_started_before_the_option_existed_resumes(blob_npz, tmp_path):
    """A run whose config was recorded without ``train.second_process`` (an older replearn) resumes: the option
    takes its default, which is no change to the run; editing an option it did record is still refused."""
    out = tmp_path / "old"
    _run(blob_npz, out, "never")
    marker = json.loads((out / layout.MARKER).read_text())
    del marker["config"]["train"]["second_process"]
    (out / layout.MARKER).write_text(json.dumps(marker))
    config = yaml.safe_load((out / layout.CONFIG).read_text())
    del config["train"]["second_process"]
    (out / layout.CONFIG).write_text(yaml.safe_dump(config))
    (out / layout.STATUS).write_text('{"state": "interrupted", "message": ""}')
    assert Experiment.resume(out).config.train.second_process == "auto"
    config["train"]["epochs"] = EPOCHS + 1
    (out / layout.CONFIG).write_text(yaml.safe_dump(config))
    with pytest.raises(ReplearnError, match="train.epochs was 6, now 7"):
        Experiment.resume(out)
