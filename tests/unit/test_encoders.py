import pytest
import torch

from replearn.config.sections import model_config
from replearn.errors import ConfigError
from replearn.encoders import ENCODERS, Encoder, build_encoder, encoder_from_spec, encoder_spec
from replearn.regimes import DataInfo, make_regime
from replearn.regimes.heads import ConvDecoder


def build_head(regime, encoder, num_classes, seed=0):
    torch.manual_seed(seed)
    return make_regime(regime).build_head(encoder, DataInfo(encoder.in_shape, num_classes))


def test_feature_info_matches_forward_features():
    enc = build_encoder(model_config(channels=[4, 8, 16], latent_dim=10), (1, 28, 28), seed=0)
    feats = enc.forward_features(torch.randn(3, 1, 28, 28))
    assert list(feats) == enc.layer_names == ["stage1", "stage2", "stage3", "latent"]
    for info in enc.feature_info:
        shape = feats[info.name].shape
        expected = (3, info.channels) if info.name == "latent" else (3, info.channels, info.height, info.width)
        assert tuple(shape) == expected
    assert [i.reduction for i in enc.feature_info[:3]] == [2, 4, 8]
    assert torch.allclose(feats["latent"], enc(torch.randn(3, 1, 28, 28)) * 0 + feats["latent"])


def test_forward_features_subset_equals_full_forward():
    enc = build_encoder(model_config(channels=[4, 8], latent_dim=5), (1, 8, 8), seed=0).eval()
    x = torch.randn(4, 1, 8, 8)
    assert torch.allclose(enc.forward_features(x, ["latent"])["latent"], enc(x))
    assert list(enc.forward_features(x, ["stage1"])) == ["stage1"]
    with pytest.raises(ConfigError, match="unknown layer"):
        enc.forward_features(x, ["stage9"])


def test_same_seed_same_weights_different_seed_different():
    cfg = model_config(channels=[4, 8], latent_dim=5)
    a, b, c = (build_encoder(cfg, (1, 8, 8), s) for s in (0, 0, 1))
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb)
    assert not torch.equal(a.stages["stage1"][0].weight, c.stages["stage1"][0].weight)


def test_building_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    build_encoder(model_config(), (1, 8, 8), seed=5)
    assert torch.equal(torch.rand(1), expected)


@pytest.mark.parametrize("shape, channels", [((1, 28, 28), [4, 8, 16]), ((3, 9, 7), [4, 8]), ((1, 8, 8), [4, 8, 16])])
def test_decoder_reconstructs_input_shape(shape, channels):
    enc = build_encoder(model_config(channels=channels, latent_dim=6), shape, seed=0)
    dec = build_head("autoencoder", enc, 10, seed=0)
    assert isinstance(dec, ConvDecoder)
    x = torch.randn(2, *shape)
    assert dec(enc(x)).shape == x.shape


def test_classifier_head_outputs_logits():
    enc = build_encoder(model_config(channels=[4], latent_dim=6), (1, 8, 8), seed=0)
    assert build_head("supervised", enc, 7, seed=0)(enc(torch.randn(2, 1, 8, 8))).shape == (2, 7)


def test_too_many_stages_and_too_wide_latent():
    with pytest.raises(ConfigError, match="too many for 8×8"):
        build_encoder(model_config(channels=[4, 4, 4, 4]), (1, 8, 8), seed=0)
    with pytest.raises(ConfigError, match="larger than the input"):
        build_encoder(model_config(channels=[4], latent_dim=65), (1, 8, 8), seed=0)


def test_feature_info_names_the_modules_that_produce_each_layer():
    enc = build_encoder(model_config(channels=[4, 8], latent_dim=5), (1, 8, 8), seed=0)
    modules = dict(enc.named_modules())
    for info in enc.feature_info:
        assert info.module in modules
    assert [i.spatial for i in enc.feature_info] == [True, True, False]


def test_encoder_spec_rebuilds_the_same_architecture():
    cfg = model_config(channels=[4, 8], kernel_size=5, latent_dim=5)
    enc = build_encoder(cfg, (1, 8, 8), seed=3)
    spec = encoder_spec(cfg, (1, 8, 8))
    assert spec == {"name": "conv", "kwargs": {"in_shape": [1, 8, 8], "latent_dim": 5, "channels": [4, 8],
                                                "kernel_size": 5, "batch_norm": True, "convs_per_stage": 1,
                                                "residual": False, "init": "default"}}
    again = encoder_from_spec(spec)
    again.load_state_dict(enc.state_dict())
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(again.eval()(x), enc.eval()(x))


