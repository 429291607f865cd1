"""Attributions (replearn.interpret.attributions): every method finds the one pixel region a model reads;
Integrated Gradients is complete up to its recorded delta; the method registry refuses unknown names; the
hook-safety check catches reused modules and in-place changes, and leaves the original model alone."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from replearn.config.sections import model_config
from replearn.encoders import Encoder, StageInfo, build_encoder
from replearn.errors import ConfigError
from replearn.interpret.attributions import METHODS, Settings, attribute, check_methods
from replearn.interpret.explain import check_hookable, default_stage, hookable, stage_module
from replearn.interpret.targets import HeadLogits, ProbeLogits

REGION = (slice(2, 5), slice(3, 6))  # rows 2–4, columns 3–5 of an 8×8 image


class RegionGate(nn.Module):
    """A 1×1 convolution whose output is kept only inside REGION."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 0.5]).view(2, 1, 1, 1))
            self.conv.bias.zero_()
        mask = torch.zeros(1, 1, 8, 8)
        mask[0, 0, REGION[0], REGION[1]] = 1.0
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.conv(x)) * self.mask


class RegionEncoder(Encoder):
    """An encoder whose latent depends on the pixels of REGION only (stage1 is 8×8, the latent a linear map)."""

    def __init__(self) -> None:
        super().__init__()
        self.in_shape = (1, 8, 8)
        self.latent_dim = 3
        self.stages = nn.ModuleDict({"stage1": RegionGate()})
        self.latent = nn.Linear(2 * 64, 3)
        with torch.no_grad():
            self.latent.weight.copy_(torch.rand(3, 128) + 0.5)
            self.latent.bias.zero_()
        self.feature_info = [StageInfo("stage1", 2, 8, 8, 1, "stages.stage1"), StageInfo("latent", 3, 1, 1, 0, "latent")]

    def forward_features(self, x, layers=None):
        wanted = set(self.check_layers(layers))
        s1 = self.stages["stage1"](x)
        out = {"stage1": s1, "latent": self.latent(s1.flatten(1))}
        return {k: v for k, v in out.items() if k in wanted}

    def forward(self, x):
        return self.latent(self.stages["stage1"](x).flatten(1))


def region_model() -> nn.Module:
    head = nn.Linear(3, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]]))
        head.bias.zero_()
    return hookable(HeadLogits(RegionEncoder(), head))


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_puts_most_of_its_mass_on_the_region_the_model_reads(method):
    torch.manual_seed(0)
    x = torch.rand(6, 1, 8, 8) + 0.2  # content everywhere, so only the model's reading can single out the region
    settings = Settings(baseline=torch.zeros(1, 1, 8, 8), stage="stage1", ig_steps=24, smoothgrad_samples=16)
    maps = np.abs(attribute(method, region_model(), x, torch.zeros(6, dtype=torch.long), settings).maps)
    inside = maps[:, REGION[0], REGION[1]].reshape(6, -1).sum(1)
    assert (inside / maps.reshape(6, -1).sum(1) > 0.9).all(), (method, inside / maps.reshape(6, -1).sum(1))


def test_integrated_gradients_is_complete_up_to_its_recorded_delta():
    model = region_model()
    x, baseline = torch.rand(4, 1, 8, 8), torch.full((1, 1, 8, 8), 0.1)
    target = torch.zeros(4, dtype=torch.long)
    att = attribute("integrated_gradients", model, x, target, Settings(baseline=baseline, ig_steps=64))
    with torch.no_grad():
        change = model(x)[:, 0] - model(baseline.expand_as(x))[:, 0]
    total = att.values.flatten(1).sum(1)
    assert torch.allclose(total - att.delta, change, atol=1e-4)
    assert att.delta.abs().max() < 0.05 * change.abs().max()


def test_attribution_leaves_the_global_random_state_and_is_seeded():
    model, x, y = region_model(), torch.rand(3, 1, 8, 8), torch.zeros(3, dtype=torch.long)
    state = torch.random.get_rng_state()
    a = attribute("smoothgrad", model, x, y, Settings(), seed=3).maps
    assert torch.equal(state, torch.random.get_rng_state())
    assert np.array_equal(a, attribute("smoothgrad", model, x, y, Settings(), seed=3).maps)


def test_unknown_method_is_refused_with_the_valid_ones():
    with pytest.raises(ConfigError) as info:
        check_methods(["integrated_gradients", "occlusion"], "analyses.attributions.methods")
    assert "occlusion" in info.value.problem and all(m in info.value.fix for m in METHODS)
    with pytest.raises(ConfigError):
        attribute("lime", region_model(), torch.rand(1, 1, 8, 8), torch.zeros(1, dtype=torch.long), Settings())


def test_gradcam_refuses_a_stage_the_encoder_lacks():
    with pytest.raises(ConfigError, match="no stage 'stage9'"):
        attribute("gradcam", region_model(), torch.rand(1, 1, 8, 8), torch.zeros(1, dtype=torch.long),
                  Settings(stage="stage9"))


def test_hookable_turns_off_in_place_activations_on_a_copy():
    encoder = build_encoder(model_config(channels=[4, 8], latent_dim=5), (1, 8, 8), 0)
    clone = hookable(encoder)
    assert any(getattr(m, "inplace", False) for m in encoder.modules())
    assert not any(getattr(m, "inplace", False) for m in clone.modules())
    assert not clone.training and all(not p.requires_grad for p in clone.parameters())
    assert all(p.requires_grad for p in encoder.parameters())
    x = torch.randn(2, 1, 8, 8)
    assert torch.allclose(encoder.eval()(x), clone(x))
    assert default_stage(encoder) == "stage1" and isinstance(stage_module(encoder, "stage2"), nn.Sequential)


class SharedReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.in_shape = (1, 8, 8)
        self.a, self.b, self.act = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1), nn.ReLU()

    def forward(self, x):
        return self.act(self.b(self.act(self.a(x)))).flatten(1)


class FunctionalInPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.in_shape = (1, 8, 8)
        self.a = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        return F.relu(self.a(x), inplace=True).flatten(1)


def test_check_hookable_catches_a_reused_module_and_an_in_place_change():
    with pytest.raises(ConfigError, match="calls its module 'act' 2 times"):
        check_hookable(SharedReLU())
    with pytest.raises(ConfigError, match="changes the output of its module 'a' in place"):
        check_hookable(FunctionalInPlace())
    check_hookable(RegionEncoder())


def test_probe_target_explains_through_the_frozen_encoder():
    encoder = RegionEncoder()
    probe = ProbeLogits(encoder, torch.zeros(3), torch.ones(3), torch.tensor([[1.0, -1.0]] * 3), torch.zeros(2))
    maps = np.abs(attribute("gradient_x_input", hookable(probe), torch.rand(2, 1, 8, 8) + 0.2,
                            torch.zeros(2, dtype=torch.long), Settings()).maps)
    assert maps[:, REGION[0], REGION[1]].sum() > 0.99 * maps.sum()
