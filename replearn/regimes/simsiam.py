"""SimSiam (Chen & He 2021): a projector and a predictor on the encoder; the prediction of one view
regresses the projection of the other under a stop-gradient, with no target network and no negatives.
Without the stop-gradient (``stop_gradient: false``) it collapses (their Fig. 2), which the collapse
diagnostics flag. Probes read the encoder's latent."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from replearn.encoders import Encoder
from replearn.config.options import opt
from replearn.regimes.base import DataInfo, register_regime
from replearn.regimes.losses import simsiam_loss
from replearn.regimes.siamese import TwoViewRegime, ViewHead, mlp
from replearn.regimes.views import ViewOptions


@dataclass
class SimSiamOptions(ViewOptions):
    stop_gradient: bool = opt(True, "stop the gradient through the projection being predicted (false: the "
                              "collapsing ablation of SimSiam's Fig. 2)")
    hidden_dim: int = opt(0, "hidden size of the projector (0 = 4 × the latent size: 2048 for a 512-wide ResNet, "
                          "solo-learn's CIFAR recipe)", min=0)
    projection_dim: int = opt(0, "output size of the projector and the predictor (0 = 4 × the latent size)", min=0)
    predictor_dim: int = opt(0, "hidden size of the predictor, its bottleneck (0 = a quarter of projection_dim)",
                             min=0)


class SimSiamHead(ViewHead):
    """SimSiam's CIFAR projector (two hidden layers, batch norm on the output) and bottleneck predictor."""

    def __init__(self, latent_dim: int, options: SimSiamOptions, data: DataInfo) -> None:
        super().__init__(data)
        hidden = options.hidden_dim or 4 * latent_dim
        out = options.projection_dim or 4 * latent_dim
        self.projector = mlp([latent_dim, hidden, hidden, out], last_batch_norm=True)
        self.predictor = mlp([out, options.predictor_dim or max(1, out // 4), out])


@register_regime("simsiam")
class SimSiam(TwoViewRegime):
    label = "SimSiam"
    color = "#bcbd22"
    loss_text = "−cos between the prediction of one view and the stop-gradient projection of the other, both ways, ÷ 2"
    reference = "Chen & He 2021 (SimSiam)"
    Options = SimSiamOptions

    def build_head(self, encoder: Encoder, data: DataInfo) -> nn.Module:
        return SimSiamHead(encoder.latent_dim, self.options, data)

    def loss(self, encoder: Encoder, head: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z = self.projected_views(encoder, head, x, generator)
        p = head.predictor(z)
        (z1, z2), (p1, p2) = z.chunk(2), p.chunk(2)
        stop = self.options.stop_gradient
        loss = simsiam_loss(p1, z2, stop) / 2 + simsiam_loss(p2, z1, stop) / 2
        cosine = (F.cosine_similarity(p1, z2, dim=1) + F.cosine_similarity(p2, z1, dim=1)).detach() / 2
        return loss, {"cosine": cosine.sum()}

    def metrics(self, sums: dict[str, float], images: int, pixels: int) -> dict[str, float]:
        return {"cosine": sums["cosine"] / images}

    def headline(self, metrics: dict[str, float]) -> str:
        return f"val SimSiam loss {metrics['loss']:.4f}, prediction cosine {metrics['cosine']:.3f}"
