"""A ten-regime digits run end to end (issue 28): every figure its report draws keeps its labels apart (the text
boxes, as matplotlib lays them out, do not intersect), every regime appears in the report, and the run is
`complete`. The interpretability analyses, which draw their ten-regime grids in tests/unit/test_report_scale.py,
are left out to keep the run short."""

from __future__ import annotations

import pytest

from replearn.analyses import plots
from replearn.cli.main import main
from replearn.rundir.io import read_json

from helpers import INTERPRETABILITY, overlapping_labels

REGIMES = [
    "supervised",
    "autoencoder",
    "denoising",
    "vae",
    "contrastive",
    "joint",
    "supcon",
    "byol",
    "simsiam",
    "barlow_twins",
]


@pytest.mark.slow
def test_a_ten_regime_digits_report_draws_every_figure_with_its_labels_apart(tmp_path, monkeypatch):
    drawn: dict[int, list[tuple[str, str]]] = {}
    original = plots.png_and_bbox

    def checked(fig):
        if id(fig) not in drawn:
            drawn[id(fig)] = overlapping_labels(fig, close=False)
        return original(fig)

    monkeypatch.setattr(plots, "png_and_bbox", checked)
    out = tmp_path / "ten"
    sets = [
        f"train.regimes=[{', '.join(REGIMES)}]",
        "train.epochs=1",
        "data.train_subset=300",
        "data.test_subset=150",
        "model.channels=[8, 16]",
        "model.latent_dim=8",
        "analysis.figure_formats=[png]",
        "analysis.draw_ahead=never",  # every figure drawn in this process, where the check above sees it
        "analysis.label_counts=[1, 5]",
        "analysis.label_draws=1",
        "analysis.projection_points=100",
        "analysis.analysis_points=150",
        f"analysis.skip=[{', '.join(INTERPRETABILITY)}]",
    ]
    assert main(["run", "--out", str(out), "--quiet", *[a for s in sets for a in ("--set", s)]]) == 0
    assert read_json(out / "status.json")["state"] == "complete"
    assert len(drawn) >= 10, f"only {len(drawn)} figures were drawn"
    overlaps = [pair for pairs in drawn.values() for pair in pairs]
    assert overlaps == [], overlaps[:10]
    html = (out / "report.html").read_text()
    assert all(regime in html for regime in REGIMES)
