"""TensorBoard (--tensorboard / analysis.tensorboard): TensorBoard's own readers get back the per-step and
per-epoch scalars, the weight histograms and the embedding projector's config, tensors, metadata and sprite
of a tiny run; without the package the run is refused in one line."""
from __future__ import annotations

import builtins
import csv

import numpy as np
import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (HISTOGRAMS, SCALARS, TENSORS,  # noqa: E402
                                                                     EventAccumulator)
from tensorboard.plugins.projector import projector_config_pb2  # noqa: E402
from google.protobuf import text_format  # noqa: E402
from PIL import Image  # noqa: E402

from replearn import Experiment  # noqa: E402
from replearn.cli.main import main  # noqa: E402
from replearn.config.sections import config_from_dict  # noqa: E402
from replearn.errors import ConfigError  # noqa: E402
from replearn.training.tensorboard import summary_writer_class  # noqa: E402

from helpers import make_blob_images, tiny_config  # noqa: E402

EPOCHS = 2


@pytest.fixture(scope="module")
def tb_run(tmp_path_factory):
    """A tiny run with TensorBoard on, through training, extraction and the projector's export (the report's
    other analyses and its rendering are left out: they do not touch TensorBoard's files)."""
    tmp = tmp_path_factory.mktemp("tb")
    train_x, train_y = make_blob_images(80, seed=1)
    test_x, test_y = make_blob_images(30, seed=2)
    np.savez(tmp / "blobs.npz", train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)
    raw = tiny_config(tmp / "blobs.npz", epochs=EPOCHS)
    raw["analysis"].update(analysis_points=20, tensorboard=True)
    experiment = Experiment(config_from_dict(raw), out=tmp / "out", progress=False)
    experiment.plugins.analyses = [a for a in experiment.plugins.analyses if a.name == "tensorboard_export"]
    experiment.prepare()
    for regime in experiment.regimes:
        experiment.train(regime, 0)
    experiment.extract(0)
    experiment.analyse(0)
    return experiment.run_dir.path


def accumulator(path):
    events = EventAccumulator(str(path), size_guidance={SCALARS: 0, HISTOGRAMS: 0, TENSORS: 0})
    events.Reload()
    return events


def test_scalars_per_step_and_per_epoch_are_read_back(tb_run):
    events = accumulator(tb_run / "tensorboard" / "supervised_seed0")
    tags = events.Tags()["scalars"]
    steps = events.Scalars("step/loss")
    assert len(steps) == len({s.step for s in steps}) and len(steps) >= EPOCHS * 2
    assert [s.step for s in steps] == list(range(len(steps)))
    assert {"step_grad_norm/stage1", "step_grad_norm/stage2", "step_grad_norm/latent", "step/lr"} <= set(tags)
    assert all(np.isfinite(s.value) and s.value > 0 for s in events.Scalars("step_grad_norm/stage1"))
    epoch_loss = events.Scalars("epoch/train_loss")
    assert [s.step for s in epoch_loss] == [1, 2]
    import pandas as pd
    csv_rows = pd.read_csv(tb_run / "metrics" / "train_supervised_seed0.csv")
    np.testing.assert_allclose([s.value for s in epoch_loss], csv_rows.train_loss, rtol=1e-6)
    assert "epoch/val_accuracy" in tags and "epoch_grad_norm/grad_norm_stage1" in tags
    # the epoch's mean gradient norm is the mean of its per-step norms
    per_step = [s.value for s in events.Scalars("step_grad_norm/stage1")]
    half = len(per_step) // EPOCHS
    assert events.Scalars("epoch_grad_norm/grad_norm_stage1")[0].value == pytest.approx(np.mean(per_step[:half]),
                                                                                        rel=1e-5)


def test_weight_histograms_per_epoch_are_read_back(tb_run):
    events = accumulator(tb_run / "tensorboard" / "autoencoder_seed0")
    tags = events.Tags()["histograms"]
    assert "weights/encoder.stages.stage1.0.weight" in tags and "weights/encoder.latent.weight" in tags
    assert any(t.startswith("weights/head.") for t in tags)
    hist = events.Histograms("weights/encoder.latent.weight")
    assert [h.step for h in hist] == [1, 2]
    assert hist[0].histogram_value.num == 8 * 2 * 2 * 6  # every weight of the latent layer (8 channels, 2×2, 6)


def test_projector_config_tensors_metadata_and_sprite_are_read_back(tb_run):
    for model in ("random", "supervised", "autoencoder"):
        folder = tb_run / "tensorboard" / f"{model}_seed0"
        config = text_format.Parse((folder / "projector_config.pbtxt").read_text(),
                                   projector_config_pb2.ProjectorConfig())
        (embedding,) = config.embeddings
        assert embedding.tensor_name.startswith(f"{model}_latent")
        tensors = np.loadtxt(folder / embedding.tensor_path, delimiter="\t", ndmin=2)
        assert tensors.shape == (20, 6) and np.isfinite(tensors).all()
        with open(folder / embedding.metadata_path) as f:
            labels = [row[0] for row in csv.reader(f, delimiter="\t")]
        assert len(labels) == 20 and set(labels) <= {"0", "1", "2"} and len(set(labels)) == 3
        sprite = Image.open(folder / embedding.sprite.image_path)
        assert list(embedding.sprite.single_image_dim) == [8, 8]
        assert sprite.size[0] >= 8 * 5 and sprite.getextrema() != ((0, 0),) * len(sprite.getbands())


def test_without_tensorboard_the_run_is_refused_in_one_line(monkeypatch, tmp_path, blob_npz, capsys):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ConfigError, match=r"pip install 'replearn\[tensorboard\]'"):
        summary_writer_class()
    import yaml
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(tiny_config(blob_npz)))
    assert main(["run", str(tmp_path / "exp.yaml"), "--out", str(tmp_path / "run"), "--tensorboard"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "replearn[tensorboard]" in err[0]
    assert not (tmp_path / "run").exists()
