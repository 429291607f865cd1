import numpy as np
import pytest

from replearn.errors import ReplearnError
from replearn.metrics.clustering import cluster_scores, knn_overlap


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


def test_pca_components_keep_their_scales_in_clustering_and_probes():
    """Two strong class-bearing components and many weak noise components (as PCA gives): giving every component
    unit variance whitens them and lets the noise swamp the classes; the common scale keeps them weak."""
    import torch

    from replearn.analyses.base import baseline_models
    from replearn.metrics.probes import Standardizer

    rng = np.random.RandomState(0)
    y = np.arange(600) % 3
    strong = np.stack([np.cos(2 * np.pi * y / 3), np.sin(2 * np.pi * y / 3)], 1) * 4 + rng.randn(600, 2)
    x = np.hstack([strong, 0.05 * rng.randn(600, 30)]).astype(np.float32)
    whitened = cluster_scores(x, y, standardize=True)["kmeans_nmi"]
    kept = cluster_scores(x, y, standardize=False)["kmeans_nmi"]
    assert kept > 0.9 and whitened < 0.5, (kept, whitened)
    z = Standardizer(per_feature=False).fit(torch.from_numpy(x)).transform(torch.from_numpy(x))
    ratio = z.std(0) / torch.from_numpy(x).std(0)
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-4)  # one scale for every component
    assert {m.name: m.standardize for m in baseline_models()} == {"pixels": True, "pca": False, "random": True}
