"""train.labels_per_class: regimes trained with labels, and every probe, see only a class-balanced, seeded
subset of the labelled training images (the same for every regime and seed); label-free regimes see all."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from replearn import Experiment
from replearn.analyses import RunArtifacts
from replearn.analyses.protocol import Protocol
from replearn.config.sections import config_from_dict
from replearn.data.label_budget import CycledImages, cycled_index, labelled_subset
from replearn.errors import ConfigError
from replearn.regimes import make_regime

from conftest import tiny_config

BUDGET = 4


def recording(name: str) -> tuple:
    """A built-in regime whose loss also records the training images (and labels) of every batch."""
    regime = make_regime(name)
    seen: dict[str, list] = {"x": [], "y": []}
    loss = regime.loss

    def recorded(encoder, head, x, y, generator):
        if not encoder.training:  # validation and test evaluation call the loss too
            return loss(encoder, head, x, y, generator)
        seen["x"].append(x.detach().cpu().contiguous().flatten(1))
        if y is not None:
            seen["y"].append(y.cpu())
        return loss(encoder, head, x, y, generator)

    regime.loss = recorded  # the real loss still trains the model; only a copy of its input is kept
    return regime, seen


def rows_of(images: torch.Tensor, data_x: torch.Tensor) -> set[int]:
    """Which training images (row numbers) a set of batches contains, matched by their pixels."""
    index = {tuple(np.round(row.numpy(), 4)): i for i, row in enumerate(data_x.flatten(1))}
    return {index[tuple(np.round(row.numpy(), 4))] for row in images}


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory):
    from conftest import make_blob_images
    tmp = tmp_path_factory.mktemp("budget")
    train_x, train_y = make_blob_images(96, seed=1)
    test_x, test_y = make_blob_images(30, seed=2)
    npz = tmp / "blobs.npz"
    np.savez(npz, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)
    raw = tiny_config(npz, labels_per_class=BUDGET, epochs=1)
    raw["analysis"]["label_counts"] = [1, 2, 5]
    experiment = Experiment(config_from_dict(raw), out=tmp / "out", progress=False)
    experiment.prepare()
    supervised, sup_seen = recording("supervised")
    autoencoder, ae_seen = recording("autoencoder")
    experiment.initial_encoder(0)
    experiment.train(supervised, 0)
    experiment.train(autoencoder, 0)
    return experiment, sup_seen, ae_seen


def test_subset_is_class_balanced_seeded_and_refuses_a_budget_beyond_the_rarest_class():
    y = np.array([0] * 10 + [1] * 7 + [2] * 12)
    subset = labelled_subset(y, 5, seed=3)
    assert np.bincount(y[subset]).tolist() == [5, 5, 5]
    assert np.array_equal(subset, labelled_subset(y, 5, seed=3))
    assert not np.array_equal(subset, labelled_subset(y, 5, seed=4))
    with pytest.raises(ConfigError, match="class 'b' has only 7"):
        labelled_subset(y, 8, seed=0, class_names=["a", "b", "c"])


def test_cycled_images_repeat_the_subset_to_the_full_length():
    base = torch.arange(10.0).view(10, 1, 1, 1)
    images = CycledImages(base, cycled_index(np.array([2, 5, 7]), 8))
    assert len(images) == 8 and images.shape == (8, 1, 1, 1)
    assert images[torch.arange(8)].flatten().tolist() == [2, 5, 7, 2, 5, 7, 2, 5]
    assert float(images[4]) == 5.0 and images[:2].flatten().tolist() == [2, 5]


def test_supervised_regime_sees_only_the_budget_per_class(budget_run):
    experiment, seen, _ = budget_run
    data = experiment.data
    rows = rows_of(torch.cat(seen["x"]), data.train_x)
    assert rows == set(experiment.labelled.tolist())
    assert np.bincount(data.train_y.numpy()[sorted(rows)]).tolist() == [BUDGET] * data.num_classes
    labels = torch.cat(seen["y"])
    assert len(labels) == len(data.train_y)  # cycled: as many images per epoch as the label-free regimes
    assert torch.bincount(labels).tolist() == torch.bincount(data.train_y[torch.from_numpy(
        np.resize(experiment.labelled, len(data.train_y)))]).tolist()


def test_label_free_regime_sees_every_training_image_without_labels(budget_run):
    experiment, _, seen = budget_run
    assert not seen["y"]
    assert rows_of(torch.cat(seen["x"]), experiment.data.train_x) == set(range(len(experiment.data.train_y)))


def test_the_same_subset_for_every_regime_and_seed_and_probes_fit_on_it(budget_run, tmp_path):
    experiment, _, _ = budget_run
    again = Experiment(experiment.config, ["train.seeds=[0,1]", "train.regimes=[supervised,autoencoder,joint]"],
                       out=tmp_path / "again", progress=False)
    again.load_data()
    assert np.array_equal(again.labelled, experiment.labelled)
    analysed = experiment.analysed
    assert torch.equal(analysed.train_y, experiment.data.train_y[torch.from_numpy(experiment.labelled)])
    assert torch.equal(analysed.train_x, experiment.data.train_x[torch.from_numpy(experiment.labelled)])
    assert len(analysed.val_y) == len(experiment.data.val_y)


def test_probes_and_the_protocol_state_the_budget(budget_run):
    experiment, _, _ = budget_run
    experiment.plugins.analyses = [a for a in experiment.plugins.analyses  # only what this test reads: quick
                                   if a.name in ("probes", "label_efficiency")]
    experiment.extract(0)
    tables = experiment.analyse(0)
    probes = tables["probes"]
    assert set(probes.model) >= {"pixels", "supervised", "autoencoder"}
    eff = tables["label_efficiency"]
    assert set(eff.per_class) == {1, 2, -1}  # counts at or above the budget are dropped; 'all' is the budget
    assert set(eff[eff.per_class == -1].labels) == {BUDGET * experiment.data.num_classes}
    (section,) = Protocol().sections(RunArtifacts(experiment.run_dir.path))
    budget_line = next(b for b in section.bullets if b.startswith("Label budget"))
    assert f"{BUDGET} labelled training images per class ({BUDGET * experiment.data.num_classes} in all" in budget_line
    assert f"all {len(experiment.data.train_y)} training images without labels" in budget_line
    images = {row.model: row for row in protocol_frame(section).itertuples()}
    assert sorted(int(r.images) for r in images.values()) == [BUDGET * experiment.data.num_classes,
                                                         len(experiment.data.train_y)]
    assert len({r.steps for r in images.values()}) == 1  # the budget's regime cycles: equal steps


def protocol_frame(section) -> pd.DataFrame:
    """The protocol section's table (as the template gets it) as a frame."""
    frame = pd.DataFrame(section.table["rows"], columns=section.table["columns"])
    return frame.rename(columns={"training images": "images", "optimisation steps": "steps"})


def test_a_budget_beyond_the_rarest_class_is_refused_before_the_run_directory_exists(blob_npz, tmp_path):
    raw = tiny_config(blob_npz, labels_per_class=1000)
    with pytest.raises(ConfigError, match="train.labels_per_class=1000"):
        Experiment(config_from_dict(raw), out=tmp_path / "never", progress=False).prepare()
    assert not (tmp_path / "never").exists()
