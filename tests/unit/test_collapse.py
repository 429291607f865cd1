"""Collapse diagnostics: the normalised standard deviation and RankMe on embeddings of known shape, and the flag
firing on SimSiam trained without its stop-gradient (the collapsing ablation of Chen & He 2021, Fig. 2) but
not on SimSiam itself, from the same initial encoder and batches."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from replearn.analyses.collapse import collapse_flag, regime_collapse
from replearn.metrics.collapse import collapse_report, collapsed, diagnose, normalised_std
from replearn.config import model_config
from replearn.encoders import build_encoder
from replearn.regimes import DataInfo, make_regime


def test_normalised_std_is_one_over_root_d_when_spread_and_zero_when_collapsed():
    g = torch.Generator().manual_seed(0)
    for d in (4, 16, 64):
        spread = torch.randn(4000, d, generator=g, dtype=torch.float64)
        assert normalised_std(spread) == pytest.approx(1 / math.sqrt(d), rel=0.05)
    point = torch.ones(100, 8) + 1e-9 * torch.randn(100, 8, generator=g)
    assert normalised_std(point) < 1e-6


def test_diagnose_and_flag_separate_a_spread_a_point_and_a_line():
    g = torch.Generator().manual_seed(1)
    spread = diagnose(torch.randn(500, 16, generator=g))
    point = diagnose(torch.full((500, 16), 3.0) + 1e-6 * torch.randn(500, 16, generator=g))
    on_a_line = torch.randn(500, 1, generator=g) * torch.randn(1, 16, generator=g)
    line = diagnose(on_a_line)
    assert spread["std_ratio"] > 0.9 and spread["rankme"] > 12 and not collapsed(spread)
    assert point["std_ratio"] < 1e-4 and collapsed(point)
    assert line["rankme"] == pytest.approx(1.0, abs=1e-3) and collapsed(line)
    report = collapse_report(torch.randn(500, 16, generator=g), on_a_line)
    assert report["collapsed"] and report["latent_rankme"] > 12 and report["projection_rankme"] < 1.01


def smooth_images(n: int = 128) -> torch.Tensor:
    """Random smooth 8×8 images (4×4 noise upsampled): many ways to differ, so a healthy embedding keeps
    several dimensions."""
    g = torch.Generator().manual_seed(0)
    return 2 * F.interpolate(torch.randn(n, 1, 4, 4, generator=g), size=(8, 8), mode="bilinear", align_corners=False)


@pytest.fixture
def one_thread():
    """One thread: the trajectory (and so the figures below) must not depend on the machine's thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def trained_simsiam(stop_gradient: bool) -> dict:
    x = smooth_images()
    regime = make_regime("simsiam", {"stop_gradient": stop_gradient, "flip": False, "hidden_dim": 32,
                                     "projection_dim": 16})
    encoder = build_encoder(model_config(channels=[4, 8], latent_dim=16), (1, 8, 8), seed=0)
    torch.manual_seed(0)  # the heads draw their initial weights from the global generator: fix it
    head = regime.build_head(encoder, DataInfo((1, 8, 8), 4))
    optimiser = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=0.01)
    order = torch.Generator().manual_seed(1)
    for step in range(100):
        loss, _ = regime.loss(encoder, head, x[torch.randperm(len(x), generator=order)[:32]], None,
                              torch.Generator().manual_seed(step))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return regime_collapse(regime, encoder, head, x)


def test_simsiam_without_stop_gradient_is_flagged_and_simsiam_is_not(one_thread):
    healthy, ablated = trained_simsiam(True), trained_simsiam(False)
    assert not healthy["collapsed"], healthy
    assert ablated["collapsed"], ablated
    assert ablated["projection_rankme"] < healthy["projection_rankme"] - 1
    frame = pd.DataFrame([{"model": "simsiam", "seed": 0, "labels_in_training": False, **ablated},
                          {"model": "byol", "seed": 0, "labels_in_training": False, **healthy}])
    assert collapse_flag(frame).startswith("Collapsed: simsiam (")
    assert collapse_flag(frame.iloc[1:]).startswith("No label-free regime collapsed")
    labelled = frame.assign(labels_in_training=True)  # the flag concerns label-free regimes only
    assert collapse_flag(labelled).startswith("No label-free regime collapsed")
