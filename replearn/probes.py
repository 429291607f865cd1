"""Linear and kNN probes over feature arrays, usable without the trainer.

``LinearProbe`` follows scikit-learn's estimator API (fit / predict / score, fitted state ends in ``_``):
standardised features, multinomial logistic regression with an L2 penalty, fitted full-batch with
L-BFGS in torch. ``knn_classifier`` is DINO's weighted cosine kNN as a plain function.
``linear_probe`` and ``knn_probe`` choose their hyperparameter on the validation split, then report test.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .errors import ReplearnError

ArrayLike = np.ndarray | torch.Tensor


def _as_tensor(x: ArrayLike, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    t = torch.as_tensor(x)
    return t.to(dtype) if t.dtype != dtype else t


def _check_features(x: torch.Tensor, y: torch.Tensor | None = None, what: str = "features") -> None:
    if x.ndim != 2:
        raise ReplearnError(f"{what} must be a 2-D array (samples × features), got shape {tuple(x.shape)}",
                            "flatten each sample's features into one row")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ReplearnError(f"{what} are empty (shape {tuple(x.shape)})", "pass at least one sample and one feature")
    if not torch.isfinite(x).all():
        raise ReplearnError(f"{what} contain NaN or infinite values", "check the model or data that produced them")
    if y is not None and (y.ndim != 1 or len(y) != len(x)):
        raise ReplearnError(f"{len(x)} feature rows but labels of shape {tuple(y.shape)}",
                            "pass one integer label per row")


@torch.no_grad()
def fit_softmax_regression(z: torch.Tensor, target: torch.Tensor, num_classes: int, l2s: list[float],
                           max_iter: int = 200, tol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Multinomial logistic regression for several L2 penalties at once, by full-batch L-BFGS.

    Minimises, for each penalty λ, mean cross-entropy + λ/2 · ‖W‖². The problems are independent, so
    their sum has a block-diagonal Hessian and one L-BFGS run solves all of them; fitting them together
    turns skinny matrix products into wider, more efficient ones. Logits are kept as (penalty·class) ×
    sample so the softmax runs over contiguous rows, and the gradient (softmax − one-hot) is written out
    rather than taken by autograd. Returns (W: L×d×K, b: L×K, iterations).
    """
    n, d = z.shape
    n_l, k = len(l2s), num_classes
    zt = z.T.contiguous()
    onehot = F.one_hot(target, k).to(z.dtype).T.contiguous()
    lam = torch.tensor(l2s, dtype=z.dtype).repeat_interleave(k).view(n_l * k, 1)
    weight = torch.nn.Parameter(torch.zeros(n_l * k, d, dtype=z.dtype))
    bias = torch.nn.Parameter(torch.zeros(n_l * k, 1, dtype=z.dtype))
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=tol,
                            tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        with torch.no_grad():
            logits = torch.addmm(bias, weight, zt).view(n_l, k, n)
            logits -= logits.amax(1, keepdim=True)
            p = logits.exp()
            total = p.sum(1, keepdim=True)
            loss = (total.log().sum() - (logits * onehot).sum()) / n + 0.5 * (lam * weight * weight).sum()
            p /= total
            p -= onehot
            g = p.view(n_l * k, n).div_(n)
            weight.grad = torch.addmm(lam * weight, g, z)
            bias.grad = g.sum(1, keepdim=True)
            return loss

    opt.step(closure)
    n_iter = int(opt.state[opt._params[0]].get("n_iter", 0))
    w = weight.detach().view(n_l, k, d).transpose(1, 2).contiguous()
    return w, bias.detach().view(n_l, k).clone(), n_iter


class Standardizer:
    """Per-feature centring and scaling fitted on training features; constant features are left unscaled."""

    def fit(self, x: torch.Tensor) -> "Standardizer":
        self.mean_ = x.mean(0)
        std = x.std(0, correction=0)
        self.scale_ = torch.where(std > 1e-6 * std.max().clamp_min(1e-12), std, torch.ones_like(std))
        return self

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean_) / self.scale_


def _prepare(X: ArrayLike, y: ArrayLike) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validated float features, the sorted class labels, and each row's class index."""
    x = _as_tensor(X)
    labels = torch.as_tensor(y)
    _check_features(x, labels)
    classes, target = torch.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ReplearnError("a linear probe needs at least two classes in its training labels",
                            "give training samples from two or more classes")
    return x, classes, target


