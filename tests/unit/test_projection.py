import numpy as np
import pytest
import torch

from replearn.errors import ReplearnError
from replearn.metrics.neighbours import nearest_neighbours
from replearn.metrics.umap import find_ab, pca_reduce, trustworthiness, umap_embed


def clusters(n=300, d=10, k=3, seed=0):
    rng = np.random.RandomState(seed)
    y = np.arange(n) % k
    return (rng.randn(k, d)[y] * 6 + rng.randn(n, d)).astype(np.float32), y


def test_trustworthiness_matches_sklearn():
    from sklearn.manifold import trustworthiness as sk_trustworthiness  # here: not in every worker's collection

    x, _ = clusters()
    low = x[:, :2] + np.random.RandomState(1).randn(len(x), 2).astype(np.float32)
    for k in (3, 7):
        assert trustworthiness(x, low, k) == pytest.approx(sk_trustworthiness(x, low, n_neighbors=k), abs=1e-4)
    with pytest.raises(ReplearnError, match="n_neighbors < n/2"):
        trustworthiness(x[:10], low[:10], 5)


def test_knn_graph_search_excludes_self_and_is_sorted():
    x, _ = clusters(n=50)
    dist, idx = nearest_neighbours(torch.from_numpy(x), torch.from_numpy(x), 4, "euclidean", exclude_self=True)
    assert (idx.numpy() != np.arange(50)[:, None]).all()
    assert (dist[:, 1:] >= dist[:, :-1]).all().item()


def test_pca_reduce_keeps_variance_order():
    x, _ = clusters(n=200, d=20)
    z = pca_reduce(torch.from_numpy(x), 5).numpy()
    assert z.shape == (200, 5)
    var = z.var(0)
    assert (np.diff(var) <= 1e-4).all()


def test_find_ab_matches_umap_defaults():
    a, b = find_ab(1.0, 0.1)
    assert a == pytest.approx(1.577, abs=0.02) and b == pytest.approx(0.895, abs=0.02)


def test_umap_embed_separates_clusters_and_is_trustworthy():
    x, y = clusters(n=300)
    emb = umap_embed(x, n_neighbors=10, seed=0, n_epochs=200)
    assert emb.shape == (300, 2) and np.isfinite(emb).all()
    centroids = np.stack([emb[y == c].mean(0) for c in range(3)])
    spread = max(np.linalg.norm(emb[y == c] - centroids[c], axis=1).mean() for c in range(3))
    gaps = min(np.linalg.norm(centroids[i] - centroids[j]) for i in range(3) for j in range(i + 1, 3))
    assert gaps > 2 * spread
    assert trustworthiness(x, emb, 5) > 0.9
    np.testing.assert_array_equal(emb, umap_embed(x, n_neighbors=10, seed=0, n_epochs=200))
