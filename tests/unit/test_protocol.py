"""The protocol and its record (issue 22): SimCLR's crops and colour distortion as torchvision makes them, one
meaning per reconstruction-error column, aligned hyperparameter-selection files, the ResNet named by its
layer count, the VAE's log-variance input and the denoising mask per pixel."""
from __future__ import annotations

import colorsys
import dataclasses
import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from replearn import Experiment
from replearn.rundir.io import load_checkpoint
from replearn.config.sections import config_from_dict, model_config
from replearn.encoders import build_encoder, create_encoder
from replearn.errors import ConfigError
from replearn.experiment.experiment import build_head
from replearn.encoders.extract import eval_mode
from replearn.experiment.plugins import plugin_docs
from replearn.regimes import REGIMES, DataInfo, make_regime
from replearn.regimes.base import reconstruction_mse
from replearn.regimes.contrastive import (ContrastiveHead, ContrastiveOptions, adjust, centre_crop_size,
                                          colour_distort, crop_boxes, grey, random_views, resized_crops)
from replearn.regimes.denoising import corrupt
from replearn.regimes.vae import VAEHead
from replearn.training.steps import evaluate

from helpers import REPO_ROOT, make_blob_images, tiny_config

SELECTION = REPO_ROOT / "experiments" / "selection"


# --- 1. random resized crops as torchvision draws them -------------------------------------------------------

def torchvision_crop_sizes(n: int, height: int, width: int, min_scale: float, seed: int) -> np.ndarray:
    """(height, width) of ``n`` crops drawn by a direct re-implementation of torchvision's
    ``RandomResizedCrop.get_params`` (scale (min_scale, 1), ratio (3/4, 4/3)), with NumPy's generator."""
    rng = np.random.default_rng(seed)
    area, log_ratios = height * width, (math.log(3 / 4), math.log(4 / 3))
    sizes = []
    for _ in range(n):
        for _attempt in range(10):
            target = area * rng.uniform(min_scale, 1.0)
            ratio = math.exp(rng.uniform(*log_ratios))
            w, h = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
            if 0 < w <= width and 0 < h <= height:
                sizes.append((h, w))
                break
        else:
            sizes.append(centre_crop_size(height, width))
    return np.array(sizes)


def single_draw_uncropped(n: int, min_scale: float, seed: int) -> float:
    """The fraction of whole-image views of the former crop: one draw, the whole image when it did not fit."""
    rng = np.random.default_rng(seed)
    area = rng.uniform(min_scale, 1.0, n)
    ratio = np.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3), n))
    return float(((np.sqrt(area * ratio) > 1) | (np.sqrt(area / ratio) > 1)).mean())


@pytest.mark.parametrize("min_scale, former", [(0.5, 0.26), (0.3, 0.19)])
def test_few_views_are_left_uncropped_as_with_torchvision(min_scale, former):
    n, size = 20000, 28
    top, left, h, w = crop_boxes(n, size, size, min_scale, torch.Generator().manual_seed(0))
    ours = float(((h == size) & (w == size)).double().mean())
    reference = torchvision_crop_sizes(n, size, size, min_scale, seed=1)
    expected = float(((reference[:, 0] == size) & (reference[:, 1] == size)).mean())
    assert single_draw_uncropped(n, min_scale, seed=2) == pytest.approx(former, abs=0.015)  # the figures
    assert abs(ours - expected) < 0.005 and ours < 0.01, (ours, expected)  # ≪ the former 26% / 19%
    # the kept crops have torchvision's distribution of areas, and lie inside the image
    assert float((h * w).double().mean()) == pytest.approx(float(reference.prod(1).mean()), rel=0.02)
    assert int(top.min()) >= 0 and int(left.min()) >= 0
    assert bool(((top + h) <= size).all()) and bool(((left + w) <= size).all())
    assert set(torch.unique(top[h == 20]).tolist()) == set(range(size - 20 + 1))  # every offset is drawn


