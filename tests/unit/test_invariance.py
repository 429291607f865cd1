"""Invariance by depth (replearn.interpret.invariance)."""
import math

import torch

from replearn.interpret.invariance import NUISANCES, invariance_rows, layer_invariance

MEAN, STD = (0.2,), (0.3,)


def centred_objects(n=60, size=12, seed=0):
    """Dark images with one bright shape each (class: square, bar or cross) away from the border."""
    g = torch.Generator().manual_seed(seed)
    unit = torch.zeros(n, 1, size, size)
    labels = torch.arange(n) % 3
    for i, label in enumerate(labels.tolist()):
        r, c = (int(v) for v in torch.randint(3, size - 6, (2,), generator=g))
        level = 0.5 + 0.5 * float(torch.rand(1, generator=g))
        if label == 0:
            unit[i, 0, r:r + 3, c:c + 3] = level
        elif label == 1:
            unit[i, 0, r:r + 4, c + 1] = level
        else:
            unit[i, 0, r + 1, c:c + 3] = level
            unit[i, 0, r:r + 3, c + 1] = level
    return (unit - MEAN[0]) / STD[0], labels


def test_a_layer_that_pools_over_translations_is_more_translation_invariant_than_the_identity():
    x, y = centred_objects()
    layers = lambda t: {"identity": t.flatten(1), "global average pool": t.mean((2, 3))}  # noqa: E731
    rows = {r["layer"]: r for r in invariance_rows(layers, x, y, ["translation"], MEAN, STD, seed=1)}
    assert rows["global average pool"]["invariance"] > 0.9
    assert rows["global average pool"]["invariance"] > rows["identity"]["invariance"] + 0.5


def test_invariance_is_one_for_an_unmoved_layer_and_class_contrast_sees_class_structure():
    labels = torch.arange(20) % 2
    clean = torch.randn(20, 5) + 4 * labels[:, None].float()
    rows = layer_invariance(clean, {"none": clean.clone(), "far": clean[torch.randperm(20)]}, labels)
    assert rows[0]["invariance"] == 1.0 and rows[0]["d_nuisance"] == 0.0
    assert rows[1]["invariance"] < 0.5
    assert rows[0]["class_contrast"] > 0.5  # same-class images much closer than other-class ones


def test_every_nuisance_runs_on_grey_and_colour_images():
    for channels in (1, 3):
        x = torch.randn(9, channels, 8, 8)
        rows = invariance_rows(lambda t: {"input": t.flatten(1)}, x, torch.arange(9) % 3, list(NUISANCES),
                               MEAN * channels, STD * channels)
        assert [r["nuisance"] for r in rows] == list(NUISANCES)
        assert all(math.isfinite(r["invariance"]) and r["d_nuisance"] > 0 for r in rows)
