"""Statistics across seeds and paired comparisons on the same test images: every interval that the run report,
the terminal summary and ``replearn compare`` show comes from here, and each one names what it covers.

- A value measured once per seed (an accuracy, a CKA, a dimension): ``seed_interval``. One seed gives no
  interval; seeds that all give the same value are a tie (shown as such, not as a zero-width interval); a
  quantity bounded to [0, 1] (accuracy, CKA) gets a Student-t interval on the logit scale mapped back, so it
  cannot leave [0, 1]; a positive quantity spanning orders of magnitude (a gradient norm, a dimension) one on the
  log scale, so it stays above 0; any other quantity a plain Student-t interval. All cover the variation between seeds
  (training randomness, and the labelled subset where it follows the seed), not test-set sampling.
- The gap between two classifiers on the same test images: ``paired_gap``. With several seeds a two-level paired
  bootstrap (resample the seeds, then the test images within each drawn seed), which covers both the variation
  between seeds and test-set sampling; with one seed a paired bootstrap over the test images, which covers
  test-set sampling only. Its ``seed_t`` field is the t-interval of the per-seed gaps (``seed_interval``), the
  interval to use when the seeds are the only variation (a fixed test set taken as the population).
- Fewer than 3 seeds is flagged in words (``seeds_note``): two draws say little about the spread between seeds.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

LEVEL = 0.95
LOGIT_EPS = 1e-6  # a bounded value of exactly 0 or 1 sits this far inside before the logit

METHODS = {
    "none": "one seed: no interval",
    "tie": "every seed gives the same value: a tie, no spread to show",
    "t": "Student-t 95% interval over seeds",
    "logit-t": "Student-t 95% interval over seeds on the logit scale, mapped back (stays inside [0, 1])",
    "bootstrap-images": "paired bootstrap over the test images (one seed: test-set sampling only)",
    "bootstrap-2level": "two-level paired bootstrap: seeds, then test images within each seed",
}


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean over seeds with its 95% interval, or none (one seed), or a tie (all seeds equal)."""

    mean: float
    low: float | None
    high: float | None
    n: int
    method: str

    @property
    def tie(self) -> bool:
        return self.method == "tie"

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None and self.method not in ("none", "tie")

    def text(self, digits: int = 4, scale: float = 1.0, signed: bool = False) -> str:
        """'0.9123' (one seed), '0.9123 (3 seeds tie)', '0.9123 [0.9001, 0.9240]' (95% interval)."""
        if math.isnan(self.mean):
            return "–"
        fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
        value = fmt.format(scale * self.mean)
        if self.tie:
            return f"{value} ({self.n} seeds tie)"
        if self.low is None or self.high is None or not self.has_interval:
            return value
        return f"{value} [{fmt.format(scale * self.low)}, {fmt.format(scale * self.high)}]"

    def label(self) -> str:
        """The method in words, with the number of seeds."""
        seeds = f"{self.n} seed{'s' if self.n != 1 else ''}"
        return {"none": "one seed, no interval", "tie": f"tie: all {seeds} equal",
                "t": f"t-interval over {seeds}", "logit-t": f"logit t-interval over {seeds}",
                "log-t": f"log t-interval over {seeds}"}.get(self.method, self.method)


def _finite(values: np.ndarray | list[float]) -> np.ndarray:
    v = np.asarray(values, dtype=float).ravel()
    return v[np.isfinite(v)]


def _t_half(v: np.ndarray, level: float) -> float:
    from scipy.special import stdtrit  # what scipy.stats.t.ppf computes, without scipy.stats' 0.5 s import

    return float(stdtrit(len(v) - 1, 0.5 + level / 2) * v.std(ddof=1) / math.sqrt(len(v)))