def test_a_crop_that_never_fits_falls_back_to_the_centre_crop_with_a_clamped_ratio():
    # a 4×40 strip: no crop of at least 100% of the area with a ratio up to 4/3 fits, in any of ten attempts
    top, left, h, w = crop_boxes(50, 4, 40, 1.0, torch.Generator().manual_seed(0))
    assert centre_crop_size(4, 40) == (4, 5)  # the whole height, the width clamped to 4/3 of it
    assert set(h.tolist()) == {4} and set(w.tolist()) == {5}
    assert set(top.tolist()) == {0} and set(left.tolist()) == {(40 - 5) // 2}
    assert centre_crop_size(40, 4) == (5, 4) and centre_crop_size(10, 12) == (10, 12)


def test_a_crop_is_resized_as_interpolating_the_cropped_pixels():
    x = torch.rand(3, 3, 12, 10)
    boxes = (torch.tensor([0, 5, 2]), torch.tensor([3, 0, 1]), torch.tensor([7, 7, 10]), torch.tensor([5, 10, 9]))
    mirror = torch.tensor([False, True, False])
    out = resized_crops(x, boxes, mirror)
    for i in range(3):
        t, l, h, w = (int(b[i]) for b in boxes)
        expected = F.interpolate(x[i:i + 1, :, t:t + h, l:l + w], size=(12, 10), mode="bilinear", align_corners=False)
        expected = expected.flip(3) if mirror[i] else expected
        torch.testing.assert_close(out[i:i + 1], expected, atol=1e-5, rtol=1e-5)


def test_views_draw_all_their_randomness_from_the_generator():
    x = torch.randn(8, 3, 12, 12)
    a = random_views(x, torch.Generator().manual_seed(3))
    torch.manual_seed(99)
    b = random_views(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.allclose(a, random_views(x, torch.Generator().manual_seed(4)))


# --- 2. colour distortion on colour images -------------------------------------------------------------------

def test_hue_saturation_brightness_and_contrast_follow_torchvision():
    u = torch.rand(4, 3, 5, 5, dtype=torch.float64)
    shift = torch.tensor([-0.1, 0.05, 0.3, 0.0], dtype=torch.float64)
    hued = adjust(u, "hue", shift)
    for i in range(4):
        for r, c in [(0, 0), (2, 3), (4, 1)]:
            hh, s, v = colorsys.rgb_to_hsv(*u[i, :, r, c].tolist())
            expected = colorsys.hsv_to_rgb((hh + float(shift[i])) % 1.0, s, v)
            assert hued[i, :, r, c].tolist() == pytest.approx(expected, abs=1e-9)
    ones = torch.ones(4, dtype=torch.float64)
    torch.testing.assert_close(adjust(u, "saturation", 0 * ones), grey(u).expand(-1, 3, -1, -1))
    torch.testing.assert_close(adjust(u, "brightness", 2 * ones), (2 * u).clamp(0, 1))
    flat = adjust(u, "contrast", 0 * ones)  # contrast 0: the mean grey level everywhere
    torch.testing.assert_close(flat, grey(u).mean((1, 2, 3), keepdim=True).expand_as(u))
    for op in ("brightness", "contrast", "saturation"):
        torch.testing.assert_close(adjust(u, op, ones), u)


def test_colour_jitter_and_greyscale_happen_with_simclrs_probabilities():
    u = torch.rand(4000, 3, 4, 4)
    jittered = colour_distort(u, torch.Generator().manual_seed(0), ContrastiveOptions(greyscale_p=0.0))
    changed = (jittered - u).abs().flatten(1).amax(1) > 1e-6
    assert float(changed.float().mean()) == pytest.approx(0.8, abs=0.03)
    greyed = colour_distort(u, torch.Generator().manual_seed(0), ContrastiveOptions(jitter_p=0.0))
    is_grey = (greyed[:, :1] == greyed).flatten(1).all(1)
    assert float(is_grey.float().mean()) == pytest.approx(0.2, abs=0.03)
    torch.testing.assert_close(greyed[is_grey], grey(u[is_grey]).expand(-1, 3, -1, -1))
    torch.testing.assert_close(greyed[~is_grey], u[~is_grey])


def test_colour_views_are_distorted_in_the_pixel_range_and_standardised_again():
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.25, 0.2, 0.3])
    u = torch.rand(64, 3, 8, 8)
    x = (u - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    still = ContrastiveOptions(crop_min_scale=1.0, flip=False, jitter=0.0, saturation=0.0, hue=0.0, greyscale_p=0.0)
    torch.testing.assert_close(random_views(x, torch.Generator().manual_seed(0), still, (mean, std)), x,
                               atol=1e-5, rtol=1e-5)
    views = random_views(x, torch.Generator().manual_seed(0), ContrastiveOptions(), (mean, std))
    back = views * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)
    assert float(back.min()) > -1e-5 and float(back.max()) < 1 + 1e-5  # [0, 1] after un-standardising
    turned_grey = torch.isclose(back[:, :1], back, atol=1e-5).flatten(1).all(1)
    assert 0.05 < float(turned_grey.float().mean()) < 0.5  # greyscale_p = 0.2


