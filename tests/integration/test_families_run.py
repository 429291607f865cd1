"""A tiny run with a regime of each new kind beside the supervised one: the Protocol table states each regime's
encoder passes and its measured seconds per step, and the Collapse section its diagnostics and flag line."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from replearn import Experiment
from replearn.config import config_from_dict

from helpers import make_blob_images, tiny_config

REGIMES = ["supervised", "byol", "masked"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("families")
    x, y = make_blob_images(96, seed=1)
    tx, ty = make_blob_images(30, seed=2)
    np.savez(tmp / "blobs.npz", train_x=x, train_y=y, test_x=tx, test_y=ty)
    raw = tiny_config(tmp / "blobs.npz", epochs=2, regimes=REGIMES, probe_every_epoch=False)
    raw["regimes"] = {"byol": {"flip": False}, "masked": {"patch_size": 2}}
    experiment = Experiment(config_from_dict(raw), out=tmp / "run", progress=False)
    experiment.run()
    return experiment.run_dir.path


def test_protocol_states_passes_and_measured_seconds_per_step(run):
    protocol = pd.read_csv(run / "tables" / "protocol.csv").set_index("model")
    assert protocol.loc["BYOL", "encoder passes per image"] == "4 forward, 2 backward"
    assert protocol.loc["supervised", "encoder passes per image"] == "1 forward, 1 backward"
    for name, label in (("supervised", "supervised"), ("byol", "BYOL"), ("masked", "masked image modelling")):
        history = pd.read_csv(run / "metrics" / f"train_{name}_seed0.csv")
        steps = protocol.loc[label, "optimisation steps"] / protocol.loc[label, "epochs"]
        assert protocol.loc[label, "seconds per step"] == pytest.approx(history.train_seconds.median() / steps,
                                                                       abs=1e-3)


def test_collapse_section_gives_every_regime_its_diagnostics_and_one_flag_line(run):
    collapse = pd.read_csv(run / "metrics" / "collapse.csv").set_index("model")
    assert list(collapse.index) == REGIMES
    assert collapse.projection_rankme.notna().tolist() == [False, True, False]  # only BYOL has a projector
    assert collapse.labels_in_training.tolist() == [True, False, False]
    report = (run / "report.html").read_text()
    assert "<h2>Collapse" in report
    assert ("No label-free regime collapsed" in report) != ("Collapsed: " in report)
