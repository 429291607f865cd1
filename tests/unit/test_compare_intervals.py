"""`replearn compare`'s run-to-run measures: an angle (the Procrustes distance, in radians, up to π/2) gets a plain
seed interval, not the logit one of a [0, 1] measure (a two-seed depth study raised there)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from replearn.metrics.similarity_measures import MEASURES
from replearn.studies import compare


def _run(value: int) -> SimpleNamespace:
    artifacts = SimpleNamespace(regimes=lambda: ["supervised"], style=lambda regime: (regime, "C0"))
    return SimpleNamespace(config={"model.latent_dim": value}, artifacts=artifacts)


def test_the_procrustes_angle_between_runs_gets_an_interval_over_seeds(monkeypatch):
    rng = np.random.RandomState(0)
    latents = {(value, seed): rng.randn(40, 6) for value in (1, 2) for seed in (0, 1)}
    monkeypatch.setattr(
        compare,
        "_latents",
        lambda run: {
            seed: {"points": np.arange(40), "supervised": latents[(run.config["model.latent_dim"], seed)]}
            for seed in (0, 1)
        },
    )
    first, second = _run(1), _run(2)
    lay = SimpleNamespace(
        panels=["all"],
        groups={("all", 1): [first], ("all", 2): [second]},
        x_key="model.latent_dim",
        x_position=float,
        x_label=str,
    )
    angles = compare.cross_run_cka(lay, MEASURES["procrustes"].fn, bounded=False)
    later = angles[angles.x == 2].iloc[0]
    assert later["mean"] > 1.0 and later["low"] < later["mean"] < later["high"]  # unrelated latents: near π/2
    assert later["interval"] == "t-interval over 2 seeds"
    with pytest.raises(ValueError, match="inside \\[0, 1\\]"):
        compare.cross_run_cka(lay, MEASURES["procrustes"].fn)  # a [0, 1] interval cannot take it
