"""Barlow Twins (Zbontar et al. 2021): the cross-correlation matrix of two views' projector outputs, each
standardised over the (global) batch, driven to the identity: invariance on the diagonal, redundancy
reduction (weight λ) off it. Probes read the encoder's latent."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from replearn.encoders import Encoder
from replearn.config.options import opt
from replearn.regimes.base import DataInfo, register_regime
from replearn.regimes.losses import barlow_twins_loss
from replearn.regimes.siamese import ProjectorHead, ProjectorOptions, TwoViewRegime, too_few


@dataclass
class BarlowTwinsOptions(ProjectorOptions):
    lambd: float = opt(0.0051, "λ, the weight of the off-diagonal (redundancy) terms (Barlow Twins: 0.0051)",
                       min=0.0, max=100.0)
    scale: float = opt(1.0, "factor on the whole loss (1 = the paper's; solo-learn's CIFAR recipe: 0.1)", gt=0.0,
                       max=100.0)


@register_regime("barlow_twins")
class BarlowTwins(TwoViewRegime):
    label = "Barlow Twins"
    color = "#8c564b"
    loss_text = ("Σ(1 − Cᵢᵢ)² + λ·Σᵢ≠ⱼ Cᵢⱼ², C the cross-correlation of the two views' batch-standardised "
                 "projections (λ 0.0051)")
    reference = "Zbontar et al. 2021 (Barlow Twins)"
    Options = BarlowTwinsOptions

    def build_head(self, encoder: Encoder, data: DataInfo) -> nn.Module:
        o = self.options
        return ProjectorHead(encoder.latent_dim, o.hidden_dim, o.projection_dim, data)

    def loss(self, encoder: Encoder, head: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z1, z2 = self.projected_views(encoder, head, x, generator).chunk(2)
        if too_few(x):  # one image has no batch statistics: no loss (evaluation's last batch may hold one)
            return z1.sum() * 0.0, {}
        return self.options.scale * barlow_twins_loss(z1, z2, self.options.lambd), {}

    def headline(self, metrics: dict[str, float]) -> str:
        return f"val Barlow Twins loss {metrics['loss']:.4f}"
