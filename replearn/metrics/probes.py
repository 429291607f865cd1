"""Linear and kNN probes over feature arrays, usable without the trainer.

``LinearProbe`` follows scikit-learn's estimator API (fit / predict / score, fitted state ends in ``_``):
standardised features, multinomial logistic regression with an L2 penalty, fitted full-batch with
L-BFGS to scikit-learn's stopping rule, 8.6–9.8× faster than scikit-learn on Fashion-MNIST features
(``benchmarks/bench_probe.py``). ``knn_classifier`` is DINO's weighted cosine kNN as a plain function.
``linear_probe`` and ``knn_probe`` choose their hyperparameter on the validation split, then report test.
"""
from __future__ import annotations

import math
from typing import Any
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from replearn.metrics.arrays import as_feature_matrix
from replearn.errors import ReplearnError
from replearn.metrics.neighbours import nearest_neighbours
from replearn.runtime.seeding import LABEL_DRAW, derive_seed
from replearn.runtime.seeding import CV_FOLDS as CV_FOLDS_SEED
from replearn.metrics.softmax import fit_softmax_regression, fit_softmax_regression_stacked

ArrayLike = np.ndarray | torch.Tensor


def _as_tensor(x: ArrayLike, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    t = torch.as_tensor(x)
    return t.to(dtype) if t.dtype != dtype else t


def _check_labels(x: torch.Tensor, y: torch.Tensor) -> None:
    if y.ndim != 1 or len(y) != len(x):
        raise ReplearnError(f"{len(x)} feature rows but labels of shape {tuple(y.shape)}",
                            "pass one integer label per row")


class Standardizer:
    """Centring and scaling fitted on training features. ``per_feature=True`` gives every feature unit variance
    (constant features are left unscaled); ``per_feature=False`` divides all features by one number, the root
    mean variance, which keeps their relative scales: for PCA components, per-feature scaling would whiten
    them and blow the weakest components up to the strongest's size."""

    def __init__(self, per_feature: bool = True) -> None:
        self.per_feature = per_feature

    def fit(self, x: torch.Tensor) -> "Standardizer":
        self.mean_ = x.mean(0)
        std = x.std(0, correction=0)
        if not self.per_feature:
            overall = (std ** 2).mean().sqrt()
            std = torch.full_like(std, float(overall) if float(overall) > 0 else 1.0)
        self.scale_ = torch.where(std > 1e-6 * std.max().clamp_min(1e-12), std, torch.ones_like(std))
        return self

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean_) / self.scale_


def prepare_labelled_features(X: ArrayLike, y: ArrayLike) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validated float features, the sorted class labels, and each row's class index."""
    x = as_feature_matrix(X)
    labels = torch.as_tensor(y)
    _check_labels(x, labels)
    classes, target = torch.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ReplearnError("a linear probe needs at least two classes in its training labels",
                            "give training samples from two or more classes")
    return x, classes, target


