import numpy as np
import pytest
from scipy import stats as sps

from replearn.metrics.stats import format_mean_ci, mcnemar, mean_ci, paired_bootstrap


def test_mean_ci_matches_t_interval():
    v = [0.90, 0.91, 0.93]
    m, lo, hi = mean_ci(v)
    expected = sps.t.interval(0.95, 2, loc=np.mean(v), scale=sps.sem(v))
    assert m == pytest.approx(np.mean(v)) and (lo, hi) == pytest.approx(expected)
    assert mean_ci([0.5]) == (0.5, 0.5, 0.5)
    assert format_mean_ci([0.5]) == "0.5000" and "[" in format_mean_ci(v) and "±" not in format_mean_ci(v)


def test_mcnemar_matches_binomial_test():
    rng = np.random.RandomState(0)
    a = rng.rand(500) < 0.9
    b = a.copy()
    flip = rng.choice(500, 40, replace=False)
    b[flip] = ~b[flip]
    result = mcnemar(a, b)
    only_a = int((a & ~b).sum())
    only_b = int((~a & b).sum())
    assert result["p_value"] == pytest.approx(sps.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def test_paired_bootstrap_detects_real_gap_and_not_noise():
    rng = np.random.RandomState(1)
    a = rng.rand(2000) < 0.9
    b = rng.rand(2000) < 0.8
    strong = paired_bootstrap(a, b, n_boot=2000)
    assert strong["ci_low"] > 0 and strong["p_value"] < 0.01
    same = paired_bootstrap(a, a.copy(), n_boot=2000)
    assert same["difference"] == 0 and same["p_value"] == 1.0


def test_table_columns_keep_text_and_one_number_format_per_column():
    import pandas as pd

    from replearn.analyses.render import format_frame

    frame = pd.DataFrame({"model": pd.Series(["supervised", "autoencoder", None], dtype="str"),
                          "seeds": [3, 3, 1], "test_accuracy": [0.98, 0.9573, float("nan")],
                          "dim": [256.0, 64.0, 32.0], "train_seconds": [1.75761, 4.2, 10.0],
                          "trained_with_labels": [True, False, True]})
    shown = format_frame(frame)
    assert list(shown["model"]) == ["supervised", "autoencoder", "–"]
    assert list(shown["seeds"]) == ["3", "3", "1"]
    assert list(shown["test accuracy"]) == ["0.980", "0.957", "–"]
    assert list(shown["features"]) == ["256", "64", "32"]
    assert list(shown["training time (s)"]) == ["1.8", "4.2", "10.0"]
    assert list(shown["trained with labels"]) == ["yes", "no", "yes"]


def test_run_clock_weighs_regimes_by_step_cost_and_then_uses_measured_analysis_time():
    from replearn.runtime.log import RunClock

    clock = RunClock(seeds=2)
    clock.plan("cheap", steps=200, step_cost=1.0)   # 100 steps per seed
    clock.plan("dear", steps=200, step_cost=3.0)
    assert clock.eta() is None
    clock.begin("cheap")
    clock.trained(100, 10.0)                         # 0.1 s per unit of cost
    training_left = (100 * 1 + 200 * 3) * 0.1
    analysis_guess = RunClock.ANALYSIS_SHARE * 0.1 * 800 / 2
    assert abs(clock.eta() - (training_left + 2 * analysis_guess)) < 1e-9
    clock.begin("dear")
    clock.trained(100, 30.0)
    clock.analysed(7.0)                              # the first seed's analyses, measured
    assert abs(clock.eta() - ((100 + 300) * 0.1 + 7.0)) < 1e-9
    clock.skip("dear", 100)                          # loaded from a finished checkpoint
    assert abs(clock.eta() - (100 * 0.1 + 7.0)) < 1e-9
