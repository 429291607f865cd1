"""Checks made before a run directory exists: the data fit the analyses and the model, and one training
step of every regime works and gives a finite loss (so a broken plug-in fails in one line, early)."""
from __future__ import annotations

import copy

import numpy as np
import torch

from .config import Config
from .data import Dataset, analysis_view
from .encoders import build_encoder
from .errors import ConfigError, ReplearnError
from .regimes import DataInfo, Regime

MIN_TEST_IMAGES = 10


def check_data_fits(cfg: Config, data: Dataset) -> None:
    """Fail before training if the analyses ask for more than the data (the images they analyse) hold."""
    analysed = analysis_view(data, cfg.analysis.max_images_per_split, cfg.data.split_seed)
    counts = np.bincount(analysed.train_y.numpy(), minlength=data.num_classes)
    present = counts[counts > 0]
    need = max(cfg.analysis.label_counts)
    if present.min() < need:
        rarest = data.class_names[int(np.flatnonzero(counts == present.min())[0])]
        limit = (f" of the {len(analysed.train_y)} analysed (analysis.max_images_per_split)"
                 if analysed is not data else "")
        raise ConfigError(f"analysis.label_counts asks for {need} labels per class but class '{rarest}' has only "
                          f"{int(present.min())} training images{limit}",
                          f"set analysis.label_counts to values of at most {int(present.min())}, or use more data"
                          + (" (or raise analysis.max_images_per_split)" if limit else ""))
    if len(data.test_y) < MIN_TEST_IMAGES:
        fix = (f"set data.test_subset to at least {MIN_TEST_IMAGES} (or 0 for the whole test split)"
               if cfg.data.test_subset else f"give the dataset at least {MIN_TEST_IMAGES} test images")
        raise ConfigError(f"the test split has {len(data.test_y)} images; the analyses (CKA, clustering, "
                          f"neighbourhoods) need at least {MIN_TEST_IMAGES}", fix)
    build_encoder(cfg.model, data.image_shape, 0)


def preflight(cfg: Config, regimes: list[Regime], data: Dataset, device: torch.device) -> None:
    """One training step of every regime on throwaway copies, so that a regime that fails or whose loss is
    not finite is reported in one line before a run directory exists (the RNG is left untouched)."""
    n = min(len(data.train_x), cfg.train.batch_size, 64)
    info = DataInfo(data.image_shape, data.num_classes)
    with torch.random.fork_rng(devices=[]):
        encoder0 = build_encoder(cfg.model, data.image_shape, 0)
        for regime in regimes:
            _first_step(regime, copy.deepcopy(encoder0).to(device), info, data, n, device)


def _first_step(regime: Regime, encoder: torch.nn.Module, info: DataInfo, data: Dataset, n: int,
                device: torch.device) -> None:
    where = f"regime '{regime.spec}'"
    try:
        head = regime.build_head(encoder, info).to(device)
        x = data.train_x[:n].to(device).contiguous(memory_format=torch.channels_last)
        y = data.train_y[:n].to(device) if regime.needs_labels else None
        loss, stats = regime.loss(encoder, head, x, y, torch.Generator(device=device).manual_seed(0))
        finite = bool(torch.isfinite(loss).all()) if isinstance(loss, torch.Tensor) else False
        if finite:
            loss.backward()
    except ReplearnError:
        raise
    except Exception as exc:  # a plug-in may fail in any way: report it in one line
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise ConfigError(f"{where} failed on a first training batch ({type(exc).__name__}"
                          f"{': ' + detail if detail else ''})",
                          "fix the regime's build_head/loss, or remove it from train.regimes") from None
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        raise ConfigError(f"{where} returned a loss that is not a scalar tensor", "return loss.mean() or a sum")
    if not finite:
        raise ConfigError(f"{where} gives a non-finite loss ({float(loss.detach())}) on the first training batch",
                          "check its loss for a division by zero or log of 0, or lower its weights")
