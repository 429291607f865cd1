"""Variational autoencoder (Kingma & Welling 2014) with a β weight on the KL term (Higgins et al. 2017).

The encoder's ``latent`` layer is the posterior mean μ, so probes read the mean; the head adds the
log-variance, a linear map of the flattened last spatial stage (the input of the conv encoder's latent
layer; the ResNet's latent reads that stage globally average-pooled instead, so there log σ² sees more
than μ does), and the decoder. The decoder is Gaussian with one standard deviation σ for every pixel: loss per image
D/2·log σ² + ‖x − x̂‖²/(2σ²) + β·KL(q(z|x) ‖ N(0, I)). By default σ is calibrated (Rybkin et al. 2021):
set each batch to the root mean squared error, its maximum-likelihood value; a fixed σ = 1 on
standardised pixels weighs reconstruction so lightly that the posterior collapses to the prior. Its
training objective's reconstruction error, from a sampled latent, is ``sampled_recon_mse``; on the test
set ``recon_mse`` is the error of decoding the posterior mean (as every reconstructing regime reports the
deterministic reconstruction of clean inputs), beside the KL per latent dimension and the active units,
Cov_x(E[z|x]) > 0.01 (Burda et al. 2016).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from replearn.runtime import distributed
from replearn.config.options import opt
from replearn.encoders import Encoder
from replearn.regimes.autoencoder import Reconstructing
from replearn.regimes.base import DataInfo, RegimeOptions, register_regime
from replearn.regimes.heads import ConvDecoder

ACTIVE_UNIT_THRESHOLD = 0.01


@dataclass
class VAEOptions(RegimeOptions):
    beta: float = opt(1.0, "weight of the KL term (1 = the VAE's evidence lower bound; > 1 = β-VAE)", gt=0.0,
                      max=1000.0)
    decoder_std: float = opt(0.0, "σ of the Gaussian decoder in standardised pixel units; 0 = calibrated to the "
                             "batch's root mean squared error (Rybkin et al. 2021)", min=0.0, max=100.0)


class VAEHead(nn.Module):
    """Log-variance layer plus decoder."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        spatial = [s for s in encoder.feature_info if s.spatial]
        self.source = spatial[-1].name if spatial else "latent"
        self.logvar = nn.Linear(spatial[-1].numel if spatial else encoder.latent_dim, encoder.latent_dim)
        self.decoder = ConvDecoder(encoder)

    def posterior(self, encoder: Encoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ²) of q(z|x)."""
        feats = encoder.forward_features(x, [self.source, "latent"] if self.source != "latent" else ["latent"])
        return feats["latent"], self.logvar(torch.flatten(feats[self.source], 1)).clamp(-12.0, 12.0)


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) of every latent dimension of every image."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)


@register_regime("vae")
class VAE(Reconstructing):
    label = "VAE"
    color = "#9467bd"
    loss_text = "Gaussian negative log-likelihood (σ calibrated per batch) + β·KL(q(z|x) ‖ N(0, I)), one sample of z"
    reads = "the posterior mean μ (the encoder's latent)"
    reference = "Kingma & Welling 2014; β: Higgins et al. 2017; calibrated σ: Rybkin et al. 2021"
    Options = VAEOptions

    def build_head(self, encoder: Encoder, data: DataInfo) -> nn.Module:
        return VAEHead(encoder)

    def loss(self, encoder: Encoder, head: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mu, logvar = head.posterior(encoder, x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        recon = head.decoder(mu + (0.5 * logvar).exp() * eps)
        sq = (recon - x).square().flatten(1).sum(1)
        kl = kl_per_dim(mu, logvar).sum(1)
        pixels = x[0].numel()
        variance = (torch.tensor(self.options.decoder_std ** 2, device=x.device) if self.options.decoder_std > 0
                    else (distributed.batch_mean(sq.detach()) / pixels).clamp_min(1e-4))  # σ of the global batch
        nll = 0.5 * pixels * torch.log(variance) + 0.5 * sq / variance
        loss = (nll + self.options.beta * kl).mean()
        return loss, {"sampled_sq_error": sq.detach().sum(), "kl": kl.detach().sum()}

    def metrics(self, sums: dict[str, float], images: int, pixels: int) -> dict[str, float]:
        return {"sampled_recon_mse": sums["sampled_sq_error"] / (images * pixels), "kl": sums["kl"] / images}

    def headline(self, metrics: dict[str, float]) -> str:
        return f"val sampled-latent recon MSE {metrics['sampled_recon_mse']:.4f}, KL {metrics['kl']:.1f}"

    @torch.no_grad()
    def reconstruct(self, encoder: Encoder, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return head.decoder(head.posterior(encoder, x)[0])

    @torch.no_grad()
    def test_report(self, encoder: Encoder, head: nn.Module, x: torch.Tensor, batch_size: int
                    ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        mus, kls, sq_error = [], [], 0.0
        device = next(head.parameters()).device
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].to(device).contiguous(memory_format=torch.channels_last)
            mu, logvar = head.posterior(encoder, xb)
            sq_error += float((head.decoder(mu).double() - xb.double()).square().sum())
            mus.append(mu.double().cpu())
            kls.append(kl_per_dim(mu, logvar).double().sum(0).cpu())
        mu = torch.cat(mus)
        kl = (torch.stack(kls).sum(0) / len(x)).numpy()
        variance = mu.var(0, correction=1).numpy() if len(mu) > 1 else np.zeros(mu.shape[1])
        active = int((variance > ACTIVE_UNIT_THRESHOLD).sum())
        recon_mse = sq_error / (len(x) * x[0].numel())  # decoded from μ: deterministic, as every regime's
        return ({"recon_mse": recon_mse, "active_units": active, "kl": float(kl.sum())},
                {"kl_per_dim": kl.astype(np.float32), "mean_variance_per_dim": variance.astype(np.float32)})
