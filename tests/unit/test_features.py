import torch

from replearn.config.sections import model_config
from replearn.encoders.extract import eval_mode, extract_features, extract_splits, pooled_dims, pixel_features
from replearn.encoders import build_encoder


def trained_bn_encoder():
    enc = build_encoder(model_config(channels=[4, 8], latent_dim=5), (1, 8, 8), seed=0)
    enc.train()
    with torch.no_grad():
        for _ in range(3):
            enc(torch.randn(32, 1, 8, 8) * 3 + 1)
    return enc


def test_features_use_eval_batchnorm_and_leave_mode_and_stats_alone():
    enc = trained_bn_encoder()
    running = enc.stages["stage1"][1].running_mean.clone()
    x = torch.randn(20, 1, 8, 8)
    whole = extract_features(enc, x, batch_size=20)
    # in eval mode a sample's features do not depend on the rest of its batch
    alone = extract_features(enc, x[:1], batch_size=1)
    for name in whole:
        assert torch.allclose(whole[name][:1], alone[name], atol=1e-5)
    assert enc.training and torch.equal(running, enc.stages["stage1"][1].running_mean)


def test_pooling_bounds_dimension():
    enc = build_encoder(model_config(channels=[16, 32], latent_dim=7), (1, 28, 28), seed=0)
    dims = pooled_dims(enc, max_features=300)
    feats = extract_features(enc, torch.randn(3, 1, 28, 28), max_stage_features=300)
    assert {k: v.shape[1] for k, v in feats.items()} == dims
    assert dims["stage1"] <= 300 and dims["stage2"] <= 300 and dims["latent"] == 7
    assert dims["stage1"] == 16 * 4 * 4


def test_extract_splits_layout_and_pixels():
    enc = build_encoder(model_config(channels=[4], latent_dim=3), (1, 8, 8), seed=0)
    splits = {"train": torch.randn(5, 1, 8, 8), "test": torch.randn(2, 1, 8, 8)}
    feats = extract_splits(enc, splits, 64)
    assert set(feats) == {"stage1", "latent"} and feats["latent"]["test"].shape == (2, 3)
    assert pixel_features(splits)["input"]["train"].shape == (5, 64)


def test_eval_mode_restores_on_error():
    enc = trained_bn_encoder()
    try:
        with eval_mode(enc):
            assert not enc.training
            raise RuntimeError
    except RuntimeError:
        pass
    assert enc.training


def test_features_identical_after_checkpoint_round_trip():
    """A trained encoder (channels-last weights) and the same weights loaded into a fresh encoder must give
    bit-identical features, so that resumed runs and `replearn probe` reproduce the run's numbers."""
    enc = trained_bn_encoder().to(memory_format=torch.channels_last)
    fresh = build_encoder(model_config(channels=[4, 8], latent_dim=5), (1, 8, 8), seed=1)
    fresh.load_state_dict(enc.state_dict())
    x = torch.randn(64, 1, 8, 8)
    a, b = extract_features(enc, x), extract_features(fresh, x)
    for name in a:
        assert torch.equal(a[name], b[name])
