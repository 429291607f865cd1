"""A ResNet family (He et al. 2016) with the CIFAR-style stem: a 3×3 convolution and no max-pool, so small
images keep their resolution into stage 1 (the network behind the usual ≈ 93–95% CIFAR-10 ResNet-18).

Basic blocks only. The depth is the count of weight layers, as in ResNet-18 and -34 (He et al.): the stem
convolution, two convolutions per block and the final linear layer (here ``latent``), not the 1×1 projection
shortcuts; 10, 18 or 34 sets the blocks per stage to 1/1/1/1, 2/2/2/2 or 3/4/6/3. One block per stage is
the layout timm calls ``resnet10t``. replearn called that ResNet-10 "depth 8" until it was named by its layer
count: ``model.depth: 8`` is refused with the new name, while a checkpoint that records depth 8 still
loads (the same network). The four stages are named ``stage1`` …
``stage4`` (stride 1, 2, 2, 2; widths w, 2w, 4w, 8w) and ``latent`` is a linear map of the globally
average-pooled last stage, so the autoencoder's decoder mirrors it like any other encoder.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from dataclasses import dataclass

from replearn.errors import ConfigError
from replearn.config.options import opt
from replearn.encoders.base import ENCODERS, Encoder, StageInfo

BLOCKS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}  # weight layers: 2 + 2 · blocks
OLD_NAMES = {8: 10}  # checkpoints written before the ResNet-10 was named by its layer count record depth 8


@dataclass
class ResNetOptions:
    """The ResNet encoder's own keys, written in the ``model`` section (or in ``model.kwargs``)."""

    depth: int = opt(18, "depth, counted in weight layers: 10, 18 or 34 (basic blocks per stage 1/1/1/1, 2/2/2/2, "
                     "3/4/6/3)")
    width: int = opt(64, "base width: stage widths are w, 2w, 4w, 8w (64 is ResNet-18's; 16 suits a CPU)", min=1)

    def __post_init__(self) -> None:
        check_depth(self.depth)


def check_depth(depth: int) -> None:
    """Refuse a depth replearn does not build; the old name of the ResNet-10, depth 8, gets its new name."""
    if depth in OLD_NAMES:
        raise ConfigError(f"model.depth={depth} is now called {OLD_NAMES[depth]}: the ResNet is named by its "
                          f"{OLD_NAMES[depth]} weight layers (stem, {OLD_NAMES[depth] - 2} block convolutions, latent)",
                          f"set model.depth={OLD_NAMES[depth]} (the same network)")
    if depth not in BLOCKS:
        raise ConfigError(f"config key 'model.depth' has invalid value {depth!r}, not a ResNet depth replearn builds",
                          f"choose one of: {', '.join(map(str, BLOCKS))}")


class BasicBlock(nn.Module):
    """conv 3×3 → BN → ReLU → conv 3×3 → BN, plus the input (through a 1×1 conv + BN where the shape
    changes), then ReLU. Each conv → BN pair sits in an ``nn.Sequential`` so feature extraction fuses it."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.stride = stride
        self.shortcut = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
                         if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the projection shortcut is a 1×1 convolution of stride 2, written as subsampling then a 1×1 convolution
        # of stride 1 (the same function and weights): torch 2.13's CPU kernel for a strided 1×1 convolution in
        # channels-last layout corrupts the heap on one thread with few channels
        skip = x[:, :, ::self.stride, ::self.stride] if self.stride != 1 else x
        return torch.relu(self.residual(x) + self.shortcut(skip))


@ENCODERS.register("resnet")
class ResNetEncoder(Encoder):
    """ResNet-``depth`` (10, 18 or 34 weight layers) of base width ``width``; stages named stage1..stage4, then
    ``latent``. ``depth=8``, the ResNet-10's old name, is accepted here so that old checkpoints still load."""

    Options = ResNetOptions

    def __init__(self, in_shape: tuple[int, int, int], latent_dim: int = 512, depth: int = 18, width: int = 64) -> None:
        super().__init__()
        depth = OLD_NAMES.get(depth, depth)
        check_depth(depth)
        if not isinstance(width, int) or width < 1:
            raise ConfigError(f"model.kwargs.width must be a positive integer, got {width!r}", "e.g. 64 (or 16 on a CPU)")
        c_in, h, w = in_shape
        self.in_shape = tuple(in_shape)
        self.latent_dim = latent_dim
        self.stem = nn.Sequential(nn.Conv2d(c_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True))
        self.stages = nn.ModuleDict()
        info, channels, reduction = [], width, 1
        for i, (blocks, factor) in enumerate(zip(BLOCKS[depth], (1, 2, 4, 8)), start=1):
            stride = 1 if i == 1 else 2
            c_out = width * factor
            layers = [BasicBlock(channels, c_out, stride)] + [BasicBlock(c_out, c_out, 1) for _ in range(blocks - 1)]
            self.stages[f"stage{i}"] = nn.Sequential(*layers)
            h, w, reduction, channels = (h + stride - 1) // stride, (w + stride - 1) // stride, reduction * stride, c_out
            info.append(StageInfo(f"stage{i}", c_out, h, w, reduction, f"stages.stage{i}"))
        self.latent = nn.Linear(channels, latent_dim)
        info.append(StageInfo("latent", latent_dim, 1, 1, 0, "latent"))
        self.feature_info = info

    def forward_features(self, x: torch.Tensor, layers: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Outputs of the requested named layers (all by default); stops after the deepest one asked for."""
        wanted = set(self.check_layers(layers))
        out, last = self.stage_outputs(self.stem(x), wanted)
        if last is not None and "latent" in wanted:
            out["latent"] = self.latent(last.mean((2, 3)))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages.values():
            x = stage(x)
        return self.latent(x.mean((2, 3)))
