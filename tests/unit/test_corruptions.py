"""Generated corruptions (replearn.interpret.corruptions) and the robustness of a probe to them."""
import pytest
import torch
import torch.nn as nn

from replearn.errors import ConfigError
from replearn.interpret.corruptions import CORRUPTIONS, corrupt, get_corruption, robustness_curves, to_unit

MEAN, STD = (0.3,), (0.25,)


def images(n=24, channels=1, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    unit = torch.zeros(n, channels, size, size)
    unit[:, :, 2:6, 2:6] = torch.rand(n, channels, 4, 4, generator=g)
    mean, std = torch.tensor(MEAN * channels).view(1, -1, 1, 1), torch.tensor(STD * channels).view(1, -1, 1, 1)
    return (unit - mean) / std


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
@pytest.mark.parametrize("channels", [1, 3])
def test_every_corruption_is_the_identity_at_severity_zero_and_grows_with_severity(name, channels):
    x = images(channels=channels)
    assert torch.equal(corrupt(x, name, 0, MEAN * channels, STD * channels), x)
    moved = [float((corrupt(x, name, s, MEAN * channels, STD * channels, seed=3) - x).abs().mean()) for s in (1, 2, 3)]
    assert moved[0] > 0 and moved[2] >= moved[0], moved
    again = corrupt(x, name, 2, MEAN * channels, STD * channels, seed=3)
    assert torch.equal(again, corrupt(x, name, 2, MEAN * channels, STD * channels, seed=3))  # seeded
    unit = to_unit(again, MEAN * channels, STD * channels)
    assert unit.min() >= 0 and unit.max() <= 1 and again.shape == x.shape


def test_an_unknown_corruption_is_refused_with_the_valid_names():
    with pytest.raises(ConfigError, match="unknown corruption 'fog'.*noise, blur"):
        get_corruption("fog")


def test_a_corruption_at_severity_zero_leaves_the_probe_accuracy_unchanged():
    x = images(40)
    y = (x.flatten(1).sum(1) > x.flatten(1).sum(1).median()).long()
    probe = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with torch.no_grad():
        probe[1].weight.copy_(torch.stack([-torch.ones(64), torch.ones(64)]))
        probe[1].bias.copy_(torch.tensor([0.0, -float(x.flatten(1).sum(1).median())]))
    rows = robustness_curves({"probe": probe}, x, y, list(CORRUPTIONS), [0, 1, 3], MEAN, STD)
    clean = [r["accuracy"] for r in rows if r["severity"] == 0]
    assert len(clean) == 1  # severity 0 is scored once, on the clean images
    direct = float((probe(x).argmax(1) == y).float().mean())
    assert clean[0] == pytest.approx(direct)
    assert {(r["corruption"], r["severity"]) for r in rows} >= {("noise", 1), ("occlusion", 3)}