class LinearProbe:
    """Multinomial logistic regression on standardised features: mean cross-entropy + ``l2``/2 · ‖W‖².

    ``l2`` relates to scikit-learn's ``C`` by l2 = 1 / (C · n_samples).
    """

    def __init__(self, l2: float = 1e-4, max_iter: int = 200, tol: float = 1e-6, standardize: bool = True) -> None:
        self.l2 = l2
        self.max_iter = max_iter
        self.tol = tol
        self.standardize = standardize

    def fit(self, X: ArrayLike, y: ArrayLike) -> "LinearProbe":
        if not (isinstance(self.l2, (int, float)) and math.isfinite(self.l2) and self.l2 >= 0):
            raise ReplearnError(f"LinearProbe l2 must be a finite number >= 0, got {self.l2}", "pass l2 >= 0")
        x, self.classes_, target = _prepare(X, y)
        self.scaler_ = Standardizer().fit(x) if self.standardize else None
        z = self.scaler_.transform(x) if self.scaler_ else x
        w, b, self.n_iter_ = fit_softmax_regression(z, target, len(self.classes_), [float(self.l2)],
                                                    self.max_iter, self.tol)
        self.coef_, self.intercept_ = w[0], b[0]
        return self

    def decision_function(self, X: ArrayLike) -> torch.Tensor:
        x = _as_tensor(X)
        _check_features(x)
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


_BF16_FAST: bool | None = None


def _bf16_matmul_is_fast() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (e.g. AVX512-BF16/AMX), timed once."""
    global _BF16_FAST
    if _BF16_FAST is None:
        import time

        a = torch.randn(512, 512)
        b = a.bfloat16()
        timings = []
        for m in (a, b, a, b):
            started = time.perf_counter()
            for _ in range(4):
                m @ m
            timings.append(time.perf_counter() - started)
        _BF16_FAST = min(timings[1], timings[3]) < 0.7 * min(timings[0], timings[2])
    return _BF16_FAST


@torch.no_grad()
def cosine_topk(train: torch.Tensor, query: torch.Tensor, k: int, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarities, indices) of each query row's ``k`` most cosine-similar training rows, exact in float32.

    On CPUs with native bfloat16 matrix multiply, candidates (2k per query) are found with a bfloat16
    product and re-scored in float32, about twice as fast; the result equals the float32 search unless
    a true neighbour falls outside the candidates (vanishingly rare).
    """
    train = F.normalize(train.float(), dim=1)
    query = F.normalize(query.float(), dim=1)
    k = min(k, len(train))
    candidates = min(len(train), 2 * k + 8)
    use_bf16 = train.device.type == "cpu" and train.shape[1] >= 128 and candidates < len(train) \
        and _bf16_matmul_is_fast()
    train_low = train.bfloat16() if use_bf16 else None
    sims, idxs = [], []
    for start in range(0, len(query), chunk):
        q = query[start:start + chunk]
        if use_bf16:
            _, cand = (q.bfloat16() @ train_low.T).topk(candidates, dim=1)
            rows = train.index_select(0, cand.flatten()).view(len(q), candidates, -1)
            exact = torch.bmm(rows, q[:, :, None]).squeeze(2)
            top, pos = exact.topk(k, dim=1)
            idx = cand.gather(1, pos)
        else:
            top, idx = (q @ train.T).topk(k, dim=1)
        sims.append(top)
        idxs.append(idx)
    return torch.cat(sims), torch.cat(idxs)


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
    train, test = _as_tensor(train_features), _as_tensor(test_features)
    _check_features(train, what="training features")
    _check_features(test, what="test features")
    labels = torch.as_tensor(train_labels).long()
    num_classes = int(num_classes or int(labels.max()) + 1)
    top_sim, top_idx = cosine_topk(train, test, k)
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


