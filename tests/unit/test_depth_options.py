"""The conv encoder's depth-study options (model.batch_norm, model.convs_per_stage, model.residual) and the
per-layer gradient norms at initialisation (metrics/grad_init_<regime>_seed<S>.csv)."""
from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
import torch.nn as nn

from replearn.config.sections import config_from_dict, model_config
from replearn.data import load_dataset
from replearn.encoders import build_encoder
from replearn.errors import ConfigError
from replearn.experiment.experiment import build_head
from replearn.regimes import make_regime
from replearn.training import Trainer, TrainSettings, epoch_order, layer_groups, step_generator
from replearn.training.steps import to_device
from replearn.training.grad_init import InitialGradNorms

from helpers import tiny_config


def test_default_encoder_is_the_original_weight_for_weight():
    torch.manual_seed(0)
    original = nn.ModuleDict({f"stage{i}": nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                                                        nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.MaxPool2d(2))
                              for i, (c_in, c_out) in enumerate([(1, 4), (4, 8)], start=1)})
    latent = nn.Linear(8 * 4 * 4, 5)
    encoder = build_encoder(model_config(channels=[4, 8], latent_dim=5), (1, 16, 16), 0)
    expected = {**{f"stages.{k}": v for k, v in original.state_dict().items()},
                **{f"latent.{k}": v for k, v in latent.state_dict().items()}}
    got = encoder.state_dict()
    assert list(got) == list(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_plain_encoder_has_no_batch_norm_and_biased_convolutions():
    encoder = build_encoder(model_config(channels=[4, 8], latent_dim=5, batch_norm=False, convs_per_stage=2),
                            (1, 16, 16), 0)
    convs = [m for m in encoder.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4 and all(c.bias is not None for c in convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in encoder.modules())


def test_residual_blocks_skip_and_every_convolution_is_a_named_layer_with_its_own_gradient_norm():
    encoder = build_encoder(model_config(channels=[4, 8], latent_dim=5, convs_per_stage=3, residual=True),
                            (1, 16, 16), 0)
    assert encoder.layer_names == ["stage1_1", "stage1_2", "stage1", "stage2_1", "stage2_2", "stage2", "latent"]
    names, params, index = layer_groups(encoder, nn.Linear(5, 3), "classifier")
    assert names == encoder.layer_names + ["classifier"]
    assert sorted(set(index)) == list(range(len(names)))  # every named layer owns parameters: no 'other' group
    block = encoder.stages["stage1_2"][0]
    with torch.no_grad():
        block.conv.weight.zero_()  # a residual block with a zero convolution passes its (ReLU'd) input through
        x = torch.rand(2, 4, 16, 16)
        assert torch.allclose(block.eval()(x), x)


def test_residual_with_one_convolution_per_stage_is_refused():
    with pytest.raises(ConfigError, match="model.convs_per_stage"):
        build_encoder(model_config(channels=[4, 8], residual=True), (1, 16, 16), 0)


def test_gradient_norms_at_initialisation_are_those_of_the_first_step(blob_npz, tmp_path):
    cfg = config_from_dict(tiny_config(blob_npz, epochs=1))
    data = load_dataset(cfg.data)
    regime = make_regime("supervised")
    encoder = build_encoder(cfg.model, data.image_shape, 0)
    head = build_head(regime, encoder, data, 0)
    enc0, head0 = copy.deepcopy(encoder), copy.deepcopy(head)
    path = tmp_path / "grad_init_supervised_seed0.csv"
    Trainer(regime, encoder, head, data, TrainSettings.from_config(cfg.train, 1), seed=0,
            callbacks=[InitialGradNorms(path)]).fit()
    recorded = pd.read_csv(path)
    idx = epoch_order(len(data.train_x), 0, 0)[:cfg.train.batch_size]
    loss, _ = regime.loss(enc0.train(), head0.train(), to_device(data.train_x[idx], torch.device("cpu")),
                          data.train_y[idx], step_generator(0, 0, 0, torch.device("cpu")))
    loss.backward()
    names, params, index = layer_groups(enc0, head0, regime.head_name)
    sq = torch.zeros(len(names))
    for p, i in zip(params, index):
        sq[i] += p.grad.pow(2).sum()
    assert recorded.layer.tolist() == names
    assert recorded.grad_norm.tolist() == pytest.approx(sq.sqrt().tolist(), rel=1e-4)
    assert recorded.loss.iloc[0] == pytest.approx(float(loss.detach()), rel=1e-5)
    sizes = torch.zeros(len(names))
    for p, i in zip(params, index):
        sizes[i] += p.numel()
    assert recorded.parameters.tolist() == sizes.long().tolist()
    rms = [float(torch.cat([p.grad.flatten() for p, i in zip(params, index) if i == k]).pow(2).mean().sqrt())
           for k in range(len(names))]  # the root mean square gradient entry of each layer
    assert recorded.grad_norm_per_param.tolist() == pytest.approx(rms, rel=1e-4)


@pytest.mark.parametrize("init", ["kaiming", "xavier", "orthogonal"])
def test_model_init_redraws_every_convolution_and_the_latent_and_default_keeps_pytorch(init):
    import math

    default = build_encoder(model_config(channels=[4, 8], latent_dim=5, batch_norm=False, convs_per_stage=6),
                            (1, 16, 16), 0)
    chosen = build_encoder(model_config(channels=[4, 8], latent_dim=5, batch_norm=False, convs_per_stage=6,
                                        init=init), (1, 16, 16), 0)
    again = build_encoder(model_config(channels=[4, 8], latent_dim=5, batch_norm=False, convs_per_stage=6,
                                       init=init), (1, 16, 16), 0)
    assert all(torch.equal(a, b) for a, b in zip(chosen.state_dict().values(), again.state_dict().values()))  # seeded
    convs = [(d, c) for d, c in zip(default.modules(), chosen.modules()) if isinstance(c, nn.Conv2d)]
    for d, c in convs:
        fan_in = c.weight[0].numel()
        # PyTorch's default: Kaiming-uniform with a = √5, variance 1/(3·fan-in)
        assert float(d.weight.detach().var()) == pytest.approx(1 / (3 * fan_in), rel=0.35)
        assert torch.count_nonzero(c.bias) == 0
        if init == "kaiming":
            assert float(c.weight.detach().var()) == pytest.approx(2 / fan_in, rel=0.35)  # He et al.: 2 / fan-in
        if init == "orthogonal":
            w = c.weight.detach().flatten(1)
            rows = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
            assert torch.allclose(rows, 2 * torch.eye(len(rows)), atol=1e-4)  # orthogonal, ReLU gain √2 squared
        if init == "xavier":
            fan_out = c.weight.shape[0] * c.weight[0, 0].numel()
            assert float(c.weight.detach().var()) == pytest.approx(2 * 2 / (fan_in + fan_out), rel=0.35)
    assert math.isclose(float(chosen.latent.bias.detach().abs().sum()), 0.0)


def test_kaiming_init_keeps_the_first_layer_gradient_of_a_deep_plain_cnn_from_vanishing():
    """24 plain convolutions: with PyTorch's default the first layer's gradient per parameter is orders of
    magnitude below the latent's; with He initialisation it is within a few orders."""
    torch.manual_seed(0)
    x, y = torch.rand(32, 1, 16, 16), torch.arange(32) % 4
    ratio = {}
    for init in ("default", "kaiming"):
        encoder = build_encoder(model_config(channels=[8, 8], latent_dim=8, batch_norm=False, convs_per_stage=12,
                                             init=init), (1, 16, 16), 0)
        head = nn.Linear(8, 4)
        nn.functional.cross_entropy(head(encoder(x)), y).backward()
        first = encoder.stages["stage1_1"][0].weight.grad
        last = encoder.latent.weight.grad
        ratio[init] = float(first.pow(2).mean().sqrt() / last.pow(2).mean().sqrt())
    assert ratio["default"] < 1e-4 and ratio["kaiming"] > 1e-2, ratio
