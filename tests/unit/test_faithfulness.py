"""Faithfulness (replearn.interpret.faithfulness): on a model that reads one pixel, deleting that pixel first
drops the class probability at once (deletion AUC below a random order's) and inserting it first raises it
at once; Captum's infidelity and max-sensitivity come back per image."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from replearn.interpret.attributions import Settings, attribute
from replearn.interpret.explain import hookable
from replearn.interpret.faithfulness import (area_under, fractions, infidelity_scores, perturbation_curve,
                                             pixel_order, random_maps, sensitivity_scores)

PIXEL = (3, 5)


class OnePixel(nn.Module):
    """Logits (4·x[PIXEL], −4·x[PIXEL]): class 0 is likely exactly when the pixel is bright."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = 4.0 * x[:, 0, PIXEL[0], PIXEL[1]]
        return torch.stack([v, -v], 1)


def test_deletion_of_the_true_order_is_below_a_random_order_and_insertion_above():
    torch.manual_seed(0)
    x = torch.rand(8, 1, 8, 8) * 0.5
    x[:, 0, PIXEL[0], PIXEL[1]] = 1.0
    reference = torch.full((1, 1, 8, 8), -1.0)
    target = torch.zeros(8, dtype=torch.long)
    truth = np.zeros((8, 8, 8))
    truth[:, PIXEL[0], PIXEL[1]] = 1.0
    xs = fractions(16)
    deletion = {name: area_under(perturbation_curve(OnePixel(), x, target, maps, reference, "deletion", 16), xs)
                for name, maps in (("true", truth), ("random", random_maps(truth.shape, 0)))}
    insertion = {name: area_under(perturbation_curve(OnePixel(), x, target, maps, reference, "insertion", 16), xs)
                 for name, maps in (("true", truth), ("random", random_maps(truth.shape, 0)))}
    assert deletion["true"].mean() < deletion["random"].mean() - 0.2
    assert insertion["true"].mean() > insertion["random"].mean() + 0.2
    curve = perturbation_curve(OnePixel(), x, target, truth, reference, "deletion", 16)
    assert curve.shape == (8, 17) and np.allclose(curve[:, 1:], curve[:, -1:])  # gone after the first step


def test_an_attribution_method_orders_the_pixel_first():
    x = torch.rand(4, 1, 8, 8) + 0.1
    target = torch.zeros(4, dtype=torch.long)
    att = attribute("gradient_x_input", hookable(OnePixel()), x, target, Settings())
    assert (pixel_order(att.maps)[:, 0] == PIXEL[0] * 8 + PIXEL[1]).all()


def test_area_under_a_constant_curve_is_the_constant():
    assert np.allclose(area_under(np.full((2, 11), 0.3)), 0.3)


def test_infidelity_and_sensitivity_are_per_image_and_finite():
    model = hookable(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)))
    x, target = torch.randn(5, 1, 8, 8), torch.arange(5) % 3
    att = attribute("smoothgrad", model, x, target, Settings())
    inf = infidelity_scores(model, x, target, att.values, samples=4)
    sens = sensitivity_scores(lambda i, t: attribute("gradient_x_input", model, i, t, Settings()).values, x, target,
                              samples=2)
    assert inf.shape == (5,) and sens.shape == (5,) and np.isfinite(inf).all() and np.isfinite(sens).all()
    # a linear model's gradient is the same everywhere, so its (smoothed) gradient predicts every perturbation's
    # effect exactly: infidelity ~0
    assert inf.max() < 1e-4


def test_every_method_scores_zero_sensitivity_at_a_vanishing_radius():
    """SmoothGrad's noise is fixed per image, so re-running it on a barely perturbed batch of a different shape
    gives the same map: its max-sensitivity at radius 1e-9 is ~0, like the deterministic methods'."""
    from replearn.interpret.attributions import METHODS

    from replearn.config.sections import model_config
    from replearn.encoders import build_encoder
    from replearn.interpret.targets import HeadLogits

    torch.manual_seed(0)
    encoder = build_encoder(model_config(channels=[4, 8], latent_dim=5), (1, 8, 8), 0)
    model = hookable(HeadLogits(encoder, nn.Linear(5, 3)))
    x, target = torch.rand(6, 1, 8, 8), torch.arange(6) % 3
    settings = Settings(baseline=torch.zeros(1, 1, 8, 8), ig_steps=8, smoothgrad_samples=8, stage="stage1")
    for method in METHODS:
        def explain(i, t, method=method):
            return attribute(method, model, i, t, settings, seed=5).values
        floor = sensitivity_scores(explain, x, target, samples=2, radius=1e-9)
        real = sensitivity_scores(explain, x, target, samples=2, radius=0.05)
        assert floor.max() < 1e-6, (method, floor)
        if method == "smoothgrad":
            assert real.mean() > 100 * max(floor.max(), 1e-9)  # a real perturbation still moves the map


def test_smoothgrad_maps_do_not_depend_on_the_batch_and_match_captum_saliency():
    from captum.attr import Saliency

    from replearn.interpret.attributions import smoothgrad_noise

    torch.manual_seed(1)
    model = hookable(nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 64, 2)))
    x, target = torch.rand(5, 1, 8, 8), torch.tensor([0, 1, 1, 0, 1])
    settings = Settings(smoothgrad_samples=6, smoothgrad_noise=0.2, internal_batch_size=8)
    whole = attribute("smoothgrad", model, x, target, settings, seed=11).values
    alone = torch.cat([attribute("smoothgrad", model, x[i:i + 1], target[i:i + 1], settings, seed=11).values
                       for i in range(5)])
    shuffled = attribute("smoothgrad", model, x.flip(0), target.flip(0), settings, seed=11).values.flip(0)
    assert torch.allclose(whole, alone, atol=1e-6) and torch.allclose(whole, shuffled, atol=1e-6)
    # independent check: Captum's Saliency on each noisy copy, averaged; the noise is drawn as attribute draws it
    from replearn.interpret.explain import seeded

    with seeded(11):
        noise = smoothgrad_noise(6, (1, 8, 8), int(torch.randint(0, 2**62, ())))
    spread = (x.flatten(1).max(1).values - x.flatten(1).min(1).values).view(-1, 1, 1, 1)
    expected = torch.stack([Saliency(model).attribute(x + 0.2 * spread * n, target=target, abs=False)
                            for n in noise]).mean(0)
    assert torch.allclose(whole, expected, atol=1e-6)


def test_every_method_is_scored_on_colour_images():
    """Captum's max-sensitivity flattens every map with ``view``, so each must come back contiguous, whatever the
    input's memory order (found by an STL-10 run, whose column-major images gave gradients of the same strides)."""
    from replearn.interpret.attributions import METHODS

    from replearn.config.sections import model_config
    from replearn.encoders import build_encoder
    from replearn.interpret.targets import HeadLogits

    torch.manual_seed(0)
    encoder = build_encoder(model_config(channels=[4, 8], latent_dim=5), (3, 8, 8), 0)
    model = hookable(HeadLogits(encoder, nn.Linear(5, 3)))
    x, target = torch.rand(4, 3, 8, 8).transpose(2, 3), torch.arange(4) % 3  # column-major, as STL-10's files
    settings = Settings(baseline=torch.zeros(1, 3, 8, 8), ig_steps=4, smoothgrad_samples=4, stage="stage1")
    for method in METHODS:
        scores = sensitivity_scores(lambda i, t, method=method: attribute(method, model, i, t, settings).values,
                                    x, target, samples=2)
        assert scores.shape == (4,) and np.isfinite(scores).all(), method
