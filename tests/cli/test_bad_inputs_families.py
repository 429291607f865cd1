"""Bad inputs of the other families' regime options (B330–B339), checked like the main catalogue
(tests/cli/test_bad_inputs.py): exit status 2, one line naming the problem and the fix, no traceback, nothing on
disk changed, under 30 s."""
from __future__ import annotations

import pytest

import helpers

CASES = [
    ("B330", "BYOL target decay rate above 1", lambda t: ["run", "--set", "train.regimes=[byol]", "--set", "regimes.byol.base_tau=1.5"], "regimes.byol.base_tau' must be <= 1.0"),
    ("B331", "masked-image modelling with every patch masked", lambda t: ["run", "--set", "train.regimes=[masked]", "--set", "regimes.masked.mask_ratio=1.0"], "regimes.masked.mask_ratio' must be <= 0.95"),
    ("B332", "masked-image modelling with an unknown mask token", lambda t: ["run", "--set", "train.regimes=[masked]", "--set", "regimes.masked.mask_token=noise"], "regimes.masked.mask_token"),
    ("B333", "SupCon temperature <= 0", lambda t: ["run", "--set", "train.regimes=[supcon]", "--set", "regimes.supcon.temperature=0"], "regimes.supcon.temperature' must be > 0"),
]


@pytest.mark.parametrize("case_id, what, build, fragment", CASES, ids=[c[0] for c in CASES])
def test_families_bad_input_answers_in_one_line(case_id, what, build, fragment, tmp_path, capsys, monkeypatch):
    helpers.assert_refused_in_one_line(case_id, what, build, fragment, tmp_path, capsys, monkeypatch)


def test_families_case_ids_are_unique_in_order_and_in_range():
    ids = [case_id for case_id, *_ in CASES]
    assert ids == sorted(set(ids), key=lambda i: int(i[1:])) and all(330 <= int(i[1:]) <= 339 for i in ids)