class LinearProbe:
    """Multinomial logistic regression on standardised features: mean cross-entropy + ``l2``/2 · ‖W‖².

    ``l2`` relates to scikit-learn's ``C`` by l2 = 1 / (C · n_samples); ``max_iter`` and ``tol`` (largest
    absolute gradient entry) are scikit-learn's defaults, so both stop at the same optimality. It follows
    scikit-learn's estimator protocol (``get_params``/``set_params``, fitted state in ``*_``), so
    ``sklearn.base.clone``, ``cross_val_score`` and ``GridSearchCV`` take it as they take their own.
    """

    _estimator_type = "classifier"

    def __init__(self, l2: float = 1e-4, max_iter: int = 1000, tol: float = 1e-4, standardize: bool = True,
                 warm_start: bool = False) -> None:
        self.l2 = l2
        self.max_iter = max_iter
        self.tol = tol
        self.standardize = standardize
        self.warm_start = warm_start

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's arguments, as scikit-learn's ``clone`` and searches read them."""
        return {"l2": self.l2, "max_iter": self.max_iter, "tol": self.tol, "standardize": self.standardize,
                "warm_start": self.warm_start}

    def set_params(self, **params: Any) -> "LinearProbe":
        """Set constructor arguments by name (an unknown name is an error, as in scikit-learn)."""
        for name, value in params.items():
            if name not in self.get_params():
                raise ReplearnError(f"LinearProbe has no parameter {name!r}",
                                    f"use one of {sorted(self.get_params())}")
            setattr(self, name, value)
        return self

    def __sklearn_tags__(self) -> Any:
        from sklearn.utils import ClassifierTags, Tags, TargetTags

        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags())

    def fit(self, X: ArrayLike, y: ArrayLike) -> "LinearProbe":
        if not (isinstance(self.l2, (int, float)) and math.isfinite(self.l2) and self.l2 >= 0):
            raise ReplearnError(f"LinearProbe l2 must be a finite number >= 0, got {self.l2}", "pass l2 >= 0")
        x, classes, target = prepare_labelled_features(X, y)
        init = None
        coef, intercept, seen = (getattr(self, name, None) for name in ("coef_", "intercept_", "classes_"))
        if self.warm_start and coef is not None and seen is not None and torch.equal(seen, classes) \
                and coef.shape == (x.shape[1], len(classes)):  # scikit-learn's warm_start: from the last fit
            init = (coef[None], torch.as_tensor(intercept)[None])
        self.classes_ = classes
        self.scaler_ = Standardizer().fit(x) if self.standardize else None
        z = self.scaler_.transform(x) if self.scaler_ else x
        w, b, self.n_iter_ = fit_softmax_regression(z, target, len(self.classes_), [float(self.l2)],
                                                    self.max_iter, self.tol, init=init)
        self.coef_, self.intercept_ = w[0], b[0]
        return self

    def decision_function(self, X: ArrayLike) -> torch.Tensor:
        x = as_feature_matrix(X)
        if x.shape[1] != self.coef_.shape[0]:
            raise ReplearnError(f"probe was fitted on {self.coef_.shape[0]} features, got {x.shape[1]}",
                                "pass features from the same layer the probe was fitted on")
        z = self.scaler_.transform(x) if self.scaler_ else x
        return z @ self.coef_ + self.intercept_

    def predict_proba(self, X: ArrayLike) -> torch.Tensor:
        return self.decision_function(X).softmax(1)

    def predict(self, X: ArrayLike) -> torch.Tensor:
        return self.classes_[self.decision_function(X).argmax(1)]

    def score(self, X: ArrayLike, y: ArrayLike) -> float:
        """Accuracy on (X, y)."""
        return float((self.predict(X) == torch.as_tensor(y)).float().mean())


def _knn_vote(top_sim: torch.Tensor, top_idx: torch.Tensor, labels: torch.Tensor, k: int, T: float,
              num_classes: int) -> torch.Tensor:
    votes = torch.zeros(len(top_sim), num_classes)
    votes.scatter_add_(1, labels[top_idx[:, :k]], (top_sim[:, :k] / T).exp())
    return votes.argmax(1)


@torch.no_grad()
def knn_classifier(train_features: ArrayLike, train_labels: ArrayLike, test_features: ArrayLike,
                   test_labels: ArrayLike | None = None, k: int = 20, T: float = 0.07,
                   num_classes: int | None = None) -> torch.Tensor:
    """Weighted kNN (DINO): cosine similarity, top-k neighbours vote with weight exp(sim / T).

    Returns the predicted labels for ``test_features``; ``test_labels`` is accepted to mirror DINO's
    signature and is not used for prediction.
    """
    train = as_feature_matrix(train_features, "training features")
    test = as_feature_matrix(test_features, "test features")
    labels = torch.as_tensor(train_labels).long()
    num_classes = int(num_classes or int(labels.max()) + 1)
    top_sim, top_idx = nearest_neighbours(test, train, k)
    return _knn_vote(top_sim, top_idx, labels, k, T, num_classes)


@dataclass
class ProbeResult:
    """Outcome of a probe whose hyperparameter was chosen on validation."""

    kind: str
    test_accuracy: float
    val_accuracy: float
    chosen: float
    val_by_setting: dict[float, float] = field(default_factory=dict)
    test_predictions: torch.Tensor | None = None


SELECTIONS = ("best", "one-se")


def choose_on_validation(val_accuracy: torch.Tensor, n_val: int, selection: str = "best") -> int:
    """Index of the chosen setting, given validation accuracies ordered from the strongest penalty to the
    weakest. ``best``: the highest (ties: the stronger penalty). ``one-se``: the strongest penalty within one
    standard error, √(p(1−p)/n_val), of the highest — the one-standard-error rule (Hastie et al., ESL §7.10):
    a choice that a few validation images, or a fit's rounding, cannot flip."""
    if selection not in SELECTIONS:
        raise ReplearnError(f"unknown probe selection rule '{selection}'", f"use one of: {', '.join(SELECTIONS)}")
    best = int(torch.argmax(val_accuracy))
    if selection == "best":
        return best
    top = float(val_accuracy[best])
    margin = math.sqrt(max(top * (1.0 - top), 0.0) / max(n_val, 1))
    return int(torch.nonzero(val_accuracy >= top - margin)[0])


