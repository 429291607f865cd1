"""Structure without labels: clustering agreement with the classes, silhouette, and neighbourhood overlap
between two feature spaces."""
from __future__ import annotations

import numpy as np
import torch

from replearn.metrics.arrays import ArrayLike, as_feature_matrix
from replearn.errors import ReplearnError
from replearn.metrics.kmeans import kmeans
from replearn.metrics.neighbours import nearest_neighbours


def _array(x: ArrayLike) -> np.ndarray:
    return as_feature_matrix(x, "features", min_rows=2, dtype=torch.float64).numpy()


def cluster_scores(features: ArrayLike, labels: ArrayLike, seed: int = 0, silhouette_points: int = 3000,
                   standardize: bool = True) -> dict[str, float]:
    """k-means (k = number of classes) on standardised features (``standardize=False``: centred only, keeping
    the features' relative scales, as for PCA components), scored against the classes by NMI and ARI, and the
    silhouette of the true classes (cosine distance) on a fixed subsample (NaN when every class has a
    single point there: it is then undefined)."""
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
    pred, _ = kmeans(z, k, n_init=4, seed=seed)
    rng = np.random.RandomState(seed)
    keep = rng.permutation(len(x))[:silhouette_points]
    return {"kmeans_nmi": normalized_mutual_information(y, pred), "kmeans_ari": adjusted_rand_index(y, pred),
            "silhouette": class_silhouette(z[keep], y[keep])}


def _contingency(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Counts of each (label of a, label of b) pair: rows a's labels, columns b's."""
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1), dtype=np.int64)
    np.add.at(table, (ia.ravel(), ib.ravel()), 1)
    return table


def normalized_mutual_information(a: ArrayLike, b: ArrayLike) -> float:
    """Mutual information of two labelings over the arithmetic mean of their entropies (natural log; 1.0 when
    both have a single label): scikit-learn's ``normalized_mutual_info_score`` default."""
    table = _contingency(np.asarray(a), np.asarray(b))
    if table.shape[0] == table.shape[1] == 1:
        return 1.0
    n = table.sum()
    p = table[table > 0] / n
    row, col = table.sum(1) / n, table.sum(0) / n
    outer = np.outer(row, col)[table > 0]
    mi = float(np.sum(p * (np.log(p) - np.log(outer))))
    entropy = [-float(np.sum(q * np.log(q))) for q in (row[row > 0], col[col > 0])]
    if mi <= 0:
        return 0.0
    return mi / max(float(np.mean(entropy)), np.finfo(np.float64).eps)


def adjusted_rand_index(a: ArrayLike, b: ArrayLike) -> float:
    """Hubert & Arabie's adjusted Rand index of two labelings (1.0 for identical partitions, ≈ 0 for chance),
    from the pair confusion counts as scikit-learn's ``adjusted_rand_score`` computes it."""
    table = _contingency(np.asarray(a), np.asarray(b)).astype(np.float64)
    n = table.sum()
    sum_squares = float((table**2).sum())
    rows, cols = table.sum(1), table.sum(0)
    tp = sum_squares - n  # ordered pairs of points together in both labelings
    fp = float(cols @ cols) - sum_squares  # together in b only
    fn = float(rows @ rows) - sum_squares  # together in a only
    tn = n * n - fp - fn - sum_squares
    if fn == 0 and fp == 0:
        return 1.0
    return float(2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)))


def class_silhouette(z: np.ndarray, y: np.ndarray) -> float:
    """Silhouette of the classes (cosine distance): 0.0 for a single class, as before; NaN when it is
    undefined because there are as many classes as points (one image per class)."""
    classes = len(np.unique(y))
    if classes < 2:
        return 0.0
    if classes > len(y) - 1:  # scikit-learn defines it for 2 <= classes <= points - 1
        return float("nan")
    sil = float(np.mean(silhouette_samples(z, y)))
    return sil if np.isfinite(sil) else 0.0


def silhouette_samples(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each point's silhouette under the cosine distance 1 − cos (a zero vector is at distance 1 from every
    other): (b − a) / max(a, b), with a its mean distance to its own class and b to the nearest other class;
    0 for a point alone in its class (scikit-learn's ``silhouette_samples``)."""
    z = np.asarray(z, dtype=np.float64)
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    unit = np.divide(z, norms, out=np.zeros_like(z), where=norms > 0)
    distance = np.clip(1.0 - unit @ unit.T, 0.0, 2.0)
    np.fill_diagonal(distance, 0.0)
    _, labels = np.unique(y, return_inverse=True)
    labels = labels.ravel()
    onehot = np.zeros((len(labels), labels.max() + 1))
    onehot[np.arange(len(labels)), labels] = 1.0
    sizes = onehot.sum(0)
    mean_to = distance @ onehot / sizes  # mean distance to each class (own class: includes the 0 to itself)
    own = np.arange(len(labels)), labels
    with np.errstate(invalid="ignore", divide="ignore"):
        a = mean_to[own] * sizes[labels] / (sizes[labels] - 1)
        mean_to[own] = np.inf
        b = mean_to.min(1)
        s = (b - a) / np.maximum(a, b)
    s[sizes[labels] == 1] = 0.0
    return np.nan_to_num(s)


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
