"""What the two-view regimes share (BYOL, SimSiam, Barlow Twins, VICReg, SupCon): a head that carries the
dataset's pixel statistics for the colour distortion, the MLPs their papers put on the encoder, and the two
augmented views of a batch, made by the contrastive regime's pipeline (``contrastive.random_views``)."""
from __future__ import annotations

import torch
import torch.nn as nn

from replearn.regimes.base import DataInfo
from replearn.regimes.contrastive import FALLBACK_MEAN, FALLBACK_STD, random_views
from replearn.regimes.views import ViewOptions


def mlp(sizes: list[int], batch_norm: bool = True, last_batch_norm: bool = False) -> nn.Sequential:
    """Linear layers of ``sizes`` (input, hidden…, output) with batch norm (if ``batch_norm``) and ReLU between
    them; ``last_batch_norm`` ends with a batch norm without affine parameters (SimSiam's projector)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        hidden = i < len(sizes) - 2
        layers.append(nn.Linear(a, b, bias=not (batch_norm and (hidden or last_batch_norm))))
        if hidden:
            layers += [nn.BatchNorm1d(b)] if batch_norm else []
            layers.append(nn.ReLU(inplace=True))
    if last_batch_norm:
        layers.append(nn.BatchNorm1d(sizes[-1], affine=False))
    return nn.Sequential(*layers)


class ViewHead(nn.Module):
    """A two-view regime's head: it carries the dataset's per-channel pixel mean and standard deviation
    (non-persistent buffers: not in checkpoints, but on the head's device) for the colour distortion."""

    def __init__(self, data: DataInfo) -> None:
        super().__init__()
        channels = data.image_shape[0]
        mean = data.pixel_mean if data.pixel_mean is not None else (FALLBACK_MEAN,) * channels
        std = data.pixel_std if data.pixel_std is not None else (FALLBACK_STD,) * channels
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32), persistent=False)


def two_views(x: torch.Tensor, generator: torch.Generator, options: ViewOptions, head: nn.Module
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent random augmentations of every image of ``x``, as the contrastive regime makes them."""
    stats = (head.pixel_mean, head.pixel_std) if isinstance(head, ViewHead) else None
    return random_views(x, generator, options, stats), random_views(x, generator, options, stats)


def too_few(x: torch.Tensor) -> bool:
    """Whether a batch is too small for batch statistics (one image: a standard deviation is undefined)."""
    return len(x) < 2