CV_FOLDS = 5  # folds of the cross-validation that chooses a probe's setting inside a label budget


def cv_folds(y: ArrayLike, folds: int = CV_FOLDS, seed: int = 0) -> torch.Tensor:
    """Stratified fold of every labelled image (0 … f − 1, f = min(folds, images of the rarest class)): each
    class's images dealt round-robin in a seeded order, so every fold holds every class. Fewer than 2 images
    in some class gives −1 everywhere (no cross-validation possible: a held-out fold would take a class away)."""
    y = torch.as_tensor(y).long()
    counts = torch.bincount(y)
    f = min(folds, int(counts[counts > 0].min())) if len(y) else 0
    out = torch.full((len(y),), -1, dtype=torch.long)
    if f < 2:  # every image −1: no fold can be held out without losing a class
        return out
    g = torch.Generator().manual_seed(derive_seed((seed, folds), CV_FOLDS_SEED))
    for c in torch.nonzero(counts).squeeze(1).tolist():
        idx = torch.nonzero(y == c).squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        out[idx] = torch.arange(len(idx)) % f
    return out


def _fold_count(folds: torch.Tensor) -> int:
    return int(folds.max()) + 1 if len(folds) else 0


def linear_probe(train: tuple[ArrayLike, ArrayLike], val: tuple[ArrayLike, ArrayLike] | None,
                 test: tuple[ArrayLike, ArrayLike], l2_grid: list[float], max_iter: int = 500,
                 tol: float = 3e-4, standardize: bool = True, selection: str = "best") -> ProbeResult:
    """Fit one probe per L2 penalty (batched, each to convergence), pick one on validation (``selection``:
    see ``choose_on_validation``), and report that probe's test accuracy. ``standardize=False`` keeps the
    features' relative scales (one common scale; see ``Standardizer``). ``val=None`` (a label budget: no
    labels beyond the training ones) chooses by stratified ``folds``-fold cross-validation inside the training
    images instead (``CV_FOLDS`` folds), then refits on all of them; ``val_accuracy`` is then the cross-validated
    accuracy."""
    if val is None:
        return _linear_probe_cv(train, test, l2_grid, max_iter, tol, standardize, selection, CV_FOLDS)
    grid = sorted({float(v) for v in l2_grid}, reverse=True)
    predictions = _fit_linear(train, grid, max_iter, tol, standardize)
    val_y, test_y = torch.as_tensor(val[1]), torch.as_tensor(test[1])
    val_acc = (predictions(val) == val_y).float().mean(1)
    scores = {l2: float(a) for l2, a in zip(grid, val_acc)}
    best = choose_on_validation(val_acc, len(val_y), selection)
    preds = predictions(test)[best]
    return ProbeResult("linear", float((preds == test_y).float().mean()), float(val_acc[best]), grid[best],
                       scores, preds)