def test_unknown_encoder_and_foreign_kwargs_are_config_errors():
    with pytest.raises(ConfigError, match="unknown encoder 'cnv'.*did you mean 'conv'"):
        build_encoder(model_config(name="cnv"), (1, 8, 8), 0)
    with pytest.raises(ConfigError, match="'model.depth' is not an option of encoder 'conv'"):
        build_encoder(model_config(kwargs={"depth": 3}), (1, 8, 8), 0)
    assert "conv" in ENCODERS.names()


def test_an_encoder_that_is_not_one_is_refused(tmp_path, monkeypatch):
    (tmp_path / "fake_encoders.py").write_text(
        "import torch.nn as nn\n"
        "def plain(in_shape, latent_dim):\n    return nn.Linear(3, latent_dim)\n"
        "NOT_CALLABLE = 3\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="not an Encoder"):
        build_encoder(model_config(name="fake_encoders:plain"), (1, 8, 8), 0)
    with pytest.raises(ConfigError, match="not an encoder class or factory"):
        build_encoder(model_config(name="fake_encoders:NOT_CALLABLE"), (1, 8, 8), 0)
    with pytest.raises(ConfigError, match="could not be imported"):
        build_encoder(model_config(name="no_such_module_here:Thing"), (1, 8, 8), 0)


def test_decoder_of_an_encoder_without_spatial_stages_is_linear():
    class Flat(Encoder):
        def __init__(self):
            super().__init__()
            from replearn.encoders import StageInfo
            self.in_shape, self.latent_dim = (1, 4, 4), 3
            self.fc = torch.nn.Linear(16, 3)
            self.feature_info = [StageInfo("latent", 3, 1, 1, 0, "fc")]

        def forward_features(self, x, layers=None):
            return {"latent": self.fc(x.flatten(1))}

    enc = Flat()
    dec = ConvDecoder(enc)
    assert dec(enc(torch.randn(2, 1, 4, 4))).shape == (2, 1, 4, 4)


@pytest.mark.parametrize("depth, blocks", [(8, 4), (18, 8), (34, 16)])
def test_resnet_stages_shapes_and_block_counts(depth, blocks):
    from replearn.encoders.resnet import BasicBlock, ResNetEncoder

    enc = ResNetEncoder((3, 32, 32), latent_dim=20, depth=depth, width=4).eval()
    assert enc.layer_names == ["stage1", "stage2", "stage3", "stage4", "latent"]
    assert [(s.channels, s.height, s.reduction) for s in enc.feature_info[:4]] == [(4, 32, 1), (8, 16, 2), (16, 8, 4),
                                                                                   (32, 4, 8)]
    assert sum(isinstance(m, BasicBlock) for m in enc.modules()) == blocks
    x = torch.randn(3, 3, 32, 32)
    feats = enc.forward_features(x)
    assert {k: tuple(v.shape) for k, v in feats.items()} == {"stage1": (3, 4, 32, 32), "stage2": (3, 8, 16, 16),
                                                             "stage3": (3, 16, 8, 8), "stage4": (3, 32, 4, 4),
                                                             "latent": (3, 20)}
    assert torch.allclose(enc(x), feats["latent"])
    # feature extraction folds every conv → batch norm pair and still computes the same function
    from replearn.encoders.extract import extract_features

    with torch.no_grad():
        for m in enc.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 1.5)
        direct = enc.forward_features(x)
    fused = extract_features(enc, x, max_stage_features=10**6)
    for name in direct:
        assert torch.allclose(fused[name], direct[name].flatten(1), atol=1e-4), name


def test_resnet_supervised_and_autoencoder_run_end_to_end(tmp_path, blob_npz):
    """ResNet-10 under both regimes from the same initial weights, the decoder mirrored from its stages."""
    import yaml

    from replearn.rundir.io import read_json
    from replearn.cli.main import main
    from helpers import tiny_config

    raw = tiny_config(blob_npz, epochs=1)
    raw["model"] = {"name": "resnet", "latent_dim": 16, "kwargs": {"depth": 10, "width": 4}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(raw))
    assert main(["run", str(tmp_path / "exp.yaml"), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert read_json(tmp_path / "run" / "status.json")["state"] == "complete"
    import pandas as pd

    probes = pd.read_csv(tmp_path / "run" / "metrics" / "probes.csv")
    assert {"stage1", "stage4", "latent"} <= set(probes[probes.model == "autoencoder"].layer)
    models = pd.read_csv(tmp_path / "run" / "metrics" / "models.csv").set_index("model")
    assert models.loc["autoencoder", "test_recon_mse"] > 0
