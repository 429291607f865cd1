"""Class selectivity (Morcos et al. 2018), dead units and top images (replearn.interpret.selectivity)."""
import numpy as np
import torch

from replearn.interpret.selectivity import (channel_responses, class_selectivity, constant_units, dead_units,
                                            most_selective, top_images)


def test_selectivity_is_one_for_a_single_class_unit_and_zero_for_an_unselective_one():
    labels = torch.arange(40) % 4
    only_class_2 = (labels == 2).float() * 3.0
    all_alike = torch.full((40,), 1.5)
    graded = labels.float() + 1  # class means 1, 2, 3, 4: (4 − 2) / (4 + 2)
    si = class_selectivity(torch.stack([only_class_2, all_alike, graded], 1), labels)
    assert np.allclose(si, [1.0, 0.0, 2 / 6])


def test_dead_units_have_undefined_selectivity_and_are_never_chosen():
    labels = torch.arange(12) % 3
    responses = torch.stack([torch.zeros(12), (labels == 0).float(), torch.rand(12) + 0.1], 1)
    si = class_selectivity(responses, labels)
    assert np.isnan(si[0]) and si[1] == 1.0
    assert dead_units(responses).tolist() == [True, False, False]
    assert most_selective(si, 5).tolist() == [1, 2]


def test_channel_responses_rectify_and_average_each_channel_map():
    maps = torch.tensor([[[[1.0, -3.0], [3.0, 0.0]], [[-1.0, -1.0], [-1.0, -1.0]]]])  # 1 image, 2 channels, 2×2
    responses = channel_responses(maps.flatten(1), 2)
    assert torch.allclose(responses, torch.tensor([[1.0, 0.0]]))  # negatives count as no response
    assert dead_units(responses).tolist() == [False, True]


def test_top_images_are_those_a_channel_responds_to_most():
    responses = torch.tensor([[0.1, 5.0], [0.9, 1.0], [0.5, 3.0]])
    assert top_images(responses, np.array([0, 1]), 2).tolist() == [[1, 2], [0, 2]]


def test_a_signed_unit_is_dead_only_when_constant():
    features = torch.tensor([[-1.0, 2.0, 0.5], [-3.0, 2.0, 0.5], [-2.0, 2.0, 0.5]])  # 3 images, 3 units
    assert constant_units(features, 3).tolist() == [False, True, True]
