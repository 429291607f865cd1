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


def test_agreement_scores_equal_scikit_learn_on_random_and_edge_labelings():
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from replearn.metrics.clustering import adjusted_rand_index, normalized_mutual_information

    rng = np.random.RandomState(0)
    cases = [
        (np.zeros(5, int), np.zeros(5, int)),
        (np.zeros(5, int), np.arange(5)),
        (np.arange(6), np.arange(6)),
        (np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0])),
        (np.array([0, 1]), np.array([0, 0])),
    ]
    for _ in range(200):
        n = rng.randint(2, 60)
        cases.append((rng.randint(0, rng.randint(1, 8), n), rng.randint(0, rng.randint(1, 8), n)))
    for a, b in cases:
        assert normalized_mutual_information(a, b) == pytest.approx(normalized_mutual_info_score(a, b), abs=1e-12)
        assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)


def test_cosine_silhouette_equals_scikit_learn_with_zero_vectors_and_singleton_classes():
    from sklearn.metrics import silhouette_samples as sk_samples

    from replearn.metrics.clustering import class_silhouette, silhouette_samples

    rng = np.random.RandomState(1)
    for trial in range(30):
        n = rng.randint(5, 120)
        z, y = rng.randn(n, rng.randint(1, 9)), rng.randint(0, rng.randint(2, 6), n)
        z[: trial % 3] = 0.0  # zero vectors: at cosine distance 1 from everything
        y[0] = y.max() + 1  # a class of one point: silhouette 0
        if len(np.unique(y)) > n - 1:
            continue
        np.testing.assert_allclose(silhouette_samples(z, y), sk_samples(z, y, metric="cosine"), atol=1e-12)
        assert class_silhouette(z, y) == pytest.approx(float(np.mean(sk_samples(z, y, metric="cosine"))), abs=1e-12)


def test_kmeans_reaches_scikit_learns_inertia_and_is_reproducible():
    from sklearn.cluster import KMeans

    from replearn.metrics.kmeans import kmeans

    rng = np.random.RandomState(2)
    for seed in range(4):
        x = np.vstack([rng.randn(60, 6) * 1.5 + rng.randn(6) * 4 for _ in range(8)])
        labels, inertia = kmeans(x, 8, n_init=4, seed=seed)
        reference = KMeans(n_clusters=8, n_init=4, random_state=seed).fit(x)
        assert inertia <= reference.inertia_ * (1 + 1e-3)
        assert inertia == pytest.approx(((x - np.stack([x[labels == c].mean(0) for c in range(8)])[labels]) ** 2).sum())
        assert np.array_equal(labels, kmeans(x, 8, n_init=4, seed=seed)[0])
    x = np.repeat(rng.randn(3, 2), 5, axis=0)  # 3 distinct points, k = 3: each its own cluster, no empty one
    assert len(np.unique(kmeans(x, 3, seed=0)[0])) == 3


def test_structure_analysis_imports_no_scikit_learn():
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from replearn.metrics.clustering import cluster_scores; "
        "rng = np.random.RandomState(0); cluster_scores(rng.randn(50, 4), np.arange(50) % 3); "
        "from replearn.data.sources.digits import load_bundled_digits; load_bundled_digits(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn',) or m == 'scipy.stats'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr[-2000:]


def test_bundled_digits_equal_scikit_learns_loader():
    from sklearn.datasets import load_digits

    from replearn.data.sources.digits import load_bundled_digits

    images, target = load_bundled_digits()
    bunch = load_digits()
    assert np.array_equal(images, bunch.images) and np.array_equal(target, bunch.target)
