"""The regimes of the other families (BYOL, SimSiam, Barlow Twins, VICReg, SupCon, masked-image modelling)
through the trainer on tiny blobs: they learn, BYOL's target follows its EMA through the trainer's hook, the
heads are sized from the encoder, and the masked regime's mask and loss are what its options say."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from replearn.config import config_from_dict, model_config
from replearn.data import load_dataset
from replearn.encoders import build_encoder
from replearn.experiment.records import build_head
from replearn.regimes import DataInfo, make_regime
from replearn.regimes.masked import masked_error, patch_mask
from replearn.training import EpochProbe, Trainer, TrainSettings

from helpers import tiny_config

FAMILIES = ["byol", "simsiam", "barlow_twins", "vicreg", "supcon", "masked"]


def trainer(blob_npz, name: str, epochs: int, **options) -> Trainer:
    cfg = config_from_dict(tiny_config(blob_npz, epochs=epochs, regimes=[name]))
    regime = make_regime(name, options)
    data = load_dataset(cfg.data)
    enc = build_encoder(cfg.model, data.image_shape, 0)
    return Trainer(regime, enc, build_head(regime, enc, data, 0), data, TrainSettings.from_config(cfg.train, epochs),
                   callbacks=[EpochProbe(cfg.train.probe_train_images)])


@pytest.mark.parametrize("name", FAMILIES)
def test_each_family_trains_on_blobs(blob_npz, name):
    out = trainer(blob_npz, name, 4, **({} if name == "masked" else {"flip": False})).fit()
    history = pd.DataFrame(out.history)
    assert history.train_loss.iloc[-1] < history.train_loss.iloc[0]
    assert np.isfinite(history.filter(like="grad_norm_").values).all()
    assert history.val_latent_probe_accuracy.iloc[-1] > 0.6  # three classes: chance is 1/3


@pytest.mark.parametrize("tau", [0.0, 1.0])
def test_byol_target_moves_by_the_trainers_ema_hook(blob_npz, tau):
    t = trainer(blob_npz, "byol", 1, base_tau=tau, final_tau=tau)
    initial = [p.detach().clone() for p in t.encoder.parameters()]
    t.fit()
    target = list(t.head.target_encoder.parameters())
    expected = list(t.encoder.parameters()) if tau == 0.0 else initial  # τ = 0: a copy; τ = 1: never moves
    assert all(torch.equal(a, b) for a, b in zip(target, expected))
    assert not all(torch.equal(a, b) for a, b in zip(t.encoder.parameters(), initial))  # the online one trained


def test_after_step_sees_every_step_of_the_run_once(blob_npz):
    t = trainer(blob_npz, "byol", 2)
    seen = []
    t.regime.after_step = lambda encoder, head, step, total: seen.append((step, total))
    t.fit()
    total = 2 * t.steps_per_epoch
    assert seen == [(k, total) for k in range(1, total + 1)]


def test_heads_are_sized_from_the_encoder():
    enc = build_encoder(model_config(channels=[4, 8], latent_dim=6), (1, 8, 8), 0)
    data = DataInfo((1, 8, 8), 3)
    byol = make_regime("byol").build_head(enc, data)
    first, last = byol.projector[0], byol.projector[-1]
    assert (first.in_features, first.out_features, last.out_features) == (6, 48, 3)
    simsiam = make_regime("simsiam").build_head(enc, data)
    assert simsiam.projector[0].out_features == 24 and simsiam.predictor[0].out_features == 6
    barlow = make_regime("barlow_twins", {"projection_dim": 10}).build_head(enc, data)
    assert barlow.projector[-1].out_features == 10
    assert not any(p.requires_grad for p in byol.target_encoder.parameters())


def test_patch_mask_masks_the_ratio_of_whole_patches():
    mask = patch_mask(5, 10, 10, 4, 0.6, torch.Generator().manual_seed(0))  # 3×3 patches, the last ones cut
    assert mask.shape == (5, 1, 10, 10)
    patches = mask[:, 0, ::4, ::4]  # one pixel per patch
    assert (patches.flatten(1).sum(1) == round(0.6 * 9)).all()
    assert torch.equal(mask[:, :, :4, :4], patches[:, None, :1, :1].expand(5, 1, 4, 4))


def test_masked_loss_reads_masked_pixels_only():
    g = torch.Generator().manual_seed(1)
    x, recon = torch.randn(4, 2, 8, 8, generator=g), torch.randn(4, 2, 8, 8, generator=g)
    mask = patch_mask(4, 8, 8, 2, 0.5, g)
    changed = torch.where(mask.bool(), recon, recon + 5.0)  # only unmasked pixels change
    assert masked_error(changed, x, mask, "l1") == masked_error(recon, x, mask, "l1")
    expected = ((recon - x).abs() * mask).sum() / (mask.sum() * 2)
    assert float(masked_error(recon, x, mask, "l1")) == pytest.approx(float(expected), rel=1e-6)


def test_masked_token_is_learned_or_kept_at_zero():
    enc = build_encoder(model_config(channels=[4, 8], latent_dim=6), (1, 8, 8), 0)
    for token, learned in (("learned", True), ("zero", False)):
        regime = make_regime("masked", {"mask_token": token, "patch_size": 2})
        head = regime.build_head(enc, DataInfo((1, 8, 8), 3))
        loss, _ = regime.loss(enc, head, torch.randn(6, 1, 8, 8), None, torch.Generator().manual_seed(0))
        loss.backward()
        assert (head.mask_token.grad is not None and head.mask_token.grad.abs().sum() > 0) == learned
