"""Denoising autoencoder (Vincent et al. 2008): rebuild the clean input from a corrupted copy.

Its own objective, the error of the reconstruction of a corrupted input, is reported as ``denoising_mse``;
``recon_mse`` on the test set is, as for every reconstructing regime, the error on clean inputs."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from replearn.config.options import opt
from replearn.encoders import Encoder
from replearn.errors import ConfigError
from replearn.regimes.autoencoder import Reconstructing
from replearn.regimes.base import RegimeOptions, reconstruction_mse, register_regime


@dataclass
class DenoisingOptions(RegimeOptions):
    noise_std: float = opt(0.5, "standard deviation of the Gaussian noise added to each (standardised) pixel",
                           min=0.0, max=10.0)
    mask_fraction: float = opt(0.25, "fraction of pixels (all channels of each) set to the mean (0 after "
                               "standardisation), chosen anew for every image", min=0.0, max=0.95)


def corrupt(x: torch.Tensor, generator: torch.Generator, noise_std: float, mask_fraction: float) -> torch.Tensor:
    """Gaussian noise of ``noise_std`` on every value, then a random ``mask_fraction`` of pixels set to 0:
    a masked pixel loses all its channels (the mask is drawn per pixel, N×1×H×W, not per channel value)."""
    out = x
    if noise_std > 0:
        out = out + noise_std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if mask_fraction > 0:
        pixels = (x.shape[0], 1, *x.shape[2:]) if x.ndim == 4 else x.shape
        keep = torch.rand(pixels, generator=generator, device=x.device) >= mask_fraction
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
        return loss, {"denoising_sq_error": loss.detach() * x.numel()}

    def metrics(self, sums: dict[str, float], images: int, pixels: int) -> dict[str, float]:
        return {"denoising_mse": sums["denoising_sq_error"] / (images * pixels)}

    def headline(self, metrics: dict[str, float]) -> str:
        return f"val denoising MSE {metrics['denoising_mse']:.4f}"

    def test_report(self, encoder: Encoder, head: nn.Module, x: torch.Tensor, batch_size: int
                    ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """The reconstruction error on clean test images, beside the denoising error of ``metrics``."""
        return {"recon_mse": reconstruction_mse(self, encoder, head, x, batch_size)}, {}
