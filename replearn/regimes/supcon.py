"""Supervised contrastive learning (Khosla et al. 2020): two augmented views of every image, a projector,
and the loss L_out of their eq. 2, in which every other view of the same class is a positive and every view
in the (global) batch a negative. It sees labels, so it sits with the labelled regimes. Probes read the
encoder's latent, before the projector."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from replearn.encoders import Encoder
from replearn.config.options import opt
from replearn.regimes.base import DataInfo, register_regime
from replearn.regimes.losses import supcon_loss
from replearn.regimes.siamese import TwoViewRegime, ViewHead, mlp
from replearn.regimes.views import ViewOptions


@dataclass
class SupConOptions(ViewOptions):
    temperature: float = opt(0.1, "temperature τ (Khosla et al.: 0.1; solo-learn's CIFAR recipe: 0.2)", gt=0.0,
                             max=100.0)
    hidden_dim: int = opt(0, "hidden size of the projector (0 = 4 × the latent size: 2048 for a 512-wide ResNet)",
                          min=0)
    projection_dim: int = opt(128, "output size of the projector (Khosla et al.: 128)", min=1)


class SupConHead(ViewHead):
    """SupCon's projector: linear → ReLU → linear (no batch norm, as in solo-learn)."""

    def __init__(self, latent_dim: int, options: SupConOptions, data: DataInfo) -> None:
        super().__init__(data)
        self.projector = mlp([latent_dim, options.hidden_dim or 4 * latent_dim, options.projection_dim],
                             batch_norm=False)


@register_regime("supcon")
class SupCon(TwoViewRegime):
    label = "SupCon"
    color = "#393b79"
    needs_labels = True
    loss_text = ("supervised contrastive loss L_out over two augmented views of each image: every other view "
                 "of the same class a positive (temperature τ)")
    reference = "Khosla et al. 2020 (SupCon)"
    Options = SupConOptions

    def build_head(self, encoder: Encoder, data: DataInfo) -> nn.Module:
        return SupConHead(encoder.latent_dim, self.options, data)

    def loss(self, encoder: Encoder, head: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z = self.projected_views(encoder, head, x, generator)
        return supcon_loss(z, torch.cat([y, y]), self.options.temperature), {}

    def headline(self, metrics: dict[str, float]) -> str:
        return f"val SupCon loss {metrics['loss']:.4f}"
