"""k-means (Lloyd's algorithm from greedy k-means++ seeds, best of several starts) on a feature matrix.

The algorithm scikit-learn's ``KMeans`` runs by default (Arthur & Vassilvitskii 2007, with the greedy
variant's 2 + ⌊ln k⌋ candidates per centre; the same stopping rule: the centres' squared shift below
``tol`` × the features' mean variance), written in NumPy so that the structure analysis does not import
scikit-learn (1.2 s per process). Its random draws are its own, so a clustering can land in another local
optimum than scikit-learn's for the same seed; ``tests/unit/test_structure.py`` checks the inertia against
scikit-learn's.
"""

from __future__ import annotations

import math

import numpy as np


def _squared_distances(x: np.ndarray, x_sq: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """n × k squared Euclidean distances (clipped at 0 against rounding)."""
    d = x_sq[:, None] - 2.0 * (x @ centres.T) + (centres * centres).sum(1)[None, :]
    return np.maximum(d, 0.0, out=d)


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.RandomState) -> np.ndarray:
    """k initial centres: the first uniformly, each next one the best of 2 + ⌊ln k⌋ candidates drawn with
    probability ∝ squared distance to the nearest centre so far (the candidate that lowers the total most)."""
    n = len(x)
    x_sq = np.einsum("ij,ij->i", x, x)
    trials = 2 + int(math.log(k))
    centres = np.empty((k, x.shape[1]), dtype=x.dtype)
    centres[0] = x[rng.randint(n)]
    closest = _squared_distances(x, x_sq, centres[:1])[:, 0]
    for c in range(1, k):
        total = closest.sum()
        if total <= 0:  # every point sits on a centre: any point will do
            centres[c] = x[rng.randint(n)]
            continue
        picks = np.searchsorted(np.cumsum(closest), rng.uniform(size=trials) * total)
        picks = np.minimum(picks, n - 1)
        candidates = np.minimum(closest[None, :], _squared_distances(x, x_sq, x[picks]).T)
        best = int(np.argmin(candidates.sum(1)))
        centres[c], closest = x[picks[best]], candidates[best]
    return centres


def _lloyd(x: np.ndarray, centres: np.ndarray, max_iter: int, tol: float) -> tuple[np.ndarray, float]:
    """Lloyd iterations from ``centres`` until their squared shift is ≤ ``tol``; (labels, inertia). An empty
    cluster takes the point farthest from its centre."""
    x_sq = np.einsum("ij,ij->i", x, x)
    k = len(centres)
    for _ in range(max_iter):
        dist = _squared_distances(x, x_sq, centres)
        labels = dist.argmin(1)
        counts = np.bincount(labels, minlength=k)
        members = np.zeros((k, len(x)), dtype=x.dtype)
        members[labels, np.arange(len(x))] = 1.0
        new = members @ x  # each cluster's sum, as one BLAS product (np.add.at is ~50× slower)
        for empty in np.flatnonzero(counts == 0):
            far = int(np.argmax(dist[np.arange(len(x)), labels]))
            new[empty], counts[empty] = x[far], 1
            dist[far, labels[far]] = 0.0
        new /= counts[:, None]
        shift = float(((new - centres) ** 2).sum())
        centres = new
        if shift <= tol:
            break
    dist = _squared_distances(x, x_sq, centres)
    labels = dist.argmin(1)
    return labels, float(dist[np.arange(len(x)), labels].sum())


def kmeans(
    x: np.ndarray, k: int, n_init: int = 4, seed: int = 0, max_iter: int = 300, tol: float = 1e-4
) -> tuple[np.ndarray, float]:
    """Cluster the rows of ``x`` into ``k`` groups: the labels (n,) and inertia (sum of squared distances to
    the centres) of the best of ``n_init`` starts, each seeded by greedy k-means++. Centre ``x`` first for the
    least rounding in the distances (``clustering.cluster_scores`` passes centred features); no n × d copy is
    made of float64 input."""
    x = np.asarray(x, dtype=np.float64)
    if not 1 <= k <= len(x):
        raise ValueError(f"k-means needs 1 <= k <= {len(x)} points, got k={k}")
    rng = np.random.RandomState(seed)
    threshold = tol * float(np.mean(x.var(0))) if x.size else 0.0
    best: tuple[np.ndarray, float] | None = None
    for _ in range(n_init):
        labels, inertia = _lloyd(x, kmeans_plus_plus(x, k, rng), max_iter, threshold)
        if best is None or inertia < best[1]:
            best = (labels, inertia)
    assert best is not None
    return best
