"""Denoising autoencoder (Vincent et al. 2008): rebuild the clean input from a corrupted copy."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..options import opt
from ..encoders import Encoder
from ..errors import ConfigError
from .autoencoder import Reconstructing
from .base import RegimeOptions, register_regime


@dataclass
class DenoisingOptions(RegimeOptions):
    noise_std: float = opt(0.5, "standard deviation of the Gaussian noise added to each (standardised) pixel",
                           min=0.0, max=10.0)
    mask_fraction: float = opt(0.25, "fraction of pixels set to the mean (0 after standardisation), chosen anew "
                               "for every image", min=0.0, max=0.95)


def corrupt(x: torch.Tensor, generator: torch.Generator, noise_std: float, mask_fraction: float) -> torch.Tensor:
    """Gaussian noise of ``noise_std`` on every pixel, then a random ``mask_fraction`` of pixels set to 0."""
    out = x
    if noise_std > 0:
        out = out + noise_std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if mask_fraction > 0:
        keep = torch.rand(x.shape, generator=generator, device=x.device) >= mask_fraction
        out = out * keep
    return out.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else out


@register_regime("denoising")
class Denoising(Reconstructing):
    label = "denoising AE"
    color = "#ff7f0e"
    loss_text = "mean squared error of the decoded latent of a corrupted input (Gaussian noise, masked pixels) " \
                "against the clean input"
    reference = "Vincent et al. 2008"
    Options = DenoisingOptions

    def __init__(self, options: DenoisingOptions | None = None, spec: str | None = None) -> None:
        super().__init__(options, spec)
        if self.options.noise_std == 0 and self.options.mask_fraction == 0:
            raise ConfigError("the denoising regime has no corruption (regimes.denoising.noise_std and "
                              "mask_fraction are both 0)", "set one of them above 0, or train the autoencoder regime")

    def loss(self, encoder: Encoder, head: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        noisy = corrupt(x, generator, self.options.noise_std, self.options.mask_fraction)
        recon = head(encoder(noisy))
        loss = F.mse_loss(recon, x)
        return loss, {"sq_error": loss.detach() * x.numel()}
