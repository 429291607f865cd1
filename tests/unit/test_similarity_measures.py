"""Each similarity measure against an independent reference (the authors' formulas transcribed from their code
— Kornblith's CKA notebook, platonic-rep, netrep, google/svcca —, rsatoolbox, scikit-learn), to 1e-6; and the
invariance table in docs/similarity.md asserted both ways: an invariant measure keeps its value when both
representations are transformed (each by its own random instance), a measure marked not invariant changes."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.stats import ortho_group

from replearn.metrics import similarity_measures as sm
from replearn.errors import ReplearnError
from replearn.metrics.similarity import linear_cka as reference_linear_cka

DOCS = Path(__file__).resolve().parents[2] / "docs" / "similarity.md"


def pair(n: int = 60, p: int = 12, q: int = 9, seed: int = 0, noise: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Two related representations: y is a random linear map of x plus noise, through a ReLU."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p)) @ np.diag(np.linspace(2.0, 0.2, p)) + 0.3
    y = np.maximum(x @ rng.normal(size=(p, q)) + noise * rng.normal(size=(n, q)), 0) + 0.1 * rng.normal(size=(n, q))
    return x, y


# ---------------------------------------------------------------- references, transcribed


def kornblith_rbf_cka(x: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> float:
    """Kornblith et al.'s CKA notebook: gram_rbf, center_gram, cka (biased HSIC)."""
    def gram_rbf(a):
        dot = a @ a.T
        sq = np.diag(dot)
        d2 = -2 * dot + sq[:, None] + sq[None, :]
        return np.exp(-d2 / (2 * threshold ** 2 * np.median(d2)))

    def center(g):
        g = g.copy()
        means = np.mean(g, 0, dtype=np.float64)
        means -= np.mean(means) / 2
        g -= means[:, None]
        g -= means[None, :]
        return g

    gx, gy = center(gram_rbf(x)), center(gram_rbf(y))
    return float(gx.ravel() @ gy.ravel() / (np.linalg.norm(gx) * np.linalg.norm(gy)))


def platonic_mutual_knn(x: np.ndarray, y: np.ndarray, topk: int) -> float:
    """platonic-rep: F.normalize, compute_nearest_neighbors (diag -1e8, argsort), masks, mean overlap."""
    def knn(f):
        f = torch.nn.functional.normalize(torch.tensor(f), p=2, dim=-1)
        return (f @ f.T).fill_diagonal_(-1e8).argsort(dim=1, descending=True)[:, :topk]

    ka, kb = knn(x), knn(y)
    n = ka.shape[0]
    rows = torch.arange(n).unsqueeze(1)
    ma, mb = torch.zeros(n, n), torch.zeros(n, n)
    ma[rows, ka] = 1.0
    mb[rows, kb] = 1.0
    return ((ma * mb).sum(1) / topk).mean().item()


def platonic_cknna(x: np.ndarray, y: np.ndarray, topk: int) -> float:
    """platonic-rep ``cknna`` (unbiased, distance-aware), without its +1e-6 in the denominator."""
    fa = torch.nn.functional.normalize(torch.tensor(x), p=2, dim=-1)
    fb = torch.nn.functional.normalize(torch.tensor(y), p=2, dim=-1)
    n = fa.shape[0]

    def hsic_unbiased(k, l):
        m = k.shape[0]
        kt, lt = k.clone().fill_diagonal_(0), l.clone().fill_diagonal_(0)
        v = torch.sum(kt * lt.T) + torch.sum(kt) * torch.sum(lt) / ((m - 1) * (m - 2)) \
            - 2 * torch.sum(torch.mm(kt, lt)) / (m - 2)
        return v / (m * (m - 3))

    def similarity(k, l):
        _, ik = torch.topk(k.clone().fill_diagonal_(float("-inf")), topk, dim=1)
        _, il = torch.topk(l.clone().fill_diagonal_(float("-inf")), topk, dim=1)
        mask = torch.zeros(n, n, dtype=k.dtype).scatter_(1, ik, 1) * torch.zeros(n, n, dtype=k.dtype).scatter_(1, il, 1)
        return hsic_unbiased(mask * k, mask * l)

    k, l = fa @ fa.T, fb @ fb.T
    return (similarity(k, l) / torch.sqrt(similarity(k, k) * similarity(l, l))).item()