def _fit_linear(train: tuple[ArrayLike, ArrayLike], grid: list[float], max_iter: int, tol: float,
                standardize: bool) -> Callable[[tuple[ArrayLike, ArrayLike]], torch.Tensor]:
    """One probe per penalty of ``grid`` fitted on ``train``; returns the predictions (penalties × images) of a
    split's features (its labels are not read)."""
    x, classes, target = prepare_labelled_features(*train)
    scaler = Standardizer(per_feature=standardize).fit(x)
    w, b, _ = fit_softmax_regression(scaler.transform(x), target, len(classes), grid, max_iter, tol)

    def predictions(split: tuple[ArrayLike, ArrayLike]) -> torch.Tensor:
        return _predict(scaler, w, b, classes, _as_tensor(split[0]))
    return predictions


def _linear_probe_cv(train: tuple[ArrayLike, ArrayLike], test: tuple[ArrayLike, ArrayLike], l2_grid: list[float],
                     max_iter: int, tol: float, standardize: bool, selection: str, folds: int) -> ProbeResult:
    """``linear_probe`` choosing its penalty by cross-validation inside ``train`` (no validation labels); with
    fewer than 2 images in some class no choice is possible and the strongest penalty of the grid is kept."""
    x, y = _as_tensor(train[0]), torch.as_tensor(train[1]).long()
    grid = sorted({float(v) for v in l2_grid}, reverse=True)
    fold = cv_folds(y, folds)
    n_folds = _fold_count(fold) if (fold >= 0).all() else 0
    scores = {l2: float("nan") for l2 in grid}
    if n_folds >= 2 and len(grid) > 1:
        correct = torch.zeros(len(grid))
        for f in range(n_folds):
            held = fold == f
            result = linear_probe((x[~held], y[~held]), (x[held], y[held]), (x[held], y[held]), grid, max_iter, tol,
                                  standardize, "best")
            correct += torch.tensor([result.val_by_setting[l2] for l2 in grid]) * int(held.sum())
        cv_acc = correct / len(y)
        scores = {l2: float(a) for l2, a in zip(grid, cv_acc)}
        chosen = grid[choose_on_validation(cv_acc, len(y), selection)]
    else:
        chosen = grid[0]
    preds = _fit_linear(train, [chosen], max_iter, tol, standardize)(test)[0]
    accuracy = float((preds == torch.as_tensor(test[1])).float().mean())
    return ProbeResult("linear", accuracy, scores[chosen], chosen, scores, preds)


def _knn_probe_cv(train: tuple[ArrayLike, ArrayLike], test: tuple[ArrayLike, ArrayLike], k_grid: list[int],
                  T: float, folds: int) -> ProbeResult:
    """``knn_probe`` choosing k by cross-validation inside ``train`` (no validation labels); without enough
    images per class for two folds, the first k of the grid."""
    x, y = _as_tensor(train[0]), torch.as_tensor(train[1]).long()
    fold = cv_folds(y, folds)
    n_folds = _fold_count(fold) if (fold >= 0).all() else 0
    scores = {float(k): float("nan") for k in k_grid}
    k = k_grid[0]
    if n_folds >= 2 and len(set(k_grid)) > 1:
        num_classes = int(y.max()) + 1
        correct = {kk: 0 for kk in k_grid}
        for f in range(n_folds):
            held = fold == f
            rest_y = y[~held]
            sims, idx = nearest_neighbours(x[held], x[~held], min(max(k_grid), int((~held).sum())))
            for kk in k_grid:
                preds = _knn_vote(sims, idx, rest_y, min(kk, idx.shape[1]), T, num_classes)
                correct[kk] += int((preds == y[held]).sum())
        scores = {float(kk): correct[kk] / len(y) for kk in k_grid}
        k = max(k_grid, key=lambda kk: (scores[float(kk)], -kk))
    test_x, test_y = _as_tensor(test[0]), torch.as_tensor(test[1]).long()
    num_classes = int(max(y.max(), test_y.max())) + 1
    sims, idx = nearest_neighbours(test_x, x, min(k, len(x)))
    preds = _knn_vote(sims, idx, y, min(k, len(x)), T, num_classes)
    return ProbeResult("knn", float((preds == test_y).float().mean()), scores[float(k)], float(k), scores, preds)


