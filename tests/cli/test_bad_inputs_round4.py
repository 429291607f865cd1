"""Bad inputs of hardening round 4 (B320–B369): the Python API's stages, STL-10 sizes, label budgets, argument and
distributed-environment errors, damaged or copied run folders given to `replearn compare`, and sweep specs. Checked
like the main catalogue (tests/cli/test_bad_inputs.py): one line naming the problem and the fix, exit status 2, no
traceback, nothing on disk changed, under 30 s. A case whose builder returns a function instead of a command line is
a Python API call: it must raise a ``ReplearnError`` whose one line holds the fragment, and change nothing on disk."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pytest

import test_bad_inputs as catalogue
from replearn.config import config_from_dict
from replearn.errors import ReplearnError


def experiment(t: Path, **sections):
    from replearn.experiment import Experiment

    return Experiment(config_from_dict(catalogue.tiny(t, **sections)), out=t / "run", progress=False)


def stage_before_prepare(t: Path, stage: str) -> Callable[[], object]:
    """An Experiment whose stage ``stage`` is called first."""
    e = experiment(t)
    return {"analyse": lambda: e.analyse(0), "extract": lambda: e.extract(0),
            "train": lambda: e.train("supervised", 0), "finish": lambda: e.finish(1.0),
            "initial": lambda: e.initial_encoder(0)}[stage]


def analyse_before_extract(t: Path) -> Callable[[], object]:
    e = experiment(t, train={"epochs": 1, "probe_every_epoch": False, "seeds": [0]})
    e.prepare()
    e.train(e.regimes[0], 0)
    return lambda: e.analyse(0)


def second_run(t: Path) -> Callable[[], object]:
    """A finished experiment run again: refused, its run directory untouched (status stays complete)."""
    e = experiment(t, train={"epochs": 1, "probe_every_epoch": False})
    e.run()
    return e.run


CASES = [
    ("B320", "Python API: analyse(0) before any other stage", lambda t: stage_before_prepare(t, "analyse"), "analyse(0) was called before prepare()"),
    ("B321", "Python API: extract(0) before prepare()", lambda t: stage_before_prepare(t, "extract"), "extract(0) was called before prepare()"),
    ("B322", "Python API: train(...) before prepare()", lambda t: stage_before_prepare(t, "train"), "train('supervised', 0) was called before prepare()"),
    ("B323", "Python API: finish(1.0) first", lambda t: stage_before_prepare(t, "finish"), "finish(1.0) was called before prepare()"),
    ("B324", "Python API: initial_encoder(0) before prepare()", lambda t: stage_before_prepare(t, "initial"), "initial_encoder(0) was called before prepare()"),
    ("B325", "Python API: analyse(0) after training, before extract(0)", lambda t: analyse_before_extract(t), "analyse(0) was called before extract(0)"),
    ("B326", "Python API: run() of an experiment that already ran to completion", lambda t: second_run(t), "already run to completion"),
]


@pytest.mark.parametrize("case_id, what, build, fragment", CASES, ids=[c[0] for c in CASES])
def test_round4_bad_input_answers_in_one_line(case_id, what, build, fragment, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    probe = build(tmp_path)
    if isinstance(probe, list):
        catalogue.test_bad_input_answers_in_one_line(case_id, what, lambda t: probe, fragment, tmp_path, capsys,
                                                     monkeypatch)
        return
    before = catalogue.fingerprint(tmp_path)
    started = time.monotonic()
    with pytest.raises(ReplearnError) as raised:
        probe()
    assert time.monotonic() - started < 30
    line = raised.value.one_line()
    assert fragment in line and " — fix: " in line and "\n" not in line, line
    assert catalogue.fingerprint(tmp_path) == before, f"{case_id}: files on disk changed"


def test_round4_case_ids_are_unique_in_order_and_in_range():
    ids = [case_id for case_id, *_ in CASES]
    assert ids == sorted(set(ids), key=lambda i: int(i[1:])) and all(320 <= int(i[1:]) <= 369 for i in ids)
