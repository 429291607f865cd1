"""The caps that keep the analyses' cost bounded in images (issue 28): the kNN probe's evaluation rows and
TwoNN's points are class-balanced subsets, the protocol states them."""
import numpy as np
import torch

from replearn.analyses.probes import knn_evaluation_rows
from replearn.analyses.protocol import _knn_cap, _subset_bullet
from replearn.metrics.dimension import twonn_dimension


def test_knn_evaluation_rows_are_a_class_balanced_subset_of_each_split():
    labels = {"val": torch.arange(3000) % 10, "test": torch.arange(800) % 4}
    rows = knn_evaluation_rows(labels, 1000, seed=0)
    assert len(rows["val"]) == 1000 and len(set(rows["val"].tolist())) == 1000
    assert np.bincount(labels["val"].numpy()[rows["val"]]).tolist() == [100] * 10
    assert np.array_equal(np.sort(rows["test"]), np.arange(800))  # under the cap: every image
    assert np.array_equal(knn_evaluation_rows(labels, 0, seed=0)["val"], np.arange(3000))
    assert np.array_equal(rows["val"], knn_evaluation_rows(labels, 1000, seed=0)["val"])  # seeded


def test_twonn_on_a_capped_subset_still_finds_the_manifold_dimension():
    gen = torch.Generator().manual_seed(0)
    plane = torch.randn(4000, 3, generator=gen, dtype=torch.float64) @ torch.randn(3, 50, generator=gen,
                                                                                  dtype=torch.float64)
    assert abs(twonn_dimension(plane, max_points=1000) - 3.0) < 0.4


def test_the_protocol_states_the_caps():
    analysis = {"knn_eval_points": 10000, "analysis_points": 5000, "twonn_points": 2000}
    assert "at most 10,000 validation and test images" in _knn_cap(analysis)
    assert _knn_cap({"knn_eval_points": 0}) == ""
    bullet = _subset_bullet(analysis)
    assert "5,000 test images" in bullet and "2,000 of them (analysis.twonn_points)" in bullet


def test_attribution_options_left_unset_take_their_per_image_size_defaults():
    from replearn.analyses.attributions import ExplainOptions, sized_options
    from replearn.analyses.faithfulness import FaithfulnessOptions

    small = sized_options(FaithfulnessOptions(), (1, 8, 8))
    assert (small.images, small.ig_steps, small.smoothgrad_samples, small.steps, small.sensitivity_samples) == \
        (8, 16, 8, 16, 2)
    stl = sized_options(FaithfulnessOptions(), (3, 96, 96))
    assert (stl.images, stl.ig_steps, stl.steps, stl.sensitivity_samples) == (8, 8, 8, 1)
    large = sized_options(ExplainOptions(), (3, 224, 224))
    assert (large.images, large.ig_steps, large.smoothgrad_samples) == (4, 8, 4)
    chosen = sized_options(FaithfulnessOptions(images=6, sensitivity_samples=0), (3, 224, 224))
    assert chosen.images == 6 and chosen.sensitivity_samples == 0 and chosen.steps == 8  # set values are kept
