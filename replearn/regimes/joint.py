"""Joint: a classifier and a decoder on the same latent, loss = cross-entropy + λ · reconstruction MSE."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from replearn.config.options import opt
from replearn.encoders import Encoder
from replearn.regimes.autoencoder import Reconstructing
from replearn.regimes.base import DataInfo, RegimeOptions, register_regime
from replearn.regimes.heads import ClassifierHead, ConvDecoder


@dataclass
class JointOptions(RegimeOptions):
    weight: float = opt(1.0, "λ, the weight of the reconstruction MSE beside the cross-entropy", min=0.0, max=1000.0)


class JointHead(nn.Module):
    def __init__(self, encoder: Encoder, num_classes: int) -> None:
        super().__init__()
        self.classifier = ClassifierHead(encoder.latent_dim, num_classes)
        self.decoder = ConvDecoder(encoder)


@register_regime("joint")
class Joint(Reconstructing):
    label = "joint (classifier + decoder)"
    color = "#e377c2"
    needs_labels = True
    head_name = "heads"
    loss_text = "cross-entropy + λ · reconstruction MSE, both from the same latent"
    reference = "e.g. Le et al. 2018 (supervised autoencoders)"
    Options = JointOptions

    def build_head(self, encoder: Encoder, data: DataInfo) -> nn.Module:
        return JointHead(encoder, data.num_classes)

    def loss(self, encoder: Encoder, head: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z = encoder(x)
        logits = head.classifier(z)
        recon = head.decoder(z)
        mse = F.mse_loss(recon, x)
        loss = F.cross_entropy(logits, y) + self.options.weight * mse
        return loss, {"correct": (logits.argmax(1) == y).sum(), "sq_error": mse.detach() * x.numel()}

    @torch.no_grad()
    def reconstruct(self, encoder: Encoder, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return head.decoder(encoder(x))
