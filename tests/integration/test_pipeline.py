"""End to end through the CLI: run → artifacts → report re-render → probe a saved checkpoint."""
import contextlib
import io
import json
import re
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from replearn.cli.main import main
from replearn.rundir.io import read_json

from helpers import needs_fashion_mnist, tiny_config, REPO_ROOT


def write_config(tmp_path, raw):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from helpers import make_blob_images
    import numpy as np

    tmp = tmp_path_factory.mktemp("run")
    train_x, train_y = make_blob_images(120, seed=1)
    test_x, test_y = make_blob_images(60, seed=2)
    npz = tmp / "blobs.npz"
    np.savez(npz, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)
    raw = tiny_config(npz)
    raw["analysis"]["projection_points"] = 40
    raw["analysis"]["figure_formats"] = ["png", "svg", "pdf"]
    raw["analysis"]["draw_ahead"] = "always"  # the sections are drawn while the later analyses compute
    out = tmp / "out"
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        assert main(["run", str(write_config(tmp, raw)), "--out", str(out)]) == 0
    (tmp / "run.log").write_text(stderr.getvalue())
    return out


def test_run_writes_every_artifact(tiny_run):
    for rel in ["config.yaml", "environment.json", "dataset.json", "status.json", "report.html",
                "metrics/probes.csv", "metrics/models.csv", "metrics/summary.json", "metrics/projection.csv",
                "metrics/train_supervised_seed0.csv", "metrics/train_autoencoder_seed0.csv",
                "checkpoints/supervised_seed0.pt", "checkpoints/autoencoder_seed0.pt", "checkpoints/init_seed0.pt",
                "artifacts/reconstructions_autoencoder_seed0.npz", "models.json", "artifacts/projection_seed0.npz"]:
        assert (tiny_run / rel).is_file(), rel
    assert json.loads((tiny_run / "status.json").read_text())["state"] == "complete"
    assert not list(tiny_run.rglob("*.state.pt")), "resume state is removed once a regime finishes"


def test_probe_table_has_models_layers_and_baselines(tiny_run):
    probes = pd.read_csv(tiny_run / "metrics" / "probes.csv")
    assert set(probes.model) == {"pixels", "pca", "random", "supervised", "autoencoder"}
    assert set(probes.probe) == {"linear", "knn"}
    sup = probes[(probes.model == "supervised")]
    assert set(sup.layer) == {"stage1", "stage2", "latent"}
    assert probes.test_accuracy.between(0, 1).all()
    # the blobs are easy: the trained supervised latent must beat chance by far
    assert sup[(sup.layer == "latent") & (sup.probe == "linear")].test_accuracy.iloc[0] > 0.8


def test_report_is_self_contained_and_rerenders_identically(tiny_run, tmp_path):
    html = (tiny_run / "report.html").read_text()
    assert "Content-Security-Policy" in html
    assert not re.search(r"""(src|href)=["']https?://""", html), "report must not load from the network"
    for title in ["Training curves", "Accuracy by depth", "UMAP", "reconstructions"]:
        assert title in html
    assert html.count("data:image/png;base64,") >= 4
    out = tmp_path / "again.html"
    assert main(["report", str(tiny_run), "--out", str(out)]) == 0
    strip = lambda s: re.sub(r"rendered [^<]*", "", s)  # noqa: E731
    assert strip(out.read_text()) == strip(html)


def test_the_run_drew_its_sections_in_the_second_process(tiny_run):
    """The run's report (compared with a re-render above) was drawn by the second process, most of it while the
    later analyses computed: the run's own process draws only sections whose drawing read a file that changed
    afterwards and was not yet drawn again."""
    log = (tiny_run.parent / "run.log").read_text()
    used, total = map(int, re.search(r"the sections of (\d+) of (\d+) analyses were drawn by the second process",
                                     log).groups())
    assert total >= 10 and used >= total - 3


