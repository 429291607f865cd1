"""`replearn run --nproc 2` (the launcher, which starts torchrun) under faults: SIGTERM sent to the launcher alone
stops torchrun and both ranks (none outlives it, within a bound) and status.json says the run was interrupted by
SIGTERM; a rank killed with SIGKILL ends the launcher with one line naming the rank and the log holding the rest."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from replearn.rundir.io import read_json

from test_distributed import ENV, digits_config

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the ranks' processes in /proc")]


def launcher(tmp: Path, name: str) -> subprocess.Popen:
    config = digits_config(tmp, name)
    raw = yaml.safe_load(config.read_text())
    raw["train"].update(epochs=200, collective_timeout=20)
    config.write_text(yaml.safe_dump(raw))
    return subprocess.Popen([sys.executable, "-m", "replearn", "run", str(config), "--out", name, "--quiet",
                             "--threads", "1", "--nproc", "2"], cwd=tmp, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def ranks_of(launcher_pid: int) -> dict[int, int]:
    """{rank: pid} of the processes with RANK in their environment that descend from the launcher."""
    parents, ranks = {}, {}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit():
                parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
    for pid in parents:
        ancestor = parents.get(pid)
        while ancestor not in (None, 0, 1, launcher_pid):
            ancestor = parents.get(ancestor)
        if ancestor != launcher_pid:
            continue
        try:
            env = dict(kv.split("=", 1) for kv in (Path("/proc") / str(pid) / "environ").read_text().split("\0")
                       if "=" in kv)
            if "LOCAL_RANK" in env:
                ranks[int(env["RANK"])] = pid
        except (OSError, KeyError, ValueError):
            continue
    return ranks


def wait_for_training(tmp: Path, name: str, process: subprocess.Popen) -> dict[int, int]:
    deadline = time.monotonic() + 180
    state = tmp / name / "checkpoints" / "supervised_seed0.state.pt"
    while not state.exists():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.05)
    ranks = ranks_of(process.pid)
    assert sorted(ranks) == [0, 1], ranks
    return ranks


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_to_the_launcher_stops_torchrun_and_every_rank_and_is_recorded(tmp_path):
    run = launcher(tmp_path, "term")
    ranks = wait_for_training(tmp_path, "term", run)
    sent = time.monotonic()
    run.send_signal(signal.SIGTERM)  # the launcher alone, as a job scheduler or `kill` would
    _, err = run.communicate(timeout=150)
    assert time.monotonic() - sent < 120
    assert run.returncode == 130, err[-3000:]
    time.sleep(0.5)
    assert not [pid for pid in ranks.values() if alive(pid)], "a rank outlived the launcher"
    status = read_json(tmp_path / "term" / "status.json")
    assert status["state"] == "interrupted" and "SIGTERM" in status["message"], status
    assert err.strip().splitlines() == [err.strip()] and "Resume with" in err, err


def test_a_rank_killed_with_sigkill_ends_the_launcher_with_one_line_naming_it(tmp_path):
    run = launcher(tmp_path, "dies")
    ranks = wait_for_training(tmp_path, "dies", run)
    killed = time.monotonic()
    os.kill(ranks[1], signal.SIGKILL)
    _, err = run.communicate(timeout=150)
    assert time.monotonic() - killed < 90
    assert run.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "rank 1 was killed by SIGKILL" in lines[0], err[-3000:]
    log = tmp_path / "dies" / "torchrun.log"
    assert str(log) in lines[0] or "dies/torchrun.log" in lines[0]
    assert "rank" in log.read_text() and not alive(ranks[0])
    assert read_json(tmp_path / "dies" / "status.json")["state"] in ("failed", "interrupted")