def netrep_angular(x: np.ndarray, y: np.ndarray) -> float:
    """netrep LinearMetric(alpha=1, center_columns=True, zero_pad=True, score_method='angular')."""
    d = max(x.shape[1], y.shape[1])
    x = np.pad(x, ((0, 0), (0, d - x.shape[1])))
    y = np.pad(y, ((0, 0), (0, d - y.shape[1])))
    xw, yw = x - x.mean(0), y - y.mean(0)
    u, _, vt = np.linalg.svd(xw.T @ yw)
    tx, ty = xw @ u, yw @ vt.T
    corr = tx.ravel() @ ty.ravel() / (np.linalg.norm(tx) * np.linalg.norm(ty))
    return float(np.arccos(np.clip(corr, -1.0, 1.0)))


def eig_cca(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical correlations and unit canonical variates of a, from Σaa^-½ Σab Σbb^-½ (not QR)."""
    a, b = a - a.mean(0), b - b.mean(0)
    saa_inv = np.linalg.inv(scipy.linalg.sqrtm(a.T @ a).real)
    sbb_inv = np.linalg.inv(scipy.linalg.sqrtm(b.T @ b).real)
    u, rho, _ = np.linalg.svd(saa_inv @ (a.T @ b) @ sbb_inv, full_matrices=False)
    variates = a @ saa_inv @ u
    return rho, variates / np.linalg.norm(variates, axis=0)


def raghu_svcca(x: np.ndarray, y: np.ndarray, keep: float = 0.99) -> float:
    def top(a):
        a = a - a.mean(0)
        u, s, _ = np.linalg.svd(a, full_matrices=False)
        k = int(np.searchsorted(np.cumsum(s ** 2) / np.sum(s ** 2), keep)) + 1
        return u[:, :min(k, len(a) // 4)] * s[:min(k, len(a) // 4)]
    return float(np.mean(eig_cca(top(x), top(y))[0]))


def morcos_pwcca(x: np.ndarray, y: np.ndarray) -> float:
    if y.shape[1] < x.shape[1]:
        x, y = y, x
    rho, h = eig_cca(x, y)
    alpha = np.abs((x - x.mean(0)).T @ h).sum(0)
    return float(alpha @ rho / alpha.sum())


def rsatoolbox_compare(x: np.ndarray, y: np.ndarray, method: str) -> float:
    rsatoolbox = pytest.importorskip("rsatoolbox")
    rdms = [rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(a), method="correlation") for a in (x, y)]
    return float(rsatoolbox.rdm.compare(rdms[0], rdms[1], method=method)[0, 0])


# ---------------------------------------------------------------- each measure equals its reference


@pytest.mark.parametrize("seed", [0, 1])
def test_each_measure_equals_its_reference(seed):
    x, y = pair(seed=seed)
    assert sm.linear_cka(x, y) == pytest.approx(reference_linear_cka(x, y), abs=1e-9)
    assert sm.rbf_cka(x, y) == pytest.approx(kornblith_rbf_cka(x, y), abs=1e-6)
    assert sm.mutual_knn(x, y, 10) == pytest.approx(platonic_mutual_knn(x, y, 10), abs=1e-6)
    assert sm.cknna(x, y, 10) == pytest.approx(platonic_cknna(x, y, 10), abs=1e-6)
    assert sm.procrustes(x, y) == pytest.approx(netrep_angular(x, y), abs=1e-6)
    assert sm.svcca(x, y) == pytest.approx(raghu_svcca(x, y), abs=1e-6)
    assert sm.pwcca(x, y) == pytest.approx(morcos_pwcca(x, y), abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_rsa_equals_rsatoolbox(seed):
    x, y = pair(seed=seed)
    assert sm.rsa_spearman(x, y) == pytest.approx(rsatoolbox_compare(x, y, "spearman"), abs=1e-6)
    assert sm.rsa_wuc(x, y) == pytest.approx(rsatoolbox_compare(x, y, "cosine_cov"), abs=1e-6)


def test_values_are_not_trivial_on_the_test_pair():
    """The references are compared where the measures are neither 0 nor 1, and distinguish related from
    unrelated representations."""
    x, y = pair()
    z = np.random.default_rng(9).normal(size=x.shape)
    for name, m in sm.MEASURES.items():
        related, unrelated = m.similarity(m.fn(x, y)), m.similarity(m.fn(x, z))
        assert related > unrelated, name
        assert 0.01 < abs(m.fn(x, y)) < 0.999, name


def test_functional_measures_equal_scikit_learn():
    from sklearn.metrics import cohen_kappa_score
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 400)
    a = np.where(rng.random(400) < 0.8, labels, rng.integers(0, 5, 400))
    b = np.where(rng.random(400) < 0.6, a, np.where(rng.random(400) < 0.7, labels, rng.integers(0, 5, 400)))
    assert sm.disagreement(a, b) == pytest.approx(float(np.mean(a != b)))
    assert sm.error_consistency(a, b, labels) == pytest.approx(cohen_kappa_score(a == labels, b == labels), abs=1e-12)
    assert sm.error_consistency(a, a, labels) == pytest.approx(1.0)
    with pytest.raises(ReplearnError, match="one predicted class per image"):
        sm.error_consistency(a, b[:-1], labels)


def test_identical_representations_are_maximally_similar():
    x, _ = pair()
    for name, m in sm.MEASURES.items():
        assert m.fn(x, x) == pytest.approx(1.0 if m.higher_is_similar else 0.0, abs=1e-6), name


def test_cca_and_procrustes_form_no_unit_by_unit_matrix(monkeypatch):
    """Many units, few images: the SVD-reduced path never builds a p × p matrix (p = 5000)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 5000)), rng.normal(size=(40, 3000))
    seen = []
    real = torch.Tensor.__matmul__
    monkeypatch.setattr(torch.Tensor, "__matmul__", lambda a, b: seen.append(real(a, b).shape) or real(a, b))
    for fn in (sm.procrustes, sm.pwcca, sm.svcca):
        fn(x, y)
    assert seen and all(not (len(s) == 2 and min(s) >= 3000) for s in seen), seen


