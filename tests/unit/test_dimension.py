import numpy as np
import pytest

from replearn.metrics.dimension import participation_ratio, pca_dimension, twonn_dimension


def embedded_manifold(n, intrinsic, ambient, seed=0, curved=True):
    """Points on a ``intrinsic``-dim manifold (a curved sheet), embedded by a random rotation."""
    rng = np.random.RandomState(seed)
    t = rng.rand(n, intrinsic)
    coords = np.concatenate([np.sin(2 * t), np.cos(2 * t)], 1) if curved else t
    q, _ = np.linalg.qr(rng.randn(ambient, ambient))
    return coords @ q[: coords.shape[1]]


@pytest.mark.parametrize("intrinsic", [2, 5, 8])
def test_twonn_recovers_manifold_dimension(intrinsic):
    x = embedded_manifold(4000, intrinsic, 50)
    assert twonn_dimension(x) == pytest.approx(intrinsic, rel=0.2)


def test_twonn_on_swiss_roll():
    from sklearn.datasets import make_swiss_roll

    x, _ = make_swiss_roll(3000, random_state=0)
    x = np.concatenate([x, np.zeros((3000, 17))], 1)
    assert twonn_dimension(x) == pytest.approx(2, rel=0.2)


def test_pca_dimension_and_participation_ratio():
    rng = np.random.RandomState(0)
    x = rng.randn(2000, 3) @ rng.randn(3, 40)
    assert pca_dimension(x, 0.999) <= 3
    flat = rng.randn(5000, 10)
    assert participation_ratio(flat) == pytest.approx(10, rel=0.05)
    assert pca_dimension(flat, 0.9) == 9
    assert participation_ratio(np.ones((10, 4))) == 0.0 and pca_dimension(np.ones((10, 4))) == 0


def test_duplicates_and_tiny_inputs_do_not_crash():
    x = np.repeat(embedded_manifold(300, 2, 10), 2, axis=0)
    d = twonn_dimension(x)
    assert np.isfinite(d) and d == pytest.approx(2, rel=0.35)
    assert twonn_dimension(np.ones((5, 3))) == 0.0


def test_rankme_counts_equal_singular_directions_and_ignores_scale():
    import torch

    from replearn.metrics.dimension import rankme

    basis = torch.linalg.qr(torch.randn(64, 64, generator=torch.Generator().manual_seed(0)))[0]
    three = torch.zeros(64, 64)
    three[:3, :3] = torch.eye(3)
    x = basis @ three  # three equal singular values
    assert abs(rankme(x) - 3.0) < 1e-3
    assert abs(rankme(100 * x) - rankme(x)) < 1e-6
    spread = torch.randn(500, 32, generator=torch.Generator().manual_seed(1))
    assert 25 < rankme(spread) <= 32
    assert rankme(spread[:, :1] @ torch.ones(1, 32)) < 1.01  # rank one
