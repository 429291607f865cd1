"""Statistics across seeds and paired comparisons on the same test images."""
from __future__ import annotations

import math

import numpy as np


def mean_ci(values: np.ndarray | list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean; a single value gives a zero-width interval."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    m = float(v.mean())
    if len(v) == 1:
        return m, m, m
    from scipy import stats as sps

    half = float(sps.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return m, m - half, m + half


def format_mean_ci(values: np.ndarray | list[float], digits: int = 4) -> str:
    """'0.9123' for one value, '0.9123 ± 0.0021' (95% half-width) for several."""
    m, lo, hi = mean_ci(values)
    if math.isnan(m):
        return "–"
    if hi == lo:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {(hi - lo) / 2:.{digits}f}"


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int = 10_000, seed: int = 0,
                     level: float = 0.95) -> dict[str, float]:
    """Accuracy difference a − b on the same test items, with a bootstrap interval and two-sided p-value.

    ``correct_*`` are boolean arrays (items × …): extra leading dimensions (e.g. seeds) are averaged first.
    """
    a = np.asarray(correct_a, dtype=float).reshape(-1, np.shape(correct_a)[-1]).mean(0)
    b = np.asarray(correct_b, dtype=float).reshape(-1, np.shape(correct_b)[-1]).mean(0)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("paired_bootstrap needs two non-empty arrays over the same items")
    diff = a - b
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for start in range(0, n_boot, 1000):
        idx = rng.integers(0, len(diff), size=(min(1000, n_boot - start), len(diff)))
        boots[start:start + len(idx)] = diff[idx].mean(1)
    observed = float(diff.mean())
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    centred = boots - boots.mean()
    p = float((np.abs(centred) >= abs(observed)).mean())
    return {"difference": observed, "ci_low": float(lo), "ci_high": float(hi),
            "p_value": max(p, 1.0 / n_boot), "n_items": int(len(diff)), "n_boot": n_boot}


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """Exact McNemar test on paired correct/incorrect outcomes of two classifiers on the same items."""
    a = np.asarray(correct_a, dtype=bool).ravel()
    b = np.asarray(correct_b, dtype=bool).ravel()
    only_a = int((a & ~b).sum())
    only_b = int((~a & b).sum())
    n = only_a + only_b
    from scipy import stats as sps

    p = 1.0 if n == 0 else float(min(1.0, 2 * sps.binom.cdf(min(only_a, only_b), n, 0.5)))
    return {"only_a_correct": only_a, "only_b_correct": only_b, "p_value": p}
