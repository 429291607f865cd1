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


def cluster_scores(features: ArrayLike, labels: ArrayLike, seed: int = 0, silhouette_points: int = 3000
                   ) -> dict[str, float]:
    """k-means (k = number of classes) on standardised features, scored against the classes by NMI and
    ARI, and the silhouette of the true classes (cosine distance) on a fixed subsample."""
    x = _array(features)
    y = np.asarray(labels)
    if len(y) != len(x):
        raise ReplearnError(f"{len(x)} feature rows but {len(y)} labels", "pass one label per row")
    classes = np.unique(y)
    if len(classes) < 2:
        raise ReplearnError("clustering scores need at least two classes", "pass labels of two or more classes")
    std = x.std(0)
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


def knn_overlap(a: ArrayLike, b: ArrayLike, k: int = 10) -> float:
    """Mean fraction of each sample's k nearest neighbours (cosine) shared by two feature spaces."""
    ta, tb = torch.as_tensor(_array(a)).float(), torch.as_tensor(_array(b)).float()
    if len(ta) != len(tb):
        raise ReplearnError(f"knn_overlap needs the same samples in both spaces ({len(ta)} vs {len(tb)})",
                            "pass features of the same images, in the same order")
    k = min(k, len(ta) - 1)
    if k < 1:
        raise ReplearnError("knn_overlap needs at least 2 samples", "pass more samples")
    _, ia = cosine_topk(ta, ta, k + 1)
    _, ib = cosine_topk(tb, tb, k + 1)
    own = torch.arange(len(ta))[:, None]
    na = [set(r) - {i} for i, r in zip(own[:, 0].tolist(), ia.tolist())]
    nb = [set(r) - {i} for i, r in zip(own[:, 0].tolist(), ib.tolist())]
    return float(np.mean([len(x & y) / max(1, min(len(x), len(y), k)) for x, y in zip(na, nb)]))
