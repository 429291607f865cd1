"""train.labels_per_class: regimes trained with labels, and every probe, see only a class-balanced, seeded
subset of the labelled training images (the same for every regime of a seed, a new draw per seed, nested across
budgets); label-free regimes see all; probes choose their settings inside the budget."""
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

from helpers import tiny_config

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
    from helpers import make_blob_images
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


def test_subsets_are_nested_across_budgets_and_follow_the_seed():
    y = np.repeat(np.arange(4), 30)
    for seed in (0, 1, 7):
        smaller = [set(labelled_subset(y, n, seed).tolist()) for n in (1, 2, 5, 10, 30)]
        assert all(a <= b for a, b in zip(smaller, smaller[1:])), seed
    assert set(labelled_subset(y, 5, 0).tolist()) != set(labelled_subset(y, 5, 1).tolist())


def test_the_same_subset_for_every_regime_a_new_draw_per_seed_and_probes_fit_on_it(budget_run, tmp_path):
    experiment, _, _ = budget_run
    again = Experiment(experiment.config, ["train.seeds=[0,1]", "train.regimes=[supervised,autoencoder,joint]"],
                       out=tmp_path / "again", progress=False)
    again.load_data()
    assert np.array_equal(again.labelled_for(0), experiment.labelled)
    assert not np.array_equal(again.labelled_for(1), again.labelled_for(0))  # the draw follows the seed
    supervised, joint = again.plugins.regime("supervised"), again.plugins.regime("joint")
    for seed in (0, 1):
        assert torch.equal(again.training_data(supervised, seed).train_y, again.training_data(joint, seed).train_y)
    analysed = experiment.analysed_for(0)
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


def test_under_a_budget_of_5_per_class_on_digits_no_probe_fit_or_choice_touches_more_than_50_labels(tmp_path,
                                                                                                    monkeypatch):
    """Every call of the probes (linear, kNN, label efficiency, and their cross-validation folds) is recorded with
    the labels it may read to fit and to choose (training labels, plus validation labels when it is given any);
    none may exceed the budget's 10 × 5, and the training labels are the seed's budget."""
    import threading

    import replearn.analyses.probes as probe_analysis
    import replearn.metrics.probes as probes

    calls: list[tuple[str, int, list[int]]] = []
    lock = threading.Lock()

    def spy(name, real):
        def wrapped(train, val, test, *args, **kwargs):
            seen = torch.as_tensor(train[1]).tolist() + ([] if val is None else torch.as_tensor(val[1]).tolist())
            with lock:
                calls.append((name, len(seen), torch.as_tensor(train[1]).tolist()))
            return real(train, val, test, *args, **kwargs)
        return wrapped

    for module in (probes, probe_analysis):
        monkeypatch.setattr(module, "linear_probe", spy("linear", probes.linear_probe))
        monkeypatch.setattr(module, "knn_probe", spy("knn", probes.knn_probe))
    raw = {"name": "digits-budget", "data": {"name": "digits"},
           "model": {"channels": [4, 8], "latent_dim": 8},
           "train": {"epochs": 1, "batch_size": 64, "labels_per_class": 5, "regimes": ["supervised"],
                     "probe_every_epoch": False},
           "analysis": {"max_stage_features": 32, "projection_points": 0, "reconstructions": 0,
                        "label_counts": [1, 2], "label_draws": 2, "analysis_points": 60,
                        "probe_l2_grid": [1e-4, 1e-2, 1.0], "knn_k_grid": [1, 3, 5], "figure_formats": ["png"]}}
    experiment = Experiment(config_from_dict(raw), out=tmp_path / "out", progress=False)
    experiment.prepare()
    experiment.plugins.analyses = [a for a in experiment.plugins.analyses if a.name in ("probes", "label_efficiency")]
    experiment.initial_encoder(0)
    experiment.train("supervised", 0)
    experiment.extract(0)
    tables = experiment.analyse(0)
    assert {"linear", "knn"} <= {name for name, _, _ in calls} and len(calls) > 20
    assert max(n for _, n, _ in calls) <= 50, sorted({n for _, n, _ in calls})[-3:]
    budget = experiment.data.train_y[torch.from_numpy(experiment.labelled_for(0))]
    full = [labels for _, n, labels in calls if len(labels) == 50]
    assert full and all(sorted(labels) == sorted(budget.tolist()) for labels in full)
    probes_table = tables["probes"]
    chosen = probes_table[probes_table.probe == "linear"].chosen
    assert chosen.isin([1e-4, 1e-2, 1.0]).all() and probes_table.val_accuracy.notna().all()  # a CV choice was made


def test_cross_validation_folds_are_stratified_and_one_label_per_class_chooses_nothing():
    from replearn.metrics.probes import cv_folds, knn_probe, linear_probe

    y = torch.arange(3).repeat_interleave(7)
    folds = cv_folds(y, 5)
    for f in range(5):
        assert torch.bincount(y[folds == f], minlength=3).min() >= 1  # every fold holds every class
    assert (cv_folds(torch.tensor([0, 1, 2]), 5) == -1).all()
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(3, 4)), dtype=torch.float32)
    test = (torch.as_tensor(rng.normal(size=(6, 4)), dtype=torch.float32), torch.tensor([0, 1, 2, 0, 1, 2]))
    lin = linear_probe((x, torch.tensor([0, 1, 2])), None, test, [1e-3, 1.0, 0.1])
    assert lin.chosen == 1.0 and np.isnan(lin.val_accuracy)  # the strongest penalty, nothing measured
    knn = knn_probe((x, torch.tensor([0, 1, 2])), None, test, [3, 1])
    assert knn.chosen == 3 and np.isnan(knn.val_accuracy)
