"""Each regime's loss on small synthetic tensors: what it computes, what it may see, and that it trains."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from replearn.config.sections import config_from_dict, model_config
from replearn.data import load_dataset
from replearn.encoders import build_encoder
from replearn.errors import ConfigError
from replearn.regimes import REGIMES, DataInfo, Regime, make_regime
from replearn.regimes.contrastive import ContrastiveOptions, nt_xent, random_views
from replearn.regimes.denoising import corrupt
from replearn.regimes.vae import kl_per_dim
from replearn.experiment.experiment import build_head
from replearn.training import EpochProbe, Trainer, TrainSettings

from helpers import tiny_config

BUILT_IN = ["supervised", "autoencoder", "denoising", "vae", "contrastive", "joint", "byol", "simsiam", "barlow_twins",
            "vicreg", "supcon", "masked"]


def setup(name, channels=(4, 8), shape=(1, 8, 8), **options):
    regime = make_regime(name, options)
    enc = build_encoder(model_config(channels=list(channels), latent_dim=6), shape, seed=0)
    head = regime.build_head(enc, DataInfo(shape, 3))
    return regime, enc, head


def test_every_built_in_regime_is_registered():
    assert set(BUILT_IN) <= set(REGIMES.names())


@pytest.mark.parametrize("name", BUILT_IN)
def test_loss_is_finite_and_its_gradient_reaches_every_encoder_layer(name):
    regime, enc, head = setup(name)
    x = torch.randn(16, 1, 8, 8)
    y = torch.randint(0, 3, (16,)) if regime.needs_labels else None
    loss, sums = regime.loss(enc, head, x, y, torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for pname, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    metrics = regime.metrics({k: float(v) for k, v in sums.items()}, 16, 64)
    assert all(math.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("name", BUILT_IN)
def test_randomness_comes_only_from_the_generator(name):
    regime, enc, head = setup(name)
    x = torch.randn(8, 1, 8, 8)
    y = torch.randint(0, 3, (8,)) if regime.needs_labels else None
    enc.eval(), head.eval()
    a = regime.loss(enc, head, x, y, torch.Generator().manual_seed(5))[0]
    torch.manual_seed(123)  # the global RNG must not matter
    b = regime.loss(enc, head, x, y, torch.Generator().manual_seed(5))[0]
    assert torch.equal(a, b)


def test_unsupervised_regimes_never_see_labels(blob_npz, tmp_path):
    seen = []

    class Spy(Regime):
        name = "spy"

        def build_head(self, encoder, data):
            return torch.nn.Linear(encoder.latent_dim, 1)

        def loss(self, encoder, head, x, y, generator):
            seen.append(y)
            return head(encoder(x)).square().mean(), {}

    cfg = config_from_dict(tiny_config(blob_npz, epochs=1, probe_every_epoch=False))
    data = load_dataset(cfg.data)
    enc = build_encoder(cfg.model, data.image_shape, 0)
    spy = Spy()
    Trainer(spy, enc, build_head(spy, enc, data, 0), data, TrainSettings.from_config(cfg.train, 1)).fit()
    assert seen and all(y is None for y in seen)


def test_supervised_and_joint_losses():
    regime, enc, head = setup("supervised")
    x, y = torch.randn(10, 1, 8, 8), torch.randint(0, 3, (10,))
    loss, sums = regime.loss(enc, head, x, y, torch.Generator())
    logits = head(enc(x))
    assert float(loss.detach()) == pytest.approx(float(F.cross_entropy(logits, y).detach()), rel=1e-5)
    assert int(sums["correct"]) == int((logits.argmax(1) == y).sum())
    joint, enc, head = setup("joint", weight=2.5)
    loss, _ = joint.loss(enc, head, x, y, torch.Generator())
    z = enc(x)
    expected = F.cross_entropy(head.classifier(z), y) + 2.5 * F.mse_loss(head.decoder(z), x)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_corruption_has_the_configured_noise_and_mask():
    x = torch.zeros(200, 1, 20, 20)
    g = torch.Generator().manual_seed(0)
    noisy = corrupt(x, g, noise_std=0.5, mask_fraction=0.0)
    assert noisy.std().item() == pytest.approx(0.5, rel=0.03)
    masked = corrupt(torch.ones_like(x), g, noise_std=0.0, mask_fraction=0.3)
    assert (masked == 0).float().mean().item() == pytest.approx(0.3, abs=0.01)
    with pytest.raises(ConfigError, match="no corruption"):
        make_regime("denoising", {"noise_std": 0.0, "mask_fraction": 0.0})


def test_denoising_rebuilds_the_clean_input():
    regime, enc, head = setup("denoising", noise_std=1.0, mask_fraction=0.0)
    x = torch.randn(8, 1, 8, 8)
    enc.eval(), head.eval()
    loss, _ = regime.loss(enc, head, x, None, torch.Generator().manual_seed(1))
    noisy = corrupt(x, torch.Generator().manual_seed(1), 1.0, 0.0)
    assert float(loss.detach()) == pytest.approx(float(F.mse_loss(head(enc(noisy)), x).detach()), rel=1e-5)


def test_vae_kl_matches_torch_distributions():
    mu, logvar = torch.randn(5, 4), torch.randn(5, 4)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    assert torch.allclose(kl_per_dim(mu, logvar), torch.distributions.kl_divergence(q, p), atol=1e-5)


def test_vae_probes_read_the_posterior_mean_and_reports_active_units():
    regime, enc, head = setup("vae")
    x = torch.randn(40, 1, 8, 8)
    enc.eval(), head.eval()
    mu, _ = head.posterior(enc, x)
    assert torch.equal(mu, enc(x))  # the encoder's latent is μ
    with torch.no_grad():  # make half of the latent units constant over the data (inactive), half vary widely
        enc.latent.weight[:3] = 0
        enc.latent.weight[3:] *= 50
    scalars, arrays = regime.test_report(enc, head, x, batch_size=16)
    assert scalars["active_units"] == 3 and len(arrays["kl_per_dim"]) == 6
    assert arrays["mean_variance_per_dim"][:3].max() < 1e-12 < arrays["mean_variance_per_dim"][3:].min()


def test_vae_beta_and_fixed_decoder_std():
    regime, enc, head = setup("vae", beta=3.0, decoder_std=1.0)
    x = torch.randn(6, 1, 8, 8)
    g = torch.Generator().manual_seed(2)
    loss, sums = regime.loss(enc, head, x, None, g)
    expected = (0.5 * sums["sampled_sq_error"] + 3.0 * sums["kl"]) / 6  # log σ² = 0 for σ = 1
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-4)
    with pytest.raises(ConfigError, match="regimes.vae.beta.*must be > 0"):
        make_regime("vae", {"beta": 0.0})


def test_nt_xent_matches_a_direct_computation():
    z1, z2, tau = torch.randn(5, 3), torch.randn(5, 3), 0.3
    loss, top1 = nt_xent(z1, z2, tau)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    total = 0.0
    for i in range(10):
        partner = (i + 5) % 10
        sims = torch.stack([z[i] @ z[j] / tau for j in range(10) if j != i])
        total += float(-(z[i] @ z[partner] / tau) + torch.logsumexp(sims, 0))
    assert float(loss.detach()) == pytest.approx(total / 10, rel=1e-5)
    same, top1_same = nt_xent(z1, z1, tau)
    assert int(top1_same) == 10 and float(same) < float(loss)
    with pytest.raises(ConfigError, match="temperature.*must be > 0"):
        make_regime("contrastive", {"temperature": 0.0})


def test_random_views_are_seeded_and_identity_without_augmentation():
    x = torch.randn(6, 1, 8, 8)
    same = random_views(x, torch.Generator().manual_seed(0), ContrastiveOptions(crop_min_scale=1.0, flip=False, jitter=0.0))
    assert torch.allclose(same, x, atol=1e-5)
    a = random_views(x, torch.Generator().manual_seed(1))
    b = random_views(x, torch.Generator().manual_seed(1))
    c = random_views(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.allclose(a, c) and a.shape == x.shape


def test_flip_mirrors_the_image():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(64, 1, 1, 1)
    views = random_views(x, torch.Generator().manual_seed(0), ContrastiveOptions(crop_min_scale=1.0, flip=True, jitter=0.0))
    flipped = torch.isclose(views, x.flip(3), atol=1e-5).flatten(1).all(1)
    kept = torch.isclose(views, x, atol=1e-5).flatten(1).all(1)
    assert (flipped | kept).all() and 10 < int(flipped.sum()) < 54


@pytest.mark.parametrize("name", ["denoising", "vae", "contrastive", "joint"])
def test_new_regimes_train_on_blobs(blob_npz, tmp_path, name):
    raw = tiny_config(blob_npz, epochs=4, regimes=[name])
    cfg = config_from_dict(raw)
    regime = make_regime(name)
    data = load_dataset(cfg.data)
    enc = build_encoder(cfg.model, data.image_shape, 0)
    out = Trainer(regime, enc, build_head(regime, enc, data, 0), data, TrainSettings.from_config(cfg.train, 4),
                  callbacks=[EpochProbe(cfg.train.probe_train_images)]).fit()
    history = pd.DataFrame(out.history)
    assert history.train_loss.iloc[-1] < history.train_loss.iloc[0]
    assert np.isfinite(history.filter(like="grad_norm_").values).all()
    assert history.val_latent_probe_accuracy.iloc[-1] > 0.6  # three classes: chance is 1/3
