"""Feature visualisation (replearn.interpret.featvis)."""
import pytest
import torch

from replearn.encoders import build_encoder
from replearn.config.sections import model_config
from replearn.errors import ConfigError
from replearn.encoders.extract import extract_features
from replearn.interpret.featvis import FourierImage, visualise


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 12, 12)])
def test_feature_visualisation_raises_its_target_activation(shape):
    encoder = build_encoder(model_config(channels=[4, 8], latent_dim=6), shape, seed=0)
    extract_features(encoder, torch.randn(4, *shape))  # as in a run: weights touched under inference mode
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    targets = [("stage1", 0), ("stage1", 3), ("stage2", 5), ("latent", 2)]
    result = visualise(encoder, targets, (0.5,) * shape[0], (0.25,) * shape[0], steps=30, lr=0.05, seed=0)
    assert result["images"].shape == (len(targets), *shape)
    assert result["images"].min() >= 0 and result["images"].max() <= 1
    assert (result["after"] > result["before"]).all(), (result["before"], result["after"])
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())  # weights untouched


def test_fourier_image_is_seeded_and_in_range():
    with torch.no_grad():
        a = FourierImage(2, (3, 10, 10), torch.Generator().manual_seed(0))()
        b = FourierImage(2, (3, 10, 10), torch.Generator().manual_seed(0))()
    assert torch.equal(a, b) and a.shape == (2, 3, 10, 10) and 0 <= float(a.min()) <= float(a.max()) <= 1


def test_zero_steps_are_refused():
    encoder = build_encoder(model_config(channels=[4], latent_dim=4), (1, 8, 8), seed=0)
    with pytest.raises(ConfigError, match="at least 1 step"):
        visualise(encoder, [("stage1", 0)], (0.5,), (0.25,), steps=0)
