"""The lint ratchet (.ci/lint.py) lets findings shrink and never grow."""
from __future__ import annotations

import importlib.util

from helpers import REPO_ROOT

spec = importlib.util.spec_from_file_location("ci_lint", REPO_ROOT / ".ci" / "lint.py")
lint = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lint)

RECORDED = {"ruff": {"a.py::E501": 2}, "mypy": {"a.py::arg-type": 1}, "unformatted": ["a.py"]}


def test_the_same_findings_pass():
    assert lint.regressions(RECORDED, RECORDED) == ([], [])


def test_a_new_finding_fails_and_a_fixed_one_is_reported():
    now = {"ruff": {"a.py::E501": 3}, "mypy": {}, "unformatted": ["a.py", "b.py"]}
    worse, better = lint.regressions(RECORDED, now)
    assert worse == ["ruff: a.py::E501 2 → 3", "format: b.py (run: ruff format b.py)"]
    assert better == ["mypy: a.py::arg-type 1 → 0"]


def test_a_rule_broken_in_a_new_file_fails():
    now = {**RECORDED, "ruff": {**RECORDED["ruff"], "b.py::F401": 1}}
    assert lint.regressions(RECORDED, now)[0] == ["ruff: b.py::F401 0 → 1"]


def test_the_repository_holds_its_ratchet():
    """ruff, ruff format and mypy over the repository find nothing beyond the recorded ratchet: the check
    .ci/run makes, run here so that it overlaps the other tests (mypy alone takes ~25 s on a fresh clone)."""
    import json

    import pytest

    if not all((lint.BIN / tool).exists() for tool in ("ruff", "mypy")):
        pytest.skip("ruff and mypy are not installed (pip install -e '.[test]')")
    worse, _ = lint.regressions(json.loads(lint.RATCHET.read_text()), lint.findings())
    assert worse == [], "\n".join(worse) + "\n(fix them, or see .ci/lint.py)"
