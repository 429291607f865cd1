"""End to end: a tiny run computes invariance, robustness, selectivity and feature visualisation for every
model, writes their tables, and the report shows their sections."""
import pandas as pd
import pytest


from helpers import interpretability_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return interpretability_run(tmp_path_factory)


def test_tables_cover_every_model_and_layer(run_dir):
    invariance = pd.read_csv(run_dir / "metrics" / "invariance.csv")
    assert set(invariance.model) == {"pixels", "random", "supervised", "autoencoder"}
    assert set(invariance[invariance.model == "supervised"].layer) == {"stage1", "stage2", "latent"}
    assert invariance.invariance.notna().all() and invariance.class_contrast.between(-1, 1).all()
    robustness = pd.read_csv(run_dir / "metrics" / "robustness.csv")
    assert set(robustness.model) == {"pixels", "random", "supervised", "autoencoder"}
    assert set(robustness.severity) == {0, 1, 3} and robustness.accuracy.between(0, 1).all()
    selectivity = pd.read_csv(run_dir / "metrics" / "selectivity.csv")
    assert set(selectivity.model) == {"random", "supervised", "autoencoder"}
    assert (selectivity.dead <= selectivity.units).all()
    featvis = pd.read_csv(run_dir / "metrics" / "feature_visualisation.csv")
    assert set(featvis.model) == {"random", "supervised", "autoencoder"}


def test_report_shows_the_sections(run_dir):
    html = (run_dir / "report.html").read_text()
    for title in ["Invariance and abstraction by depth", "Robustness to corruptions", "Unit selectivity and dead units",
                  "Feature visualisation and top-activating images"]:
        assert title in html
    for name in ["invariance", "robustness", "selectivity", "feature_visualisation"]:
        assert (run_dir / "figures" / f"{name}.png").is_file()
