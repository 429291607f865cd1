"""The rulers analysis on a tiny two-seed run (every measure), read back from its files and cross-checked against
the measures recomputed from the saved latents; and `replearn similarity` on that run directory."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from replearn import Experiment
from replearn.analyses.rulers import deletion_sensitivity, identification
from replearn.cli.main import main
from replearn.config.sections import config_from_dict
from replearn.metrics.similarity_measures import FUNCTIONAL, MEASURES

from helpers import tiny_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rulers")
    from helpers import make_blob_images
    x, y = make_blob_images(96, seed=1)
    tx, ty = make_blob_images(30, seed=2)
    np.savez(tmp / "blobs.npz", train_x=x, train_y=y, test_x=tx, test_y=ty)
    raw = tiny_config(tmp / "blobs.npz", seeds=[0, 1])
    raw["analyses"] = {"rulers": {"measures": list(MEASURES), "keep_components": [1, 2, 4]}}
    Experiment(config_from_dict(raw), out=tmp / "run", progress=False).run()
    return tmp / "run"


def test_pair_values_equal_the_measures_of_the_saved_latents(run_dir):
    pairs = pd.read_csv(run_dir / "metrics" / "similarity_measures.csv")
    assert set(pairs.measure) == set(MEASURES) | set(FUNCTIONAL)
    for seed in (0, 1):
        saved = np.load(run_dir / "artifacts" / f"cka_features_seed{seed}.npz")
        row = pairs[(pairs.seed == seed) & (pairs.model_a == "supervised") & (pairs.model_b == "autoencoder")
                    & (pairs.layer == "final")].set_index("measure").value
        for name, m in MEASURES.items():
            # the analysed test images are the saved points; the rulers use all of them (fewer than 500)
            assert row[name] == pytest.approx(m.fn(saved["supervised"], saved["autoencoder"]), abs=1e-5), name
        predictions = np.load(run_dir / "artifacts" / f"predictions_seed{seed}.npz")
        assert row["disagreement"] == pytest.approx(np.mean(predictions["supervised"] != predictions["autoencoder"]))


def test_layer_identification_covers_every_layer_pair_and_the_deletion_test_is_monotone(run_dir):
    seeds = pd.read_csv(run_dir / "metrics" / "similarity_seeds.csv")
    layers = sorted(set(seeds.layer_a))
    assert "input" not in layers and len(layers) >= 3
    assert len(seeds) == len(layers) ** 2 * len(MEASURES) * 2  # two regimes, one seed pair
    table = identification(seeds)
    assert ((0 <= table.identified) & (table.identified <= 1)).all() and (table.cases == 2 * 2 * len(layers)).all()
    deletion = pd.read_csv(run_dir / "metrics" / "similarity_deletion.csv")
    cka = deletion[deletion.measure == "linear_cka"].sort_values("kept")
    for _, one in cka.groupby(["model", "seed"]):
        assert one.value.is_monotonic_increasing  # keeping more top components: closer to the full latent


def test_report_shows_the_measures_their_agreement_and_their_tests(run_dir):
    html = (run_dir / "report.html").read_text()
    for anchor in ('id="rulers"', 'id="rulers-agreement"', 'id="rulers-tests"', "layer identification",
                   "floor: same layer, other seed", "ρ(dissimilarity, probe drop)", "error consistency"):
        assert anchor in html, anchor
    assert (run_dir / "tables" / "similarity_measures_agreement.csv").is_file()


def test_similarity_of_a_run_with_itself(run_dir, tmp_path, capsys):
    assert main(["similarity", str(run_dir), str(run_dir), "--measures", "linear_cka,procrustes",
                 "--out", str(tmp_path / "s")]) == 0
    values = pd.read_csv(tmp_path / "s" / "tables" / "similarity.csv")
    same = values[values.model_a == values.model_b].set_index(["seed", "model_a", "measure"]).value
    assert np.allclose(same.xs("linear_cka", level="measure"), 1.0)
    assert np.allclose(same.xs("procrustes", level="measure"), 0.0, atol=1e-6)
    functional = pd.read_csv(tmp_path / "s" / "tables" / "functional.csv")
    assert (functional[functional.model_a == functional.model_b].disagreement == 0).all()
    assert "similarity.html" in capsys.readouterr().out


def test_identification_follows_each_measures_direction():
    layers = ["s1", "s2", "s3"]
    rows = []
    for la in layers:
        for lb in layers:
            distance = abs(layers.index(la) - layers.index(lb)) + 0.1
            rows += [{"model": "m", "seed_a": 0, "seed_b": 1, "layer_a": la, "layer_b": lb, "measure": "procrustes",
                      "value": distance},
                     {"model": "m", "seed_a": 0, "seed_b": 1, "layer_a": la, "layer_b": lb, "measure": "linear_cka",
                      "value": 1 / distance if la != "s3" else 0.5}]
    table = identification(pd.DataFrame(rows)).set_index("measure")
    assert table.loc["procrustes", "identified"] == 1.0  # a distance: the smallest value is the match
    assert table.loc["linear_cka", "identified"] == pytest.approx(4 / 6)  # s3 is nobody's best match
    assert table.loc["procrustes", "floor_mean"] == pytest.approx(0.1)


def test_deletion_sensitivity_is_positive_when_dissimilarity_tracks_the_probe():
    frame = pd.DataFrame({"measure": ["linear_cka"] * 4 + ["procrustes"] * 4 + ["svcca"] * 4, "kept": [1, 2, 4, 8] * 3,
                          "value": [0.2, 0.5, 0.8, 0.9, 1.2, 0.8, 0.5, 0.1] + [1.0, 1 - 1e-9, 1.0, 1.0],
                          "probe_drop": [0.3, 0.2, 0.1, 0.0] * 3})
    rho = deletion_sensitivity(frame).set_index("measure").deletion_rho
    assert rho["linear_cka"] == pytest.approx(1.0) and rho["procrustes"] == pytest.approx(1.0)
    assert np.isnan(rho["svcca"])  # a constant measure is blind to the deletion, not correlated by rounding noise


def test_measures_that_need_more_images_are_left_empty_not_fatal():
    from replearn.analyses.rulers import _measure_all
    x = np.random.default_rng(0).normal(size=(8, 5))
    values = _measure_all(["linear_cka", "mutual_knn", "cknna"], x, x + 0.1)
    assert values["linear_cka"] > 0.9 and np.isnan(values["mutual_knn"]) and np.isnan(values["cknna"])
