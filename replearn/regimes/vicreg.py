"""VICReg (Bardes et al. 2022): variance, invariance and covariance terms on two views' projector outputs,
weighted 25/25/1 as published; no negatives, no target network, no stop-gradient. Probes read the encoder's
latent."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from replearn.encoders import Encoder
from replearn.config.options import opt
from replearn.regimes.base import DataInfo, register_regime
from replearn.regimes.losses import vicreg_loss
from replearn.regimes.siamese import ProjectorHead, ProjectorOptions, TwoViewRegime, too_few


@dataclass
class VICRegOptions(ProjectorOptions):
    sim_weight: float = opt(25.0, "λ, the weight of the invariance (mean squared error) term", min=0.0, max=1000.0)
    var_weight: float = opt(25.0, "μ, the weight of the variance hinge", min=0.0, max=1000.0)
    cov_weight: float = opt(1.0, "ν, the weight of the covariance term", min=0.0, max=1000.0)


@register_regime("vicreg")
class VICReg(TwoViewRegime):
    label = "VICReg"
    color = "#aec7e8"
    loss_text = ("λ·MSE between the two views' projections + μ·hinge on each dimension's standard deviation + "
                 "ν·squared off-diagonal covariances (25/25/1)")
    reference = "Bardes et al. 2022 (VICReg)"
    Options = VICRegOptions

    def build_head(self, encoder: Encoder, data: DataInfo) -> nn.Module:
        o = self.options
        return ProjectorHead(encoder.latent_dim, o.hidden_dim, o.projection_dim, data)

    def loss(self, encoder: Encoder, head: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z1, z2 = self.projected_views(encoder, head, x, generator).chunk(2)
        if too_few(x):  # one image has no batch statistics: no loss (evaluation's last batch may hold one)
            return z1.sum() * 0.0, {}
        o = self.options
        loss, terms = vicreg_loss(z1, z2, o.sim_weight, o.var_weight, o.cov_weight)
        return loss, {name: value * len(x) for name, value in terms.items()}

    def metrics(self, sums: dict[str, float], images: int, pixels: int) -> dict[str, float]:
        return {name: sums[name] / images for name in ("invariance", "variance", "covariance") if name in sums}

    def headline(self, metrics: dict[str, float]) -> str:
        return (f"val VICReg loss {metrics['loss']:.4f} (invariance {metrics.get('invariance', float('nan')):.3f}, "
                f"variance {metrics.get('variance', float('nan')):.3f})")