def knn_probe(train: tuple[ArrayLike, ArrayLike], val: tuple[ArrayLike, ArrayLike] | None,
              test: tuple[ArrayLike, ArrayLike], k_grid: list[int], T: float = 0.07,
              folds: int = CV_FOLDS) -> ProbeResult:
    """kNN with k chosen on validation, then evaluated on test; one neighbour search serves every k. With a
    single k there is nothing to choose, and the validation images are not searched (val accuracy NaN).
    ``val=None`` (a label budget) chooses k by ``folds``-fold cross-validation inside the training images."""
    if val is None:
        return _knn_probe_cv(train, test, k_grid, T, folds)
    train_x, val_x, test_x = (_as_tensor(s[0]) for s in (train, val, test))
    train_y, val_y, test_y = (torch.as_tensor(s[1]).long() for s in (train, val, test))
    num_classes = int(max(train_y.max(), val_y.max(), test_y.max())) + 1
    k_max = min(max(k_grid), len(train_x))
    choose = len(set(k_grid)) > 1
    sims, idx = nearest_neighbours(torch.cat([val_x, test_x]) if choose else test_x, train_x, k_max)
    n_val = len(val_x) if choose else 0
    scores = {}
    for k in k_grid:
        if choose:
            preds = _knn_vote(sims[:n_val], idx[:n_val], train_y, k, T, num_classes)
            scores[k] = float((preds == val_y).float().mean())
        else:
            scores[k] = float("nan")
    k = max(scores, key=lambda kk: (scores[kk], -kk)) if choose else k_grid[0]
    preds = _knn_vote(sims[n_val:], idx[n_val:], train_y, k, T, num_classes)
    acc = float((preds == test_y).float().mean())
    return ProbeResult("knn", acc, scores[k], float(k), {float(kk): v for kk, v in scores.items()}, preds)


@dataclass(frozen=True)
class ProbeFit:
    """How ``linear_probe`` fits and chooses (its arguments after the penalty grid), for functions that fit
    many probes the same way."""

    max_iter: int = 500
    tol: float = 3e-4
    standardize: bool = True
    selection: str = "best"


def label_efficiency(train: tuple[ArrayLike, ArrayLike], val: tuple[ArrayLike, ArrayLike] | None,
                     test: tuple[ArrayLike, ArrayLike], per_class: list[int], draws: int, l2_grid: list[float],
                     seed: int = 0, fit: ProbeFit = ProbeFit()) -> pd.DataFrame:
    """Linear-probe test accuracy when only ``n`` labelled training images per class are available.

    For each n in ``per_class`` and each of ``draws`` seeded draws, a class-balanced labelled subset is
    taken from the training split, the probe penalty is chosen on the (full) validation split (``val=None``:
    by cross-validation inside the drawn subset, so a draw uses no labels beyond its own), and test
    accuracy is reported; every probe is fitted as ``fit`` says. Raises if a class has fewer than
    max(per_class) training images.
    """
    x = as_feature_matrix(train[0])
    y = torch.as_tensor(train[1]).long()
    _check_labels(x, y)
    counts = torch.bincount(y)
    present = counts[counts > 0]
    if per_class and int(present.min()) < max(per_class):
        rarest = int(torch.nonzero(counts == present.min())[0])
        raise ReplearnError(f"label efficiency asks for {max(per_class)} labels per class but class {rarest} has only "
                            f"{int(present.min())} training images",
                            f"lower analysis.label_counts to at most {int(present.min())} or use more data")
    by_class = [torch.nonzero(y == c).squeeze(1) for c in range(len(counts)) if counts[c] > 0]
    picks = []  # (labels per class, draw, subset)
    for n in per_class:
        for draw in range(draws):
            g = torch.Generator().manual_seed(derive_seed((seed, n, draw), LABEL_DRAW))
            picks.append((n, draw, torch.cat([idx[torch.randperm(len(idx), generator=g)[:n]] for idx in by_class])))
    results: list[ProbeResult] = []
    if val is not None and x.shape[1] <= STACKED_MAX_UNITS:
        for batch in _stacked_batches([len(pick) for _, _, pick in picks], x.shape[1]):
            results += _linear_probes_of_draws([(x[picks[i][2]], y[picks[i][2]]) for i in batch], val, test,
                                               l2_grid, fit)
    else:
        results = [linear_probe((x[pick], y[pick]), val, test, l2_grid, fit.max_iter, fit.tol, fit.standardize,
                                fit.selection) for _, _, pick in picks]
    rows = [{"per_class": n, "labels": len(pick), "draw": draw, "test_accuracy": result.test_accuracy,
             "val_accuracy": result.val_accuracy, "chosen": result.chosen}
            for (n, draw, pick), result in zip(picks, results, strict=True)]
    return pd.DataFrame(rows)


