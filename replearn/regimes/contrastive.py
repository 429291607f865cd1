"""Contrastive learning, SimCLR (Chen et al. 2020): two augmented views of every image, a two-layer
projection head, and the NT-Xent loss; probes read the encoder's latent, before the projection head.

The views are made on the batch in torch (no torchvision): a random resized crop (affine resampling),
an optional horizontal flip, and brightness/contrast jitter — SimCLR's augmentations for grey images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..options import opt
from ..encoders import Encoder
from .base import DataInfo, Regime, RegimeOptions, register_regime
from .heads import ProjectionHead


@dataclass
class ContrastiveOptions(RegimeOptions):
    temperature: float = opt(0.5, "NT-Xent temperature τ (SimCLR uses 0.5 for small images)", gt=0.0, max=100.0)
    projection_dim: int = opt(128, "output size of the projection head", min=1)
    hidden_dim: int = opt(0, "hidden size of the projection head (0 = the latent size)", min=0)
    crop_min_scale: float = opt(0.3, "smallest area fraction of a random resized crop", gt=0.0, max=1.0)
    flip: bool = opt(True, "random horizontal flips (turn off for classes a mirror changes, e.g. digits)")
    jitter: float = opt(0.4, "strength of the brightness/contrast jitter (0 = none)", min=0.0, max=1.0)


def random_views(x: torch.Tensor, generator: torch.Generator, crop_min_scale: float = 0.3, flip: bool = True,
                 jitter: float = 0.4) -> torch.Tensor:
    """One random augmentation of every image of ``x`` (N×C×H×W): crop of area ∈ [crop_min_scale, 1] and
    aspect ratio ∈ [3/4, 4/3] resized back, horizontal flip with probability ½, and with probability 0.8
    contrast × U(1 ± jitter) about the image mean and brightness + U(± jitter)."""
    n = len(x)

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator, device=x.device)

    area = uniform(crop_min_scale, 1.0)
    ratio = torch.exp(uniform(math.log(3 / 4), math.log(4 / 3)))
    width, height = torch.sqrt(area * ratio), torch.sqrt(area / ratio)
    whole = (width > 1) | (height > 1)  # a crop that does not fit is the whole image, as in torchvision
    width, height = torch.where(whole, 1.0, width), torch.where(whole, 1.0, height)
    cx = uniform(-1.0, 1.0) * (1 - width)
    cy = uniform(-1.0, 1.0) * (1 - height)
    sign = torch.where(uniform(0.0, 1.0) < 0.5, -1.0, 1.0) if flip else torch.ones(n, device=x.device)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = width * sign, cx
    theta[:, 1, 1], theta[:, 1, 2] = height, cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if jitter > 0:
        apply = (uniform(0.0, 1.0) < 0.8).to(x.dtype)[:, None, None, None]
        contrast = 1 + (uniform(1 - jitter, 1 + jitter)[:, None, None, None] - 1) * apply
        brightness = uniform(-jitter, jitter)[:, None, None, None] * apply
        mean = out.mean((1, 2, 3), keepdim=True)
        out = (out - mean) * contrast + mean + brightness
    return out.contiguous(memory_format=torch.channels_last)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SimCLR's normalised-temperature cross-entropy over the 2N views, and how many views rank their
    partner first among the other 2N − 1."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = len(z1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets), (logits.argmax(1) == targets).sum()


@register_regime("contrastive")
class Contrastive(Regime):
    label = "contrastive (SimCLR)"
    color = "#2ca02c"
    head_name = "projector"
    batch_dependent_loss = True
    loss_text = "NT-Xent between the projections of two augmented views of each image (temperature τ)"
    reads = "the encoder's latent, before the projection head"
    reference = "Chen et al. 2020 (SimCLR)"
    Options = ContrastiveOptions

    def build_head(self, encoder: Encoder, data: DataInfo) -> nn.Module:
        o = self.options
        return ProjectionHead(encoder.latent_dim, o.hidden_dim or encoder.latent_dim, o.projection_dim)

    def loss(self, encoder: Encoder, head: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        o = self.options
        views = torch.cat([random_views(x, generator, o.crop_min_scale, o.flip, o.jitter) for _ in range(2)])
        z = head(encoder(views))
        loss, top1 = nt_xent(z[:len(x)], z[len(x):], o.temperature)
        return loss, {"partner_top1": top1}

    def metrics(self, sums: dict[str, float], images: int, pixels: int) -> dict[str, float]:
        return {"partner_top1": sums["partner_top1"] / (2 * images)}

    def headline(self, metrics: dict[str, float]) -> str:
        return f"val NT-Xent {metrics['loss']:.4f}, partner top-1 {metrics['partner_top1']:.3f}"
