"""Every interval of the report, the terminal summary and `replearn compare` comes from replearn.metrics.stats: gaps
include the variation between seeds, accuracies stay inside [0, 1], one seed shows no interval, ties show as ties."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from replearn.metrics.stats import format_mean_ci, gap_text, paired_gap, seed_interval, seeds_note


def outcomes(n: int, accuracy: float, rng: np.random.Generator) -> np.ndarray:
    return rng.random(n) < accuracy


def test_two_seeds_with_different_gaps_give_an_interval_containing_both():
    rng = np.random.default_rng(0)
    n = 2000
    base = [outcomes(n, 0.8, rng) for _ in range(2)]
    # seed 0: b wrong on 5% more images than a; seed 1: on 10% more
    b = [x.copy() for x in base]
    for s, share in enumerate((0.05, 0.10)):
        right = np.flatnonzero(b[s])
        b[s][rng.choice(right, int(share * n), replace=False)] = False
    gap = paired_gap(np.stack(base), np.stack(b), n_boot=4000)
    per_seed = gap["per_seed"]
    assert per_seed[0] == pytest.approx(0.05, abs=1e-9) and per_seed[1] == pytest.approx(0.10, abs=1e-9)
    assert gap["method"] == "bootstrap-2level"
    assert gap["ci_low"] < min(per_seed) and max(per_seed) < gap["ci_high"]
    # the older kind (seeds averaged, then images resampled) is narrower than the spread between seeds
    averaged = paired_gap(np.stack(base).mean(0), np.stack(b).mean(0), n_boot=4000)
    assert averaged["ci_high"] - averaged["ci_low"] < gap["ci_high"] - gap["ci_low"]
    # the per-seed t-interval is the textbook one (scipy), with 1 degree of freedom
    expected = sps.t.interval(0.95, 1, loc=np.mean(per_seed), scale=sps.sem(per_seed))
    assert (gap["seed_t"]["low"], gap["seed_t"]["high"]) == pytest.approx(expected)
    assert "two-level paired bootstrap over 2 seeds × 2000 test images" in gap_text(gap)


def test_two_level_bootstrap_matches_a_direct_resampling():
    """The multinomial shortcut draws the same distribution as resampling image indices one by one."""
    rng = np.random.default_rng(3)
    a = np.stack([outcomes(300, p, rng) for p in (0.9, 0.85, 0.8)])
    b = np.stack([outcomes(300, p, rng) for p in (0.8, 0.84, 0.7)])
    gap = paired_gap(a, b, n_boot=20_000)
    diff = a.astype(float) - b
    direct = np.empty(4000)
    for i in range(len(direct)):
        seeds = rng.integers(0, 3, 3)
        direct[i] = np.mean([diff[s][rng.integers(0, 300, 300)].mean() for s in seeds])
    lo, hi = np.quantile(direct, [0.025, 0.975])
    assert gap["ci_low"] == pytest.approx(lo, abs=0.01) and gap["ci_high"] == pytest.approx(hi, abs=0.01)


def test_accuracy_intervals_stay_inside_zero_and_one():
    for values in ([0.9712, 0.99, 0.86], [1.0, 0.999, 0.95], [0.0, 0.02], [0.5, 1.0]):
        iv = seed_interval(values, bounded=True)
        assert iv.method == "logit-t" and 0 <= iv.low <= iv.mean <= iv.high <= 1, values
    plain = seed_interval([0.9712, 0.99, 0.86])
    assert plain.high > 1  # the unbounded t-interval of the same numbers leaves [0, 1]: why accuracies use the logit
    assert "±" not in format_mean_ci([0.9712, 0.99, 0.86])
    with pytest.raises(ValueError):
        seed_interval([0.5, 1.2], bounded=True)


def test_one_seed_shows_no_interval():
    iv = seed_interval([0.93], bounded=True)
    assert iv.low is None and iv.high is None and not iv.has_interval
    assert format_mean_ci([0.93]) == "0.9300"
    gap = paired_gap(np.array([1, 1, 0, 1], bool), np.array([1, 0, 0, 1], bool), n_boot=500)
    assert gap["method"] == "bootstrap-images" and gap["seed_t"]["low"] is None
    assert "1 seed: test-set sampling only" in gap_text(gap)
    assert "repeat with --seeds 3" in seeds_note(1)


def test_tied_seeds_show_the_tie():
    iv = seed_interval([0.707, 0.707, 0.707], bounded=True)
    assert iv.tie and not iv.has_interval and format_mean_ci([0.707] * 3) == "0.7070 (3 seeds tie)"
    assert seed_interval([6.12, 6.12]).label() == "tie: all 2 seeds equal"
    same = np.array([[1, 0, 1, 1], [1, 1, 0, 1]], bool)
    gap = paired_gap(same, same.copy(), n_boot=500)
    assert gap["method"] == "tie" and "a tie" in gap_text(gap) and gap["p_value"] == 1.0


def test_fewer_than_three_seeds_are_flagged_in_words():
    assert "Only 2 seeds" in seeds_note(2) and seeds_note(3) is None


def test_positive_measures_get_a_log_scale_interval_that_stays_above_zero():
    """Two seeds' gradient norms 0.2 and 0.9: the plain t-interval reaches far below 0 (nonsense for a norm, and
    undrawable on the log axis the figures use); the log-scale one is the t-interval of the logs mapped back,
    above 0 and containing both seeds and the mean. A value of 0 falls back to the plain interval."""
    norms = [0.2, 0.9]
    plain = seed_interval(norms)
    assert plain.low < -3
    iv = seed_interval(norms, positive=True)
    logs = np.log(norms)
    low, high = np.exp(sps.t.interval(0.95, 1, loc=logs.mean(), scale=sps.sem(logs)))
    assert (iv.low, iv.high) == pytest.approx((low, high))
    assert 0 < iv.low < min(norms) and max(norms) < iv.high and iv.low < iv.mean < iv.high
    assert iv.mean == pytest.approx(0.55) and iv.label() == "log t-interval over 2 seeds"
    wide = seed_interval([1e-4, 1e-3, 1e-2], positive=True)
    assert 0 < wide.low < 1e-4 and wide.high > 1e-2
    assert seed_interval([0.0, 0.5], positive=True).method == "t"
    assert seed_interval([0.3, 0.3], positive=True).tie
