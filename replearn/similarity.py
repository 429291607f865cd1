"""Representation similarity: linear CKA, full-batch and by minibatch unbiased HSIC.

``linear_cka`` is the standard (biased) linear CKA of Kornblith et al. (2019), computed in feature space.
``minibatch_cka`` averages the unbiased HSIC estimator (Song et al. 2012) over minibatches, as in
Nguyen et al. (2021), so it needs only one batch's Gram matrices in memory; ``cka_matrix`` does that for
every layer pair of two models at once.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .errors import ReplearnError

ArrayLike = np.ndarray | torch.Tensor


def _features(x: ArrayLike, what: str) -> torch.Tensor:
    t = torch.as_tensor(x).double()
    if t.ndim != 2 or t.shape[0] < 2 or t.shape[1] < 1:
        raise ReplearnError(f"CKA needs {what} as a 2-D array with at least 2 rows, got shape {tuple(t.shape)}",
                            "pass one row of features per sample")
    if not torch.isfinite(t).all():
        raise ReplearnError(f"CKA got NaN or infinite values in {what}", "check the features")
    return t.reshape(len(t), -1)


def linear_cka(x: ArrayLike, y: ArrayLike) -> float:
    """Linear CKA between two representations of the same samples (rows); 1 = identical up to rotation
    and isotropic scaling, 0 = unrelated. Constant representations give 0."""
    a, b = _features(x, "x"), _features(y, "y")
    if len(a) != len(b):
        raise ReplearnError(f"CKA needs the same samples in both representations ({len(a)} vs {len(b)} rows)",
                            "pass features of the same images, in the same order")
    a = a - a.mean(0)
    b = b - b.mean(0)
    cross = torch.linalg.matrix_norm(b.T @ a) ** 2
    norm = torch.linalg.matrix_norm(a.T @ a) * torch.linalg.matrix_norm(b.T @ b)
    return float(cross / norm) if norm > 0 else 0.0


def _unbiased_hsic(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC estimator (Song et al. 2012) of two n×n Gram matrices, n ≥ 4."""
    n = k.shape[0]
    k = k.clone()
    l = l.clone()
    k.fill_diagonal_(0)
    l.fill_diagonal_(0)
    ones_k = k.sum(1)
    ones_l = l.sum(1)
    term = (k * l).sum() + ones_k.sum() * ones_l.sum() / ((n - 1) * (n - 2)) - 2.0 * (ones_k @ ones_l) / (n - 2)
    return term / (n * (n - 3))


def _batches(n: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    if batch_size < 4:
        raise ReplearnError(f"minibatch CKA needs batches of at least 4 samples, got {batch_size}",
                            "use batch_size >= 4 (e.g. 1000)")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if len(parts) > 1 and len(parts[-1]) < 4:
        last = parts.pop()
        parts[-1] = torch.cat([parts[-1], last])
    if len(parts[0]) < 4:
        raise ReplearnError(f"minibatch CKA needs at least 4 samples, got {n}", "pass more samples")
    return parts


def minibatch_cka(x: ArrayLike, y: ArrayLike, batch_size: int = 1000, seed: int = 0) -> float:
    """Linear CKA from unbiased HSIC accumulated over minibatches (memory O(batch²), not O(n²))."""
    return float(cka_matrix({"x": x}, {"y": y}, batch_size, seed).iloc[0, 0])


def cka_matrix(a: dict[str, ArrayLike], b: dict[str, ArrayLike], batch_size: int = 1000, seed: int = 0
               ) -> pd.DataFrame:
    """Minibatch linear CKA between every layer of ``a`` (rows) and every layer of ``b`` (columns).

    Both dicts map layer names to features of the same samples in the same order.
    """
    fa = {k: _features(v, f"layer {k}") for k, v in a.items()}
    fb = {k: _features(v, f"layer {k}") for k, v in b.items()}
    sizes = {len(v) for v in [*fa.values(), *fb.values()]}
    if len(sizes) != 1:
        raise ReplearnError(f"CKA needs the same samples in every layer, got row counts {sorted(sizes)}",
                            "pass features of the same images, in the same order")
    n = sizes.pop()
    cross = torch.zeros(len(fa), len(fb), dtype=torch.float64)
    self_a = torch.zeros(len(fa), dtype=torch.float64)
    self_b = torch.zeros(len(fb), dtype=torch.float64)
    for idx in _batches(n, batch_size, seed):
        grams_a = [v[idx] @ v[idx].T for v in fa.values()]
        grams_b = [v[idx] @ v[idx].T for v in fb.values()]
        for i, ka in enumerate(grams_a):
            self_a[i] += _unbiased_hsic(ka, ka)
            for j, kb in enumerate(grams_b):
                cross[i, j] += _unbiased_hsic(ka, kb)
        for j, kb in enumerate(grams_b):
            self_b[j] += _unbiased_hsic(kb, kb)
    denom = torch.sqrt(self_a.clamp_min(0)[:, None] * self_b.clamp_min(0)[None, :])
    cka = torch.where(denom > 0, cross / denom.clamp_min(1e-300), torch.zeros_like(cross))
    return pd.DataFrame(cka.numpy(), index=list(fa), columns=list(fb))
