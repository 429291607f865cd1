"""Bad inputs of the protocol's options (B200–B219), checked like the main catalogue (tests/cli/test_bad_inputs.py):
exit status 2, one line naming the problem and the fix, no traceback, nothing on disk changed, under 30 s."""
from __future__ import annotations

import pytest

import helpers

CONTRASTIVE = ["run", "--set", "train.regimes=[contrastive]"]

CASES = [
    ("B200", "ResNet depth 8, the old name of the ResNet-10", lambda t: ["run", "--set", "model.name=resnet", "--set", "model.depth=8"], "model.depth=8 is now called 10"),
    ("B201", "ResNet depth 8 given in model.kwargs", lambda t: ["run", "--set", "model.name=resnet", "--set", "model.kwargs.depth=8"], "set model.depth=10 (the same network)"),
    ("B202", "ResNet depth replearn does not build", lambda t: ["run", "--set", "model.name=resnet", "--set", "model.depth=50"], "choose one of: 10, 18, 34"),
    ("B203", "contrastive hue shift beyond half the colour circle", lambda t: CONTRASTIVE + ["--set", "regimes.contrastive.hue=0.6"], "regimes.contrastive.hue' must be <= 0.5"),
    ("B204", "contrastive greyscale probability above 1", lambda t: CONTRASTIVE + ["--set", "regimes.contrastive.greyscale_p=1.5"], "regimes.contrastive.greyscale_p' must be <= 1.0"),
    ("B205", "contrastive saturation jitter below 0", lambda t: CONTRASTIVE + ["--set", "regimes.contrastive.saturation=-0.1"], "regimes.contrastive.saturation' must be >= 0.0"),
]


@pytest.mark.parametrize("case_id, what, build, fragment", CASES, ids=[c[0] for c in CASES])
def test_protocol_bad_input_answers_in_one_line(case_id, what, build, fragment, tmp_path, capsys, monkeypatch):
    helpers.assert_refused_in_one_line(case_id, what, build, fragment, tmp_path, capsys, monkeypatch)


def test_protocol_case_ids_are_unique_in_order_and_in_range():
    ids = [case_id for case_id, *_ in CASES]
    assert ids == sorted(set(ids), key=lambda i: int(i[1:])) and all(200 <= int(i[1:]) <= 219 for i in ids)
