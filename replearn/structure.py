"""Structure without labels: clustering agreement with the classes, silhouette, and neighbourhood overlap
between two feature spaces."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score

from .errors import ReplearnError
from .probes import cosine_topk

ArrayLike = np.ndarray | torch.Tensor


def _array(x: ArrayLike) -> np.ndarray:
    a = np.asarray(x.numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if a.ndim != 2 or len(a) < 2:
        raise ReplearnError(f"features must be a 2-D array with at least 2 rows, got shape {a.shape}",
                            "pass one row of features per sample")
    if not np.isfinite(a).all():
        raise ReplearnError("features contain NaN or infinite values", "check the features")
    return a


def cluster_scores(features: ArrayLike, labels: ArrayLike, seed: int = 0, silhouette_points: int = 3000,
                   standardize: bool = True) -> dict[str, float]:
    """k-means (k = number of classes) on standardised features (``standardize=False``: centred only, keeping
    the features' relative scales, as for PCA components), scored against the classes by NMI and ARI, and the
    silhouette of the true classes (cosine distance) on a fixed subsample."""
    x = _array(features)
    y = np.asarray(labels)
    if len(y) != len(x):
        raise ReplearnError(f"{len(x)} feature rows but {len(y)} labels", "pass one label per row")
    classes = np.unique(y)
    if len(classes) < 2:
        raise ReplearnError("clustering scores need at least two classes", "pass labels of two or more classes")
    std = x.std(0) if standardize else np.ones(x.shape[1], dtype=x.dtype)
    z = (x - x.mean(0)) / np.where(std > 0, std, 1.0)
    k = min(len(classes), len(np.unique(z, axis=0)))
    pred = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(z)
    rng = np.random.RandomState(seed)
    keep = rng.permutation(len(x))[:silhouette_points]
    sil = float(silhouette_score(z[keep], y[keep], metric="cosine")) if len(np.unique(y[keep])) > 1 else 0.0
    if not np.isfinite(sil):
        sil = 0.0
    return {"kmeans_nmi": float(normalized_mutual_info_score(y, pred)),
            "kmeans_ari": float(adjusted_rand_score(y, pred)), "silhouette": sil}


def neighbour_sets(x: ArrayLike, k: int = 10) -> torch.Tensor:
    """Indices (n × k) of each sample's k nearest other samples by cosine similarity."""
    t = torch.as_tensor(_array(x)).float()
    k = min(k, len(t) - 1)
    if k < 1:
        raise ReplearnError("neighbour sets need at least 2 samples", "pass more samples")
    _, idx = cosine_topk(t, t, k + 1)
    own = torch.arange(len(t))[:, None]
    is_self = idx == own
    # drop each row's own index, or its farthest candidate when a duplicate pushed itself out of the top k + 1
    drop = torch.where(is_self.any(1), is_self.float().argmax(1), torch.full((len(t),), k))
    keep = torch.ones_like(idx, dtype=torch.bool)
    keep[torch.arange(len(t)), drop] = False
    return idx[keep].view(len(t), k)


def set_overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean fraction of each row's neighbour set that two neighbour-set tables share."""
    if a.shape != b.shape:
        raise ReplearnError(f"neighbour sets of different shapes {tuple(a.shape)} and {tuple(b.shape)}",
                            "find both with the same samples and k")
    shared = (a[:, :, None] == b[:, None, :]).any(2).sum(1)
    return float((shared.float() / a.shape[1]).mean())


def knn_overlap(a: ArrayLike, b: ArrayLike, k: int = 10) -> float:
    """Mean fraction of each sample's k nearest neighbours (cosine) shared by two feature spaces."""
    ta, tb = _array(a), _array(b)
    if len(ta) != len(tb):
        raise ReplearnError(f"knn_overlap needs the same samples in both spaces ({len(ta)} vs {len(tb)})",
                            "pass features of the same images, in the same order")
    if len(ta) < 2:
        raise ReplearnError("knn_overlap needs at least 2 samples", "pass more samples")
    return set_overlap(neighbour_sets(ta, k), neighbour_sets(tb, k))