def seed_interval(values: np.ndarray | list[float], bounded: bool = False, level: float = LEVEL,
                  positive: bool = False) -> Interval:
    """Mean over seeds with a 95% interval: none for one seed, a tie when every seed agrees, a logit-scale
    t-interval for a quantity in [0, 1] (``bounded``: accuracies, CKA), a log-scale t-interval for a quantity
    that is positive and spans orders of magnitude (``positive``: gradient norms, dimensions; the plain t-interval
    of two seeds' norms 0.2 and 0.9 reaches −3.9), else a plain t-interval. A ``positive`` measure with a value of
    0 or below gets the plain t-interval."""
    v = _finite(values)
    if len(v) == 0:
        return Interval(math.nan, None, None, 0, "none")
    m = float(v.mean())
    if len(v) == 1:
        return Interval(m, None, None, 1, "none")
    if np.all(v == v[0]):
        return Interval(m, m, m, len(v), "tie")
    if bounded:
        if v.min() < 0 or v.max() > 1:
            raise ValueError("seed_interval(bounded=True) needs values inside [0, 1]")
        c = np.clip(v, LOGIT_EPS, 1 - LOGIT_EPS)
        z = np.log(c / (1 - c))
        centre, half = float(z.mean()), _t_half(z, level)
        lo, hi = (1 / (1 + math.exp(-x)) for x in (centre - half, centre + half))
        return Interval(m, min(lo, m), max(hi, m), len(v), "logit-t")
    if positive and v.min() > 0:
        z = np.log(v)
        centre, half = float(z.mean()), _t_half(z, level)
        return Interval(m, min(math.exp(centre - half), m), max(math.exp(centre + half), m), len(v), "log-t")
    half = _t_half(v, level)
    return Interval(m, m - half, m + half, len(v), "t")


def seeds_note(n: int) -> str | None:
    """A sentence when there are too few seeds for the interval to say much (fewer than 3), else None."""
    if n >= 3:
        return None
    if n <= 1:
        return ("One seed: no interval covers the variation between seeds (differences of a few tenths of a point "
                "between regimes are within it); repeat with --seeds 3.")
    return ("Only 2 seeds: an interval from two draws is a rough guide (the t-interval is very wide, the bootstrap "
            "too narrow); repeat with --seeds 3 or more before claiming a difference.")


