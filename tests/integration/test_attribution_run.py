"""End to end: a tiny run computes the attribution analyses (attributions, sanity, faithfulness) by default,
writes their tables and arrays, and its report shows their sections."""
from __future__ import annotations

import pandas as pd

from helpers import interpretability_run


def test_tiny_run_writes_attribution_tables_and_report_sections(tmp_path_factory):
    out = interpretability_run(tmp_path_factory)  # a one-epoch blob run of every analysis, shared
    models = {"pixels", "random", "supervised", "supervised:head", "autoencoder"}

    attributions = pd.read_csv(out / "metrics" / "attributions.csv")
    assert set(attributions.model) == models
    assert set(attributions.method) == {"integrated_gradients", "smoothgrad", "gradient_x_input", "gradcam"}
    assert "gradcam" not in set(attributions[attributions.model == "pixels"].method)  # no stage to read
    ig = attributions[attributions.method == "integrated_gradients"]
    assert ig.completeness_delta.notna().all()

    sanity = pd.read_csv(out / "metrics" / "sanity.csv")
    assert set(sanity.model) == models - {"pixels", "random"} and set(sanity.test) == {"cascading", "independent"}
    assert sanity[["spearman_abs", "spearman", "ssim", "hog"]].abs().le(1.0 + 1e-9).all().all()
    assert set(sanity[sanity.model == "supervised"].layer) == {"probe", "latent", "stage2", "stage1"}
    null = pd.read_csv(out / "metrics" / "sanity_null.csv")
    assert set(null.kind) == {"trained_vs_random", "random_vs_random"} and set(null.draw) == {0, 1, 2}
    assert null[null.method == "integrated_gradients"].spearman_input_free.notna().all()
    assert null[null.method == "smoothgrad"].spearman_input_free.isna().all()

    faithfulness = pd.read_csv(out / "metrics" / "faithfulness.csv")
    assert set(faithfulness.model) == models and "random" in set(faithfulness.method)
    assert faithfulness.deletion_auc.between(0, 1).all() and faithfulness.insertion_auc.between(0, 1).all()
    assert faithfulness[faithfulness.method != "random"].infidelity.notna().all()
    assert (faithfulness[faithfulness.method != "random"].sensitivity_floor < 1e-6).all()  # SmoothGrad's included

    assert (out / "artifacts" / "attributions_seed0.npz").is_file()
    assert (out / "artifacts" / "faithfulness_seed0.npz").is_file()
    html = (out / "report.html").read_text()
    for title in ("Attributions: what each model looks at", "Sanity checks: do the maps depend on what was learned?",
                  "Faithfulness: deletion, insertion, infidelity, sensitivity"):
        assert title in html, title
    assert "random vs random (floor)" in html and "necessary, not sufficient" in html
    for figure in ("attributions", "sanity", "faithfulness"):
        assert (out / "figures" / f"{figure}.png").is_file()
