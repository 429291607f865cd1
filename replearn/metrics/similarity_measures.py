"""Representation-similarity measures beyond linear CKA, as plain functions on two feature matrices of the
same images (rows: images in the same order; columns: units), and functional measures on two models'
predictions. Each is one formula from its paper; ``MEASURES`` registers them with what they are invariant to
(asserted by tests/unit/test_similarity_measures.py, shown in docs/similarity.md).

Notation: X (n × p) and Y (n × q), Xc, Yc their column-centred copies, H = I − 11ᵀ/n, ‖·‖_F the Frobenius
and ‖·‖_* the nuclear norm.

- ``linear_cka`` (Kornblith et al. 2019): ‖Ycᵀ Xc‖²_F / (‖Xcᵀ Xc‖_F ‖Ycᵀ Yc‖_F).
- ``rbf_cka`` (Kornblith et al. 2019): HSIC(K, L) / √(HSIC(K, K) HSIC(L, L)), HSIC(K, L) = tr(KHLH), with
  K_ij = exp(−‖x_i − x_j‖² / (2 σ² m)), m the median squared distance and σ = ``sigma`` (0.5, as their code).
- ``mutual_knn`` (Huh et al. 2024): rows L2-normalised, N_k(i) the k nearest images of image i by inner
  product (itself excluded); mean over i of |N_k^X(i) ∩ N_k^Y(i)| / k.
- ``cknna`` (Huh et al. 2024): CKA with unbiased HSIC (Song et al. 2012) of K∘M and L∘M, where K = XXᵀ,
  L = YYᵀ of the normalised rows and M_ij = 1 when j is among the k nearest of i in both, divided by the same
  quantity for (K, K) and (L, L), as the authors' code (platonic-rep ``metrics.cknna``) computes it.
- ``procrustes`` (Williams et al. 2021): the angular shape distance arccos(‖Xcᵀ Yc‖_* / (‖Xc‖_F ‖Yc‖_F)),
  the angle left after the best rotation of one onto the other (netrep ``LinearMetric(alpha=1)``, radians,
  0 = same shape, π/2 = orthogonal); a metric.
- ``svcca`` (Raghu et al. 2017): each of Xc, Yc reduced by SVD to the fewest directions that keep 99% of
  its variance (at most n/4 directions), then the mean canonical correlation of the reduced pair.
- ``pwcca`` (Morcos et al. 2018): Σ_i α_i ρ_i / Σ_i α_i over canonical correlations ρ_i, with α_i = Σ_j |⟨h_i,
  z_j⟩| for h_i the (unit) canonical variates and z_j the centred units of the representation with fewer
  units (as the authors' ``compute_pwcca``); CCA is computed exactly on the rank-revealing SVD of each side.
- ``rsa_spearman``, ``rsa_wuc`` (Kriegeskorte et al. 2008; Diedrichsen et al. 2021): the representational
  dissimilarity matrices D_ij = 1 − corr(x_i, x_j) (correlation across units), compared by Spearman's ρ of
  their upper triangles, or by the whitened cosine of G = −½ H D H (rsatoolbox's ``cosine_cov`` with its
  default i.i.d. noise model). With one deterministic feature vector per image no cross-validated (unbiased)
  distance exists, so the "unbiased" of WUC reduces to this whitened cosine on the plain RDM.

rsatoolbox is the reference for both RSA comparisons in the tests, not a dependency here: it is not among
replearn's requirements, and computing D once per representation lets the run compare every pair of layers
from the same n × n matrices.

Functional measures (Geirhos et al. 2020) on two models' predicted classes for the same images:
``disagreement`` = P(ŷ_a ≠ ŷ_b); ``error_consistency`` = Cohen's κ of the two correct/incorrect vectors,
(c_obs − c_exp) / (1 − c_exp) with c_obs the fraction where both are right or both wrong and
c_exp = p_a p_b + (1 − p_a)(1 − p_b) for accuracies p_a, p_b.

Costs: the kernel and RDM measures build n × n matrices and the kNN ones an n × n similarity, so callers cap n
(``subsample``; the run's analysis uses at most 500 images); the CCA and Procrustes measures work on n × p
matrices and their SVDs (never a p × p matrix of pixels).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from replearn.metrics.arrays import ArrayLike, as_feature_matrix
from replearn.metrics.ranks import spearman
from replearn.errors import ReplearnError

TRANSFORMS = ("orthogonal transform", "isotropic scaling", "unit permutation", "invertible linear map")


def _pair(x: ArrayLike, y: ArrayLike, name: str, min_rows: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    a = as_feature_matrix(x, f"{name}'s features x", min_rows, torch.float64)
    b = as_feature_matrix(y, f"{name}'s features y", min_rows, torch.float64)
    if len(a) != len(b):
        raise ReplearnError(f"{name} needs the same images in both representations ({len(a)} vs {len(b)} rows)",
                            "pass features of the same images, in the same order")
    return a, b


def _centred(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(0)


def _normalised_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def subsample(n: int, cap: int, seed: int = 0) -> np.ndarray:
    """At most ``cap`` of n row indices, a seeded random choice kept in increasing order (all when n ≤ cap)."""
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


# ---------------------------------------------------------------- kernel measures


def linear_cka(x: ArrayLike, y: ArrayLike) -> float:
    """Linear CKA (Kornblith et al. 2019), in feature space: 1 = same up to rotation and scale. It depends on each
    side only through its Gram matrix, so a side with more units than images (raw pixels of large images) is
    first replaced by an n × n matrix with the same Gram matrix: no units × units matrix is formed."""
    a, b = _pair(x, y, "linear CKA")
    a, b = _reduced(a), _reduced(b)
    cross = torch.linalg.matrix_norm(b.T @ a) ** 2
    norm = torch.linalg.matrix_norm(a.T @ a) * torch.linalg.matrix_norm(b.T @ b)
    return float(cross / norm) if norm > 0 else 0.0


def _rbf_gram(x: torch.Tensor, sigma: float) -> torch.Tensor:
    sq = (x * x).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(0)
    median = float(np.median(d2.numpy()))  # of all n² entries, the diagonal's zeros included, as Kornblith's code
    if median <= 0:
        return torch.ones_like(d2)
    return torch.exp(-d2 / (2 * sigma ** 2 * median))


def _cka_of_grams(k: torch.Tensor, g: torch.Tensor) -> float:
    kc = k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()
    lc = g - g.mean(0, keepdim=True) - g.mean(1, keepdim=True) + g.mean()
    norm = kc.norm() * lc.norm()
    return float((kc * lc).sum() / norm) if norm > 0 else 0.0


def rbf_cka(x: ArrayLike, y: ArrayLike, sigma: float = 0.5) -> float:
    """RBF-kernel CKA (Kornblith et al. 2019) with bandwidth ``sigma`` × the median distance."""
    a, b = _pair(x, y, "RBF CKA")
    return _cka_of_grams(_rbf_gram(a, sigma), _rbf_gram(b, sigma))


def _knn_mask(x: torch.Tensor, k: int) -> torch.Tensor:
    """n × n 0/1 matrix: row i marks the k rows of largest inner product with row i, itself excluded."""
    sim = x @ x.T
    sim.fill_diagonal_(float("-inf"))
    idx = torch.topk(sim, k, dim=1).indices
    return torch.zeros_like(sim).scatter_(1, idx, 1.0)


def _check_k(k: int, n: int, name: str) -> None:
    if not 1 <= k < n:
        raise ReplearnError(f"{name} needs 1 <= k < the number of images, got k={k} for {n} images",
                            f"pass k between 1 and {n - 1}, or more images")


def mutual_knn(x: ArrayLike, y: ArrayLike, k: int = 10) -> float:
    """Mutual k-nearest-neighbour alignment (Huh et al. 2024): mean overlap of each image's k neighbours."""
    a, b = _pair(x, y, "mutual kNN")
    _check_k(k, len(a), "mutual kNN")
    overlap = _knn_mask(_normalised_rows(a), k) * _knn_mask(_normalised_rows(b), k)
    return float(overlap.sum(1).mean() / k)


