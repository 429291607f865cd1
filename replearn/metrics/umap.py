"""2-D projections: the UMAP algorithm (McInnes, Healy & Melville 2018) written in torch, and trustworthiness.

umap-learn is the reference implementation, but on a 2-core CPU it costs ~12 s of import and numba
compilation and ~40 s per 10k points. This version follows the same steps — exact k-nearest neighbours,
smooth-kNN calibration, fuzzy-union symmetrisation, the same edge and negative sampling schedule, the
same attraction/repulsion gradients with clipping — vectorised per epoch, on features first reduced
by PCA. ``benchmarks/bench_projection.py`` checks its trustworthiness against umap-learn's.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from replearn.metrics.arrays import as_feature_matrix
from replearn.errors import ReplearnError
from replearn.metrics.neighbours import nearest_neighbours
from replearn.metrics.pca import principal_components


def pca_reduce(x: torch.Tensor, dims: int) -> torch.Tensor:
    """Centre and project onto the top ``dims`` principal components (no-op when already small).

    Deterministic, signs fixed so that each component's largest loading is positive; by the cheapest route
    for the shape (``pca.principal_components``): the d×d covariance when d ≤ n, the n×n Gram matrix when
    n < d (exact: a few hundred test points of 224² colour images no longer eigen-decompose a 150,528² matrix),
    a seeded randomised SVD when both exceed ``pca.EXACT_LIMIT``.
    """
    if x.shape[1] <= dims:
        return x - x.mean(0)
    mean, basis = principal_components(x, dims)
    return ((x - mean) @ basis).to(x.dtype)


def smooth_knn_weights(dist: torch.Tensor, n_iter: int = 64) -> torch.Tensor:
    """UMAP's membership strengths exp(-(d - ρ)/σ), σ found by bisection so each row sums to log2(k+1)."""
    k = dist.shape[1]
    target = math.log2(k + 1)
    rho = dist[:, 0]
    excess = (dist - rho[:, None]).clamp_min(0.0)
    lo = torch.zeros(len(dist), dtype=torch.float64)
    hi = torch.full((len(dist),), float("inf"), dtype=torch.float64)
    sigma = torch.ones(len(dist), dtype=torch.float64)
    excess64 = excess.double()
    for _ in range(n_iter):
        total = torch.exp(-excess64 / sigma[:, None]).sum(1)
        too_big = total > target
        hi = torch.where(too_big, sigma, hi)
        lo = torch.where(too_big, lo, sigma)
        sigma = torch.where(torch.isinf(hi), sigma * 2.0, (lo + hi) / 2.0)
    floor = 1e-3 * dist.double().mean()
    sigma = torch.maximum(sigma, floor.expand_as(sigma))
    return torch.exp(-excess64 / sigma[:, None]).float()


def find_ab(spread: float = 1.0, min_dist: float = 0.1) -> tuple[float, float]:
    """Fit the curve 1 / (1 + a d^(2b)) to UMAP's target membership function, as umap-learn does."""
    from scipy.optimize import curve_fit

    xv = np.linspace(0, spread * 3, 300)
    yv = np.where(xv < min_dist, 1.0, np.exp(-(xv - min_dist) / spread))
    (a, b), _ = curve_fit(lambda d, a, b: 1.0 / (1.0 + a * d ** (2 * b)), xv, yv)
    return float(a), float(b)


