"""The convolutional encoder, its classifier head and its mirrored decoder.

Like timm's feature extraction, the encoder names its stages (``feature_info``) and returns any of them
from ``forward_features``, so analyses tap layers without hooks. Both regimes start from the same
encoder weights: ``build_encoder`` is seeded, and the run copies one initial state into both.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .errors import ConfigError


@dataclass(frozen=True)
class StageInfo:
    """What one named layer of the encoder outputs: channels, spatial size and reduction from the input."""

    name: str
    channels: int
    height: int
    width: int
    reduction: int

    @property
    def numel(self) -> int:
        return self.channels * self.height * self.width


class ConvEncoder(nn.Module):
    """Stages of conv → batch norm → ReLU → 2×2 max-pool, then a linear map to the latent vector."""

    def __init__(self, in_shape: tuple[int, int, int], channels: list[int], kernel_size: int = 3,
                 latent_dim: int = 64) -> None:
        super().__init__()
        c_in, h, w = in_shape
        self.in_shape = tuple(in_shape)
        self.config = {"channels": list(channels), "kernel_size": kernel_size, "latent_dim": latent_dim}
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
            info.append(StageInfo(f"stage{i}", c_out, h, w, 2 ** i))
        flat = c_in * h * w
        input_dim = in_shape[0] * in_shape[1] * in_shape[2]
        if latent_dim > input_dim:
            raise ConfigError(f"model.latent_dim={latent_dim} is larger than the input ({input_dim} pixels)",
                              f"set model.latent_dim to at most {input_dim}")
        self.latent = nn.Linear(flat, latent_dim)
        info.append(StageInfo("latent", latent_dim, 1, 1, 0))
        self.feature_info = info

    @property
    def layer_names(self) -> list[str]:
        return [s.name for s in self.feature_info]

    def forward_features(self, x: torch.Tensor, layers: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Outputs of the requested named layers (all by default); stops after the deepest one asked for."""
        wanted = set(self.layer_names if layers is None else layers)
        unknown = wanted - set(self.layer_names)
        if unknown:
            raise ConfigError(f"unknown layer(s) {sorted(unknown)}", f"choose from {', '.join(self.layer_names)}")
        out: dict[str, torch.Tensor] = {}
        for name, stage in self.stages.items():
            if not wanted - out.keys():
                return out
            x = stage(x)
            if name in wanted:
                out[name] = x
        if "latent" in wanted:
            out["latent"] = self.latent(torch.flatten(x, 1))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages.values():
            x = stage(x)
        return self.latent(torch.flatten(x, 1))

    def describe(self) -> dict:
        return {"in_shape": list(self.in_shape), **self.config,
                "layers": [asdict(s) for s in self.feature_info],
                "parameters": sum(p.numel() for p in self.parameters())}


class ClassifierHead(nn.Module):
    """A linear softmax classifier on the latent vector (cross-entropy is applied by the trainer)."""

    def __init__(self, latent_dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(latent_dim, num_classes)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(z)


class ConvDecoder(nn.Module):
    """Mirror of the encoder: linear map back to the last stage's grid, then, stage by stage in reverse,
    nearest-neighbour upsampling and a convolution (avoids transposed-conv checkerboard artefacts)."""

    def __init__(self, encoder: ConvEncoder) -> None:
        super().__init__()
        c_in, h0, w0 = encoder.in_shape
        stages = [s for s in encoder.feature_info if s.name != "latent"]
        last = stages[-1]
        kernel = encoder.config["kernel_size"]
        self.grid = (last.channels, last.height, last.width)
        self.fc = nn.Linear(encoder.config["latent_dim"], last.numel)
        in_sizes = [(h0, w0)] + [(s.height, s.width) for s in stages[:-1]]
        out_channels = [c_in] + [s.channels for s in stages[:-1]]
        self.sizes = in_sizes[::-1]
        self.blocks = nn.ModuleList()
        for i in reversed(range(len(stages))):
            conv = nn.Conv2d(stages[i].channels, out_channels[i], kernel, padding=kernel // 2, bias=(i == 0))
            if i == 0:
                self.blocks.append(conv)
            else:
                self.blocks.append(nn.Sequential(conv, nn.BatchNorm2d(out_channels[i]), nn.ReLU(inplace=True)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc(z)).view(-1, *self.grid)
        for size, block in zip(self.sizes, self.blocks):
            x = block(F.interpolate(x, size=size, mode="nearest"))
        return x


def build_encoder(cfg: ModelConfig, in_shape: tuple[int, int, int], seed: int) -> ConvEncoder:
    """A freshly initialised encoder; the same seed always gives the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ConvEncoder(in_shape, cfg.channels, cfg.kernel_size, cfg.latent_dim)


def build_head(regime: str, encoder: ConvEncoder, num_classes: int, seed: int) -> nn.Module:
    """The regime's task head: a classifier (supervised) or a decoder (autoencoder), seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1_000_003)
        if regime == "supervised":
            return ClassifierHead(encoder.config["latent_dim"], num_classes)
        if regime == "autoencoder":
            return ConvDecoder(encoder)
    raise ConfigError(f"unknown regime '{regime}'", "use 'supervised' or 'autoencoder'")