def test_every_report_figure_and_table_is_written_for_papers(tiny_run):
    html = (tiny_run / "report.html").read_text()
    pngs = sorted(p.stem for p in (tiny_run / "figures").glob("*.png"))
    assert len(pngs) == html.count("data:image/png;base64,") >= 8
    for stem in pngs:
        svg = (tiny_run / "figures" / f"{stem}.svg").read_text()
        assert svg.lstrip().startswith("<?xml") and "</svg>" in svg, stem
        pdf = (tiny_run / "figures" / f"{stem}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF") and b"%%EOF" in pdf[-64:], stem
        assert b"/FontFile2" in pdf or b"/Font" not in pdf, f"{stem}.pdf: fonts are embedded TrueType"
    for csv in (tiny_run / "tables").glob("*.csv"):
        frame = pd.read_csv(csv)
        tex = csv.with_suffix(".tex").read_text()
        assert tex.count(r"\\") == len(frame) + 1, csv.name  # header + one line per row
        assert "_" not in frame.columns[0] or r"\_" in tex
    assert {p.stem for p in (tiny_run / "tables").glob("*.csv")} >= {"probes", "models"}


def test_unwritable_figure_folder_is_named_and_the_report_still_renders(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    shutil.rmtree(run / "figures")
    (run / "figures").write_text("a file where the folder should be")
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "Files for papers were not written" in html and "figures/ could not be written" in html
    assert html.count("data:image/png;base64,") >= 8
    assert (run / "figures").read_text() == "a file where the folder should be"


def test_probe_cli_reproduces_run(tiny_run, capsys):
    ckpt = tiny_run / "checkpoints" / "autoencoder_seed0.pt"
    out = tiny_run / "probe.json"
    assert main(["probe", str(ckpt), "--dataset", "npz", "--layer", "latent", "--json", str(out)]) == 0
    result = json.loads(out.read_text())["results"][0]
    probes = pd.read_csv(tiny_run / "metrics" / "probes.csv")
    run_acc = probes.query("model == 'autoencoder' and layer == 'latent' and probe == 'linear'").test_accuracy.iloc[0]
    assert abs(result["linear_test_accuracy"] - run_acc) <= 0.005
    assert "latent" in capsys.readouterr().out


def test_existing_run_dir_is_not_overwritten(tiny_run, capsys):
    before = (tiny_run / "metrics" / "probes.csv").read_bytes()
    assert main(["run", "--out", str(tiny_run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "already exists" in err and "--force" in err and len(err.splitlines()) == 1
    assert (tiny_run / "metrics" / "probes.csv").read_bytes() == before


@needs_fashion_mnist
def test_fashion_mnist_subset_end_to_end(tmp_path):
    """Real data: 3k Fashion-MNIST images, both regimes learn above the raw-pixel chance level."""
    raw = {"name": "fm-subset", "data": {"name": "fashion-mnist", "train_subset": 3000, "test_subset": 1000},
           "model": {"channels": [8, 16], "latent_dim": 32},
           "train": {"epochs": 2, "batch_size": 64, "probe_train_images": 500},
           "analysis": {"projection_points": 300, "max_stage_features": 256, "probe_l2_grid": [1e-4, 1e-2],
                        "label_counts": [1, 10], "label_draws": 2, "analysis_points": 500,
                        # what this test checks is learning on real data: the looks inside the models (their own
                        # tests run them) and the vector figure copies are left out
                        "skip": ["attributions", "sanity", "faithfulness", "invariance", "robustness", "units"],
                        "figure_formats": ["png"]}}
    out = tmp_path / "fm"
    assert main(["run", str(write_config(tmp_path, raw)), "--out", str(out), "--quiet"]) == 0
    models = pd.read_csv(out / "metrics" / "models.csv")
    assert models.query("model == 'supervised'").test_accuracy.iloc[0] > 0.7
    probes = pd.read_csv(out / "metrics" / "probes.csv").query("probe == 'linear'")
    pixels = probes.query("model == 'pixels'").test_accuracy.iloc[0]
    assert 0.7 < pixels < 0.9
    ae = probes.query("model == 'autoencoder' and layer == 'latent'").test_accuracy.iloc[0]
    assert ae > 0.6


def test_several_seeds_give_intervals_noise_floor_and_paired_test(tmp_path):
    from helpers import make_blob_images
    import numpy as np

    x, y = make_blob_images(120, seed=1)
    tx, ty = make_blob_images(60, seed=2)
    np.savez(tmp_path / "b.npz", train_x=x, train_y=y, test_x=tx, test_y=ty)
    raw = tiny_config(tmp_path / "b.npz", epochs=2, probe_every_epoch=False)
    out = tmp_path / "seeds"
    assert main(["run", str(write_config(tmp_path, raw)), "--out", str(out), "--seeds", "2", "--quiet"]) == 0
    cka = pd.read_csv(out / "metrics" / "cka.csv")
    floor = cka[cka.pair == "supervised seed 0 vs seed 1"]
    assert len(floor) and floor[floor.layer_a == floor.layer_b].cka.min() > 0.3  # same images, different seeds
    comparisons = json.loads((out / "metrics" / "comparison.json").read_text())
    comparison = next(c for c in comparisons if (c["a"], c["b"]) == ("supervised", "autoencoder"))
    assert comparison["seeds"] == 2 and len(comparison["mcnemar_p_per_seed"]) == 2
    html = (out / "report.html").read_text()
    assert "Supervised minus autoencoder" in html and "two-level paired bootstrap over 2 seeds" in html
    assert "Only 2 seeds" in html and "±" not in html.split("Supervised minus autoencoder")[1].split(".")[0]


def test_every_declared_dependency_is_imported_by_a_default_run(tmp_path_factory):
    """`pip install replearn` pulls nothing that a run does not use (optional extras aside): each dependency is
    imported by a run of every default analysis (the shared interpretability run, made in a fresh process that
    records what it imported), or (scikit-learn) holds the bundled digits the default run reads, or
    (scikit-image) computes what that run's small images do not need."""
    from pathlib import Path

    from helpers import interpretability_run

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    declared = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~ \[]", d, maxsplit=1)[0].lower() for d in declared}
    import_name = {"scikit-learn": "sklearn", "pyyaml": "yaml", "scikit-image": "skimage"}
    run = interpretability_run(tmp_path_factory)
    assert read_json(run / "status.json")["state"] == "complete"
    loaded = set((run.parent / "interpretability.modules").read_text().split())
    assert {"replearn", "torch", "captum"} <= loaded  # the list is of the run's own process
    # scikit-learn is not imported (1.2 s) but holds the bundled digits, which the default run reads from its folder
    import importlib.util

    sklearn_folder = Path(importlib.util.find_spec("sklearn").submodule_search_locations[0])
    if (sklearn_folder / "datasets" / "data" / "digits.csv.gz").is_file():
        loaded.add("sklearn")
    # scikit-image computes the HOG descriptors of large maps (cells over STACKED_HOG_MAX_CELL pixels, images of
    # about 100 px and more) for the sanity checks; the blob run's maps are small: one such stack, in a fresh process
    probe = ("import sys, numpy as np; from replearn.interpret.sanity import STACKED_HOG_MAX_CELL, hog_descriptors; "
             "side = 4 * (STACKED_HOG_MAX_CELL + 1); hog_descriptors(np.random.rand(2, side, side)); "
             "print('skimage' in sys.modules)")
    large = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    if large.stdout.split()[-1] == "True":
        loaded.add("skimage")
    unused = sorted(n for n in names if import_name.get(n, n) not in loaded)
    assert not unused, f"declared but never imported by a run: {unused}"
    assert "umap" not in loaded and "seaborn" not in loaded


def test_files_the_second_process_could_not_write_are_named_in_the_report(tiny_run, tmp_path):
    """The SVG and PDF copies the second process writes are reported as a run's own would be (here: handed over)."""
    from replearn.report.html import render_report

    out = render_report(tiny_run, out=tmp_path / "r.html", not_written=["figures/ could not be written (No space)"])
    assert "figures/ could not be written (No space)" in out.read_text()
