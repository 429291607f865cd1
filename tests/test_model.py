import pytest
import torch

from replearn.config import ModelConfig
from replearn.errors import ConfigError
from replearn.model import ConvDecoder, build_encoder, build_head


def test_feature_info_matches_forward_features():
    enc = build_encoder(ModelConfig(channels=[4, 8, 16], latent_dim=10), (1, 28, 28), seed=0)
    feats = enc.forward_features(torch.randn(3, 1, 28, 28))
    assert list(feats) == enc.layer_names == ["stage1", "stage2", "stage3", "latent"]
    for info in enc.feature_info:
        shape = feats[info.name].shape
        expected = (3, info.channels) if info.name == "latent" else (3, info.channels, info.height, info.width)
        assert tuple(shape) == expected
    assert [i.reduction for i in enc.feature_info[:3]] == [2, 4, 8]
    assert torch.allclose(feats["latent"], enc(torch.randn(3, 1, 28, 28)) * 0 + feats["latent"])


def test_forward_features_subset_equals_full_forward():
    enc = build_encoder(ModelConfig(channels=[4, 8], latent_dim=5), (1, 8, 8), seed=0).eval()
    x = torch.randn(4, 1, 8, 8)
    assert torch.allclose(enc.forward_features(x, ["latent"])["latent"], enc(x))
    assert list(enc.forward_features(x, ["stage1"])) == ["stage1"]
    with pytest.raises(ConfigError, match="unknown layer"):
        enc.forward_features(x, ["stage9"])


def test_same_seed_same_weights_different_seed_different():
    cfg = ModelConfig(channels=[4, 8], latent_dim=5)
    a, b, c = (build_encoder(cfg, (1, 8, 8), s) for s in (0, 0, 1))
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb)
    assert not torch.equal(a.stages["stage1"][0].weight, c.stages["stage1"][0].weight)


def test_building_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    build_encoder(ModelConfig(), (1, 8, 8), seed=5)
    assert torch.equal(torch.rand(1), expected)


@pytest.mark.parametrize("shape, channels", [((1, 28, 28), [4, 8, 16]), ((3, 9, 7), [4, 8]), ((1, 8, 8), [4, 8, 16])])
def test_decoder_reconstructs_input_shape(shape, channels):
    enc = build_encoder(ModelConfig(channels=channels, latent_dim=6), shape, seed=0)
    dec = build_head("autoencoder", enc, 10, seed=0)
    assert isinstance(dec, ConvDecoder)
    x = torch.randn(2, *shape)
    assert dec(enc(x)).shape == x.shape


def test_classifier_head_outputs_logits():
    enc = build_encoder(ModelConfig(channels=[4], latent_dim=6), (1, 8, 8), seed=0)
    assert build_head("supervised", enc, 7, seed=0)(enc(torch.randn(2, 1, 8, 8))).shape == (2, 7)


def test_too_many_stages_and_too_wide_latent():
    with pytest.raises(ConfigError, match="too many for 8×8"):
        build_encoder(ModelConfig(channels=[4, 4, 4, 4]), (1, 8, 8), seed=0)
    with pytest.raises(ConfigError, match="larger than the input"):
        build_encoder(ModelConfig(channels=[4], latent_dim=65), (1, 8, 8), seed=0)
