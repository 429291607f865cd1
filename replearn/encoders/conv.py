"""replearn's own small CNN: stages of conv → batch norm → ReLU → 2×2 max-pool, then a linear latent.

For depth studies the stages can go without batch norm (``model.batch_norm``), take further 3×3-style
convolutions (``model.convs_per_stage``) and skip connections around those (``model.residual``). Each
convolution block is then a named layer of its own (``stage2_1``, ``stage2_2``, …, then ``stage2``, the
block that ends with the pooling), so that probes, dimensions and gradient norms are reported per
convolution; the default (one convolution, batch norm, no skips) is the original encoder, weight for weight.
``model.init`` chooses the initial weights (PyTorch's default, the original; Kaiming/He; Xavier; orthogonal): in a
deep plain CNN the default's small weights (variance 1/(3·fan-in)) shrink the signal and the gradients layer by
layer, so "vanishing gradients" there is largely the initialisation.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from dataclasses import dataclass

from replearn.errors import ConfigError
from replearn.config.options import opt
from replearn.encoders.base import ENCODERS, Encoder, StageInfo


@dataclass
class ConvOptions:
    """The conv encoder's own keys, written in the ``model`` section."""

    channels: list[int] = opt([16, 32, 64], "output channels of each conv stage (one stage per entry)", min=1,
                              list_default=True)
    kernel_size: int = opt(3, "convolution kernel size (odd)", min=1, max=9)
    batch_norm: bool = opt(True, "batch norm after every convolution (false: a plain CNN whose convolutions have "
                                 "biases instead, for studying vanishing and exploding gradients with depth)")
    convs_per_stage: int = opt(1, "convolutions per stage (the first changes the channels, the others keep them); "
                                  "each is a named layer (stage2_1, …, stage2), so depth can be swept beyond the "
                                  "number of stages", min=1, max=32)
    residual: bool = opt(False, "an identity skip connection around each convolution of a stage after its first "
                                "(ResNet-style; needs model.convs_per_stage ≥ 2)")
    init: str = opt("default", "initial weights of the convolutions and the latent: default (PyTorch's own, "
                               "Kaiming-uniform with a = √5, i.e. weights of variance 1/(3·fan-in)), kaiming (He et "
                               "al. 2015: normal, fan-in, ReLU gain, variance 2/fan-in), xavier (Glorot & Bengio 2010, "
                               "uniform, ReLU gain), orthogonal (Saxe et al. 2014, ReLU gain); the latent map gets "
                               "gain 1; biases 0 except for default",
                    choices=("default", "kaiming", "xavier", "orthogonal"))

    def __post_init__(self) -> None:
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"config key 'model.kernel_size' must be odd, got {self.kernel_size}",
                              "use 3, 5 or 7 so that convolutions keep the image size")
        if self.residual and self.convs_per_stage < 2:
            raise ConfigError("config key 'model.residual' is true but a stage has only one convolution "
                              "(model.convs_per_stage = 1), so there is nothing to skip",
                              "set model.convs_per_stage to 2 or more, or model.residual to false")


class ResidualConv(nn.Module):
    """relu(x + norm(conv(x))): a convolution that keeps the channels, with an identity skip around it."""

    def __init__(self, channels: int, kernel_size: int, batch_norm: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, bias=not batch_norm)
        self.norm = nn.BatchNorm2d(channels) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.norm(self.conv(x)))


INITS = ("default", "kaiming", "xavier", "orthogonal")


def initialise(module: nn.Module, init: str) -> None:
    """Re-draw the weights of every convolution and linear map of ``module`` by ``init`` (``INITS``; default
    leaves PyTorch's initialisation as it is); biases become 0. The latent map is linear, so it gets gain 1."""
    if init == "default":
        return
    if init not in INITS:
        raise ConfigError(f"config key 'model.init' is '{init}', which is not an initialisation",
                          f"choose from: {', '.join(INITS)}")
    for layer in module.modules():
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            continue
        relu = isinstance(layer, nn.Conv2d)  # every convolution is followed by a ReLU; the latent is not
        if init == "kaiming":
            nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu" if relu else "linear")
        elif init == "xavier":
            nn.init.xavier_uniform_(layer.weight, gain=nn.init.calculate_gain("relu") if relu else 1.0)
        else:
            nn.init.orthogonal_(layer.weight, gain=nn.init.calculate_gain("relu") if relu else 1.0)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


def conv_block(c_in: int, c_out: int, kernel_size: int, batch_norm: bool, residual: bool) -> list[nn.Module]:
    """One convolution with its normalisation and ReLU, or a residual block (``residual``: the channels are kept)."""
    if residual:
        return [ResidualConv(c_out, kernel_size, batch_norm)]
    conv = nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=not batch_norm)
    return [conv, *([nn.BatchNorm2d(c_out)] if batch_norm else []), nn.ReLU(inplace=True)]


@ENCODERS.register("conv")
class ConvEncoder(Encoder):
    """One stage per entry of ``channels``, each halving the image; ``latent`` is a linear map of the
    flattened last stage."""

    Options = ConvOptions

    def __init__(self, in_shape: tuple[int, int, int], channels: list[int], kernel_size: int = 3,
                 latent_dim: int = 64, batch_norm: bool = True, convs_per_stage: int = 1,
                 residual: bool = False, init: str = "default") -> None:
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
            for j in range(1, convs_per_stage):  # the stage's convolutions before its last, each a named layer
                self.stages[f"stage{i}_{j}"] = nn.Sequential(*conv_block(c_in if j == 1 else c_out, c_out, kernel_size,
                                                                         batch_norm, residual and j > 1))
                info.append(StageInfo(f"stage{i}_{j}", c_out, h, w, 2 ** (i - 1), f"stages.stage{i}_{j}"))
            last_in = c_in if convs_per_stage == 1 else c_out
            self.stages[f"stage{i}"] = nn.Sequential(*conv_block(last_in, c_out, kernel_size, batch_norm, residual),
                                                     nn.MaxPool2d(2))
            c_in, h, w = c_out, h // 2, w // 2
            info.append(StageInfo(f"stage{i}", c_out, h, w, 2 ** i, f"stages.stage{i}"))
        input_dim = in_shape[0] * in_shape[1] * in_shape[2]
        if latent_dim > input_dim:
            raise ConfigError(f"model.latent_dim={latent_dim} is larger than the input ({input_dim} pixels)",
                              f"set model.latent_dim to at most {input_dim}")
        self.latent = nn.Linear(c_in * h * w, latent_dim)
        info.append(StageInfo("latent", latent_dim, 1, 1, 0, "latent"))
        self.feature_info = info
        initialise(self, init)

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
