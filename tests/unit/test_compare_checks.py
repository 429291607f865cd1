"""`replearn compare` accepts the CKA values a run writes: the unbiased HSIC estimator is not bounded for a layer
that all but collapsed (a depth-study run wrote −6.1·10⁻⁶ and 1.014 and was refused as damaged), so the table check
asks only for finite numbers, and the interval over seeds of such values is the plain t-interval, named as such."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from replearn.errors import RunDirError
from replearn.metrics.similarity import minibatch_cka
from replearn.studies import compare
from replearn.studies.checks import TABLES, check_table


def _cka_table(value: float) -> pd.DataFrame:
    return pd.DataFrame({"pair": ["a vs b"], "layer_a": ["latent"], "layer_b": ["latent"], "cka": [value]})


def test_the_cka_values_a_depth_study_run_wrote_are_a_valid_table():
    """The two values of metrics/cka.csv of the 8-convolution plain-CNN run (seed 0) that compare refused."""
    rng = np.random.RandomState(0)
    unrelated = minibatch_cka(rng.randn(400, 8), rng.randn(400, 8), batch_size=100)
    for value in (unrelated, -6.11129e-06, 1.01426, 0.0, 1.0):
        check_table(Path("metrics/cka.csv"), _cka_table(value), TABLES["cka"])


def test_an_infinite_cka_is_refused():
    with pytest.raises(RunDirError, match="holds inf, not a finite number"):
        check_table(Path("metrics/cka.csv"), _cka_table(float("inf")), TABLES["cka"])


def test_a_bounded_measure_outside_zero_one_gets_the_plain_interval():
    inside = compare.interval_columns([0.2, 0.4, 0.3], bounded=True)
    assert inside["interval"] == "logit t-interval over 3 seeds"
    outside = compare.interval_columns([0.98, 1.01426, 0.99], bounded=True)
    assert outside["interval"] == "t-interval over 3 seeds" and outside["low"] < outside["mean"] < outside["high"]
