"""Contract of every registered encoder with Captum: after ``hookable`` (an eval copy without in-place
activations) no module runs twice in a forward pass and no module's output is changed in place, so forward
hooks and layer attributions (Grad-CAM) read each layer once and as it was; an encoder that reuses a module
is refused with a message that says so."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from replearn.config.sections import model_config
from replearn.encoders import ENCODERS, build_encoder
from replearn.errors import ConfigError
from replearn.interpret.attributions import METHODS, Settings, attribute
from replearn.interpret.explain import check_hookable, hookable, spatial_stages
from replearn.interpret.targets import HeadLogits

SMALL_ENCODER = {"conv": {"channels": [4, 8]}, "resnet": {"depth": 10, "width": 4}}


@pytest.mark.parametrize("name", ENCODERS.names())
def test_every_encoder_can_be_hooked_by_captum_and_explained_at_each_stage(name):
    encoder = build_encoder(model_config(name=name, latent_dim=5, **SMALL_ENCODER.get(name, {})), (1, 16, 16), 0)
    check_hookable(encoder)
    model = hookable(HeadLogits(encoder, nn.Linear(5, 3)))
    assert not any(getattr(m, "inplace", False) for m in model.modules())
    x, target = torch.randn(2, 1, 16, 16), torch.tensor([0, 2])
    for method in METHODS:
        for stage in (spatial_stages(model.encoder) if method == "gradcam" else [None]):
            att = attribute(method, model, x, target, Settings(ig_steps=4, smoothgrad_samples=2, stage=stage))
            assert att.values.shape == x.shape and torch.isfinite(att.values).all(), (method, stage)


class ReusingEncoder(nn.Module):
    """Deliberately breaks the contract: one nn.ReLU object after both convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.in_shape = (1, 16, 16)
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.relu(self.conv1(x)))).mean((2, 3))


def test_an_encoder_that_reuses_a_module_is_caught_with_a_clear_message():
    with pytest.raises(ConfigError) as info:
        check_hookable(ReusingEncoder())
    assert "calls its module 'relu' 2 times in one forward pass" in info.value.problem
    assert "breaks Captum's hooks" in info.value.problem and "its own module" in info.value.fix
