import numpy as np
import pytest
import torch

from replearn.errors import ReplearnError
from replearn.metrics.probes import (LinearProbe, ProbeFit, choose_on_validation, knn_classifier, knn_probe,
                                     label_efficiency, linear_probe)
from replearn.metrics.softmax import TallSkinnyProducts, fit_softmax_regression, fit_softmax_regression_stacked


def gaussian_classes(n=600, d=20, k=4, sep=1.5, seed=0):
    rng = np.random.RandomState(seed)
    means = rng.randn(k, d) * sep
    y = rng.randint(0, k, n)
    return (means[y] + rng.randn(n, d)).astype(np.float32), y


def test_linear_probe_matches_sklearn_solution():
    from sklearn.linear_model import LogisticRegression  # imported here: a second of every worker's collection
    from sklearn.preprocessing import StandardScaler

    x, y = gaussian_classes()
    n = len(x)
    l2 = 1e-2
    ours = LinearProbe(l2=l2, max_iter=500, tol=1e-9).fit(x, y)
    z = StandardScaler().fit_transform(x)
    sk = LogisticRegression(C=1.0 / (l2 * n), max_iter=5000, tol=1e-10).fit(z, y)
    ours_p = ours.predict_proba(x).numpy()
    np.testing.assert_allclose(ours_p, sk.predict_proba(z), atol=2e-3)
    assert ours.score(x, y) == pytest.approx(sk.score(z, y), abs=0.005)


def test_joint_fit_equals_separate_fits():
    x, y = gaussian_classes(n=300, d=10)
    z = torch.from_numpy(x)
    z = (z - z.mean(0)) / z.std(0)
    target = torch.from_numpy(y)
    w_all, b_all, _ = fit_softmax_regression(z, target, 4, [1e-1, 1e-3], max_iter=500, tol=1e-10)
    for i, l2 in enumerate([1e-1, 1e-3]):
        w, b, _ = fit_softmax_regression(z, target, 4, [l2], max_iter=500, tol=1e-10)
        joint = (z @ w_all[i] + b_all[i]).softmax(1)
        alone = (z @ w[0] + b[0]).softmax(1)
        assert torch.allclose(joint, alone, atol=1e-4)


def test_stacked_fits_equal_one_fit_per_feature_matrix():
    """Several feature matrices fitted together give each matrix's own fit, to the stopping tolerance (each
    stacked problem converges: its gradient, checked by autograd, is below tol)."""
    data = [standardized(n=120, d=9, seed=s) for s in range(3)]
    l2s = [1e-1, 1e-3]
    w, b, _ = fit_softmax_regression_stacked(torch.stack([z for z, _ in data]), torch.stack([t for _, t in data]),
                                             4, l2s, max_iter=1000, tol=1e-5)
    assert w.shape == (3, 2, 9, 4) and b.shape == (3, 2, 4)
    for i, (z, target) in enumerate(data):
        alone_w, alone_b, _ = fit_softmax_regression(z, target, 4, l2s, max_iter=1000, tol=1e-5)
        for j, l2 in enumerate(l2s):
            assert objective_gradient(z, target, w[i, j], b[i, j], l2).abs().max() <= 1e-5
            assert torch.allclose((z @ w[i, j] + b[i, j]).softmax(1), (z @ alone_w[j] + alone_b[j]).softmax(1),
                                  atol=1e-4)


def test_padded_stacked_fits_of_different_sizes_equal_each_fit_on_its_own_rows():
    """Feature matrices of different heights, padded to one: each problem is fitted on its own rows only (the
    padding, filled with junk here, weighs nothing), to the stopping tolerance of its own objective."""
    data = [standardized(n=n, d=7, seed=s) for s, n in enumerate((30, 75, 120))]
    height = 120
    z = torch.randn(3, height, 7) * 5  # junk in the padding rows
    target = torch.randint(0, 4, (3, height))
    for i, (x, t) in enumerate(data):
        z[i, : len(x)], target[i, : len(x)] = x, t
    counts = torch.tensor([len(x) for x, _ in data])
    w, b, _ = fit_softmax_regression_stacked(z, target, 4, [1e-2], max_iter=1000, tol=1e-6, counts=counts)
    for i, (x, t) in enumerate(data):
        assert objective_gradient(x, t, w[i, 0], b[i, 0], 1e-2).abs().max() <= 1e-6
        alone_w, alone_b, _ = fit_softmax_regression(x, t, 4, [1e-2], max_iter=1000, tol=1e-6)
        assert torch.allclose(w[i, 0], alone_w[0], atol=1e-4) and torch.allclose(b[i, 0], alone_b[0], atol=1e-4)


