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
