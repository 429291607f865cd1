"""Supervised: a linear classifier on the latent, trained with cross-entropy on the labels."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from replearn.encoders import Encoder
from replearn.regimes.base import DataInfo, Regime, register_regime
from replearn.regimes.heads import ClassifierHead


@register_regime("supervised")
class Supervised(Regime):
    label = "supervised"
    color = "#1f77b4"
    needs_labels = True
    head_name = "head"
    loss_text = "cross-entropy of a linear softmax classifier on the latent"
    reference = "the standard supervised baseline"

    def build_head(self, encoder: Encoder, data: DataInfo) -> nn.Module:
        return ClassifierHead(encoder.latent_dim, data.num_classes)

    def loss(self, encoder: Encoder, head: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = head(encoder(x))
        return F.cross_entropy(logits, y), {"correct": (logits.argmax(1) == y).sum()}
