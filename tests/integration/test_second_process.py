"""Training some regimes in a second process (``experiment.second_process``) gives the run exactly what
training them in the run's own process gives: the same weights bit for bit, the same metrics; and when the
second process dies mid-training, the run trains what it left from its saved state, to the same weights."""

from __future__ import annotations

import json
import os
import re
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
from replearn.experiment.second_process import TrainingQueue, predicted_training_seconds, wants_second_process
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


def _given_away(log_text: str) -> str:
    """The regime the run's log says went to the second process."""
    found = re.findall(r"seed 0: (\w+) trained in a parallel process", log_text)
    assert len(found) == 1, log_text
    return found[0]


def _start_run(config: Path, out: Path) -> tuple[subprocess.Popen, str, list[str], threading.Thread]:
    """``replearn run CONFIG --out OUT`` in its own process, once the regime it gave its second process has
    written its first epoch there: the process, that regime, the run's log lines so far (kept coming) and
    the thread that reads them."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "replearn.cli", "run", str(config), "--out", str(out)],
        cwd=config.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        lines.extend(iter(proc.stderr.readline, ""))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline, given = time.monotonic() + 120, ""
    while not given and time.monotonic() < deadline:
        given = next(
            (m.group(1) for m in map(re.compile(r"seed 0: (\w+) trained in a parallel").search, lines) if m), ""
        )
        time.sleep(0.01)
    metrics = RunDir(out).train_metrics(given, 0)
    while not _first_epoch_written(metrics) and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc, given, lines, reader


def test_a_regime_trained_in_the_second_process_has_the_same_weights(blob_npz, tmp_path, capsys):
    _run(blob_npz, tmp_path / "here", "never")
    assert "parallel process" not in capsys.readouterr().err
    _run(blob_npz, tmp_path / "beside", "always")
    err = capsys.readouterr().err
    given = _given_away(err)
    assert f"{given} seed 0 epoch {EPOCHS}/{EPOCHS}" in err, "its epoch lines reach the run's log"
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
    both = [RunDir(beside).train_metrics(regime, 0) for regime in ("supervised", "autoencoder")]
    killed = []

    def kill_after_its_first_epoch() -> None:  # both regimes training: one of them in the second process
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if all(_first_epoch_written(metrics) for metrics in both):
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
    assert f"the second process did not finish {_given_away(err)}" in err and "training it here" in err
    _same_training(tmp_path / "here", beside)


def test_auto_leaves_a_run_too_small_to_gain_in_one_process(blob_npz, tmp_path):
    experiment = Experiment(
        config_from_dict(tiny_config(blob_npz, second_process="auto")), out=tmp_path / "small", progress=False
    )
    experiment.load_data()
    assert not wants_second_process(experiment, 0), "seconds of training: imports would cost more"
    always = Experiment(
        config_from_dict(tiny_config(blob_npz, second_process="always")), out=tmp_path / "a", progress=False
    )
    always.load_data()
    assert wants_second_process(always, 0)
    never = Experiment(
        config_from_dict(tiny_config(blob_npz, second_process="never")), out=tmp_path / "n", progress=False
    )
    never.load_data()
    assert not wants_second_process(never, 0)


def test_the_regimes_are_taken_longest_first_by_whichever_process_is_free(blob_npz, tmp_path):
    three = Experiment(
        config_from_dict(
            tiny_config(blob_npz, second_process="always", regimes=["supervised", "autoencoder", "denoising"])
        ),
        out=tmp_path / "b",
        progress=False,
    )
    three.load_data()
    seconds = {r.name: predicted_training_seconds(three, r) for r in three.regimes}
    assert seconds["autoencoder"] > seconds["supervised"], "a decoder's steps cost more than a classifier head's"
    queue = TrainingQueue.for_seed(three, 0, shared=True)
    first = queue.take_here()
    assert first is not None and seconds[first.name] == max(seconds.values())
    assert queue.take_elsewhere().name != first.name  # the second process, ready, takes the next
    last = queue.take_here()
    assert last is not None and seconds[last.name] == min(seconds.values())
    assert queue.take_here() is None and queue.take_elsewhere() is None
    assert len(queue.given) == 1

    kept = TrainingQueue.for_seed(three, 0, shared=True)  # always: the last waits for the second process
    assert kept.take_here() is not None and kept.take_here() is not None and kept.take_here() is None
    assert kept.take_elsewhere() is not None and kept.given
    assert kept.close(), "the second process has a regime to finish: the run waits for it"
    unshared = TrainingQueue.for_seed(three, 0, shared=True)
    unshared.share_with_none()  # it could not start: this process takes every regime
    assert [unshared.take_here() is not None for _ in range(3)] == [True] * 3
    assert not unshared.close(), "it took none: the run stops it instead of waiting for its imports"
    reserved = TrainingQueue.for_seed(three, 0, shared=True)
    while reserved.take_here() is not None:
        pass
    assert reserved.close(), "the regime kept for it: the run waits for it to ask"
    assert reserved.take_elsewhere() is not None and reserved.take_elsewhere() is None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the second process through /proc")
def test_a_stopped_run_stops_its_second_process_and_resumes_to_the_same_weights(blob_npz, tmp_path):
    raw = tiny_config(blob_npz, epochs=3 * EPOCHS, second_process="always", batch_size=8)
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
    proc, given, lines, reader = _start_run(config, cut)
    children = _children_training(proc.pid)
    proc.send_signal(signal.SIGTERM)  # to the run alone: it stops the second process itself
    proc.wait(timeout=120)
    reader.join(timeout=10)
    err = "".join(lines)
    assert proc.returncode == 130, err
    assert children, "the second process was running when the run was stopped"
    assert not any(Path(f"/proc/{pid}").exists() for pid in children), "no second process outlives the run"
    finished = {r for r in ("supervised", "autoencoder") if RunDir(cut).checkpoint(r, 0).exists()}
    states = {p.name.split("_seed")[0] for p in (cut / "checkpoints").glob("*.state.pt")}
    assert given in finished | states, "the second process saved where it was"
    assert finished | states == {"supervised", "autoencoder"} and not finished & states

    resumed = subprocess.run(
        [sys.executable, "-m", "replearn.cli", "run", "--resume", str(cut), "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    _same_training(tmp_path / "full", cut)
    phases = json.loads((cut / "environment.json").read_text())["threads"]["phases"]
    for regime in states:  # trained on in the resumed run, in either process: its thread choice is recorded
        assert f"training {regime}" in phases


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the second process through /proc")
def test_a_second_process_whose_run_is_killed_stops_with_its_state_saved(blob_npz, tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(tiny_config(blob_npz, epochs=40, second_process="always", batch_size=8)))
    cut = tmp_path / "cut"
    proc, given, _, _ = _start_run(config, cut)
    children = _children_training(proc.pid)
    proc.kill()  # no chance to stop anything: the pipe it held closes
    proc.wait()
    assert children
    deadline = time.monotonic() + 60
    while any(Path(f"/proc/{pid}").exists() for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{pid}").exists() for pid in children), "it stopped instead of training on"
    assert not RunDir(cut).checkpoint(given, 0).exists(), "it stopped before its 40 epochs"
    assert RunDir(cut).train_state(given, 0).exists(), "with its training state saved for a resume"


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


def test_the_second_process_starts_before_the_runs_imports_and_stops_when_the_plan_needs_none(blob_npz, tmp_path):
    """``replearn run`` starts the second process before importing torch, so that both import at once; once the
    plan is known, a run that will not use it stops it, and one whose config says never starts none."""
    from replearn.experiment import second_process

    if os.path.exists("/dev/nvidiactl") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("no second process is started on a GPU machine or with one core")
    probe = (
        "import os, sys\n"
        "from replearn.experiment import second_process as s\n"
        "s.speculate(); started = s._spare is not None\n"
        "print(started, 'torch' in sys.modules)\n"
        "s.release_spare(); print(s._spare is None)\n"
        "import replearn.experiment.experiment\n"
        "s.speculate(); print(s._spare is None)\n"
    )
    env = {**os.environ, "WORLD_SIZE": "1"}
    env.pop("REPLEARN_THREADS", None)
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert shown.stdout.split() == ["True", "False", "True", "True"], "before torch; none once imports are done"
    shown = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env={**env, "WORLD_SIZE": "2"}
    )
    assert shown.stdout.split()[0] == "False", "none in a distributed run"

    for choice, kept in (("never", False), ("always", True)):
        experiment = Experiment(
            config_from_dict(tiny_config(blob_npz, second_process=choice)), out=tmp_path / choice, progress=False
        )
        experiment.load_data()
        spare = second_process._spare = second_process._spawn()
        try:
            second_process.prestart(experiment)
            assert (second_process._spare is spare) == kept
            assert (spare.poll() is None) == kept, "the one not wanted is stopped"
        finally:
            second_process.release_spare()

    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(tiny_config(blob_npz, epochs=3, second_process="never")))
    proc = subprocess.Popen(
        [sys.executable, "-m", "replearn.cli", "run", str(config), "--out", str(tmp_path / "alone"), "--quiet"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen = []
    while proc.poll() is None:
        seen += _children_training(proc.pid)
        time.sleep(0.005)
    assert proc.returncode == 0
    assert not seen, "a config that says never starts no second process"