def test_cca_measures_are_blind_to_deleting_principal_components():
    """Ding et al.'s observation, which the run's deletion test shows: a representation and its projection on its
    top principal component are identical to SVCCA and PWCCA (the projection lies in the span), not to CKA."""
    x, _ = pair(n=100)
    xc = x - x.mean(0)
    top = np.linalg.svd(xc, full_matrices=False)[2][:1]
    truncated = xc @ top.T @ top
    assert sm.svcca(x, truncated) == pytest.approx(1.0) and sm.pwcca(x, truncated) == pytest.approx(1.0)
    assert sm.linear_cka(x, truncated) < 0.9 and sm.procrustes(x, truncated) > 0.3


def test_errors_name_the_problem():
    x, y = pair()
    with pytest.raises(ReplearnError, match="same images"):
        sm.procrustes(x, y[:-1])
    with pytest.raises(ReplearnError, match="1 <= k"):
        sm.mutual_knn(x, y, k=len(x))
    with pytest.raises(ReplearnError, match="unknown similarity measure"):
        sm.measure("cosine", x, y)


# ---------------------------------------------------------------- invariances, both ways


def transform(name: str, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if name == "orthogonal transform":
        return x @ ortho_group.rvs(x.shape[1], random_state=rng.integers(1 << 31))
    if name == "isotropic scaling":
        return 3.7 * x
    if name == "unit permutation":
        return x[:, rng.permutation(x.shape[1])]
    return x @ (rng.normal(size=(x.shape[1], x.shape[1])) + 0.5 * np.eye(x.shape[1]))


@pytest.mark.parametrize("transform_name", sm.TRANSFORMS)
@pytest.mark.parametrize("measure_name", list(sm.MEASURES))
def test_invariance_table_holds(measure_name, transform_name):
    m = sm.MEASURES[measure_name]
    x, y = pair(n=80, seed=3)
    rng = np.random.default_rng(4)
    before, after = m.fn(x, y), m.fn(transform(transform_name, x, rng), transform(transform_name, y, rng))
    if m.invariant[transform_name]:
        assert after == pytest.approx(before, abs=1e-6)
    else:
        assert abs(after - before) > 1e-3, f"{measure_name} is marked not invariant to {transform_name}"


def test_docs_show_the_invariance_table():
    text = DOCS.read_text(encoding="utf-8")
    assert sm.invariance_table() in text
    rows = [line for line in text.splitlines() if re.match(r"\| `\w+` \(", line)]
    assert len(rows) == len(sm.MEASURES)


def test_linear_cka_of_more_units_than_images_forms_no_units_by_units_matrix():
    """Raw pixels of 224² colour images have 150,528 units: both linear CKAs work from the n × n Gram matrices
    then (the same value as the feature-space formula, which would form a units × units matrix: 180 GB here)."""
    import time

    from replearn.metrics import similarity

    rng = np.random.RandomState(0)
    x, y = rng.randn(24, 150_528).astype(np.float32), rng.randn(24, 12)
    y[:, :3] += x[:, :3]
    started = time.perf_counter()
    values = [similarity.linear_cka(x, y), sm.linear_cka(x, y), similarity.linear_cka(y, x)]
    assert time.perf_counter() - started < 10
    xc, yc = x.astype(np.float64) - x.mean(0), y - y.mean(0)
    k, g = xc @ xc.T, yc @ yc.T
    expected = (k * g).sum() / (np.linalg.norm(k) * np.linalg.norm(g))
    assert values == pytest.approx([expected] * 3, abs=1e-9)
