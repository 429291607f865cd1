"""Bad inputs of `replearn sweep` and `replearn compare` (B270–B299), checked like the main catalogue
(tests/cli/test_bad_inputs.py): exit status 2, one line naming the problem and the fix, no traceback, nothing on
disk changed (no run started), under 30 s."""
from __future__ import annotations

import sys

import pytest

import helpers
from replearn.cli.main import main


def spec(t, text: str) -> list[str]:
    helpers.write_yaml(t, helpers.tiny(t), "base.yaml")
    return ["sweep", helpers.write_yaml(t, text, "spec.yaml")]


GOOD = "base: base.yaml\ngrid: {model.latent_dim: [4, 6]}\nseeds: [0]\n"

CASES = [
    ("B270", "sweep spec that is a list, not a mapping", lambda t: spec(t, "- base\n- grid\n"), "must be a mapping of keys"),
    ("B271", "unknown sweep spec key", lambda t: spec(t, GOOD + "grids: {}\n"), "unknown sweep spec key 'grids'"),
    ("B272", "empty grid", lambda t: spec(t, "base: base.yaml\ngrid: {}\nseeds: [0]\n"), "grid is empty"),
    ("B273", "grid value that fails validation in one cell", lambda t: spec(t, "base: base.yaml\ngrid: {model.latent_dim: [4, 0]}\nseeds: [0]\n"), "model.latent_dim=0 seed 0"),
    ("B274", "unknown config key in the grid", lambda t: spec(t, "base: base.yaml\ngrid: {model.latent: [4]}\nseeds: [0]\n"), "model.latent"),
    ("B275", "sweep spec without seeds", lambda t: spec(t, "base: base.yaml\ngrid: {model.latent_dim: [4]}\n"), "has no 'seeds'"),
    ("B276", "unknown sweep backend", lambda t: spec(t, GOOD + "backend: kubernetes\n"), "unknown sweep backend 'kubernetes'"),
    ("B277", "--parallel 0", lambda t: spec(t, GOOD) + ["--parallel", "0"], "parallel must be a whole number ≥ 1"),
    ("B278", "grid key with a single value instead of a list", lambda t: spec(t, "base: base.yaml\ngrid: {model.latent_dim: 4}\nseeds: [0]\n"), "needs a non-empty list of values"),
    ("B279", "seeds swept in the grid", lambda t: spec(t, "base: base.yaml\ngrid: {train.seeds: [[0], [1]]}\nseeds: [0]\n"), "'train.seeds' cannot be swept"),
    ("B280", "seeds that are not whole numbers", lambda t: spec(t, "base: base.yaml\ngrid: {model.latent_dim: [4]}\nseeds: [a]\n"), "sweep seeds must be a non-empty list"),
    ("B281", "sweep spec file that does not exist", lambda t: ["sweep", str(t / "nope.yaml")], "does not exist"),
    ("B282", "sweep without a spec or --grid", lambda t: ["sweep"], "no sweep given"),
    ("B283", "--grid without values", lambda t: ["sweep", "--grid", "model.latent_dim"], "is not of the form key=v1,v2"),
    ("B284", "spec file combined with --grid", lambda t: spec(t, GOOD) + ["--grid", "train.lr=0.1"], "--grid cannot be combined with a spec file"),
    ("B285", "sweep output folder that is not a sweep", lambda t: spec(t, GOOD) + ["--out", str(busy(t))], "is not a sweep directory"),
    ("B286", "slurm parameter submitit does not know", lambda t: spec(t, GOOD + "backend: slurm\nslurm: {cluster: local, walltime: 3}\n"), "submitit refuses"),
    ("B287", "slurm parameters with the local backend", lambda t: spec(t, GOOD + "slurm: {timeout_min: 3}\n"), "backend is local"),
    ("B288", "compare of a folder that is not a run or sweep", lambda t: (t / "plain").mkdir() or ["compare", str(t / "plain")], "neither a replearn run nor a sweep directory"),
    ("B289", "compare of a directory that does not exist", lambda t: ["compare", str(t / "missing")], "does not exist"),
    ("B290", "compare output that is a file", lambda t: ["compare", str(started_run(t)), "--out", helpers.write_yaml(t, "x: 1")], "exists and is a file"),
    ("B291", "compare of a run that has no results yet", lambda t: ["compare", str(started_run(t))], "none of the runs has saved results"),
    ("B292", "sweep name with a path in it", lambda t: spec(t, GOOD + "name: ../x\n"), "is not a plain name"),
    ("B293", "key both fixed and swept", lambda t: spec(t, GOOD + "set: {model.latent_dim: 8}\n"), "both in set: and in grid:"),
    ("B294", "slurm backend where there is no SLURM", lambda t: spec(t, GOOD + "backend: slurm\nslurm: {timeout_min: 3}\n"), "cannot submit to cluster 'slurm' here"),
    ("B295", "grid value that only fails against the data", lambda t: spec(t, "base: base.yaml\ngrid: {data.train_subset: [0, 10]}\nseeds: [0]\n"), "sweep run train_subset-10_seed0: analysis.label_counts asks for 5 labels"),
]


def started_run(t):
    """A run directory whose run stopped before any result was saved."""
    out = t / "run"
    out.mkdir()
    (out / "replearn-run.json").write_text('{"format": 1, "name": "tiny"}')
    (out / "config.yaml").write_text("name: tiny\ntrain: {seeds: [0]}\n")
    (out / "status.json").write_text('{"state": "interrupted"}')
    return out


def busy(t):
    """A folder with a file in it that is not a sweep."""
    (t / "busy").mkdir()
    (t / "busy" / "x").write_text("x")
    return t / "busy"


def test_slurm_backend_without_submitit_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if submitit were not installed
    argv = spec(tmp_path, GOOD + "backend: slurm\n")
    before = helpers.fingerprint(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs submitit" in err and "replearn[slurm]" in err
    assert helpers.fingerprint(tmp_path) == before


@pytest.mark.parametrize("case_id, what, build, fragment", CASES, ids=[c[0] for c in CASES])
def test_sweep_bad_input_answers_in_one_line(case_id, what, build, fragment, tmp_path, capsys, monkeypatch):
    helpers.assert_refused_in_one_line(case_id, what, build, fragment, tmp_path, capsys, monkeypatch)


def test_sweep_case_ids_are_unique_in_order_and_in_range():
    ids = [case_id for case_id, *_ in CASES]
    assert ids == sorted(set(ids), key=lambda i: int(i[1:])) and all(270 <= int(i[1:]) <= 299 for i in ids)