def test_label_efficiency_draws_fitted_together_equal_separate_probes():
    """Each label-efficiency draw's result is that of ``linear_probe`` on the same labelled subset: the batched
    fit changes no accuracy, chosen penalty or validation score."""
    x, y = gaussian_classes(n=900, d=12, k=3, sep=0.8, seed=2)
    train, val, test = (x[:600], y[:600]), (x[600:750], y[600:750]), (x[750:], y[750:])
    fit = ProbeFit(200, 1e-6, True, "best")
    table = label_efficiency(train, val, test, [2, 20], 4, [1e-3, 1e-1], seed=5, fit=fit)
    assert len(table) == 8 and table.test_accuracy.nunique() > 1
    from replearn.metrics import probes
    for row in table.itertuples():
        g = torch.Generator().manual_seed(probes.derive_seed((5, row.per_class, row.draw), probes.LABEL_DRAW))
        by_class = [torch.nonzero(torch.as_tensor(train[1]) == c).squeeze(1) for c in range(3)]
        pick = torch.cat([idx[torch.randperm(len(idx), generator=g)[:row.per_class]] for idx in by_class]).numpy()
        alone = linear_probe((train[0][pick], train[1][pick]), val, test, [1e-3, 1e-1], 200, 1e-6, True, "best")
        assert (alone.test_accuracy, alone.val_accuracy, alone.chosen) == pytest.approx(
            (row.test_accuracy, row.val_accuracy, row.chosen), abs=1.5 / 150)


def objective_gradient(z, target, w, b, l2):
    """Gradient of mean cross-entropy + l2/2 |W|^2 at (w, b), by autograd: independent of the solver's own."""
    w = w.clone().requires_grad_(True)
    b = b.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(z @ w + b, target) + 0.5 * l2 * (w * w).sum()
    loss.backward()
    return torch.cat([w.grad.flatten(), b.grad.flatten()])


def standardized(n=400, d=12, k=4, seed=0):
    x, y = gaussian_classes(n=n, d=d, k=k, seed=seed)
    z = torch.from_numpy(x)
    return (z - z.mean(0)) / z.std(0), torch.from_numpy(y)


def test_fit_stops_once_every_gradient_entry_is_below_tol():
    z, target = standardized()
    for tol in (1e-3, 1e-5):
        w, b, iterations = fit_softmax_regression(z, target, 4, [1e-3], max_iter=1000, tol=tol)
        assert iterations < 1000
        assert objective_gradient(z, target, w[0], b[0], 1e-3).abs().max() <= tol


def test_a_weak_penalty_does_not_slow_a_strong_one():
    """Each penalty keeps its own line search: a strong penalty converges in as many iterations alone as
    beside a nearly unregularised problem (one shared step would hold it back)."""
    z, target = standardized()
    _, _, alone = fit_softmax_regression(z, target, 4, [1e-1], max_iter=1000, tol=1e-6)
    w, b, _ = fit_softmax_regression(z, target, 4, [1e-1, 1e-7], max_iter=alone, tol=1e-6)
    assert objective_gradient(z, target, w[0], b[0], 1e-1).abs().max() <= 1e-6
    assert objective_gradient(z, target, w[1], b[1], 1e-7).abs().max() > 1e-6  # the weak one is still running


def test_tall_skinny_products_match_torch_and_restore_threads():
    z = torch.randn(500, 7)
    products = TallSkinnyProducts(z)
    w, g = torch.randn(3, 7), torch.randn(3, 500)
    threads = torch.get_num_threads()
    with products.threads():
        assert torch.allclose(products.logits(w), w @ z.T, atol=1e-5)
        assert torch.allclose(products.gradient(g), g @ z, atol=1e-4)
    assert torch.get_num_threads() == threads


def test_probe_keeps_original_labels_and_sklearn_conventions():
    x, y = gaussian_classes(n=200, k=3)
    labels = np.array([10, 20, 30])[y]
    probe = LinearProbe(l2=1e-3)
    assert probe.l2 == 1e-3 and not hasattr(probe, "coef_")
    probe.fit(x, labels)
    assert set(probe.predict(x).tolist()) <= {10, 20, 30}
    assert probe.coef_.shape == (20, 3) and probe.score(x, labels) > 0.9
    with pytest.raises(ReplearnError, match="fitted on 20 features"):
        probe.predict(x[:, :5])


@pytest.mark.parametrize("x, y, fragment", [
    (np.zeros((5, 3)), np.zeros(5, int), "at least two classes"),
    (np.full((4, 3), np.nan), np.arange(4) % 2, "NaN"),
    (np.zeros((4,)), np.arange(4) % 2, "2-D"),
    (np.zeros((4, 3)), np.arange(3) % 2, "labels of shape"),
])
def test_probe_rejects_bad_input(x, y, fragment):
    with pytest.raises(ReplearnError, match=fragment):
        LinearProbe().fit(x, y)


def test_linear_probe_chooses_penalty_on_validation_not_test():
    x, y = gaussian_classes(n=900, d=30, sep=0.5, seed=1)
    train, val, test = (x[:300], y[:300]), (x[300:600], y[300:600]), (x[600:], y[600:])
    result = linear_probe(train, val, test, [1e-4, 1e-2, 1.0])
    assert result.val_accuracy == max(result.val_by_setting.values())
    assert result.val_by_setting[result.chosen] == result.val_accuracy
    # the same grid on shuffled test labels must not change the choice (test never informs it)
    shuffled = (test[0], np.random.RandomState(0).permutation(test[1]))
    assert linear_probe(train, val, shuffled, [1e-4, 1e-2, 1.0]).chosen == result.chosen


