"""Task heads that regimes put on the encoder: a linear classifier, a decoder built from the encoder's
``feature_info`` alone, and SimCLR's projection MLP."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from replearn.encoders import Encoder


class ClassifierHead(nn.Module):
    """A linear softmax classifier on the latent vector (the loss applies the softmax)."""

    def __init__(self, latent_dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(latent_dim, num_classes)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(z)


class ConvDecoder(nn.Module):
    """Mirror of the encoder's spatial stages: a linear map back to the last stage's grid, then stage by
    stage in reverse, nearest-neighbour upsampling to the recorded size and a convolution (no
    transposed-conv checkerboard artefacts). An encoder without spatial stages gets a linear decoder."""

    def __init__(self, encoder: Encoder, kernel_size: int = 3) -> None:
        super().__init__()
        c_in, h0, w0 = encoder.in_shape
        stages = [s for s in encoder.feature_info if s.spatial]
        self.in_shape = tuple(encoder.in_shape)
        self.blocks = nn.ModuleList()
        if not stages:
            self.grid = self.in_shape
            self.fc = nn.Linear(encoder.latent_dim, c_in * h0 * w0)
            self.sizes: list[tuple[int, int]] = []
            return
        last = stages[-1]
        self.grid = (last.channels, last.height, last.width)
        self.fc = nn.Linear(encoder.latent_dim, last.numel)
        in_sizes = [(h0, w0)] + [(s.height, s.width) for s in stages[:-1]]
        out_channels = [c_in] + [s.channels for s in stages[:-1]]
        self.sizes = in_sizes[::-1]
        for i in reversed(range(len(stages))):
            conv = nn.Conv2d(stages[i].channels, out_channels[i], kernel_size, padding=kernel_size // 2, bias=(i == 0))
            if i == 0:
                self.blocks.append(conv)
            else:
                self.blocks.append(nn.Sequential(conv, nn.BatchNorm2d(out_channels[i]), nn.ReLU(inplace=True)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not self.blocks:
            return self.fc(z).view(-1, *self.grid)
        x = F.relu(self.fc(z)).view(-1, *self.grid)
        for size, block in zip(self.sizes, self.blocks):
            x = block(F.interpolate(x, size=size, mode="nearest"))
        return x


class ProjectionHead(nn.Module):
    """SimCLR's projection g(h): linear → batch norm → ReLU → linear (Chen et al. 2020, §B.9)."""

    def __init__(self, latent_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim),
                                 nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
