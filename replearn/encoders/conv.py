"""replearn's own small CNN: stages of conv → batch norm → ReLU → 2×2 max-pool, then a linear latent."""
from __future__ import annotations

import torch
import torch.nn as nn

from dataclasses import dataclass

from ..errors import ConfigError
from ..options import opt
from .base import ENCODERS, Encoder, StageInfo


@dataclass
class ConvOptions:
    """The conv encoder's own keys, written in the ``model`` section."""

    channels: list[int] = opt([16, 32, 64], "output channels of each conv stage (one stage per entry)", min=1,
                              list_default=True)
    kernel_size: int = opt(3, "convolution kernel size (odd)", min=1, max=9)

    def __post_init__(self) -> None:
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"config key 'model.kernel_size' must be odd, got {self.kernel_size}",
                              "use 3, 5 or 7 so that convolutions keep the image size")


@ENCODERS.register("conv")
class ConvEncoder(Encoder):
    """One stage per entry of ``channels``, each halving the image; ``latent`` is a linear map of the
    flattened last stage."""

    Options = ConvOptions

    def __init__(self, in_shape: tuple[int, int, int], channels: list[int], kernel_size: int = 3,
                 latent_dim: int = 64) -> None:
        super().__init__()
        c_in, h, w = in_shape
        self.in_shape = tuple(in_shape)
        self.latent_dim = latent_dim
        self.stages = nn.ModuleDict()
        info = []
        for i, c_out in enumerate(channels, start=1):
            if h < 2 or w < 2:
                raise ConfigError(f"{len(channels)} stages are too many for {in_shape[1]}×{in_shape[2]} images "
                                  f"(stage {i} would see {h}×{w} pixels)",
                                  f"use at most {i - 1} entries in model.channels")
            self.stages[f"stage{i}"] = nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )
            c_in, h, w = c_out, h // 2, w // 2
            info.append(StageInfo(f"stage{i}", c_out, h, w, 2 ** i, f"stages.stage{i}"))
        input_dim = in_shape[0] * in_shape[1] * in_shape[2]
        if latent_dim > input_dim:
            raise ConfigError(f"model.latent_dim={latent_dim} is larger than the input ({input_dim} pixels)",
                              f"set model.latent_dim to at most {input_dim}")
        self.latent = nn.Linear(c_in * h * w, latent_dim)
        info.append(StageInfo("latent", latent_dim, 1, 1, 0, "latent"))
        self.feature_info = info

    def forward_features(self, x: torch.Tensor, layers: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Outputs of the requested named layers (all by default); stops after the deepest one asked for."""
        wanted = set(self.check_layers(layers))
        out, last = self.stage_outputs(x, wanted)
        if last is not None and "latent" in wanted:
            out["latent"] = self.latent(torch.flatten(last, 1))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages.values():
            x = stage(x)
        return self.latent(torch.flatten(x, 1))
