"""Ranks with ties averaged, and Spearman's rank correlation, in NumPy: what SciPy's ``rankdata`` and
``spearmanr`` compute, without importing ``scipy.stats`` (0.3–0.7 s per process) for the sanity checks, the
rulers and RSA."""

from __future__ import annotations

import numpy as np


def rankdata(a: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Ranks from 1, ties given the mean of the ranks they span (SciPy's ``method="average"``), along ``axis``
    (None: of the flattened array); a slice holding a NaN ranks as all NaN (SciPy's ``nan_policy="propagate"``)."""
    values = np.asarray(a)
    if axis is None:
        values = values.ravel()
        axis = 0
    moved = np.moveaxis(values, axis, -1)
    n = moved.shape[-1]
    if n == 0:
        return np.moveaxis(np.zeros(moved.shape, dtype=np.float64), -1, axis)
    order = np.argsort(moved, axis=-1, kind="mergesort")
    ordered = np.take_along_axis(moved, order, -1)
    position = np.arange(n)
    starts_group = np.ones(ordered.shape, dtype=bool)
    starts_group[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    ends_group = np.ones(ordered.shape, dtype=bool)
    ends_group[..., :-1] = starts_group[..., 1:]
    first = np.maximum.accumulate(np.where(starts_group, position, 0), axis=-1)
    last = np.flip(np.minimum.accumulate(np.flip(np.where(ends_group, position, n - 1), -1), axis=-1), -1)
    ranks = np.empty(ordered.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, -1)
    if np.issubdtype(moved.dtype, np.floating):
        ranks[np.isnan(moved).any(-1)] = np.nan
    return np.moveaxis(ranks, -1, axis)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's ρ of two equally long vectors: Pearson's correlation of their ranks; NaN when either is
    constant (as SciPy, which also warns)."""
    ra, rb = rankdata(np.asarray(a, dtype=np.float64)), rankdata(np.asarray(b, dtype=np.float64))
    if len(ra) != len(rb):
        raise ValueError(f"spearman needs vectors of one length, got {len(ra)} and {len(rb)}")
    ra, rb = ra - ra.mean(), rb - rb.mean()
    norm = float(np.sqrt((ra @ ra) * (rb @ rb)))
    return float(ra @ rb / norm) if norm > 0 else float("nan")
