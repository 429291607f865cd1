"""Faults of a two-process run (torchrun, gloo, on the CPU): SIGINT (as Ctrl-C sends it, to the launcher and
both ranks) stops both ranks at one step boundary and a resume finishes with the metrics of an uninterrupted
two-process run, whose batch-norm probes agree with one process's; a rank that dies ends the run in bounded
time, with torchrun naming it, never a hang."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from replearn import Experiment
from replearn.rundir.io import read_json

from test_distributed import ENV, PROBE_TOLERANCE, TORCHRUN, digits_config, metrics


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(TORCHRUN + args, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def wait_for(path: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, f"the run ended before {path} appeared: {process.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


@pytest.mark.slow
def test_sigint_stops_both_ranks_and_the_resume_matches_an_uninterrupted_run(tmp_path):
    config = digits_config(tmp_path, "bn")
    config_raw = yaml.safe_load(config.read_text())
    config_raw["train"]["epochs"] = 6
    config.write_text(yaml.safe_dump(config_raw))
    run = ["run", str(config), "--quiet", "--threads", "1"]
    reference = subprocess.run(TORCHRUN + run + ["--out", "reference"], cwd=tmp_path, env=ENV, capture_output=True,
                               text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]
    interrupted = start(run + ["--out", "interrupted"], tmp_path)
    wait_for(tmp_path / "interrupted" / "checkpoints" / "supervised_seed0.state.pt", interrupted)
    os.killpg(interrupted.pid, signal.SIGINT)  # what Ctrl-C does: the launcher and both ranks get it
    _, err = interrupted.communicate(timeout=120)
    status = read_json(tmp_path / "interrupted" / "status.json")
    assert status["state"] == "interrupted", (status, err[-2000:])
    assert "state saved" in status["message"]  # stopped inside training, at a step boundary, state written
    resumed = subprocess.run(TORCHRUN + ["run", "--resume", "interrupted", "--quiet"], cwd=tmp_path, env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    want, got = metrics(tmp_path / "reference"), metrics(tmp_path / "interrupted")
    assert want.keys() == got.keys()
    for name, frame in want.items():
        pd.testing.assert_frame_equal(frame, got[name], check_exact=False, rtol=1e-6, atol=1e-7, obj=name)
    # with batch norm in the encoder: the two-process latent probes agree with one process's, epoch by epoch
    one = Experiment(config, out=tmp_path / "one", progress=False)
    one.prepare()
    for regime in one.regimes:
        one.train(regime, 0)
    for regime in ("supervised", "autoencoder"):
        name = f"train_{regime}_seed0.csv"
        gap = (got[name].val_latent_probe_accuracy - metrics(tmp_path / "one")[name].val_latent_probe_accuracy).abs()
        assert gap.max() <= PROBE_TOLERANCE, (regime, gap.tolist())


def worker_pids(launcher: int) -> dict[int, int]:
    """{rank: pid} of the processes torchrun started."""
    ranks = {}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == launcher:
                env = dict(kv.split("=", 1) for kv in (proc / "environ").read_text().split("\0") if "=" in kv)
                ranks[int(env["RANK"])] = int(proc.name)
        except (OSError, KeyError, ValueError):
            continue
    return ranks


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the ranks' processes in /proc")
def test_a_rank_that_dies_ends_the_run_in_bounded_time_with_a_clear_message(tmp_path):
    config = digits_config(tmp_path, "dies")
    raw = yaml.safe_load(config.read_text())
    raw["train"].update(epochs=200, collective_timeout=20)
    config.write_text(yaml.safe_dump(raw))
    run = start(["run", str(config), "--out", "dies", "--quiet", "--threads", "1"], tmp_path)
    wait_for(tmp_path / "dies" / "checkpoints" / "supervised_seed0.state.pt", run)
    ranks = worker_pids(run.pid)
    assert sorted(ranks) == [0, 1], ranks
    killed = time.monotonic()
    os.kill(ranks[1], signal.SIGKILL)
    _, err = run.communicate(timeout=90)
    assert time.monotonic() - killed < 60
    assert run.returncode != 0
    assert "rank      : 1" in err and "SIGKILL" in err, err[-3000:]  # torchrun names the rank that died
    # rank 0, if torchrun has not stopped it first, says in one line that another process stopped
    lines = [line for line in err.splitlines() if line.startswith("replearn: error:")]
    assert all("another process of this distributed run stopped" in line for line in lines), lines
    status = read_json(tmp_path / "dies" / "status.json")
    assert status["state"] in ("failed", "interrupted"), status  # rank 0 recorded why the run stopped
    assert status["message"], status
