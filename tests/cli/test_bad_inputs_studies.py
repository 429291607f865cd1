"""Bad inputs of the study options (B300–B319): the label budget, the conv encoder's depth options (and
its initialisation) and TensorBoard, checked like the main catalogue (tests/cli/test_bad_inputs.py): exit
status 2, one line naming the problem and the fix, no traceback, nothing on disk changed, under 30 s."""
from __future__ import annotations

import pytest

import helpers

CASES = [
    ("B300", "label budget above the rarest class's training images", lambda t: ["run", "--set", "train.labels_per_class=100000"], "train.labels_per_class=100000 but class '8' has only"),
    ("B301", "negative label budget", lambda t: ["run", "--set", "train.labels_per_class=-1"], "train.labels_per_class' must be >= 0"),
    ("B302", "label budget that is not a number", lambda t: ["run", "--set", "train.labels_per_class=many"], "train.labels_per_class' must be of type int"),
    ("B303", "batch-norm switch that is not true or false", lambda t: ["run", "--set", "model.batch_norm=maybe"], "model.batch_norm' must be of type bool"),
    ("B304", "no convolution per stage", lambda t: ["run", "--set", "model.convs_per_stage=0"], "model.convs_per_stage' must be >= 1"),
    ("B305", "more convolutions per stage than replearn builds", lambda t: ["run", "--set", "model.convs_per_stage=33"], "model.convs_per_stage' must be <= 32"),
    ("B306", "residual connections with one convolution per stage", lambda t: ["run", "--set", "model.residual=true"], "set model.convs_per_stage to 2 or more"),
    ("B307", "TensorBoard switch that is not true or false", lambda t: ["run", "--set", "analysis.tensorboard=sometimes"], "analysis.tensorboard' must be of type bool"),
    ("B308", "--tensorboard added to a resumed run", lambda t: ["run", "--resume", str(t / "run"), "--tensorboard"], "cannot be combined with it"),
    ("B309", "initialisation that does not exist", lambda t: ["run", "--set", "model.init=he"], "choose one of: default, kaiming, xavier, orthogonal"),
]


@pytest.mark.parametrize("case_id, what, build, fragment", CASES, ids=[c[0] for c in CASES])
def test_study_bad_input_answers_in_one_line(case_id, what, build, fragment, tmp_path, capsys, monkeypatch):
    helpers.assert_refused_in_one_line(case_id, what, build, fragment, tmp_path, capsys, monkeypatch)


def test_study_case_ids_are_unique_in_order_and_in_range():
    ids = [case_id for case_id, *_ in CASES]
    assert ids == sorted(set(ids), key=lambda i: int(i[1:])) and all(300 <= int(i[1:]) <= 319 for i in ids)