def test_grey_images_are_untouched_by_the_colour_options():
    x = torch.randn(32, 1, 10, 10)
    plain = ContrastiveOptions(saturation=0.0, hue=0.0, greyscale_p=0.0)
    a = random_views(x, torch.Generator().manual_seed(5), ContrastiveOptions(saturation=1.0, hue=0.5, greyscale_p=1.0))
    assert torch.equal(a, random_views(x, torch.Generator().manual_seed(5), plain))


def test_the_contrastive_head_carries_the_datasets_pixel_statistics(tmp_path):
    x, y = make_blob_images(60, seed=1)
    colour = np.stack([x, x // 2, 255 - x], axis=-1)  # N×H×W×3
    tx, ty = make_blob_images(30, seed=2)
    np.savez(tmp_path / "colour.npz", train_x=colour, train_y=y, test_x=np.stack([tx, tx // 2, 255 - tx], -1),
             test_y=ty)
    cfg = config_from_dict({**tiny_config(tmp_path / "colour.npz"), "train": {"regimes": ["contrastive"]}})
    experiment = Experiment(cfg, out=tmp_path / "run", progress=False)
    data = experiment.load_data()
    encoder = build_encoder(cfg.model, data.image_shape, 0)
    head = build_head(experiment.regimes[0], encoder, data, 0)
    assert isinstance(head, ContrastiveHead) and data.image_shape[0] == 3
    assert head.pixel_mean.tolist() == pytest.approx(list(data.mean)) and head.pixel_std.tolist() == pytest.approx(
        list(data.std))
    assert not any("pixel" in k for k in head.state_dict())  # not in checkpoints: old ones load as before
    assert not (tmp_path / "run").exists()


def test_every_augmentation_is_an_option_with_simclrs_cifar_defaults():
    documented = {key: default for key, _, default, _ in plugin_docs()}
    assert {k: documented[f"regimes.contrastive.{k}"] for k in
            ("jitter", "jitter_p", "saturation", "hue", "greyscale_p", "crop_min_scale", "flip")} == {
        "jitter": 0.4, "jitter_p": 0.8, "saturation": 0.4, "hue": 0.1, "greyscale_p": 0.2, "crop_min_scale": 0.3,
        "flip": True}
    with pytest.raises(ConfigError, match=r"regimes.contrastive.hue' must be <= 0.5"):
        make_regime("contrastive", {"hue": 0.6})


# --- 3. one meaning per reconstruction-error column ----------------------------------------------------------

RECONSTRUCTING = ["autoencoder", "denoising", "vae", "joint"]


def clean_reconstruction(name: str, encoder: nn.Module, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Each regime's deterministic decoding of clean images, written out independently of replearn's."""
    if name in ("autoencoder", "denoising"):
        return head(encoder(x))
    return head.decoder(encoder(x))  # the VAE decodes its posterior mean, the encoder's latent; joint its latent


@pytest.fixture(scope="module")
def reconstructing_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recon")
    x, y = make_blob_images(96, seed=1)
    tx, ty = make_blob_images(30, seed=2)
    np.savez(tmp / "blobs.npz", train_x=x, train_y=y, test_x=tx, test_y=ty)
    raw = tiny_config(tmp / "blobs.npz", epochs=1, regimes=RECONSTRUCTING, probe_every_epoch=False)
    experiment = Experiment(config_from_dict(raw), out=tmp / "run", progress=False)
    experiment.run()
    return experiment


def test_test_recon_mse_is_the_clean_deterministic_error_of_every_decoding_regime(reconstructing_run):
    experiment = reconstructing_run
    models = pd.read_csv(experiment.run_dir.path / "metrics" / "models.csv").set_index("model")
    x = experiment.data.test_x
    for name in RECONSTRUCTING:
        regime = experiment.plugins.regime(name)
        encoder = experiment.encoders[0][name]
        head = build_head(regime, encoder, experiment.data, 0)
        head.load_state_dict(load_checkpoint(experiment.run_dir.checkpoint(name, 0))["head"])
        with torch.no_grad(), eval_mode(encoder, head):
            expected = float(F.mse_loss(clean_reconstruction(name, encoder, head, x), x))
            objective = evaluate(regime, encoder, head, x, experiment.data.test_y, torch.device("cpu"))
        assert models.loc[name, "test_recon_mse"] == pytest.approx(expected, rel=1e-5), name
        if name == "denoising":  # its own objective, from corrupted inputs, in its own column
            assert models.loc[name, "test_denoising_mse"] == pytest.approx(objective["denoising_mse"], rel=1e-6)
            assert models.loc[name, "test_denoising_mse"] > models.loc[name, "test_recon_mse"]
        if name == "vae":
            assert models.loc[name, "test_sampled_recon_mse"] == pytest.approx(objective["sampled_recon_mse"], rel=1e-6)
            assert models.loc[name, "test_sampled_recon_mse"] != pytest.approx(expected, rel=1e-3)
    assert models[["test_denoising_mse"]].notna().sum().item() == 1
    assert models[["test_sampled_recon_mse"]].notna().sum().item() == 1


def test_the_models_table_labels_each_reconstruction_error(reconstructing_run):
    run_dir = reconstructing_run.run_dir.path
    shown = pd.read_csv(run_dir / "tables" / "models.csv")
    assert {"test reconstruction MSE (clean input)", "test denoising MSE (corrupted input)",
            "test VAE reconstruction MSE (sampled latent)"} <= set(shown.columns)
    report = (run_dir / "report.html").read_text()
    assert "decoded deterministically (the VAE from its posterior mean)" in report


@pytest.mark.parametrize("name, own", [("denoising", "denoising_mse"), ("vae", "sampled_recon_mse")])
def test_denoising_and_vae_report_their_objective_and_the_clean_error_apart(name, own):
    regime = make_regime(name)
    encoder = build_encoder(model_config(channels=[4, 8], latent_dim=6), (1, 8, 8), seed=0)
    head = regime.build_head(encoder, DataInfo((1, 8, 8), 3))
    x = torch.randn(24, 1, 8, 8)
    with eval_mode(encoder, head), torch.no_grad():
        metrics = evaluate(regime, encoder, head, x, torch.zeros(24, dtype=torch.long), torch.device("cpu"), 10)
        scalars, _ = regime.test_report(encoder, head, x, 10)
        clean = float(F.mse_loss(clean_reconstruction(name, encoder, head, x), x))
    assert "recon_mse" not in metrics and metrics[own] > 0  # validation and test: the objective's own name
    assert scalars["recon_mse"] == pytest.approx(clean, rel=1e-5)


def test_a_plug_in_that_reconstructs_gets_the_clean_error_computed():
    regime = make_regime("autoencoder")
    encoder = build_encoder(model_config(channels=[4, 8], latent_dim=6), (1, 8, 8), seed=0)
    head = regime.build_head(encoder, DataInfo((1, 8, 8), 3))
    x = torch.randn(37, 1, 8, 8)
    with eval_mode(encoder, head), torch.no_grad():
        assert reconstruction_mse(regime, encoder, head, x, 10) == pytest.approx(float(F.mse_loss(head(encoder(x)), x)),
                                                                              rel=1e-5)
    assert reconstruction_mse(make_regime("supervised"), encoder, head, x, 10) is None


# --- 4. hyperparameter-selection files, aligned ---------------------------------------------------------------

def load_select_hparams():
    spec = importlib.util.spec_from_file_location("select_hparams", REPO_ROOT / "experiments" / "select_hparams.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_appending_two_grids_of_different_keys_keeps_every_value_under_its_header(tmp_path):
    select = load_select_hparams()
    out = tmp_path / "selection.csv"
    denoising = pd.DataFrame([{"regime": "denoising", "noise_std": "0.25", "mask_fraction": "0", "epochs": 4,
                               "val_loss": 0.08, "val_denoising_mse": 0.081, "val_rankme": 20.5, "seconds": 3.0}])
    vae = pd.DataFrame([{"regime": "vae", "beta": "2", "epochs": 4, "val_loss": -400.0,
                         "val_sampled_recon_mse": 0.11, "val_kl": 30.0, "val_rankme": 12.5, "seconds": 5.0}])
    select.append_aligned(out, denoising)
    select.append_aligned(out, vae)
    frame = pd.read_csv(out)
    assert list(frame.columns[:4]) == ["regime", "noise_std", "mask_fraction", "beta"]  # options side by side
    first, second = frame.iloc[0], frame.iloc[1]
    assert (first.regime, first.noise_std, first.mask_fraction, first.val_denoising_mse) == ("denoising", 0.25, 0, 0.081)
    assert (second.regime, second.beta, second.val_loss, second.val_kl, second.seconds) == ("vae", 2, -400, 30, 5)
    assert math.isnan(first.beta) and math.isnan(second.noise_std) and math.isnan(first.val_kl)
    assert [p.name for p in tmp_path.iterdir()] == ["selection.csv"]  # no partial file left beside it


@pytest.mark.parametrize("path", sorted(SELECTION.glob("*.csv")), ids=lambda p: p.name)
def test_the_shipped_selection_files_hold_each_value_under_its_own_header(path):
    frame = pd.read_csv(path)
    epochs = int(path.stem.split("_")[-1].removesuffix("epochs"))
    assert (frame.epochs == epochs).all() and frame.epochs.dtype.kind == "i"
    option_columns = {"noise_std", "mask_fraction", "beta", "temperature", "crop_min_scale"}
    for _, row in frame.iterrows():
        options = {f.name for f in dataclasses.fields(REGIMES.get(row.regime).Options)}
        given = {c for c in option_columns if not pd.isna(row[c])}
        assert given == options & option_columns, (row.regime, given)  # a regime's own options, all of them
        assert 0.5 < row["val_latent_probe_accuracy (uses val labels)"] < 1 and 0 < row.seconds < 600
        assert row.device in ("cuda", "cpu")
        own_error = {"autoencoder": "val_recon_mse", "denoising": "val_denoising_mse", "vae": "val_sampled_recon_mse"}
        for column in ("val_recon_mse", "val_denoising_mse", "val_sampled_recon_mse"):
            if column == own_error.get(row.regime):
                assert 0 < row[column] < 1, (row.regime, column)
            else:
                assert pd.isna(row[column]), (row.regime, column)
        if row.regime in ("autoencoder", "denoising"):  # the loss is the reconstruction error itself
            assert row.val_loss == pytest.approx(row[own_error[row.regime]], rel=1e-6)
    assert frame.noise_std.dropna().between(0, 10).all() and frame.beta.dropna().gt(0).all()
    assert frame.temperature.dropna().between(0.05, 1).all() and frame.crop_min_scale.dropna().between(0.1, 1).all()


# --- 5. ResNet-10, the VAE's log-variance, the denoising mask ------------------------------------------------

def weight_layers(module: nn.Module) -> int:
    """Convolutions and linear layers, not counting the 1×1 projection shortcuts (as ResNet-18's name does not)."""
    return sum(1 for m in module.modules() if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d)
                                                                            and m.kernel_size != (1, 1)))


@pytest.mark.parametrize("depth", [10, 18, 34])
def test_a_resnet_is_named_by_its_weight_layers(depth):
    encoder = build_encoder(model_config(name="resnet", latent_dim=8, depth=depth, width=2), (3, 16, 16), seed=0)
    assert weight_layers(encoder) == depth


def test_depth_8_is_refused_with_its_new_name_but_old_checkpoints_still_build():
    with pytest.raises(ConfigError, match=r"model.depth=8 is now called 10") as refused:
        build_encoder(model_config(name="resnet", latent_dim=8, depth=8, width=2), (3, 16, 16), seed=0)
    assert "set model.depth=10" in refused.value.fix
    old = create_encoder("resnet", {"in_shape": (3, 16, 16), "latent_dim": 8, "depth": 8, "width": 2}, seed=0)
    new = create_encoder("resnet", {"in_shape": (3, 16, 16), "latent_dim": 8, "depth": 10, "width": 2}, seed=0)
    assert old.state_dict().keys() == new.state_dict().keys() and weight_layers(old) == 10
    with pytest.raises(ConfigError, match="choose one of: 10, 18, 34"):
        build_encoder(model_config(name="resnet", latent_dim=8, depth=50, width=2), (3, 16, 16), seed=0)


def test_the_vae_log_variance_reads_the_flattened_last_stage_which_the_resnet_latent_pools():
    resnet = build_encoder(model_config(name="resnet", latent_dim=8, depth=10, width=2), (3, 16, 16), seed=0)
    head = VAEHead(resnet)
    last = resnet.feature_info[-2]
    assert head.source == last.name == "stage4" and head.logvar.in_features == last.numel == 16 * 2 * 2
    assert resnet.latent.in_features == last.channels == 16  # μ reads the pooled stage, log σ² the whole grid
    conv = build_encoder(model_config(channels=[4, 8], latent_dim=6), (1, 8, 8), seed=0)
    assert VAEHead(conv).logvar.in_features == conv.latent.in_features  # the conv encoder: the same input


def test_the_denoising_mask_takes_whole_pixels_on_colour_images():
    masked = corrupt(torch.ones(200, 3, 10, 10), torch.Generator().manual_seed(0), noise_std=0.0, mask_fraction=0.3)
    zero = masked == 0
    assert torch.equal(zero, zero[:, :1].expand_as(zero))  # a masked pixel loses every channel
    assert float(zero[:, 0].float().mean()) == pytest.approx(0.3, abs=0.01)
    grey = torch.ones(50, 1, 10, 10)  # grey images: the same draws as before
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(corrupt(grey, g1, 0.0, 0.3) != 0, torch.rand(grey.shape, generator=g2) >= 0.3)


def test_protocol_flags_per_process_batch_norm_for_contrastive_under_several_processes_and_names_the_init(
        blob_npz, tmp_path):
    import json

    from replearn.analyses import RunArtifacts
    from replearn.analyses.protocol import Protocol

    raw = tiny_config(blob_npz, regimes=["contrastive"], epochs=1)
    raw["model"]["init"] = "kaiming"
    experiment = Experiment(config_from_dict(raw), out=tmp_path / "run", progress=False)
    experiment.prepare()
    run_dir = experiment.run_dir.path

    def bullets() -> list[str]:
        (section,) = Protocol().sections(RunArtifacts(run_dir))
        return section.bullets

    assert not any("processes with batch norm" in b for b in bullets())  # one process: nothing to flag
    assert any(b.startswith("Initial weights (model.init): kaiming") for b in bullets())
    environment = json.loads((run_dir / "environment.json").read_text())
    (run_dir / "environment.json").write_text(json.dumps({**environment, "world_size": 2}))
    flagged = [b for b in bullets() if "processes with batch norm" in b]
    assert len(flagged) == 1 and "train.sync_batchnorm" in flagged[0] and "under 2 processes" in flagged[0]
