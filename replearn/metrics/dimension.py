"""How many dimensions a representation uses: linear (PCA) and intrinsic (TwoNN) estimates."""
from __future__ import annotations

import torch

from replearn.metrics.arrays import ArrayLike, as_feature_matrix
from replearn.errors import ReplearnError
from replearn.metrics.neighbours import nearest_neighbours


def pca_spectrum(x: ArrayLike) -> torch.Tensor:
    """Variance along each principal axis, largest first."""
    t = as_feature_matrix(x, "the features given to pca_spectrum", 2, torch.float64)
    t = t - t.mean(0)
    small = t.T @ t if t.shape[1] <= t.shape[0] else t @ t.T
    return torch.linalg.eigvalsh(small).flip(0).clamp_min(0) / (len(t) - 1)


def pca_dimension(x: ArrayLike, variance: float = 0.9) -> int:
    """Number of principal components needed to explain ``variance`` of the total (0 for constant data)."""
    if not 0 < variance <= 1:
        raise ReplearnError(f"variance must be in (0, 1], got {variance}", "use e.g. 0.9")
    spec = pca_spectrum(x)
    total = spec.sum()
    if total <= 0:
        return 0
    return int(torch.searchsorted(torch.cumsum(spec, 0) / total, torch.tensor(variance - 1e-12,
                                                                            dtype=torch.float64)).item()) + 1


def participation_ratio(x: ArrayLike) -> float:
    """(Σλ)² / Σλ² of the PCA spectrum: a soft count of the dimensions in use (0 for constant data)."""
    spec = pca_spectrum(x)
    denom = float((spec ** 2).sum())
    return float(spec.sum() ** 2 / denom) if denom > 0 else 0.0


def rankme(x: ArrayLike, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al. 2023): exp of the entropy of the normalised singular values of the (uncentred)
    embeddings, a label-free score that tracks downstream accuracy of self-supervised encoders; between 1 and
    min(n, d)."""
    t = as_feature_matrix(x, "the features given to rankme", 2, torch.float64)
    sigma = torch.linalg.svdvals(t)
    if float(sigma.sum()) <= 0:
        return 0.0
    p = sigma / sigma.sum() + eps
    return float(torch.exp(-(p * p.log()).sum()))


def twonn_dimension(x: ArrayLike, discard_fraction: float = 0.1, max_points: int = 5000, seed: int = 0) -> float:
    """Intrinsic dimension by TwoNN (Facco et al. 2017): the ratio μ = r₂/r₁ of each point's second- to
    first-neighbour distance is Pareto(d), so d is the slope of −log(1 − F(μ)) against log μ, fitted
    through the origin on the smallest (1 − ``discard_fraction``) of the μ. Duplicate points are ignored;
    fewer than 3 distinct points give 0."""
    t = as_feature_matrix(x, "the features given to twonn_dimension", 3, torch.float64)
    if len(t) > max_points:
        keep = torch.randperm(len(t), generator=torch.Generator().manual_seed(seed))[:max_points]
        t = t[keep]
    t = torch.unique(t, dim=0)
    if len(t) < 3:
        return 0.0
    two = nearest_neighbours(t, t, 2, "euclidean", exclude_self=True, chunk=1024).values
    r1, r2 = two[:, 0], two[:, 1]
    ok = r1 > 0
    mu = (r2[ok] / r1[ok]).sort().values
    n = len(mu)
    if n < 3:
        return 0.0
    # Facco et al.: the empirical CDF F of μ satisfies -log(1 - F) = d · log μ; fit d through the origin
    # on the points with the smallest (1 - discard_fraction) μ (the largest are the noisiest)
    cdf = torch.arange(1, n + 1, dtype=torch.float64) / n
    keep = max(2, int(n * (1 - discard_fraction)))
    x = torch.log(mu[:keep])
    y = -torch.log1p(-cdf[:keep].clamp(max=1 - 1e-12))
    denom = float((x * x).sum())
    return float((x * y).sum() / denom) if denom > 0 else 0.0
