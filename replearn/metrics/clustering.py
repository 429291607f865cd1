"""Structure without labels: clustering agreement with the classes, silhouette, and neighbourhood overlap
between two feature spaces."""
from __future__ import annotations

import numpy as np
import torch

from replearn.metrics.arrays import ArrayLike, as_feature_matrix
from replearn.errors import ReplearnError
from replearn.metrics.neighbours import nearest_neighbours


def _array(x: ArrayLike) -> np.ndarray:
    return as_feature_matrix(x, "features", min_rows=2, dtype=torch.float64).numpy()


def cluster_scores(features: ArrayLike, labels: ArrayLike, seed: int = 0, silhouette_points: int = 3000,
                   standardize: bool = True) -> dict[str, float]:
    """k-means (k = number of classes) on standardised features (``standardize=False``: centred only, keeping
    the features' relative scales, as for PCA components), scored against the classes by NMI and ARI, and the
    silhouette of the true classes (cosine distance) on a fixed subsample (NaN when every class has a
    single point there: it is then undefined)."""
    from sklearn.cluster import KMeans  # scikit-learn costs a second and a half to import: only when used
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

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
    return {"kmeans_nmi": float(normalized_mutual_info_score(y, pred)),
            "kmeans_ari": float(adjusted_rand_score(y, pred)), "silhouette": class_silhouette(z[keep], y[keep])}


def class_silhouette(z: np.ndarray, y: np.ndarray) -> float:
    """Silhouette of the classes (cosine distance): 0.0 for a single class, as before; NaN when it is
    undefined because there are as many classes as points (one image per class)."""
    from sklearn.metrics import silhouette_score

    classes = len(np.unique(y))
    if classes < 2:
        return 0.0
    if classes > len(y) - 1:  # scikit-learn defines it for 2 <= classes <= points - 1
        return float("nan")
    sil = float(silhouette_score(z, y, metric="cosine"))
    return sil if np.isfinite(sil) else 0.0


def neighbour_sets(x: ArrayLike, k: int = 10) -> torch.Tensor:
    """Indices (n × k) of each sample's k nearest other samples by cosine similarity."""
    t = as_feature_matrix(x, "features", min_rows=2)
    return nearest_neighbours(t, t, k, "cosine", exclude_self=True).indices


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
