"""Property tests: the analysis functions never crash or return NaN on valid but awkward inputs
(constant features, duplicated rows, n < d, one sample per class) and raise a clear error on invalid ones."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from replearn.metrics.dimension import participation_ratio, pca_dimension, twonn_dimension
from replearn.errors import ReplearnError
from replearn.metrics.probes import LinearProbe, knn_classifier, linear_probe
from replearn.metrics.similarity import linear_cka, minibatch_cka

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def awkward_features(draw, min_rows=2):
    n = draw(st.integers(min_rows, 30))
    d = draw(st.integers(1, 40))  # often n < d
    x = draw(arrays(np.float32, (n, d), elements=finite))
    if draw(st.booleans()):
        x[:, : max(1, d // 2)] = draw(finite)  # constant columns
    if draw(st.booleans()) and n > 2:
        x[n // 2:] = x[: n - n // 2]  # duplicated rows
    return x


@st.composite
def labelled(draw):
    x = draw(awkward_features(min_rows=2))
    k = draw(st.integers(2, min(5, len(x))))
    y = np.arange(len(x)) % k  # every class present; with n == k, a single sample per class
    return x, y


@SETTINGS
@given(labelled())
def test_linear_probe_is_finite_and_valid(data):
    x, y = data
    probe = LinearProbe(l2=1e-3, max_iter=50).fit(x, y)
    proba = probe.predict_proba(x).numpy()
    assert np.isfinite(proba).all() and np.allclose(proba.sum(1), 1, atol=1e-4)
    assert set(probe.predict(x).tolist()) <= set(y.tolist())
    result = linear_probe((x, y), (x, y), (x, y), [1e-4, 1e-1], max_iter=50)
    assert 0 <= result.test_accuracy <= 1 and not math.isnan(result.val_accuracy)


@SETTINGS
@given(labelled(), st.integers(1, 8))
def test_knn_is_valid(data, k):
    x, y = data
    preds = knn_classifier(x, y, x, k=k)
    assert preds.shape == (len(x),) and set(preds.tolist()) <= set(y.tolist())


@SETTINGS
@given(awkward_features(min_rows=4), st.integers(4, 12))
def test_cka_is_finite_and_bounded(x, batch):
    other = np.tanh(x[:, ::-1] * 0.01)
    for value in (linear_cka(x, other), linear_cka(x, x)):
        assert np.isfinite(value) and -1e-6 <= value <= 1 + 1e-6
    value = minibatch_cka(x, other, batch_size=batch)
    assert np.isfinite(value)


@SETTINGS
@given(awkward_features(min_rows=3))
def test_dimensions_are_finite(x):
    for value in (pca_dimension(x), participation_ratio(x), twonn_dimension(x)):
        assert np.isfinite(value) and value >= 0
    assert pca_dimension(x) <= min(x.shape)


@pytest.mark.parametrize("bad", [np.zeros((0, 3)), np.zeros(5), np.full((4, 2), np.inf)])
def test_invalid_inputs_raise_clear_errors(bad):
    with pytest.raises(ReplearnError):
        linear_cka(bad, bad)
    with pytest.raises(ReplearnError):
        twonn_dimension(bad)
    with pytest.raises(ReplearnError):
        LinearProbe().fit(bad, np.arange(len(bad)) % 2)
