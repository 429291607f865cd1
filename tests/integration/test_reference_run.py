"""Behaviour is unchanged by refactoring: at a fixed thread setting, the default digits run writes the same
metrics as the stored run made at commit 348a773 (before the Experiment API and the trainer's callbacks).

Timing columns differ from run to run and are left out; everything else must match (floats to 1e-9)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TEST_DATA

REFERENCE = TEST_DATA / "digits_reference_348a773"
TIMING = {"train_seconds", "train_images_per_s", "seconds", "wall_seconds"}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "digits"
    subprocess.run([sys.executable, "-m", "replearn.cli", "run", "--threads", "1", "--out", str(out), "--quiet"],
                   check=True, stdout=subprocess.DEVNULL, timeout=600)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("table", sorted(p.stem for p in REFERENCE.glob("*.csv")))
def test_default_digits_run_writes_the_stored_metrics(digits_run, table):
    expected = pd.read_csv(REFERENCE / f"{table}.csv")
    got = pd.read_csv(digits_run / "metrics" / f"{table}.csv")
    assert list(got.columns) == list(expected.columns)
    assert len(got) == len(expected)
    for column in expected.columns:
        if column in TIMING:
            continue
        a, b = expected[column], got[column]
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            np.testing.assert_allclose(b.to_numpy(float), a.to_numpy(float), rtol=1e-9, atol=1e-12,
                                       equal_nan=True, err_msg=f"{table}.{column}")
        else:
            assert a.astype(str).tolist() == b.astype(str).tolist(), f"{table}.{column}"


@pytest.mark.slow
def test_default_digits_run_writes_the_stored_comparison(digits_run):
    expected = json.loads((REFERENCE / "comparison.json").read_text())
    got = json.loads((digits_run / "metrics" / "comparison.json").read_text())
    assert _close(got, expected)


def _close(got, expected) -> bool:
    if isinstance(expected, dict):
        assert set(got) == set(expected)
        return all(_close(got[k], v) for k, v in expected.items())
    if isinstance(expected, list):
        assert len(got) == len(expected)
        return all(_close(g, e) for g, e in zip(got, expected))
    if isinstance(expected, float):
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
        return True
    assert got == expected
    return True