def mean_ci(values: np.ndarray | list[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean; one value (or a tie) gives low = high = mean.
    Prefer ``seed_interval``, which says which of these it is."""
    iv = seed_interval(values, level=level)
    if iv.low is None or iv.high is None:
        return iv.mean, iv.mean, iv.mean
    return iv.mean, iv.low, iv.high


def format_mean_ci(values: np.ndarray | list[float], digits: int = 4, bounded: bool = True) -> str:
    """A per-seed value as text: '0.9123' for one seed, '0.9123 (3 seeds tie)', '0.9123 [0.9001, 0.9240]'
    (95% interval over seeds; ``bounded``: on the logit scale, inside [0, 1])."""
    return seed_interval(values, bounded=bounded).text(digits)


def _image_means(diff: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` bootstrap means of ``diff`` (one seed's per-image differences), resampling its images.
    Differences take few distinct values (−1, 0, 1 for correct/incorrect), so a multinomial draw over the
    distinct values is the same resampling at O(1) cost per draw."""
    values, counts = np.unique(diff, return_counts=True)
    if len(values) <= 16:
        draws = rng.multinomial(len(diff), counts / counts.sum(), size=size)
        return draws @ values / len(diff)
    out = np.empty(size)
    for start in range(0, size, 256):
        idx = rng.integers(0, len(diff), size=(min(256, size - start), len(diff)))
        out[start:start + len(idx)] = diff[idx].mean(1)
    return out


def paired_gap(correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int = 10_000, seed: int = 0,
               level: float = LEVEL) -> dict:
    """Accuracy difference a − b on the same test images, mean over seeds, with a 95% interval and two-sided
    p-value. ``correct_*``: (items,) or (seeds, items) outcomes. One seed: paired bootstrap over the images;
    several: two-level paired bootstrap (seeds drawn with replacement, then images within each drawn seed).
    ``seed_t`` is the t-interval of the per-seed gaps; ``tie`` is true when a and b agree on every image."""
    a = np.asarray(correct_a, dtype=float)
    b = np.asarray(correct_b, dtype=float)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("paired_gap needs two non-empty arrays over the same items")
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    diff = a - b
    seeds, items = diff.shape
    rng = np.random.default_rng(seed)
    per_seed = diff.mean(1)
    observed = float(per_seed.mean())
    if seeds == 1:  # resampled index by index, in blocks of 1000 (the draws of earlier versions, kept)
        boots = np.empty(n_boot)
        for start in range(0, n_boot, 1000):
            idx = rng.integers(0, items, size=(min(1000, n_boot - start), items))
            boots[start:start + len(idx)] = diff[0][idx].mean(1)
        method = "bootstrap-images"
    else:
        drawn = rng.integers(0, seeds, size=(n_boot, seeds))
        means = np.empty((n_boot, seeds))
        for s in range(seeds):
            where = drawn == s
            means[where] = _image_means(diff[s], int(where.sum()), rng)
        boots = means.mean(1)
        method = "bootstrap-2level"
    tie = bool(np.all(diff == 0))
    lo, hi = (observed, observed) if tie else np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    centred = boots - boots.mean()
    p = 1.0 if tie else float((np.abs(centred) >= abs(observed)).mean())
    t = seed_interval(per_seed, level=level)
    return {"difference": observed, "ci_low": float(lo), "ci_high": float(hi),
            "p_value": max(p, 1.0 / n_boot), "n_items": int(items), "n_boot": n_boot, "seeds": int(seeds),
            "method": "tie" if tie else method, "per_seed": per_seed.tolist(),
            "seed_t": {"low": t.low, "high": t.high, "method": t.method}}


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int = 10_000, seed: int = 0,
                     level: float = LEVEL) -> dict:
    """The same as ``paired_gap`` (kept for callers of the older name): with several seeds the bootstrap is
    two-level, so the interval includes the variation between seeds."""
    return paired_gap(correct_a, correct_b, n_boot=n_boot, seed=seed, level=level)


def gap_text(gap: dict, scale: float = 100.0, unit: str = " pp", digits: int = 2) -> str:
    """A gap with its interval and what the interval covers, e.g. '+1.20 pp, 95% CI [+0.40, +2.10] pp
    (two-level paired bootstrap over 3 seeds × 360 test images)'."""
    fmt = f"{{:+.{digits}f}}"
    value = fmt.format(scale * gap["difference"]) + unit
    if gap["method"] == "tie":
        return (f"{value}: a tie (both right and wrong on the same images, all {gap['n_items']} test images of "
                "every seed)")
    how = (f"two-level paired bootstrap over {gap['seeds']} seeds × {gap['n_items']} test images"
           if gap["method"] == "bootstrap-2level" else
           f"paired bootstrap over {gap['n_items']} test images, 1 seed: test-set sampling only")
    return (f"{value}, 95% CI [{fmt.format(scale * gap['ci_low'])}, {fmt.format(scale * gap['ci_high'])}]{unit} "
            f"({how})")


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """Exact McNemar test on paired correct/incorrect outcomes of two classifiers on the same items."""
    a = np.asarray(correct_a, dtype=bool).ravel()
    b = np.asarray(correct_b, dtype=bool).ravel()
    only_a = int((a & ~b).sum())
    only_b = int((~a & b).sum())
    n = only_a + only_b
    from scipy.special import bdtr  # the binomial CDF (scipy.stats.binom.cdf to 1e-11) without scipy.stats

    p = 1.0 if n == 0 else float(min(1.0, 2 * bdtr(min(only_a, only_b), n, 0.5)))
    return {"only_a_correct": only_a, "only_b_correct": only_b, "p_value": p}
