"""`replearn compare` on plain run folders (issue 28): report-only settings and options of analyses a run did
not run are not differences, runs that differ in one key draw one line over it, panels have short labels and
a figure's height is bounded."""
import numpy as np
import pandas as pd
import yaml

from replearn.studies.plots import MAX_PANELS, series_panels
from replearn.studies.runs import find_runs, layout

ANALYSIS = {"figure_formats": ["png", "svg", "pdf"], "skip": [], "projection_points": 5000, "tensorboard": False}


def plain_run(root, name, epochs, model=None, **analysis):
    """A run directory as `replearn run` leaves it, config only (what the layout reads)."""
    path = root / name
    path.mkdir()
    config = {"name": name, "data": {"name": "digits", "root": f"/data/{name}"},
              "model": model or {"name": "conv", "kwargs": {}, "channels": [16, 32, 64], "latent_dim": 32},
              "train": {"seeds": [0], "epochs": epochs, "lr": 0.003, "probe_every_epoch": epochs > 1},
              "analysis": {**ANALYSIS, **analysis},
              "analyses": {"attributions": {"ig_steps": 16, "methods": ["gradcam"]}}}
    if "attributions" in analysis.get("skip", []):
        config["analyses"] = {}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    (path / "replearn-run.json").write_text('{"format": 1}')
    return path


def test_three_heterogeneous_plain_runs_give_one_panel_per_real_difference(tmp_path):
    a = plain_run(tmp_path, "a", 1, figure_formats=["png"], skip=["projection", "attributions"],
                  projection_points=100)
    b = plain_run(tmp_path, "b", 5, tensorboard=True)
    c = plain_run(tmp_path, "c", 5, model={"name": "my_models.nets:TinyNet", "kwargs": {"width": 8},
                                           "latent_dim": 32, "layers": ["block1"]})
    runs, swept, _ = find_runs([a, b, c])
    lay = layout(runs, swept)
    # epochs and the encoder differ; figure formats, TensorBoard, the skip list, the data's location, the
    # per-epoch probe and the options of projection (skipped by a) are not differences
    assert lay.varying == ["model.name", "train.epochs"] or lay.varying == ["train.epochs", "model.name"]
    assert lay.x_key == "train.epochs" and lay.numeric and lay.x_values == [1, 5]
    assert lay.panel_keys == ["model.name"]
    assert sorted(lay.panels) == ["name=TinyNet", "name=conv"]  # short labels: the import path's last name
    conv = sorted(x for (panel, x) in lay.groups if panel == "name=conv")
    assert conv == ["1", "5"]  # the two conv runs: one line over epochs


def test_options_of_an_analysis_one_run_skipped_are_not_a_difference(tmp_path):
    a = plain_run(tmp_path, "a", 2, skip=["projection"], projection_points=10)
    b = plain_run(tmp_path, "b", 2, projection_points=5000)
    c = plain_run(tmp_path, "c", 2, projection_points=200)
    assert layout(*find_runs([a, b])[:2]).varying == []
    assert layout(*find_runs([a, b, c])[:2]).varying == ["analysis.projection_points"]  # b and c both ran it


def test_a_figure_with_many_panels_stays_a_few_screens_tall():
    rows = [{"panel": f"regime {p}", "series": "latent", "color": "#1f77b4", "x": x, "mean": 0.5 + 0.01 * x,
             "low": 0.45, "high": 0.55} for p in range(30) for x in (1, 2, 3)]
    fig = series_panels(pd.DataFrame(rows), "train.epochs", "accuracy", [(1, "1"), (2, "2"), (3, "3")])
    drawn = [ax for ax in fig.axes if ax.get_visible()]
    assert len(drawn) == MAX_PANELS and fig.get_figheight() * 110 < 1400
    assert np.isfinite(fig.get_figwidth())
