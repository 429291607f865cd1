import numpy as np
import pytest

from replearn.errors import ReplearnError
from replearn.structure import cluster_scores, knn_overlap


def blobs(n=300, k=3, d=5, sep=8.0, seed=0):
    rng = np.random.RandomState(seed)
    y = np.arange(n) % k
    return rng.randn(k, d)[y] * sep + rng.randn(n, d), y


def test_cluster_scores_separate_good_from_random_features():
    x, y = blobs()
    good = cluster_scores(x, y)
    bad = cluster_scores(np.random.RandomState(1).randn(300, 5), y)
    assert good["kmeans_nmi"] > 0.9 and good["kmeans_ari"] > 0.9 and good["silhouette"] > 0.5
    assert bad["kmeans_nmi"] < 0.1 and abs(bad["kmeans_ari"]) < 0.1 and bad["silhouette"] < 0.1


def test_cluster_scores_errors():
    x, y = blobs()
    with pytest.raises(ReplearnError, match="two classes"):
        cluster_scores(x, np.zeros(len(x)))
    with pytest.raises(ReplearnError, match="labels"):
        cluster_scores(x, y[:10])


def test_knn_overlap_bounds():
    x, _ = blobs()
    assert knn_overlap(x, x * 3, k=5) == pytest.approx(1.0)
    rng = np.random.RandomState(2)
    assert knn_overlap(rng.randn(300, 5), rng.randn(300, 5), k=5) < 0.2
