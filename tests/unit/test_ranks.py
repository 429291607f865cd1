"""Ranks and Spearman's ρ equal SciPy's (ties averaged, NaN propagated, constant input NaN)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import rankdata as scipy_rankdata
from scipy.stats import spearmanr

from replearn.metrics.ranks import rankdata, spearman


def test_rankdata_equals_scipy_along_every_axis_with_ties_and_nans():
    rng = np.random.RandomState(0)
    for trial in range(150):
        shape = tuple(rng.randint(1, 7, size=rng.randint(1, 4)))
        a = rng.randint(0, 4, size=shape).astype(float) if trial % 2 else rng.randn(*shape)
        if trial % 9 == 0:
            a.flat[0] = np.nan
        for axis in [None, *range(a.ndim)]:
            np.testing.assert_array_equal(rankdata(a, axis=axis), scipy_rankdata(a, axis=axis))


def test_spearman_equals_scipy_and_is_nan_for_a_constant_vector():
    rng = np.random.RandomState(1)
    for _ in range(100):
        n = rng.randint(3, 40)
        a, b = rng.randint(0, 5, n).astype(float), rng.randn(n)
        assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isnan(spearmanr(np.ones(5), np.arange(5)).statistic)
    assert np.isnan(spearman(np.ones(5), np.arange(5)))
