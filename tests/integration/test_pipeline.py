"""End to end through the CLI: run → artifacts → report re-render → probe a saved checkpoint."""
import contextlib
import io
import json
import re

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
