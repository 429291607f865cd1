"""A signal that arrives after the training loop's last look (it only records the signal while training) still
stops the run at the next stage boundary, resumably, instead of being lost."""
from __future__ import annotations

import pytest

from replearn.rundir.io import read_json
from replearn.config.sections import config_from_dict
from replearn.errors import TrainingInterrupted
from replearn.experiment.experiment import Experiment

from helpers import tiny_config


def test_a_signal_recorded_during_the_last_epoch_stops_before_the_analyses_and_resumes(blob_npz, tmp_path):
    raw = tiny_config(blob_npz, epochs=1, regimes=["supervised"])
    experiment = Experiment(config_from_dict(raw), out=tmp_path / "run", progress=False)
    original = experiment.train

    def train_then_signal(regime, seed):
        encoder = original(regime, seed)
        experiment.stopper.requested = "SIGTERM"  # as the handler does while the loop defers signals
        return encoder

    experiment.train = train_then_signal
    with pytest.raises(TrainingInterrupted):
        experiment.run()
    out = tmp_path / "run"
    assert read_json(out / "status.json")["state"] == "interrupted"
    assert (out / "checkpoints" / "supervised_seed0.pt").exists()  # the finished regime is kept
    assert not (out / "metrics" / "probes.csv").exists() and not (out / "report.html").exists()
    assert Experiment.resume(out, progress=False).run() == out / "report.html"
    assert read_json(out / "status.json")["state"] == "complete"