def fuzzy_graph(idx: torch.Tensor, weights: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fuzzy union A + Aᵀ − A∘Aᵀ of the directed kNN graph, as (head, tail, weight) edge lists."""
    from scipy import sparse

    rows = np.repeat(np.arange(n), idx.shape[1])
    a = sparse.coo_matrix((weights.numpy().ravel(), (rows, idx.numpy().ravel())), shape=(n, n)).tocsr()
    a.sum_duplicates()
    at = a.T.tocsr()
    union = (a + at - a.multiply(at)).tocoo()
    keep = union.data > 0
    return (torch.from_numpy(union.row[keep].astype(np.int64)), torch.from_numpy(union.col[keep].astype(np.int64)),
            torch.from_numpy(union.data[keep].astype(np.float32)))


def umap_embed(features: np.ndarray | torch.Tensor, n_neighbors: int = 15, min_dist: float = 0.1,
               n_epochs: int | None = None, pca_dims: int = 50, negative_sample_rate: int = 5,
               seed: int = 0) -> np.ndarray:
    """2-D UMAP embedding of the rows of ``features`` (float32 array, n × 2).

    ``n_epochs`` defaults to 200, umap-learn's choice for large datasets (it uses 500 below 10k points):
    on 10k Fashion-MNIST latents 500 epochs raise trustworthiness by only ≈ 0.002 and take 2.5× longer.
    """
    x = as_feature_matrix(features, "features to project")
    n = len(x)
    if n < 3:
        return np.zeros((n, 2), dtype=np.float32)
    gen = torch.Generator().manual_seed(seed)
    x = pca_reduce(x, pca_dims)
    k = min(n_neighbors - 1, n - 1)
    dist, idx = nearest_neighbours(x, x, k, "euclidean", exclude_self=True, chunk=2048)
    head, tail, w = fuzzy_graph(idx, smooth_knn_weights(dist), n)
    n_epochs = n_epochs or 200
    keep = w >= w.max() / n_epochs
    head, tail, w = head[keep], tail[keep], w[keep]
    a, b = find_ab(1.0, min_dist)

    y = _pca_init(x, gen)
    epochs_per_sample = (w.max() / w).float()
    next_sample = epochs_per_sample.clone()
    for epoch in range(n_epochs):
        alpha = 1.0 - epoch / n_epochs
        due = next_sample <= epoch + 1
        if not due.any():
            continue
        next_sample[due] += epochs_per_sample[due]
        hi, ti = head[due], tail[due]
        diff = y[hi] - y[ti]
        d2 = (diff * diff).sum(1, keepdim=True)
        coeff = torch.where(d2 > 0, -2.0 * a * b * d2.clamp_min(1e-12).pow(b - 1.0) / (1.0 + a * d2.pow(b)),
                            torch.zeros_like(d2))
        move = (coeff * diff).clamp(-4.0, 4.0) * alpha
        update = torch.zeros_like(y)
        update.index_add_(0, hi, move)
        update.index_add_(0, ti, -move)
        neg_head = hi.repeat_interleave(negative_sample_rate)
        neg_tail = torch.randint(0, n, (len(neg_head),), generator=gen)
        ndiff = y[neg_head] - y[neg_tail]
        nd2 = (ndiff * ndiff).sum(1, keepdim=True)
        ncoeff = 2.0 * b / ((0.001 + nd2) * (1.0 + a * nd2.pow(b)))
        nmove = torch.where(nd2 > 0, (ncoeff * ndiff).clamp(-4.0, 4.0), torch.zeros_like(ndiff)) * alpha
        update.index_add_(0, neg_head, nmove)
        y += update
    return y.numpy()


def _pca_init(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """First two principal components scaled to [-10, 10] plus a little noise (umap-learn's init scale)."""
    y = pca_reduce(x, 2)
    if y.shape[1] < 2:
        y = torch.cat([y, torch.zeros(len(y), 2 - y.shape[1])], 1)
    y = y / y.abs().max().clamp_min(1e-12) * 10.0
    return (y + 1e-4 * torch.randn(y.shape, generator=gen)).float().contiguous()


@torch.no_grad()
def trustworthiness(high: np.ndarray | torch.Tensor, low: np.ndarray | torch.Tensor, n_neighbors: int = 5,
                    chunk: int = 1024) -> float:
    """How well the embedding's k-neighbourhoods respect the original space (Venna & Kaski), in [0, 1].

    Same definition as ``sklearn.manifold.trustworthiness``, computed in chunks without an n×n matrix;
    original-space distances in float32 (as scikit-learn does for float32 input), the embedding's in float64.
    Ties are handled differently: a sample's rank in the original space is 1 + the number of samples strictly
    closer (tied samples share the best rank), whereas scikit-learn ranks tied samples in the order its
    sort leaves them. On data with many exactly equal distances (integer pixels) the two differ by a few
    1e-5; without ties they agree to float rounding.
    """
    x = as_feature_matrix(high, "original-space features")
    y = as_feature_matrix(low, "embedded points").double()
    n, k = len(x), n_neighbors
    if len(y) != n:
        raise ReplearnError(f"trustworthiness needs the same rows in both spaces ({n} vs {len(y)})",
                            "pass the embedding of exactly these samples")
    if k >= n / 2:
        raise ReplearnError(f"trustworthiness needs n_neighbors < n/2 (got {k} for {n} samples)",
                            "use fewer neighbours or more samples")
    low_idx = nearest_neighbours(y, y, k, "euclidean", exclude_self=True, chunk=2048).indices
    x_sq = (x * x).sum(1)
    penalty = 0.0
    for start in range(0, n, chunk):
        block = x[start:start + chunk]
        d2 = torch.addmm(x_sq[None, :], block, x.T, alpha=-2.0).add_(x_sq[start:start + chunk, None])
        rows = torch.arange(len(block))
        d2[rows, rows + start] = float("inf")
        neighbour_d2 = d2.gather(1, low_idx[start:start + chunk])
        ranks = (d2[:, None, :] < neighbour_d2[:, :, None]).sum(-1) + 1
        penalty += float((ranks - k).clamp_min(0).sum())
    return 1.0 - penalty * 2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0))