def test_one_se_rule_takes_the_strongest_penalty_within_one_standard_error():
    # strongest penalty first; SE of 0.85 on 6000 images is 0.0046
    val = torch.tensor([0.8470, 0.8515, 0.8440, 0.8400])
    assert choose_on_validation(val, 6000, "best") == 1
    assert choose_on_validation(val, 6000, "one-se") == 0
    assert choose_on_validation(val, 100_000, "one-se") == 1  # SE 0.0011: 0.8470 is no longer within it
    with pytest.raises(ReplearnError, match="one-se"):
        choose_on_validation(val, 6000, "median")


def test_one_se_probe_reports_the_chosen_penalty_and_its_scores():
    x, y = gaussian_classes(n=900, d=30, sep=0.5, seed=1)
    train, val, test = (x[:300], y[:300]), (x[300:600], y[300:600]), (x[600:], y[600:])
    best = linear_probe(train, val, test, [1e-4, 1e-2, 1.0])
    stable = linear_probe(train, val, test, [1e-4, 1e-2, 1.0], selection="one-se")
    assert stable.val_by_setting == best.val_by_setting  # the same fits, only the choice differs
    top = max(best.val_by_setting.values())
    within = [l2 for l2, acc in stable.val_by_setting.items() if acc >= top - (top * (1 - top) / 300) ** 0.5]
    assert stable.chosen == max(within) and stable.chosen >= best.chosen


def test_constant_features_do_not_produce_nan():
    x, y = gaussian_classes(n=200, d=5)
    x = np.concatenate([x, np.ones((200, 3), np.float32)], 1)
    probe = LinearProbe().fit(x, y)
    assert torch.isfinite(probe.coef_).all() and probe.score(x, y) > 0.8


def test_knn_classifier_on_clusters_and_k_choice():
    x, y = gaussian_classes(n=400, d=8, sep=3.0)
    preds = knn_classifier(x[:300], y[:300], x[300:], k=5, T=0.07)
    assert (preds.numpy() == y[300:]).mean() > 0.95
    result = knn_probe((x[:200], y[:200]), (x[200:300], y[200:300]), (x[300:], y[300:]), [1, 5, 50])
    assert result.chosen in (1.0, 5.0, 50.0) and result.val_by_setting[result.chosen] == result.val_accuracy


def test_knn_nearest_neighbour_is_exact():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 2])
    test = torch.tensor([[0.9, 0.1], [0.1, 0.8], [-2.0, 0.3]])
    assert knn_classifier(train, labels, test, k=1).tolist() == [0, 1, 2]


def test_layer_depths_put_a_baselines_latent_at_the_encoders_latent():
    from replearn.analyses.probes import layer_depths

    features = {"pca": {"latent": None}, "enc": {"input": None, "stage1": None, "stage2": None, "latent": None}}
    depths = layer_depths(features)
    assert depths == {"input": 0, "stage1": 1, "stage2": 2, "latent": 3}


def test_linear_probe_is_a_scikit_learn_estimator():
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_score

    from replearn.metrics.probes import LinearProbe

    rng = np.random.RandomState(0)
    y = np.arange(90) % 3
    x = (rng.randn(90, 5) + np.eye(3)[y] @ rng.randn(3, 5) * 3).astype(np.float32)
    probe = LinearProbe(l2=1e-2, max_iter=200)
    copy = clone(probe)
    assert copy is not probe and copy.get_params() == probe.get_params() and not hasattr(copy, "coef_")
    scores = cross_val_score(LinearProbe(l2=1e-3), x, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.8
    assert probe.set_params(l2=0.5).l2 == 0.5
    with pytest.raises(ReplearnError, match="no parameter"):
        probe.set_params(C=1.0)


def test_a_warm_started_probe_reaches_the_same_optimum_in_fewer_iterations():
    """The epoch probe starts each fit from the last epoch's weights: on features that moved a little, the fit
    ends where a fit from zero ends (the problem is convex), in fewer iterations."""
    rng = np.random.RandomState(0)
    y = rng.randint(0, 4, 400)
    x = (rng.randn(400, 12) + np.eye(4)[y] @ rng.randn(4, 12) * 1.5).astype(np.float32)
    moved = (x + 0.05 * rng.randn(*x.shape)).astype(np.float32)  # the next epoch's features
    cold = LinearProbe(l2=1e-3).fit(moved, y)
    warm = LinearProbe(l2=1e-3, warm_start=True).fit(x, y)
    warm.fit(moved, y)
    assert warm.n_iter_ < cold.n_iter_
    assert torch.allclose(warm.decision_function(moved), cold.decision_function(moved), atol=0.1)  # logits ~8
    assert torch.equal(warm.predict(moved), cold.predict(moved))
    narrower = warm.fit(moved[:, :5], y)  # weights of another shape cannot start it: it starts from zero
    assert narrower.coef_.shape == (5, 4) and narrower.n_iter_ == LinearProbe(l2=1e-3).fit(moved[:, :5], y).n_iter_
