"""Autoencoder: a decoder mirrored from the encoder's stages rebuilds the input from the latent (MSE)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from replearn.encoders import Encoder
from replearn.regimes.base import DataInfo, Regime, register_regime
from replearn.regimes.heads import ConvDecoder


class Reconstructing(Regime):
    """Shared by the regimes whose head is a decoder of the latent: how they reconstruct an image."""

    head_name = "decoder"

    def build_head(self, encoder: Encoder, data: DataInfo) -> nn.Module:
        return ConvDecoder(encoder)

    @torch.no_grad()
    def reconstruct(self, encoder: Encoder, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return head(encoder(x))


@register_regime("autoencoder")
class Autoencoder(Reconstructing):
    label = "autoencoder"
    color = "#d62728"
    loss_text = "mean squared error of the decoded latent against the input"
    reference = "Hinton & Salakhutdinov 2006"

    def loss(self, encoder: Encoder, head: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        recon = head(encoder(x))
        loss = F.mse_loss(recon, x)
        return loss, {"sq_error": loss.detach() * x.numel()}
