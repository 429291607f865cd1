"""The losses of the Siamese and supervised-contrastive regimes as plain functions of embeddings, each written
after its paper's own definition (tests/unit/test_losses.py checks every one, and its gradient, against a
transcription of the paper's pseudo-code), plus BYOL's target-network update.

Functions that need the whole batch (Barlow Twins' and VICReg's statistics, SupCon's negatives) take
``gather``: inside a distributed training step (``distributed.sharded_batch``) they then gather every
rank's rows with ``distributed.gather_with_grad``, whose backward returns each rank the gradient of its own
rows, so that N processes compute what one process computes on the whole batch; outside one, or with
``gather=False`` (statistics of this rank's rows only), they use the rows given.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from replearn.runtime import distributed


def _whole(z: torch.Tensor, gather: bool) -> tuple[torch.Tensor, int]:
    """(every rank's rows of ``z`` in rank order, where this rank's rows start) when ``gather``, else (z, 0);
    half-precision embeddings (bf16 autocast) are computed with in float32, float64 ones kept."""
    if z.is_floating_point() and z.dtype not in (torch.float32, torch.float64):
        z = z.float()
    return distributed.gather_with_grad(z) if gather else (z, 0)


def off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a square matrix, flattened (Barlow Twins' and VICReg's helper)."""
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def byol_loss(p: torch.Tensor, z_target: torch.Tensor) -> torch.Tensor:
    """BYOL's regression loss (Grill et al. 2020, eq. 2), mean over the batch:
    ‖p̄ − z̄′‖² = 2 − 2·⟨p, z′⟩ / (‖p‖·‖z′‖) between the online prediction ``p`` and the target projection
    ``z_target`` (no gradient flows into the target). The symmetric loss adds the swapped views' term."""
    return (2 - 2 * F.cosine_similarity(p, z_target.detach(), dim=1)).mean()


def simsiam_loss(p: torch.Tensor, z: torch.Tensor, stop_gradient: bool = True) -> torch.Tensor:
    """SimSiam's D(p, z) = −⟨p, z⟩ / (‖p‖·‖z‖), mean over the batch (Chen & He 2021, Algorithm 1), with the
    stop-gradient on ``z``; ``stop_gradient=False`` lets it through (the collapsing ablation of their Fig. 2)."""
    return -F.cosine_similarity(p, z.detach() if stop_gradient else z, dim=1).mean()


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 0.0051, gather: bool = True
                      ) -> torch.Tensor:
    """Barlow Twins (Zbontar et al. 2021, Algorithm 1): the cross-correlation C of the two views' embeddings,
    each standardised over the batch (mean 0, unbiased standard deviation 1 per dimension), against the
    identity: Σᵢ (1 − Cᵢᵢ)² + λ Σᵢ≠ⱼ Cᵢⱼ². With ``gather``, C is over the global batch."""
    a, _ = _whole(z1, gather)
    b, _ = _whole(z2, gather)
    n = a.shape[0]
    a = (a - a.mean(0)) / a.std(0)
    b = (b - b.mean(0)) / b.std(0)
    c = a.T @ b / n
    on = (torch.diagonal(c) - 1).pow(2).sum()
    return on + lambd * off_diagonal(c).pow(2).sum()


def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, sim_weight: float = 25.0, var_weight: float = 25.0,
                cov_weight: float = 1.0, gather: bool = True, eps: float = 1e-4
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VICReg (Bardes et al. 2022, Algorithm 1): λ·invariance (the mean squared error between the two views'
    embeddings) + μ·variance (a hinge keeping each dimension's standard deviation √(Var + ε) above 1, for each
    view) + ν·covariance (the squared off-diagonal covariances, ÷ d, for each view); 25/25/1 published.
    Returns (loss, {"invariance", "variance", "covariance"}), the terms unweighted. With ``gather``, every
    term is over the global batch."""
    a, _ = _whole(z1, gather)
    b, _ = _whole(z2, gather)
    n, d = a.shape
    invariance = F.mse_loss(a, b)
    std_a, std_b = torch.sqrt(a.var(0) + eps), torch.sqrt(b.var(0) + eps)
    variance = F.relu(1 - std_a).mean() + F.relu(1 - std_b).mean()
    a, b = a - a.mean(0), b - b.mean(0)
    cov_a, cov_b = a.T @ a / (n - 1), b.T @ b / (n - 1)
    covariance = off_diagonal(cov_a).pow(2).sum() / d + off_diagonal(cov_b).pow(2).sum() / d
    loss = sim_weight * invariance + var_weight * variance + cov_weight * covariance
    return loss, {"invariance": invariance.detach(), "variance": variance.detach(), "covariance": covariance.detach()}


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1, gather: bool = True
                ) -> torch.Tensor:
    """Khosla et al. 2020's supervised contrastive loss L_out (their eq. 2), mean over anchors: for each of the
    ``z``'s rows i (ℓ2-normalised), −1/|P(i)| Σ_{p∈P(i)} log(exp(zᵢ·z_p/τ) / Σ_{a≠i} exp(zᵢ·z_a/τ)), P(i)
    the other rows with i's label. ``z`` holds every view (e.g. both views of each image stacked, with
    ``labels`` repeated). An anchor without positives contributes nothing (and is not counted). With
    ``gather``, anchors are this rank's rows, positives and negatives every rank's."""
    everyone, offset = _whole(z, gather)
    all_labels, _ = _whole(labels, gather)
    everyone = F.normalize(everyone, dim=1)
    n = len(z)
    mine = torch.arange(offset, offset + n, device=z.device)
    logits = everyone[mine] @ everyone.T / temperature
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[torch.arange(n, device=z.device), mine] = True
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == all_labels[None, :]) & ~self_mask
    count = positives.sum(1)
    per_anchor = -log_prob.masked_fill(~positives, 0.0).sum(1) / count.clamp_min(1)
    has = count > 0
    return per_anchor[has].mean() if bool(has.any()) else per_anchor.sum() * 0.0


def cosine_tau(step: int, total_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    """BYOL's target decay rate at ``step`` of ``total_steps`` (Grill et al. 2020, §3.2):
    τ = final − (final − base)·(cos(π·step/total) + 1)/2, from ``base`` at the start to ``final`` at the end."""
    progress = min(1.0, step / max(1, total_steps))
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


@torch.no_grad()
def ema_update(online: nn.Module, target: nn.Module, tau: float) -> None:
    """BYOL's target update ξ ← τ·ξ + (1 − τ)·θ, parameter by parameter (buffers, such as batch norm's
    running statistics, are the target's own)."""
    for theta, xi in zip(online.parameters(), target.parameters()):
        xi.mul_(tau).add_(theta.detach(), alpha=1 - tau)