# label-efficiency draws are fitted together up to this many units; wider features (raw pixels of large images)
# one draw at a time, so that only one draw's copy of them is held
STACKED_MAX_UNITS = 4096
# and up to this many feature values in one stack (draws × the largest draw's images × units, padding included)
STACKED_MAX_VALUES = 2**24


def _stacked_batches(sizes: list[int], units: int) -> list[list[int]]:
    """Consecutive draws grouped so that each group, padded to its largest draw, holds at
    most ``STACKED_MAX_VALUES`` feature values; a draw too large for any company is a group of its own."""
    batches: list[list[int]] = []
    for i, size in enumerate(sizes):
        if batches and (len(batches[-1]) + 1) * max(size, *(sizes[j] for j in batches[-1])) * units \
                <= STACKED_MAX_VALUES:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _linear_probes_of_draws(draws: list[tuple[torch.Tensor, torch.Tensor]], val: tuple[ArrayLike, ArrayLike],
                            test: tuple[ArrayLike, ArrayLike], l2_grid: list[float],
                            fit: ProbeFit) -> list[ProbeResult]:
    """``linear_probe`` of each draw (training sets of any size and one set of classes), fitted together: the
    same independent problems, each draw standardised on its own, padded to the largest draw (the padding
    weighs nothing), with their products batched."""
    grid = sorted({float(v) for v in l2_grid}, reverse=True)
    prepared = [prepare_labelled_features(*draw) for draw in draws]
    if any(not torch.equal(p[1], prepared[0][1]) for p in prepared):  # different classes: one draw at a time
        return [linear_probe(draw, val, test, l2_grid, fit.max_iter, fit.tol, fit.standardize, fit.selection)
                for draw in draws]
    classes = prepared[0][1]
    scalers = [Standardizer(per_feature=fit.standardize).fit(x) for x, _, _ in prepared]
    counts = torch.tensor([len(x) for x, _, _ in prepared])
    height, units = int(counts.max()), prepared[0][0].shape[1]
    z = torch.zeros(len(prepared), height, units, dtype=prepared[0][0].dtype)
    target = torch.zeros(len(prepared), height, dtype=prepared[0][2].dtype)
    for i, (scaler, (x, _, t)) in enumerate(zip(scalers, prepared, strict=True)):
        z[i, : len(x)], target[i, : len(x)] = scaler.transform(x), t
    w, b, _ = fit_softmax_regression_stacked(z, target, len(classes), grid, fit.max_iter, fit.tol, counts=counts)
    val_x, test_x = _as_tensor(val[0]), _as_tensor(test[0])
    val_y, test_y = torch.as_tensor(val[1]), torch.as_tensor(test[1])
    results = []
    for scaler, w_draw, b_draw in zip(scalers, w, b, strict=True):
        val_acc = (_predict(scaler, w_draw, b_draw, classes, val_x) == val_y).float().mean(1)
        best = choose_on_validation(val_acc, len(val_y), fit.selection)
        preds = _predict(scaler, w_draw, b_draw, classes, test_x)[best]
        results.append(ProbeResult("linear", float((preds == test_y).float().mean()), float(val_acc[best]),
                                   grid[best], {l2: float(a) for l2, a in zip(grid, val_acc, strict=True)}, preds))
    return results


def _predict(scaler: Standardizer, w: torch.Tensor, b: torch.Tensor, classes: torch.Tensor,
             features: torch.Tensor) -> torch.Tensor:
    """Each penalty's predicted classes (penalties × images) of probes ``w`` (L×d×K), ``b`` (L×K)."""
    return classes[torch.einsum("nd,ldk->lnk", scaler.transform(features), w).add_(b[:, None, :]).argmax(-1)]
