import numpy as np
import pytest
import torch

from replearn.errors import ReplearnError
from replearn.metrics.similarity import cka_matrix, linear_cka, minibatch_cka


def random_features(n=400, d=30, seed=0):
    return np.random.RandomState(seed).randn(n, d)


def test_identical_inputs_give_one():
    x = random_features()
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert minibatch_cka(x, x, batch_size=100) == pytest.approx(1.0)


def test_invariant_to_orthogonal_transform_and_isotropic_scaling():
    x = random_features()
    y = np.tanh(x @ np.random.RandomState(1).randn(30, 20))
    q, _ = np.linalg.qr(np.random.RandomState(2).randn(20, 20))
    base = linear_cka(x, y)
    assert linear_cka(x, 3.7 * y @ q) == pytest.approx(base, abs=1e-10)
    assert minibatch_cka(x, 0.2 * y @ q, 100) == pytest.approx(minibatch_cka(x, y, 100), abs=1e-10)


def test_not_invariant_to_anisotropic_scaling():
    x = random_features()
    y = x * np.linspace(0.1, 10, 30)
    assert linear_cka(x, y) < 0.99


def test_symmetric():
    x, y = random_features(seed=0), np.tanh(random_features(seed=0) @ np.random.RandomState(3).randn(30, 10))
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x))
    assert minibatch_cka(x, y, 100) == pytest.approx(minibatch_cka(y, x, 100))


def test_unrelated_features_score_near_zero_with_unbiased_estimator():
    x, y = random_features(n=2000, seed=0), random_features(n=2000, seed=1)
    assert abs(minibatch_cka(x, y, 500)) < 0.05
    assert linear_cka(x, y) > abs(minibatch_cka(x, y, 500))  # the biased estimator is inflated


def test_minibatch_agrees_with_full_batch():
    rng = np.random.RandomState(4)
    x = rng.randn(3000, 20)
    y = np.concatenate([x[:, :10] @ rng.randn(10, 10), rng.randn(3000, 5)], 1)
    full = minibatch_cka(x, y, batch_size=3000)
    assert minibatch_cka(x, y, batch_size=300) == pytest.approx(full, abs=0.02)
    assert linear_cka(x, y) == pytest.approx(full, abs=0.03)


def test_cka_matrix_layers():
    x = random_features()
    m = cka_matrix({"a": x, "b": x[:, :5]}, {"c": x, "d": 2 * x}, batch_size=100)
    assert list(m.index) == ["a", "b"] and list(m.columns) == ["c", "d"]
    assert m.loc["a", "c"] == pytest.approx(1) and m.loc["a", "d"] == pytest.approx(1)
    assert m.loc["b", "c"] < 1


def test_errors_and_constant_input():
    x = random_features()
    with pytest.raises(ReplearnError, match="needs the same images in both representations"):
        linear_cka(x, x[:10])
    with pytest.raises(ReplearnError, match="NaN"):
        linear_cka(np.full((5, 2), np.nan), np.ones((5, 2)))
    assert linear_cka(np.ones((50, 3)), x[:50]) == 0.0
    assert minibatch_cka(np.ones((50, 3)), x[:50], 25) == 0.0


def test_seed_similarity_compares_the_same_images_across_seeds(tmp_path):
    from replearn.analyses import RunContext
    from replearn.analyses.similarity import Similarity
    from replearn.config.sections import config_from_dict

    x = random_features(n=300, d=12)
    q, _ = np.linalg.qr(np.random.RandomState(5).randn(12, 12))
    run = RunContext(config_from_dict({"analysis": {"cka_batch_size": 100}}), tmp_path, [])
    run.memory["similarity"] = {0: {"supervised": {"latent": torch.from_numpy(x)}},
                                1: {"supervised": {"latent": torch.from_numpy(x @ q)}}}
    table = Similarity().finish(run)["cka"]
    assert list(table.pair) == ["supervised seed 0 vs seed 1"]
    assert table.cka.iloc[0] == pytest.approx(1.0)


def test_cka_pairs_share_grams_and_match_pairwise_matrices():
    from replearn.metrics.similarity import cka_pairs

    rng = np.random.RandomState(3)
    a, b, c = ({"l1": rng.randn(250, 6), "l2": rng.randn(250, 3)} for _ in range(3))
    b["l1"] = a["l1"] @ rng.randn(6, 6)
    together = cka_pairs({"a": a, "b": b, "c": c}, [("a", "b"), ("a", "c"), ("b", "c")], batch_size=100)
    for (x, y), matrix in together.items():
        alone = cka_matrix({"a": a, "b": b, "c": c}[x], {"a": a, "b": b, "c": c}[y], batch_size=100)
        np.testing.assert_allclose(matrix.values, alone.values, atol=1e-12)
    assert together[("a", "b")].loc["l1", "l1"] > 0.5 > abs(together[("a", "c")].loc["l1", "l1"])


def test_minibatch_cka_spread_does_not_jump_when_n_crosses_a_batch_boundary():
    """A short last minibatch must not carry the weight of a full one (issue 10): the estimate's spread
    over random subsets just past a boundary stays close to its spread just before it."""
    rng = np.random.RandomState(0)
    pool = rng.randn(3000, 20)
    w = rng.randn(20, 20)
    relu = lambda m: np.maximum(m @ w, 0)  # noqa: E731

    def spread(n):
        values = []
        for s in range(25):
            idx = np.random.RandomState(100 + s).choice(len(pool), n, replace=False)
            values.append(minibatch_cka(pool[idx], relu(pool[idx]), batch_size=500, seed=s))
        return float(np.std(values))

    assert spread(1010) < 1.5 * spread(990) + 0.002
