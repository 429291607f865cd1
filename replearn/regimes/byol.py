"""BYOL (Grill et al. 2020): an online network (the encoder, a projector and a predictor) predicts a target
network's projection of another view of the same image; the target (a copy of the encoder and projector,
made when the head is built, so from the shared initial encoder) is not trained but follows the online
weights as an exponential moving average, ξ ← τξ + (1 − τ)θ, with τ rising from ``base_tau`` to
``final_tau`` on BYOL's cosine schedule. Probes read the online encoder's latent."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from replearn.encoders import Encoder
from replearn.config.options import opt
from replearn.regimes.base import DataInfo, register_regime
from replearn.regimes.losses import byol_loss, cosine_tau, ema_update
from replearn.regimes.siamese import TwoViewRegime, ViewHead, mlp, two_views
from replearn.regimes.views import ViewOptions


@dataclass
class BYOLOptions(ViewOptions):
    base_tau: float = opt(0.996, "target decay rate τ at the first step (BYOL: 0.996; solo-learn's CIFAR: 0.99)",
                          min=0.0, max=1.0)
    final_tau: float = opt(1.0, "target decay rate τ at the last step (cosine schedule between them)", min=0.0,
                           max=1.0)
    hidden_dim: int = opt(0, "hidden size of the projector and the predictor (0 = 8 × the latent size: BYOL's "
                          "4096 for a 512-wide ResNet)", min=0)
    projection_dim: int = opt(0, "output size of the projector and the predictor (0 = half the latent size: "
                              "BYOL's 256)", min=0)


class BYOLHead(ViewHead):
    """Online projector and predictor, and the target encoder and projector (never given gradients)."""

    def __init__(self, encoder: Encoder, options: BYOLOptions, data: DataInfo) -> None:
        super().__init__(data)
        latent = encoder.latent_dim
        hidden = options.hidden_dim or 8 * latent
        out = options.projection_dim or max(1, latent // 2)
        self.projector = mlp([latent, hidden, out])
        self.predictor = mlp([out, hidden, out])
        self.target_encoder = copy.deepcopy(encoder)
        self.target_projector = copy.deepcopy(self.projector)
        for p in [*self.target_encoder.parameters(), *self.target_projector.parameters()]:
            p.requires_grad_(False)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.target_projector(self.target_encoder(x))


@register_regime("byol")
class BYOL(TwoViewRegime):
    label = "BYOL"
    color = "#17becf"
    passes = (4, 2)  # two views through the online and the target network; backward through the online one
    loss_text = ("2 − 2·cos between the online prediction of one view and the target projection of the other, "
                 "both ways; target = EMA of the online encoder and projector (τ 0.996 → 1, cosine)")
    reads = "the online encoder's latent, before the projector"
    reference = "Grill et al. 2020 (BYOL)"
    Options = BYOLOptions

    def build_head(self, encoder: Encoder, data: DataInfo) -> nn.Module:
        return BYOLHead(encoder, self.options, data)

    def loss(self, encoder: Encoder, head: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        v1, v2 = two_views(x, generator, self.options, head)  # the target network takes the same views
        z = head.projector(encoder(torch.cat([v1, v2])))
        p1, p2 = head.predictor(z).chunk(2)
        t1, t2 = head.target(torch.cat([v1, v2])).chunk(2)
        loss = byol_loss(p1, t2) + byol_loss(p2, t1)
        cosine = (F.cosine_similarity(p1, t2, dim=1) + F.cosine_similarity(p2, t1, dim=1)).detach() / 2
        return loss, {"cosine": cosine.sum()}

    def after_step(self, encoder: Encoder, head: nn.Module, step: int, total_steps: int) -> None:
        """The target's EMA step, with τ of the step just taken (``cosine_tau``)."""
        tau = cosine_tau(step, total_steps, self.options.base_tau, self.options.final_tau)
        ema_update(encoder, head.target_encoder, tau)
        ema_update(head.projector, head.target_projector, tau)

    def metrics(self, sums: dict[str, float], images: int, pixels: int) -> dict[str, float]:
        return {"cosine": sums["cosine"] / images}

    def headline(self, metrics: dict[str, float]) -> str:
        return f"val BYOL loss {metrics['loss']:.4f}, prediction cosine {metrics['cosine']:.3f}"
