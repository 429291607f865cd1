"""The three PCA routes (covariance, Gram, randomised) against an independent exact result (numpy's SVD)."""
import numpy as np
import pytest
import torch

from replearn.encoders.extract import pca_baseline
from replearn.metrics.pca import EXACT_LIMIT, pca_method, principal_components
from replearn.metrics.umap import pca_reduce


def images_like(n: int, d: int, rank: int = 12, seed: int = 0) -> np.ndarray:
    """Rows with a fast-falling spectrum (as images have) plus a little noise."""
    rng = np.random.RandomState(seed)
    scales = 10.0 * 0.6 ** np.arange(rank)
    return ((rng.randn(n, rank) * scales) @ rng.randn(rank, d) + 0.01 * rng.randn(n, d) + 3.0).astype(np.float32)


def svd_reference(x: np.ndarray, q: int) -> np.ndarray:
    """Top-q right singular vectors of the centred data, by numpy's SVD, signs as replearn fixes them."""
    centred = x.astype(np.float64) - x.astype(np.float64).mean(0)
    v = np.linalg.svd(centred, full_matrices=False)[2][:q].T
    return v * np.sign(v[np.abs(v).argmax(0), np.arange(q)])


def test_routes_chosen_by_the_smaller_side():
    assert pca_method(5000, 64) == "covariance"
    assert pca_method(600, 27_648) == "gram"
    assert pca_method(10_000, 150_528) == "randomised"
    assert pca_method(EXACT_LIMIT + 1, EXACT_LIMIT + 2) == "randomised"


@pytest.mark.parametrize("n,d,limit", [(300, 40, EXACT_LIMIT), (60, 500, EXACT_LIMIT), (400, 300, 100)])
def test_each_route_matches_the_svd(n, d, limit):
    x = images_like(n, d)
    mean, basis = principal_components(torch.from_numpy(x), 6, exact_limit=limit)
    np.testing.assert_allclose(mean.numpy(), x.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(basis.numpy(), svd_reference(x, 6), atol=2e-4)


def test_gram_route_zeroes_components_beyond_the_rank():
    x = images_like(5, 50)  # 5 points span at most 4 centred directions
    _, basis = principal_components(torch.from_numpy(x), 8)
    assert basis.shape == (50, 5)
    np.testing.assert_allclose(basis[:, :4].numpy(), svd_reference(x, 4), atol=1e-4)
    assert float(basis[:, 4].abs().max()) == 0.0


def test_pca_reduce_with_more_pixels_than_points_equals_the_covariance_result():
    x = images_like(80, 900)
    gram = pca_reduce(torch.from_numpy(x), 5)
    centred = x.astype(np.float64) - x.mean(0)
    np.testing.assert_allclose(gram.numpy(), centred @ svd_reference(x, 5), rtol=1e-4, atol=1e-3)


def test_pca_baseline_gram_route_projects_every_split_on_the_training_components():
    x = images_like(120, 700, seed=3)
    pixels = {"train": torch.from_numpy(x[:80]), "test": torch.from_numpy(x[80:])}
    latent = pca_baseline(pixels, 5)["latent"]  # 80 training images < 700 pixels: the Gram route
    basis, mean = svd_reference(x[:80], 5), x[:80].astype(np.float64).mean(0)
    for split, values in pixels.items():
        expected = (values.numpy().astype(np.float64) - mean) @ basis
        signs = np.sign((latent[split].numpy() * expected).sum(0))
        np.testing.assert_allclose(latent[split].numpy(), expected * signs, rtol=1e-3, atol=2e-3)


def test_pca_reduce_of_large_images_never_builds_the_pixel_covariance():
    import resource

    x = torch.randn(40, 200_000)  # a d×d covariance would need 320 GB; the Gram matrix is 40×40
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    z = pca_reduce(x, 8)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert z.shape == (40, 8) and grown_mib < 300, grown_mib
    variances = z.var(0)
    assert bool((variances[1:] <= variances[:-1] * (1 + 1e-5)).all())
