"""What the two-view regimes share (BYOL, SimSiam, Barlow Twins, VICReg, SupCon): a head that carries the
dataset's pixel statistics for the colour distortion, the MLPs their papers put on the encoder, and the two
augmented views of a batch, made by the contrastive regime's pipeline (``contrastive.random_views``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn as nn

from replearn.config.options import opt
from replearn.encoders import Encoder
from replearn.regimes.base import DataInfo, Regime
from replearn.regimes.contrastive import FALLBACK_MEAN, FALLBACK_STD, random_views
from replearn.regimes.views import ViewOptions


def mlp(sizes: list[int], batch_norm: bool = True, last_batch_norm: bool = False) -> nn.Sequential:
    """Linear layers of ``sizes`` (input, hidden…, output) with batch norm (if ``batch_norm``) and ReLU between
    them; ``last_batch_norm`` ends with a batch norm without affine parameters (SimSiam's projector)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        hidden = i < len(sizes) - 2
        layers.append(nn.Linear(a, b, bias=not (batch_norm and (hidden or last_batch_norm))))
        if hidden:
            layers += [nn.BatchNorm1d(b)] if batch_norm else []
            layers.append(nn.ReLU(inplace=True))
    if last_batch_norm:
        layers.append(nn.BatchNorm1d(sizes[-1], affine=False))
    return nn.Sequential(*layers)


class ViewHead(nn.Module):
    """A two-view regime's head: it carries the dataset's per-channel pixel mean and standard deviation
    (non-persistent buffers: not in checkpoints, but on the head's device) for the colour distortion."""

    def __init__(self, data: DataInfo) -> None:
        super().__init__()
        channels = data.image_shape[0]
        mean = data.pixel_mean if data.pixel_mean is not None else (FALLBACK_MEAN,) * channels
        std = data.pixel_std if data.pixel_std is not None else (FALLBACK_STD,) * channels
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32), persistent=False)


def two_views(x: torch.Tensor, generator: torch.Generator, options: ViewOptions, head: nn.Module
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent random augmentations of every image of ``x``, as the contrastive regime makes them."""
    stats = (head.pixel_mean, head.pixel_std) if isinstance(head, ViewHead) else None
    return random_views(x, generator, options, stats), random_views(x, generator, options, stats)


def too_few(x: torch.Tensor) -> bool:
    """Whether a batch is too small for batch statistics (one image: a standard deviation is undefined)."""
    return len(x) < 2


class TwoViewRegime(Regime):
    """A regime whose loss compares two augmented views through a projector on the latent (BYOL, SimSiam,
    Barlow Twins, VICReg, SupCon): the probes read the latent, and the collapse diagnostics the projector."""

    head_name = "projector"
    batch_dependent_loss = True  # the projector's batch norm and the losses' batch statistics
    passes = (2, 2)  # the two views, forward and backward
    reads = "the encoder's latent, before the projector"
    options: ViewOptions

    def projected_views(self, encoder: Encoder, head: nn.Module, x: torch.Tensor,
                        generator: torch.Generator) -> torch.Tensor:
        """The projector's outputs of both views of ``x`` (first views, then second views), in one pass."""
        v1, v2 = two_views(x, generator, self.options, head)
        return projector_of(head)(encoder(torch.cat([v1, v2])))

    def embed(self, encoder: Encoder, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return projector_of(head)(encoder(x))


def projector_of(head: nn.Module) -> nn.Module:
    """A two-view head's projector (every two-view regime's head has one)."""
    return cast(nn.Module, head.projector)


@dataclass
class ProjectorOptions(ViewOptions):
    hidden_dim: int = opt(0, "hidden size of the projector's two hidden layers (0 = 4 × the latent size: "
                          "solo-learn's CIFAR 2048 for a 512-wide ResNet)", min=0)
    projection_dim: int = opt(0, "output size of the projector (0 = 4 × the latent size)", min=0)


class ProjectorHead(ViewHead):
    """Barlow Twins' and VICReg's projector: two hidden layers with batch norm and ReLU, then a linear one."""

    def __init__(self, latent_dim: int, hidden_dim: int, projection_dim: int, data: DataInfo) -> None:
        super().__init__(data)
        hidden = hidden_dim or 4 * latent_dim
        self.projector = mlp([latent_dim, hidden, hidden, projection_dim or 4 * latent_dim])
