"""`replearn compare`: the cross-run report of a sweep (and of plain run directories): figures against the
swept value, the tables beside them, and the config keys that differ found without a manifest."""
from __future__ import annotations

import re
import shutil

import pandas as pd
import pytest

from replearn.cli.main import main

from test_sweep import shared_local_sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A copy of the session's tiny two-run sweep (compare writes its report into the sweep it reads)."""
    copy = tmp_path_factory.mktemp("compare") / "sweep"
    shutil.copytree(shared_local_sweep(tmp_path_factory), copy)
    return copy


def test_compare_of_a_sweep_writes_one_self_contained_report_with_figures_and_tables(sweep, capsys):
    assert main(["compare", str(sweep)]) == 0
    out = sweep / "compare"
    assert capsys.readouterr().out.strip() == str(out / "compare.html")
    html = (out / "compare.html").read_text()
    assert "Content-Security-Policy" in html and not re.search(r"""(src|href)=["']https?://""", html)
    figures = sorted(p.stem for p in (out / "figures").glob("*.png"))
    assert {"probes", "best_layer", "by_layer", "gap", "cka_regimes", "cka_runs", "knn_runs", "procrustes_runs",
            "twonn", "grad_start", "grad_mean"} <= set(figures)
    assert ("grad_init" in figures) == any(sweep.rglob("grad_init_*.csv"))
    assert html.count("data:image/png;base64,") == len(figures)
    probes = pd.read_csv(out / "tables" / "probes.csv")
    assert list(probes["model.latent dim"].unique()) == [4, 6]
    assert {"supervised", "autoencoder", "raw pixels"} <= set(probes.model)
    best = pd.read_csv(out / "tables" / "best_layer.csv")
    chosen = {layer for text in best["best layer (by validation)"] for layer in text.split(", ")}
    assert chosen <= {"input", "stage1", "stage2", "latent"} and chosen
    gap = pd.read_csv(out / "tables" / "gap.csv")
    assert set(gap.comparison) == {"autoencoder − supervised"}
    tied = gap.interval.str.startswith("tie")
    assert (gap[tied]["accuracy difference"] == 0).all() and (gap[tied]["95% low"] == "–").all()  # no zero-width CI
    shown = gap[~tied].astype({"95% low": float, "95% high": float})
    assert (shown["95% low"] <= shown["accuracy difference"]).all()
    assert (shown["accuracy difference"] <= shown["95% high"]).all()
    assert set(gap[~tied].interval) <= {"bootstrap over images, 1 seed"}
    assert "95% low" not in probes.columns and set(probes.interval) == {"one seed, no interval"}  # one seed each
    cka_runs = pd.read_csv(out / "tables" / "cka_runs.csv")
    first = cka_runs[cka_runs["model.latent dim"] == 4]
    assert len(first) == 2 and (first["CKA with first value"] - 1).abs().max() < 1e-6  # each run against itself
    knn = pd.read_csv(out / "tables" / "knn_runs.csv")
    assert (knn[knn["model.latent dim"] == 4]["mutual kNN with first value"] == 1).all()
    assert (knn[knn["model.latent dim"] == 6]["mutual kNN with first value"] < 1).all()
    angle = pd.read_csv(out / "tables" / "procrustes_runs.csv")
    assert angle[angle["model.latent dim"] == 4]["angle to first value (rad)"].abs().max() < 1e-3
    runs = pd.read_csv(out / "tables" / "runs.csv")
    assert list(runs.state) == ["complete", "complete"] and "model.latent dim" in runs.columns
    assert main(["compare", str(sweep)]) == 0  # an earlier comparison is replaced


def test_compare_of_plain_run_directories_finds_the_keys_that_differ(sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    runs = [str(sweep / "latent_dim-4_seed0"), str(sweep / "latent_dim-6_seed0")]
    assert main(["compare", *runs]) == 0
    report = capsys.readouterr().out.strip()
    assert re.fullmatch(r"reports/compare-\d{8}-\d{6}/compare.html", report), report
    table = pd.read_csv(tmp_path / report.replace("compare.html", "tables/runs.csv"))
    assert list(table["model.latent dim"]) == [4, 6] and "x axis: model.latent_dim" in (tmp_path / report).read_text()


def fake_run(root, name, **config):
    """A run directory with only a config (enough for the layout), nested as config.yaml writes it."""
    import yaml

    path = root / name
    path.mkdir()
    nested: dict = {"name": "x", "train": {"seeds": [config.pop("seed", 0)]}}
    for key, value in config.items():
        section, option = key.split(".")
        nested.setdefault(section, {})[option] = value
    (path / "config.yaml").write_text(yaml.safe_dump(nested))
    (path / "replearn-run.json").write_text('{"format": 1}')
    return path


def test_layout_puts_the_first_swept_key_on_x_and_datasets_and_further_keys_side_by_side(tmp_path):
    from replearn.studies.runs import find_runs, layout

    paths = [fake_run(tmp_path, f"r{i}", **{"data.name": data, "model.latent_dim": dim, "train.lr": lr, "seed": seed})
             for i, (data, dim, lr, seed) in enumerate(
                 [(d, dim, lr, s) for d in ("digits", "mnist") for dim in (32, 8) for lr in (0.1, 0.01) for s in (0, 1)])]
    runs, swept, notes = find_runs(paths)
    lay = layout(runs, swept)
    assert lay.x_key == "model.latent_dim" and lay.numeric and lay.x_values == [8, 32]
    assert lay.panel_keys == ["data.name", "train.lr"] and len(lay.panels) == 4
    assert all(len(group) == 2 for group in lay.groups.values())  # the two seeds of each point, pooled
    assert all(len({r.config["data.name"] for r in group}) == 1 for group in lay.groups.values())
