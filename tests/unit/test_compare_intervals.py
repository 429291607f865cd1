"""`replearn compare`'s run-to-run measures: an angle (the Procrustes distance, in radians, up to π/2) gets a plain
seed interval, not the logit one of a [0, 1] measure (a two-seed depth study raised there)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

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
    misused = compare.cross_run_cka(lay, MEASURES["procrustes"].fn)  # declared [0, 1], which angles are not
    assert misused[misused.x == 2].iloc[0]["interval"] == "t-interval over 2 seeds"  # named for what it is


def test_gradient_norms_over_seeds_get_a_log_scale_interval_above_zero():
    """Two seeds' first-layer gradient norms 0.2 and 0.9 (one run each at one swept value): the interval is taken
    on the log scale, the scale of the gradient figures, so it stays above 0 and holds both seeds."""
    import pandas as pd

    def run(norm: float) -> SimpleNamespace:
        frame = pd.DataFrame(
            {
                "regime": ["supervised"] * 2,
                "layer": ["stage1", "latent"],
                "grad_norm": [norm, 0.05],
                "grad_norm_per_param": [norm / 10, 0.005],
            }
        )
        artifacts = SimpleNamespace(
            csvs=lambda pattern: [("grad_init_supervised_seed0", frame)], style=lambda regime: (regime, "C0")
        )
        return SimpleNamespace(config={"model.convs_per_stage": 2}, artifacts=artifacts)

    lay = SimpleNamespace(
        panels=["all"],
        groups={("all", 2): [run(0.2), run(0.9)]},
        x_key="model.convs_per_stage",
        x_position=float,
        x_label=str,
    )
    for measure in (compare.initial_gradient_norm, compare.initial_gradient_per_param):
        rows = compare.aggregate(lay, measure, positive=True).set_index("series")
        first = rows.loc["stage1"]
        scale = 1 if measure is compare.initial_gradient_norm else 10
        assert 0 < first["low"] < 0.2 / scale and 0.9 / scale < first["high"], first
        assert first["interval"] == "log t-interval over 2 seeds"
        assert rows.loc["latent", "interval"].startswith("tie")
        plain = compare.aggregate(lay, measure).set_index("series").loc["stage1"]
        assert plain["low"] < 0  # what the gradient figures drew before: a norm below zero
