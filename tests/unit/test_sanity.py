"""Sanity checks (replearn.interpret.sanity, Adebayo et al. 2018): a trained model's maps lose their
similarity once its layers are randomised, a map that ignores the weights (an edge detector on the input)
keeps a similarity of 1 and is marked, and the randomisation leaves the model as it was."""
from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import make_blob_images
from replearn.config.sections import model_config
from replearn.encoders import build_encoder
from replearn.interpret.attributions import Settings, attribute
from replearn.interpret.explain import hookable
from replearn.interpret.sanity import (METRICS, THRESHOLD, not_reflecting, randomisable_layers, randomisation_tests,
                                       randomised, similarity)
from replearn.interpret.targets import HeadLogits, ProbeLogits


def trained_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small conv encoder and linear head trained on the blob images (the class is where a square is): a
    fresh copy of one trained once per test process."""
    model, x, y = _trained_once()
    return copy.deepcopy(model), x.clone(), y.clone()


@functools.lru_cache(maxsize=1)
def _trained_once() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x_np, y_np = make_blob_images(240, seed=1)
    x = torch.from_numpy(x_np).float().unsqueeze(1) / 255.0
    x = (x - x.mean()) / x.std()
    y = torch.from_numpy(y_np).long()
    encoder = build_encoder(model_config(channels=[4, 8], latent_dim=6), (1, 8, 8), 0)
    head = nn.Linear(6, 3)
    model = HeadLogits(encoder, head)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(120):
        optimiser.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimiser.step()
    model.eval()
    assert (model(x).argmax(1) == y).float().mean() > 0.9
    return hookable(model), x[:6], y[:6]


def edges(x: torch.Tensor) -> np.ndarray:
    """A Sobel edge map of the input: an 'explanation' that never looks at the model."""
    kx = torch.tensor([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]]).view(1, 1, 3, 3)
    gx, gy = F.conv2d(x, kx, padding=1), F.conv2d(x, kx.transpose(2, 3), padding=1)
    return (gx ** 2 + gy ** 2).sqrt()[:, 0].numpy()


def test_trained_model_maps_lose_their_similarity_while_an_edge_detector_keeps_it():
    model, x, y = trained_model()
    settings = Settings(smoothgrad_samples=16)

    def smoothgrad(m: nn.Module) -> np.ndarray:
        return attribute("smoothgrad", m, x, y, settings).maps

    frames = [randomisation_tests(model, smoothgrad).assign(method="smoothgrad"),
              randomisation_tests(model, lambda m: edges(x)).assign(method="edges")]
    frame = pd.concat(frames).assign(model="trained")
    assert set(frame.test) == {"cascading", "independent"}
    assert list(frame[frame.test == "cascading"].layer) == ["probe", "latent", "stage2", "stage1"] * 2
    full = frame[(frame.test == "cascading") & (frame.step == frame.step.max())].set_index("method")
    assert full.loc["smoothgrad", "spearman_abs"] < 0.3 and full.loc["smoothgrad", "ssim"] < 0.5
    edge_rows = frame[frame.method == "edges"]
    assert np.allclose(edge_rows[list(METRICS)].to_numpy(), 1.0)
    marks = not_reflecting(frame).set_index("method")
    assert bool(marks.loc["edges", "not_reflecting"]) and not bool(marks.loc["smoothgrad", "not_reflecting"])
    assert THRESHOLD == 0.5


def test_randomisation_changes_only_the_named_layers_and_restores_the_model():
    model, x, y = trained_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copy = randomised(model, ["probe", "stage2"], seed=1)
    after = copy.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("head.", "encoder.stages.stage2.")) for k in changed)
    assert any(k.startswith("encoder.stages.stage2.") for k in changed)
    assert torch.equal(randomised(model, ["stage2"], seed=1).state_dict()["encoder.stages.stage2.0.weight"],
                       after["encoder.stages.stage2.0.weight"]), "a layer's draw depends on the seed and its name"
    randomisation_tests(model, lambda m: attribute("gradient_x_input", m, x, y, Settings()).maps)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_a_probe_is_randomised_with_the_spread_of_its_fitted_weights():
    encoder = build_encoder(model_config(channels=[4, 8], latent_dim=6), (1, 8, 8), 0)
    coef = torch.randn(6, 3) * 2.0
    probe = ProbeLogits(encoder, torch.zeros(6), torch.ones(6), coef, torch.zeros(3))
    assert randomisable_layers(probe) == ["probe", "latent", "stage2", "stage1"]
    new = randomised(probe, ["probe"], seed=0).coef
    assert not torch.equal(new, coef) and 0.5 < float(new.std() / coef.std()) < 2.0


def test_similarity_of_a_map_with_itself_is_one_and_with_its_negative_is_not():
    maps = np.random.default_rng(0).normal(size=(3, 8, 8))
    same = similarity(maps, maps)
    assert all(np.allclose(v, 1.0) for v in same.values())
    flipped = similarity(maps, -maps)
    assert np.allclose(flipped["spearman"], -1.0) and np.allclose(flipped["spearman_abs"], 1.0)
    assert np.allclose(similarity(maps, np.zeros_like(maps))["hog"], 0.0)


def test_verdict_against_the_null_floor_passes_input_multiplied_maps_and_fails_a_map_that_ignores_the_weights():
    """gradient × input on a trained model: its absolute maps stay similar after randomisation (the input dominates
    them) but no more than two random models' maps are to each other, and its input-free ranking changes: it
    passes. An edge detector ignores the weights: the floor itself is 1, so it fails."""
    from replearn.interpret.sanity import INPUT_FREE, null_floor, verdicts

    model, x, y = trained_model()
    divisor = x[:, 0].numpy()  # gradient × input's baseline is 0
    gxi = lambda m: attribute("gradient_x_input", m, x, y, Settings()).maps  # noqa: E731
    frames = [null_floor(model, gxi, gxi(model), draws=3, divisor=divisor).assign(method="gradient_x_input"),
              null_floor(model, lambda m: edges(x), edges(x), draws=3).assign(method="edges")]
    null = pd.concat(frames).assign(model="trained")
    assert set(null.draw) == {0, 1, 2} and set(null.kind) == {"trained_vs_random", "random_vs_random"}
    marks = verdicts(null).set_index("method")
    gx = marks.loc["gradient_x_input"]
    assert gx.verdict_metric == INPUT_FREE and not gx.not_reflecting
    assert gx[f"{INPUT_FREE}__trained_vs_random"] < 0.5
    assert gx["spearman_abs__random_vs_random"] > gx[f"{INPUT_FREE}__random_vs_random"]  # |map| rides on the input
    edge = marks.loc["edges"]
    assert edge.not_reflecting and edge.weight_independent
    assert edge["spearman_abs__random_vs_random"] == pytest.approx(1.0)
    assert gx["spearman_abs__trained_vs_random__min"] <= gx["spearman_abs__trained_vs_random"] \
        <= gx["spearman_abs__trained_vs_random__max"]


def test_input_free_spearman_divides_out_the_input():
    from replearn.interpret.sanity import input_free_spearman

    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 1.5, size=(2, 6, 6))
    g1, g2 = rng.normal(size=(2, 6, 6)), rng.normal(size=(2, 6, 6))
    same = input_free_spearman(g1 * x, 3 * g1 * x, x)
    assert np.allclose(same, 1.0)  # the same gradient under any positive scale
    from scipy.stats import spearmanr
    got = input_free_spearman(g1 * x, g2 * x, x)
    assert got == pytest.approx([spearmanr(g1[i].ravel(), g2[i].ravel())[0] for i in range(2)])


@pytest.mark.parametrize("shape, win", [((5, 8, 8), 7), ((3, 12, 9), 7), ((4, 5, 5), 5), ((2, 4, 6), 3)])
def test_stacked_ssim_equals_scikit_image_image_by_image(shape, win):
    from skimage.metrics import structural_similarity

    from replearn.interpret.sanity import stacked_ssim

    rng = np.random.default_rng(sum(shape))
    a = rng.uniform(size=shape)
    b = np.clip(a + rng.normal(scale=0.2, size=shape), 0, 1)
    want = [structural_similarity(x, y, data_range=1.0, win_size=win) for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(stacked_ssim(a, b, win), want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(stacked_ssim(a, a, win), 1.0, rtol=1e-12)


@pytest.mark.parametrize("shape", [(6, 8, 8), (4, 28, 28), (3, 9, 13), (3, 32, 32), (2, 7, 7), (2, 48, 48),
                                   (2, 96, 100)])
def test_stacked_hog_equals_scikit_image_image_by_image(shape):
    """The stack's HOG descriptors are scikit-image's, bit for bit: even cells and odd (28 px: 7-pixel cells),
    non-square maps, one-pixel cells, flat and sparse maps."""
    from skimage.feature import hog

    from replearn.interpret.sanity import _hog_geometry, _unit, stacked_hog

    rng = np.random.default_rng(sum(shape))
    maps = rng.normal(size=shape) * (rng.uniform(size=shape) > 0.3)
    maps[0] = 0.0
    unit = _unit(maps)
    cell, block = _hog_geometry(*shape[1:])
    want = np.stack([hog(u, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(block, block))
                     for u in unit])
    np.testing.assert_array_equal(stacked_hog(unit), want)
