"""Barlow Twins (Zbontar et al. 2021): the cross-correlation matrix of two views' projector outputs, each
standardised over the (global) batch, driven to the identity: invariance on the diagonal, redundancy
reduction (weight λ) off it. Probes read the encoder's latent."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from replearn.encoders import Encoder
from replearn.config.options import opt
from replearn.regimes.base import DataInfo, Regime, register_regime
from replearn.regimes.losses import barlow_twins_loss
from replearn.regimes.siamese import ViewHead, mlp, too_few, two_views
from replearn.regimes.views import ViewOptions


@dataclass
class BarlowTwinsOptions(ViewOptions):
    lambd: float = opt(0.0051, "λ, the weight of the off-diagonal (redundancy) terms (Barlow Twins: 0.0051)",
                       min=0.0, max=100.0)
    scale: float = opt(1.0, "factor on the whole loss (1 = the paper's; solo-learn's CIFAR recipe: 0.1)", gt=0.0,
                       max=100.0)
    hidden_dim: int = opt(0, "hidden size of the projector's two hidden layers (0 = 4 × the latent size: "
                          "solo-learn's CIFAR 2048 for a 512-wide ResNet)", min=0)
    projection_dim: int = opt(0, "output size of the projector (0 = 4 × the latent size)", min=0)


class ProjectorHead(ViewHead):
    """Barlow Twins' (and VICReg's) projector: two hidden layers with batch norm and ReLU, then a linear one."""

    def __init__(self, latent_dim: int, hidden_dim: int, projection_dim: int, data: DataInfo) -> None:
        super().__init__(data)
        hidden = hidden_dim or 4 * latent_dim
        self.projector = mlp([latent_dim, hidden, hidden, projection_dim or 4 * latent_dim])


@register_regime("barlow_twins")
class BarlowTwins(Regime):
    label = "Barlow Twins"
    color = "#8c564b"
    head_name = "projector"
    batch_dependent_loss = True
    passes = (2, 2)
    loss_text = ("Σ(1 − Cᵢᵢ)² + λ·Σᵢ≠ⱼ Cᵢⱼ², C the cross-correlation of the two views' batch-standardised "
                 "projections (λ 0.0051)")
    reads = "the encoder's latent, before the projector"
    reference = "Zbontar et al. 2021 (Barlow Twins)"
    Options = BarlowTwinsOptions

    def build_head(self, encoder: Encoder, data: DataInfo) -> nn.Module:
        o = self.options
        return ProjectorHead(encoder.latent_dim, o.hidden_dim, o.projection_dim, data)

    def loss(self, encoder: Encoder, head: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        v1, v2 = two_views(x, generator, self.options, head)
        z1, z2 = head.projector(encoder(torch.cat([v1, v2]))).chunk(2)
        if too_few(x):  # one image has no batch statistics: no loss (evaluation's last batch may hold one)
            return z1.sum() * 0.0, {}
        return self.options.scale * barlow_twins_loss(z1, z2, self.options.lambd), {}

    def embed(self, encoder: Encoder, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return head.projector(encoder(x))

    def headline(self, metrics: dict[str, float]) -> str:
        return f"val Barlow Twins loss {metrics['loss']:.4f}"