def linear_probe(train: tuple[ArrayLike, ArrayLike], val: tuple[ArrayLike, ArrayLike],
                 test: tuple[ArrayLike, ArrayLike], l2_grid: list[float], max_iter: int = 200) -> ProbeResult:
    """Fit one probe per L2 penalty (all in one L-BFGS run), pick the best on validation (ties: the
    stronger penalty), and report that probe's test accuracy."""
    x, classes, target = _prepare(*train)
    scaler = Standardizer().fit(x)
    grid = sorted({float(v) for v in l2_grid}, reverse=True)
    w, b, _ = fit_softmax_regression(scaler.transform(x), target, len(classes), grid, max_iter)

    def predictions(split: tuple[ArrayLike, ArrayLike]) -> torch.Tensor:
        z = scaler.transform(_as_tensor(split[0]))
        return classes[torch.einsum("nd,ldk->lnk", z, w).add_(b[:, None, :]).argmax(-1)]

    val_y, test_y = torch.as_tensor(val[1]), torch.as_tensor(test[1])
    val_acc = (predictions(val) == val_y).float().mean(1)
    scores = {l2: float(a) for l2, a in zip(grid, val_acc)}
    best = int(torch.argmax(val_acc))
    preds = predictions(test)[best]
    return ProbeResult("linear", float((preds == test_y).float().mean()), float(val_acc[best]), grid[best],
                       scores, preds)


def knn_probe(train: tuple[ArrayLike, ArrayLike], val: tuple[ArrayLike, ArrayLike],
              test: tuple[ArrayLike, ArrayLike], k_grid: list[int], T: float = 0.07) -> ProbeResult:
    """kNN with k chosen on validation, then evaluated on test; one neighbour search serves every k."""
    train_x, val_x, test_x = (_as_tensor(s[0]) for s in (train, val, test))
    train_y, val_y, test_y = (torch.as_tensor(s[1]).long() for s in (train, val, test))
    num_classes = int(max(train_y.max(), val_y.max(), test_y.max())) + 1
    k_max = min(max(k_grid), len(train_x))
    sims, idx = cosine_topk(train_x, torch.cat([val_x, test_x]), k_max)
    n_val = len(val_x)
    scores = {}
    for k in k_grid:
        preds = _knn_vote(sims[:n_val], idx[:n_val], train_y, k, T, num_classes)
        scores[k] = float((preds == val_y).float().mean())
    k = max(scores, key=lambda kk: (scores[kk], -kk))
    preds = _knn_vote(sims[n_val:], idx[n_val:], train_y, k, T, num_classes)
    acc = float((preds == test_y).float().mean())
    return ProbeResult("knn", acc, scores[k], float(k), {float(kk): v for kk, v in scores.items()}, preds)


def label_efficiency(train: tuple[ArrayLike, ArrayLike], val: tuple[ArrayLike, ArrayLike],
                     test: tuple[ArrayLike, ArrayLike], per_class: list[int], draws: int, l2_grid: list[float],
                     seed: int = 0, max_iter: int = 200) -> pd.DataFrame:
    """Linear-probe test accuracy when only ``n`` labelled training images per class are available.

    For each n in ``per_class`` and each of ``draws`` seeded draws, a class-balanced labelled subset is
    taken from the training split, the probe penalty is chosen on the (full) validation split, and test
    accuracy is reported. Raises if a class has fewer than max(per_class) training images.
    """
    x = _as_tensor(train[0])
    y = torch.as_tensor(train[1]).long()
    _check_features(x, y)
    counts = torch.bincount(y)
    present = counts[counts > 0]
    if per_class and int(present.min()) < max(per_class):
        rarest = int(torch.nonzero(counts == present.min())[0])
        raise ReplearnError(f"label efficiency asks for {max(per_class)} labels per class but class {rarest} has only "
                            f"{int(present.min())} training images",
                            f"lower analysis.label_counts to at most {int(present.min())} or use more data")
    by_class = [torch.nonzero(y == c).squeeze(1) for c in range(len(counts)) if counts[c] > 0]
    rows = []
    for n in per_class:
        for draw in range(draws):
            g = torch.Generator().manual_seed(seed * 7919 + n * 104_729 + draw)
            pick = torch.cat([idx[torch.randperm(len(idx), generator=g)[:n]] for idx in by_class])
            result = linear_probe((x[pick], y[pick]), val, test, l2_grid, max_iter)
            rows.append({"per_class": n, "labels": len(pick), "draw": draw, "test_accuracy": result.test_accuracy,
                         "val_accuracy": result.val_accuracy, "chosen": result.chosen})
    return pd.DataFrame(rows)
