"""Representation similarity: linear CKA, full-batch and by minibatch unbiased HSIC.

``linear_cka`` is the standard (biased) linear CKA of Kornblith et al. (2019), computed in feature space.
``minibatch_cka`` averages the unbiased HSIC estimator (Song et al. 2012) over minibatches, as in
Nguyen et al. (2021), so it needs only one batch's Gram matrices in memory; ``cka_matrix`` does that for
every layer pair of two models at once.
"""
from __future__ import annotations

import pandas as pd
import torch

from replearn.metrics import similarity_measures
from replearn.metrics.arrays import ArrayLike, as_feature_matrix
from replearn.errors import ReplearnError


def linear_cka(x: ArrayLike, y: ArrayLike) -> float:
    """Linear CKA between two representations of the same samples (rows); 1 = identical up to rotation
    and isotropic scaling, 0 = unrelated. Constant representations give 0 (``similarity_measures.linear_cka``,
    which never forms a units × units matrix)."""
    return similarity_measures.linear_cka(x, y)


class _Gram:
    """A minibatch Gram matrix with its diagonal zeroed and the sums the unbiased HSIC needs, computed once
    and shared by every pair it appears in."""

    def __init__(self, x: torch.Tensor) -> None:
        k = x @ x.T
        k.fill_diagonal_(0)
        self.k = k
        self.rows = k.sum(1)
        self.total = self.rows.sum()
        self.n = k.shape[0]


def _unbiased_hsic(a: _Gram, b: _Gram) -> torch.Tensor:
    """Unbiased HSIC estimator (Song et al. 2012) of two n×n Gram matrices, n ≥ 4."""
    n = a.n
    term = (a.k * b.k).sum() + a.total * b.total / ((n - 1) * (n - 2)) - 2.0 * (a.rows @ b.rows) / (n - 2)
    return term / (n * (n - 3))


def _batches(n: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    """A seeded partition of n samples into minibatches; a last batch of less than half the size is
    folded into the one before, so no batch is much smaller than the rest."""
    if batch_size < 4:
        raise ReplearnError(f"minibatch CKA needs batches of at least 4 samples, got {batch_size}",
                            "use batch_size >= 4 (e.g. 1000)")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if len(parts) > 1 and (len(parts[-1]) < batch_size / 2 or len(parts[-1]) < 4):
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
    return cka_pairs({"a": a, "b": b}, [("a", "b")], batch_size, seed)[("a", "b")]


def cka_pairs(models: dict[str, dict[str, ArrayLike]], pairs: list[tuple[str, str]], batch_size: int = 1000,
              seed: int = 0) -> dict[tuple[str, str], pd.DataFrame]:
    """Layer × layer minibatch CKA for each pair of models, with every model's Gram matrices computed once
    per minibatch. Each batch's HSIC is weighted by its size. ``models`` maps a model to its layers'
    features, all of the same samples in the same order."""
    used = sorted({m for pair in pairs for m in pair}, key=list(models).index)
    feats = {m: {k: as_feature_matrix(v, f"CKA's features of layer {k} of {m}", 2, torch.float64)
                 for k, v in models[m].items()} for m in used}
    sizes = {len(v) for layers in feats.values() for v in layers.values()}
    if len(sizes) != 1:
        raise ReplearnError(f"CKA needs the same samples in every layer, got row counts {sorted(sizes)}",
                            "pass features of the same images, in the same order")
    n = sizes.pop()
    cross = {pair: torch.zeros(len(feats[pair[0]]), len(feats[pair[1]]), dtype=torch.float64) for pair in pairs}
    own = {m: torch.zeros(len(feats[m]), dtype=torch.float64) for m in used}
    for idx in _batches(n, batch_size, seed):
        grams = {m: [_Gram(v[idx]) for v in layers.values()] for m, layers in feats.items()}
        weight = len(idx)
        for m, gs in grams.items():
            for i, g in enumerate(gs):
                own[m][i] += weight * _unbiased_hsic(g, g)
        for a, b in pairs:
            for i, ga in enumerate(grams[a]):
                for j, gb in enumerate(grams[b]):
                    cross[(a, b)][i, j] += weight * _unbiased_hsic(ga, gb)
    out = {}
    for (a, b), values in cross.items():
        denom = torch.sqrt(own[a].clamp_min(0)[:, None] * own[b].clamp_min(0)[None, :])
        cka = torch.where(denom > 0, values / denom.clamp_min(1e-300), torch.zeros_like(values))
        out[(a, b)] = pd.DataFrame(cka.numpy(), index=list(feats[a]), columns=list(feats[b]))
    return out
