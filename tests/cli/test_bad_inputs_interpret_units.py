"""Bad inputs of the invariance, robustness and units analyses (B230–B249), checked like the main catalogue
(tests/cli/test_bad_inputs.py): exit status 2, one line naming the problem and the fix, no traceback, nothing on
disk changed, under 30 s."""
from __future__ import annotations

import pytest

import helpers
from helpers import tiny, write_yaml

CASES = [
    ("B230", "a corruption that does not exist", lambda t: ["run", "--set", "analyses.robustness.corruptions=[noise, fog]"], "choose one of: noise, blur, contrast"),
    ("B231", "a corruption severity above 3", lambda t: ["run", "--set", "analyses.robustness.severities=[1, 4]"], "analyses.robustness.severities' must be <= 3"),
    ("B232", "a nuisance that does not exist", lambda t: ["run", "--set", "analyses.invariance.nuisances=[blur]"], "choose one of: translation, rotation"),
    ("B233", "an invariance layer the encoder lacks", lambda t: ["run", "--set", "analyses.invariance.layers=[stage9]", "--out", str(t / "o")], "names 'stage9', which the encoder does not have"),
    ("B234", "a units layer the encoder lacks", lambda t: ["run", "--set", "analysis.skip=[]", write_yaml(t, tiny(t, analyses={"units": {"layers": ["stage1", "stage3"]}})), "--out", str(t / "o")], "names 'stage3', which the encoder does not have"),
    ("B235", "more invariance images than the test split holds", lambda t: ["run", "--set", "analysis.skip=[]", write_yaml(t, tiny(t, analyses={"invariance": {"images": 31}})), "--out", str(t / "o")], "invariance.images=31 is more than the 30 test images"),
    ("B236", "more robustness images than the test split holds", lambda t: ["run", "--set", "analyses.robustness.images=100000", "--out", str(t / "o")], "is more than the 539 test images analysed"),
    ("B237", "zero feature-visualisation steps", lambda t: ["run", "--set", "analyses.units.steps=0"], "analyses.units.steps' must be >= 1"),
    ("B238", "negative feature-visualisation steps", lambda t: ["run", "--set", "analyses.units.steps=-5"], "analyses.units.steps' must be >= 1"),
    ("B239", "zero channels to show", lambda t: ["run", "--set", "analyses.units.channels=0"], "analyses.units.channels' must be >= 1"),
    ("B240", "negative images", lambda t: ["run", "--set", "analyses.invariance.images=-1"], "analyses.invariance.images' must be >= 0"),
]


@pytest.mark.parametrize("case_id, what, build, fragment", CASES, ids=[c[0] for c in CASES])
def test_interpret_units_bad_input_answers_in_one_line(case_id, what, build, fragment, tmp_path, capsys, monkeypatch):
    helpers.assert_refused_in_one_line(case_id, what, build, fragment, tmp_path, capsys, monkeypatch)


def test_interpret_units_case_ids_are_unique_in_order_and_in_range():
    ids = [case_id for case_id, *_ in CASES]
    assert ids == sorted(set(ids), key=lambda i: int(i[1:])) and all(230 <= int(i[1:]) <= 249 for i in ids)
