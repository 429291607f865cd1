"""Masked-image modelling, the modern member of the autoencoder family (context encoders, Pathak et al. 2016;
SimMIM, Xie et al. 2022; for CNNs SparK, Tian et al. 2023 and ConvNeXt V2's FCMAE, Woo et al. 2023): a random
``mask_ratio`` of square patches of each image is replaced by a mask token (learned, one value per channel,
or zero), the encoder reads the masked image and the decoder (mirrored from the encoder's stages, as the
autoencoder's) rebuilds it; the loss is on the masked pixels only (SimMIM's ℓ1 by default). A CNN sees
the masked image densely (no sparse convolutions as in SparK). ``recon_mse`` on the test set is, as for
every reconstructing regime, the error of decoding the clean input; probes read the latent of clean images."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from replearn.encoders import Encoder
from replearn.config.options import opt
from replearn.regimes.autoencoder import Reconstructing
from replearn.regimes.base import DataInfo, RegimeOptions, register_regime
from replearn.regimes.heads import ConvDecoder


@dataclass
class MaskedOptions(RegimeOptions):
    mask_ratio: float = opt(0.6, "fraction of patches masked in each image (SimMIM: 0.6)", gt=0.0, max=0.95)
    patch_size: int = opt(4, "side of a square masked patch in pixels (the last row and column of patches may "
                          "be cut by the image's edge)", min=1)
    mask_token: str = opt("learned", "what replaces masked pixels: a learned value per channel (SimMIM) or zero "
                          "(the dataset's mean, after standardisation)", choices=("learned", "zero"))
    loss: str = opt("l1", "error on the masked pixels: l1 (SimMIM) or l2 (MAE's squared error)",
                    choices=("l1", "l2"))


class MaskedHead(nn.Module):
    """The decoder and the mask token (one value per channel; kept at zero when the token is not learned)."""

    def __init__(self, encoder: Encoder, learned: bool) -> None:
        super().__init__()
        self.decoder = ConvDecoder(encoder)
        channels = encoder.in_shape[0]
        self.mask_token = nn.Parameter(torch.zeros(1, channels, 1, 1), requires_grad=learned)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


def patch_mask(n: int, height: int, width: int, patch: int, ratio: float, generator: torch.Generator,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """N×1×H×W masks (1 = masked): in each image exactly round(ratio × patches) of the ⌈H/p⌉×⌈W/p⌉ patches,
    drawn uniformly without replacement (SimMIM's MaskGenerator), upsampled to pixels."""
    rows, cols = math.ceil(height / patch), math.ceil(width / patch)
    patches = rows * cols
    masked = max(1, min(patches, round(ratio * patches)))
    order = torch.rand((n, patches), generator=generator, device=device).argsort(1)
    grid = torch.zeros((n, patches), device=device)
    grid.scatter_(1, order[:, :masked], 1.0)
    grid = grid.view(n, 1, rows, cols).repeat_interleave(patch, 2).repeat_interleave(patch, 3)
    return grid[:, :, :height, :width]


def masked_error(recon: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    """The mean ℓ1 (or squared) error over the masked pixel values only (every channel of a masked pixel)."""
    error = (recon - x).abs() if kind == "l1" else (recon - x).square()
    weight = mask.expand_as(x)
    return (error * weight).sum() / weight.sum().clamp_min(1.0)


@register_regime("masked")
class Masked(Reconstructing):
    label = "masked image modelling"
    color = "#ff9896"
    loss_text = ("ℓ1 error, on the masked pixels only, of the decoded latent of an image whose random patches "
                 "(60 %) were replaced by a learned mask token")
    reference = "Pathak et al. 2016; Xie et al. 2022 (SimMIM); Tian et al. 2023 (SparK)"
    Options = MaskedOptions

    def build_head(self, encoder: Encoder, data: DataInfo) -> nn.Module:
        return MaskedHead(encoder, self.options.mask_token == "learned")

    def loss(self, encoder: Encoder, head: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        o = self.options
        n, _, height, width = x.shape
        mask = patch_mask(n, height, width, o.patch_size, o.mask_ratio, generator, x.device).to(x.dtype)
        corrupted = (x * (1 - mask) + head.mask_token * mask).contiguous(memory_format=torch.channels_last)
        recon = head.decoder(encoder(corrupted))
        loss = masked_error(recon, x, mask, o.loss)
        values = mask.expand_as(x).sum()
        return loss, {"masked_error": loss.detach() * values, "masked_values": values}

    def metrics(self, sums: dict[str, float], images: int, pixels: int) -> dict[str, float]:
        return {f"masked_{self.options.loss}": sums["masked_error"] / max(sums["masked_values"], 1.0)}

    def headline(self, metrics: dict[str, float]) -> str:
        return f"val masked-pixel {self.options.loss} {metrics[f'masked_{self.options.loss}']:.4f}"

    @torch.no_grad()
    def reconstruct(self, encoder: Encoder, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return head.decoder(encoder(x))