def _hsic_unbiased(k: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC (Song et al. 2012) of two n × n matrices, written for non-symmetric ones as the
    platonic-rep code does: tr(K̃L̃), 1ᵀK̃1 1ᵀL̃1, 1ᵀK̃L̃1 with K̃, L̃ the matrices with a zeroed diagonal."""
    m = k.shape[0]
    kt, lt = k.clone().fill_diagonal_(0), g.clone().fill_diagonal_(0)
    value = (kt * lt.T).sum() + kt.sum() * lt.sum() / ((m - 1) * (m - 2)) - 2 * (kt @ lt).sum() / (m - 2)
    return value / (m * (m - 3))


def cknna(x: ArrayLike, y: ArrayLike, k: int = 10) -> float:
    """CKNNA (Huh et al. 2024): CKA with unbiased HSIC restricted to mutual k-nearest-neighbour pairs."""
    a, b = _pair(x, y, "CKNNA", min_rows=4)
    if not 2 <= k < len(a):
        raise ReplearnError(f"CKNNA needs 2 <= k < the number of images, got k={k} for {len(a)} images",
                            f"pass k between 2 and {len(a) - 1}, or more images")
    a, b = _normalised_rows(a), _normalised_rows(b)
    gk, gl = a @ a.T, b @ b.T
    mk, ml = _knn_mask(a, k), _knn_mask(b, k)
    kl = _hsic_unbiased(mk * ml * gk, mk * ml * gl)
    kk = _hsic_unbiased(mk * gk, mk * gk)
    ll = _hsic_unbiased(ml * gl, ml * gl)
    denom = torch.sqrt(kk * ll)
    return float(kl / denom) if denom > 0 else 0.0


# ---------------------------------------------------------------- shape and CCA measures


def _reduced(x: torch.Tensor) -> torch.Tensor:
    """Column-centred x, or, when it has more units than images, an n × n matrix with the same Gram matrix
    (Rᵀ of the QR factorisation of Xcᵀ): the shape measures depend on x only through its Gram matrix, so no
    p × p matrix is formed."""
    xc = _centred(x)
    if xc.shape[1] <= xc.shape[0]:
        return xc
    return torch.linalg.qr(xc.T).R.T


def _full_rank(x: torch.Tensor) -> torch.Tensor:
    """Column-centred x in its own principal axes, the directions of (numerically) zero variance dropped
    (n × rank): CCA needs full column rank, and is unchanged by this invertible change of basis."""
    u, s, _ = torch.linalg.svd(_centred(x), full_matrices=False)
    keep = s > s.max().clamp_min(1e-300) * 1e-10 if len(s) else s > 0
    return u[:, keep] * s[keep]


def procrustes(x: ArrayLike, y: ArrayLike) -> float:
    """Angular Procrustes shape distance (Williams et al. 2021), radians: 0 = same up to rotation and scale."""
    a, b = _pair(x, y, "Procrustes")
    a, b = _reduced(a), _reduced(b)
    norm = a.norm() * b.norm()
    if norm <= 0:
        return math.pi / 2
    nuclear = torch.linalg.svdvals(a.T @ b).sum()
    return float(torch.arccos((nuclear / norm).clamp(-1.0, 1.0)))


def _canonical(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonical correlations (descending) of two full-column-rank centred matrices, and the unit canonical
    variates of ``a`` (n × min rank) as columns."""
    qa, _ = torch.linalg.qr(a)
    qb, _ = torch.linalg.qr(b)
    u, rho, _ = torch.linalg.svd(qa.T @ qb, full_matrices=False)
    return rho.clamp(0.0, 1.0), qa @ u


def _top_directions(x: torch.Tensor, keep: float, most: int) -> torch.Tensor:
    u, s, _ = torch.linalg.svd(_centred(x), full_matrices=False)
    var = s ** 2
    if var.sum() <= 0:
        return u[:, :0]
    needed = int(torch.searchsorted(torch.cumsum(var, 0) / var.sum(), torch.tensor(keep, dtype=var.dtype))) + 1
    k = max(1, min(needed, most, int((s > s[0] * 1e-10).sum())))
    return u[:, :k] * s[:k]


def svcca(x: ArrayLike, y: ArrayLike, keep: float = 0.99) -> float:
    """SVCCA (Raghu et al. 2017): mean canonical correlation of the directions keeping 99% of the variance."""
    a, b = _pair(x, y, "SVCCA", min_rows=8)
    most = max(1, len(a) // 4)
    ra, rb = _top_directions(a, keep, most), _top_directions(b, keep, most)
    if ra.shape[1] == 0 or rb.shape[1] == 0:
        return 0.0
    rho, _ = _canonical(ra, rb)
    return float(rho.mean())


def pwcca(x: ArrayLike, y: ArrayLike) -> float:
    """Projection-weighted CCA (Morcos et al. 2018): canonical correlations weighted by how much of the
    representation with fewer units each canonical variate accounts for."""
    a, b = _pair(x, y, "PWCCA", min_rows=4)
    if b.shape[1] < a.shape[1]:
        a, b = b, a
    ra, rb = _full_rank(a), _full_rank(b)
    if ra.shape[1] == 0 or rb.shape[1] == 0:
        return 0.0
    rho, variates = _canonical(ra, rb)
    weights = (_centred(a).T @ variates).abs().sum(0)
    return float((weights * rho).sum() / weights.sum()) if weights.sum() > 0 else 0.0


# ---------------------------------------------------------------- RSA


def correlation_rdm(x: ArrayLike) -> torch.Tensor:
    """The n × n representational dissimilarity matrix 1 − Pearson correlation of the images' feature
    vectors (across units); an image whose units are all equal correlates 0 with every other."""
    a = as_feature_matrix(x, "RSA's features", 2, torch.float64)
    z = a - a.mean(1, keepdim=True)
    z = z / z.norm(dim=1, keepdim=True).clamp_min(1e-300)
    d = 1.0 - z @ z.T
    d.fill_diagonal_(0.0)
    return d


def _upper(d: torch.Tensor) -> np.ndarray:
    i, j = np.triu_indices(d.shape[0], 1)
    return d.numpy()[i, j]


def rsa_spearman(x: ArrayLike, y: ArrayLike) -> float:
    """RSA: Spearman's ρ between the correlation-distance RDMs' upper triangles."""
    a, b = _pair(x, y, "RSA", min_rows=3)
    rho = spearman(_upper(correlation_rdm(a)), _upper(correlation_rdm(b)))
    return 0.0 if math.isnan(rho) else rho  # a constant RDM: no rank structure to agree with


def rsa_wuc(x: ArrayLike, y: ArrayLike) -> float:
    """RSA: whitened cosine of the correlation-distance RDMs (G = −½HDH; rsatoolbox ``cosine_cov``)."""
    a, b = _pair(x, y, "RSA", min_rows=3)
    ga, gb = (-0.5 * correlation_rdm(m) for m in (a, b))
    return _cka_of_grams(ga, gb)


# ---------------------------------------------------------------- functional measures


def _predictions(a: ArrayLike, b: ArrayLike, labels: ArrayLike | None = None) -> list[np.ndarray]:
    arrays = [np.asarray(v).reshape(-1) if np.ndim(v) == 1 else np.asarray(v) for v in (a, b)]
    if labels is not None:
        arrays.append(np.asarray(labels))
    shapes = {v.shape for v in arrays}
    if any(v.ndim != 1 for v in arrays) or len(shapes) != 1 or arrays[0].size == 0:
        raise ReplearnError(f"functional similarity needs one predicted class per image, the same images for both "
                            f"models, got shapes {sorted(str(v.shape) for v in arrays)}",
                            "pass two 1-D arrays of predicted classes (and the labels) of equal length")
    return arrays


def disagreement(pred_a: ArrayLike, pred_b: ArrayLike) -> float:
    """Fraction of images on which two models predict different classes."""
    a, b = _predictions(pred_a, pred_b)
    return float(np.mean(a != b))


def error_consistency(pred_a: ArrayLike, pred_b: ArrayLike, labels: ArrayLike) -> float:
    """Error consistency (Geirhos et al. 2020): Cohen's κ of the two models' right/wrong vectors; 0 = as much
    overlap of errors as two independent classifiers with these accuracies, 1 = the same errors."""
    a, b, y = _predictions(pred_a, pred_b, labels)
    right_a, right_b = a == y, b == y
    observed = float(np.mean(right_a == right_b))
    pa, pb = float(right_a.mean()), float(right_b.mean())
    expected = pa * pb + (1 - pa) * (1 - pb)
    return (observed - expected) / (1 - expected) if expected < 1 else 0.0


# ---------------------------------------------------------------- registry


@dataclass(frozen=True)
class Measure:
    """A representational measure: its function of two feature matrices, whether larger means more similar,
    whether it is cheap enough to be on by default, what it is invariant to, and its source."""

    name: str
    label: str
    fn: Callable[[ArrayLike, ArrayLike], float]
    higher_is_similar: bool
    cheap: bool
    invariant: dict[str, bool] = field(default_factory=dict)
    reference: str = ""

    def similarity(self, value: float) -> float:
        """The value oriented so that larger is more similar (distances negated), for rankings."""
        return value if self.higher_is_similar else -value


def _inv(orthogonal: bool, scaling: bool, permutation: bool, linear: bool) -> dict[str, bool]:
    return dict(zip(TRANSFORMS, (orthogonal, scaling, permutation, linear)))


MEASURES: dict[str, Measure] = {m.name: m for m in [
    Measure("linear_cka", "linear CKA", linear_cka, True, True, _inv(True, True, True, False),
            "Kornblith et al. 2019"),
    Measure("rbf_cka", "RBF CKA (σ = 0.5 median)", rbf_cka, True, False, _inv(True, True, True, False),
            "Kornblith et al. 2019"),
    Measure("mutual_knn", "mutual kNN (k = 10)", mutual_knn, True, True, _inv(True, True, True, False),
            "Huh et al. 2024"),
    Measure("cknna", "CKNNA (k = 10)", cknna, True, False, _inv(True, True, True, False), "Huh et al. 2024"),
    Measure("procrustes", "Procrustes angle (rad)", procrustes, False, True, _inv(True, True, True, False),
            "Williams et al. 2021"),
    Measure("svcca", "SVCCA (99% variance)", svcca, True, False, _inv(True, True, True, False),
            "Raghu et al. 2017"),
    Measure("pwcca", "PWCCA", pwcca, True, False, _inv(False, True, True, False), "Morcos et al. 2018"),
    Measure("rsa_spearman", "RSA (Spearman)", rsa_spearman, True, False, _inv(False, True, True, False),
            "Kriegeskorte et al. 2008"),
    Measure("rsa_wuc", "RSA (whitened cosine)", rsa_wuc, True, False, _inv(False, True, True, False),
            "Diedrichsen et al. 2021"),
]}
DEFAULT_MEASURES = [name for name, m in MEASURES.items() if m.cheap]
FUNCTIONAL = {"disagreement": "disagreement (fraction)", "error_consistency": "error consistency (κ)"}


def measure(name: str, x: ArrayLike, y: ArrayLike) -> float:
    """The registered measure ``name`` of two feature matrices of the same images."""
    if name not in MEASURES:
        raise ReplearnError(f"unknown similarity measure '{name}'", f"choose one of: {', '.join(MEASURES)}")
    return MEASURES[name].fn(x, y)


def invariance_table() -> str:
    """The Markdown table of what each measure is invariant to (docs/similarity.md), from ``MEASURES``."""
    lines = ["| measure | " + " | ".join(TRANSFORMS) + " | on by default | reference |",
             "|---" * (len(TRANSFORMS) + 3) + "|"]
    for m in MEASURES.values():
        marks = " | ".join("yes" if m.invariant[t] else "no" for t in TRANSFORMS)
        lines.append(f"| `{m.name}` ({m.label}) | {marks} | {'yes' if m.cheap else 'no'} | {m.reference} |")
    return "\n".join(lines)
