"""Bad inputs of hardening round 4 (B320–B369): the Python API's stages, STL-10 sizes, label budgets, argument and
distributed-environment errors, damaged or copied run folders given to `replearn compare`, and sweep specs. Checked
like the main catalogue (tests/cli/test_bad_inputs.py): one line naming the problem and the fix, exit status 2, no
traceback, nothing on disk changed, under 30 s. A case whose builder returns a function instead of a command line is
a Python API call: it must raise a ``ReplearnError`` whose one line holds the fragment, and change nothing on disk."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest

import helpers
from replearn.cli.main import main
from replearn.config.sections import config_from_dict
from replearn.errors import ReplearnError


def experiment(t: Path, **sections):
    from replearn.experiment.experiment import Experiment

    return Experiment(config_from_dict(helpers.tiny(t, **sections)), out=t / "run", progress=False)


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


STL_IMAGE = 3 * 96 * 96


def stl10_run(t: Path, train: int = 12, test: int = 10, train_y: int | None = None, sparse_x: bool = False,
              test_y: int | None = None) -> list[str]:
    """A `replearn run` of STL-10 files in the published format; ``train_y`` (bytes) makes the label file sparse
    and that long, ``sparse_x`` makes train_X.bin a sparse file of ``train`` images."""
    folder = t / "stl10_binary"
    folder.mkdir()
    rng = np.random.RandomState(0)
    for split, n in (("train", train), ("test", test)):
        path = folder / f"{split}_X.bin"
        if split == "train" and sparse_x:
            with open(path, "wb") as fh:
                fh.truncate(n * STL_IMAGE)
        else:
            path.write_bytes(rng.randint(0, 255, n * STL_IMAGE).astype(np.uint8).tobytes())
        labels = folder / f"{split}_y.bin"
        claimed = train_y if split == "train" else test_y
        if claimed is not None:
            with open(labels, "wb") as fh:
                fh.truncate(claimed)
        else:
            labels.write_bytes((np.arange(n) % 10 + 1).astype(np.uint8).tobytes())
    raw = helpers.tiny(t, data={"name": "stl10", "root": str(t), "unlabelled": 0})
    return ["run", helpers.write_yaml(t, raw), "--out", str(t / "out")]


def budget_run(t: Path, full: bool = False) -> list[str]:
    """A label budget over blobs whose class 2 is only in the test split; ``full``: every analysis, as a real
    config would (the failure then came late, after the run directory was written)."""
    from helpers import make_blob_images

    x, y = make_blob_images(96, seed=1)
    npz = helpers.blobs_npz(t, train_x=x[y != 2], train_y=y[y != 2], name="budget.npz")
    raw = helpers.tiny(t, train={"labels_per_class": 2})
    raw["data"]["root"] = str(npz)
    if full:
        raw["analysis"]["skip"] = []
    return ["run", helpers.write_yaml(t, raw), "--out", str(t / "out")]


ENVIRONMENT: dict[str, str] = {}  # what the next case's command runs with (set by its builder)


def with_env(variables: dict[str, str], argv: list[str]) -> list[str]:
    """``argv`` run with these environment variables (as a hand-written torchrun environment would be)."""
    ENVIRONMENT.clear()
    ENVIRONMENT.update(variables)
    return argv


def run_copy(t: Path, name: str = "run") -> Path:
    """A copy of one finished tiny run (trained once per test process), at ``t / name``."""
    return helpers.finished_run(t, name=name)


def damaged(t: Path, rel: str, change: Callable[[Path], None]) -> list[str]:
    """`replearn compare` of a run copy whose file ``rel`` is changed by ``change``, with a second good run."""
    run = run_copy(t)
    change(run / rel)
    other = run_copy(t, "other")
    config = other / "config.yaml"
    config.write_text(config.read_text().replace("seeds:\n  - 0", "seeds:\n  - 1"))
    return ["compare", str(run), str(other), "--out", str(t / "cmp")]


def edit_csv(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        change(pd.read_csv(path)).to_csv(path, index=False)
    return edit


def set_column(column: str, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame[column] = frame[column].astype(object)
        frame.loc[1, column] = value
        return frame
    return change


def edit_models(path: Path) -> None:
    models = json.loads(path.read_text())
    models[-1]["color"] = "not-a-colour"
    path.write_text(json.dumps(models))


def uneven_predictions(path: Path) -> None:
    arrays = dict(np.load(path))
    arrays["supervised"] = arrays["supervised"][:-3]
    np.savez(path, **arrays)


def oversized(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(65 << 20)  # a sparse tail: the size alone must refuse it, before any read


def copies(t: Path) -> list[str]:
    run = run_copy(t, "a")
    run_copy(t, "b")
    return ["compare", str(run), str(t / "b"), "--out", str(t / "cmp")]


def out_into_run(t: Path) -> list[str]:
    run = run_copy(t)
    (run / "compare.html").write_text("<html>stray</html>")
    other = run_copy(t, "other")
    return ["compare", str(other), "--out", str(run)]


def escaping_manifest(t: Path) -> list[str]:
    run_copy(t, "outside")
    (t / "sweep").mkdir()
    (t / "sweep" / "sweep.json").write_text(json.dumps({"keys": [], "runs": [{"name": "x", "dir": "../outside"}]}))
    return ["compare", str(t / "sweep"), "--out", str(t / "cmp")]


def sweep_spec(t: Path, text: str) -> list[str]:
    helpers.write_yaml(t, helpers.tiny(t), "base.yaml")
    return ["sweep", helpers.write_yaml(t, "base: base.yaml\nseeds: [0]\n" + text, "spec.yaml")]


HELD: list[int] = []  # directory locks a case holds, as a second replearn process would (closed by the next case)


def held(path: Path) -> Path:
    """``path`` (a directory) locked as a replearn process writing into it holds it."""
    import fcntl
    import os

    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    HELD.append(fd)
    return path


def busy_sweep(t: Path) -> list[str]:
    """A sweep directory another `replearn sweep` is running in (its lock held)."""
    argv = sweep_spec(t, "grid: {model.latent_dim: [4, 6]}\n") + ["--out", str(t / "sw")]
    (t / "sw").mkdir()
    (t / "sw" / "sweep.json").write_text('{"format": 1, "runs": []}')
    held(t / "sw")
    return argv


def busy_run(t: Path) -> list[str]:
    """`replearn run --resume` of a run another process is still writing (its lock held)."""
    from test_bad_inputs_sweep import started_run

    return ["run", "--resume", str(held(started_run(t)))]


CASES = [
    ("B320", "Python API: analyse(0) before any other stage", lambda t: stage_before_prepare(t, "analyse"), "analyse(0) was called before prepare()"),
    ("B321", "Python API: extract(0) before prepare()", lambda t: stage_before_prepare(t, "extract"), "extract(0) was called before prepare()"),
    ("B322", "Python API: train(...) before prepare()", lambda t: stage_before_prepare(t, "train"), "train('supervised', 0) was called before prepare()"),
    ("B323", "Python API: finish(1.0) first", lambda t: stage_before_prepare(t, "finish"), "finish(1.0) was called before prepare()"),
    ("B324", "Python API: initial_encoder(0) before prepare()", lambda t: stage_before_prepare(t, "initial"), "initial_encoder(0) was called before prepare()"),
    ("B325", "Python API: analyse(0) after training, before extract(0)", lambda t: analyse_before_extract(t), "analyse(0) was called before extract(0)"),
    ("B326", "Python API: run() of an experiment that already ran to completion", lambda t: second_run(t), "already run to completion"),
    ("B327", "STL-10 train_y.bin far longer than its images (sparse; read whole before)", lambda t: stl10_run(t, train_y=64 << 20), "has 12 images but train_y.bin has 67,108,864 labels"),
    ("B328", "STL-10 train_X.bin holding more images than the format's 5,000", lambda t: stl10_run(t, train=5_001, sparse_x=True), "STL-10's train_X.bin holds at most 5,000"),
    ("B329", "STL-10 test_y.bin shorter than its images", lambda t: stl10_run(t, test_y=9), "test_X.bin has 10 images but test_y.bin has 9 labels"),
    ("B330", "label budget with a class present in test but absent from train", lambda t: budget_run(t), "train.labels_per_class=2 but class '2' has no training image"),
    ("B331", "the same, with every analysis (it failed late and left the run folder)", lambda t: budget_run(t, full=True), "class '2' has no training image"),
    ("B332", "--nproc that is not a whole number", lambda t: ["run", "--nproc", "1.5"], "argument --nproc: invalid int value: '1.5'"),
    ("B333", "compare without a directory", lambda t: ["compare"], "the following arguments are required: RUN_OR_SWEEP_DIR"),
    ("B334", "an abbreviated option (--npro for --nproc; it reached torchrun)", lambda t: ["run", "--npro", "2"], "abbreviations are not accepted"),
    ("B335", "WORLD_SIZE and RANK set by hand without MASTER_ADDR", lambda t: with_env({"WORLD_SIZE": "2", "RANK": "0"}, ["run"]), "WORLD_SIZE=2 is set but MASTER_ADDR and MASTER_PORT are not"),
    ("B336", "WORLD_SIZE that is not a number", lambda t: with_env({"WORLD_SIZE": "abc"}, ["run"]), "WORLD_SIZE='abc' is not a whole number"),
    ("B337", "RANK outside the world", lambda t: with_env({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "localhost", "MASTER_PORT": "29500"}, ["run"]), "RANK=2 is outside 0..1"),
    ("B338", "--threads far beyond the cores (libgomp ran out of memory)", lambda t: ["run", "--threads", "100000"], "more than 4 threads for each of this machine's"),
    ("B339", "a word option given a YAML yes/no word (draw_ahead=off)",
     lambda t: ["run", "--set", "analysis.draw_ahead=off"],
     "must be a word, got False (YAML reads yes, no, on and off as true or false)"),
    ("B340", "compare: probes.csv whose accuracy is text", lambda t: damaged(t, "metrics/probes.csv", edit_csv(set_column("test_accuracy", "high"))), "probes.csv' column 'test_accuracy' holds 'high', not a number"),
    ("B341", "compare: probes.csv without its probe column", lambda t: damaged(t, "metrics/probes.csv", edit_csv(lambda f: f.drop(columns="probe"))), "probes.csv' has no 'probe' column"),
    ("B342", "compare: probes.csv without its depth column", lambda t: damaged(t, "metrics/probes.csv", edit_csv(lambda f: f.drop(columns="depth"))), "probes.csv' has no 'depth' column"),
    ("B343", "compare: probes.csv accuracy outside 0..1", lambda t: damaged(t, "metrics/probes.csv", edit_csv(set_column("test_accuracy", 1.5))), "column 'test_accuracy' holds 1.5, outside 0..1"),
    ("B344", "compare: a colour in models.json that is not a colour", lambda t: damaged(t, "models.json", edit_models), "the colour 'not-a-colour', which is not a colour"),
    ("B345", "compare: prediction arrays of different lengths", lambda t: damaged(t, "artifacts/predictions_seed0.npz", uneven_predictions), "predictions_seed0.npz' holds arrays of different lengths"),
    ("B346", "compare: gradient-norm column of text", lambda t: damaged(t, "metrics/train_supervised_seed0.csv", edit_csv(set_column("grad_norm_stage1", "big"))), "column 'grad_norm_stage1' holds 'big'"),
    ("B347", "compare: CKA of text", lambda t: damaged(t, "metrics/cka.csv", edit_csv(set_column("cka", "x"))), "cka.csv' column 'cka' holds 'x'"),
    ("B348", "compare: a probes.csv beyond any run's size (294 MB read whole before)", lambda t: damaged(t, "metrics/probes.csv", oversized), "probes.csv' is 65 MiB, more than a run writes (64 MiB at most)"),
    ("B349", "compare: two copies of one run (same config and seed), pooled as two seeds before", lambda t: copies(t), "are the same run (the same config and seeds 0)"),
    ("B350", "compare --out into a run folder holding a stray compare.html", lambda t: out_into_run(t), "is a run or sweep directory: its tables/ and figures/ would be overwritten"),
    ("B351", "compare: sweep.json naming a run outside the sweep (../outside)", lambda t: escaping_manifest(t), "names the run directory '../outside', which is not inside the sweep"),
    ("B352", "sweep grid of 100 × 100 × 100 values (planned silently for hours before)", lambda t: sweep_spec(t, "grid: {model.latent_dim: [" + ", ".join(str(i) for i in range(1, 101)) + "], train.lr: [" + ", ".join(str(i / 1000) for i in range(1, 101)) + "], train.epochs: [" + ", ".join(str(i) for i in range(1, 101)) + "]}\n"), "the sweep plans 1,000,000 runs (100 × 100 × 100 values × 1 seeds), more than max_runs (1,000)"),
    ("B353", "sweep grid values equal once read: train.lr [1, 1.0]", lambda t: sweep_spec(t, "grid: {train.lr: [1, 1.0]}\n"), "grid key 'train.lr' lists 1 and 1.0, which are the same value once read"),
    ("B354", "sweep grid values equal once read: model.latent_dim [4, 4.0]", lambda t: sweep_spec(t, "grid: {model.latent_dim: [4, 4.0]}\n"), "grid key 'model.latent_dim' lists 4 and 4.0"),
    ("B355", "max_runs that is not a whole number", lambda t: sweep_spec(t, "grid: {model.latent_dim: [4]}\nmax_runs: lots\n"), "max_runs must be a whole number"),
    ("B356", "a second sweep into a sweep directory another sweep is running in", busy_sweep, "is in use by another replearn process"),
    ("B357", "resume of a run another process is still writing", busy_run, "run directory"),
    ("B358", "compare: CKA that is infinite (a run's unbiased CKA may leave [0, 1] for a collapsed layer, never be "
             "infinite)",
     lambda t: damaged(t, "metrics/cka.csv", edit_csv(set_column("cka", float("inf")))),
     "column 'cka' holds inf, not a finite number"),
]


@pytest.mark.parametrize("case_id, what, build, fragment", CASES, ids=[c[0] for c in CASES])
def test_round4_bad_input_answers_in_one_line(case_id, what, build, fragment, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ENVIRONMENT.clear()
    while HELD:
        os.close(HELD.pop())
    probe = build(tmp_path)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    if isinstance(probe, list):
        helpers.assert_refused_in_one_line(case_id, what, lambda t: probe, fragment, tmp_path, capsys,
                                                     monkeypatch)
        return
    before = helpers.fingerprint(tmp_path)
    started = time.monotonic()
    with pytest.raises(ReplearnError) as raised:
        probe()
    assert time.monotonic() - started < 30
    line = raised.value.one_line()
    assert fragment in line and " — fix: " in line and "\n" not in line, line
    assert helpers.fingerprint(tmp_path) == before, f"{case_id}: files on disk changed"


def test_round4_case_ids_are_unique_in_order_and_in_range():
    ids = [case_id for case_id, *_ in CASES]
    assert ids == sorted(set(ids), key=lambda i: int(i[1:])) and all(320 <= int(i[1:]) <= 369 for i in ids)


def test_stl10_files_claiming_gigabytes_are_refused_in_seconds_with_bounded_memory(tmp_path):
    """The issue's own sizes, in a fresh process: a 10 GiB sparse train_y.bin, then a train_X.bin of 2,000,000
    images (55 GB, sparse), each refused within seconds with the memory of importing replearn."""
    import os
    import subprocess
    import sys

    argv = stl10_run(tmp_path, train_y=10 << 30)
    probe = ("import resource, sys\nfrom replearn.cli.main import main\ncode = main(sys.argv[1:])\n"
             "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\nsys.exit(code)")
    env = {**os.environ, "REPLEARN_DATA": str(tmp_path / "none")}
    for fragment in ("has 10,737,418,240 labels", "holds 2,000,000 images"):
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, cwd=tmp_path,
                                timeout=120, env=env)
        seconds = time.monotonic() - started
        assert result.returncode == 2 and fragment in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert seconds < 60 and int(result.stdout.split()[-1]) / 1024 < 1500
        assert not (tmp_path / "out").exists()
        with open(tmp_path / "stl10_binary" / "train_X.bin", "wb") as fh:
            fh.truncate(2_000_000 * STL_IMAGE)


def test_a_large_dry_run_shows_progress_and_loads_its_data_once(tmp_path, capsys, monkeypatch):
    """50 grid points on one dataset: the data are loaded once (not once per point), and the planning says how far
    it is; a real run would go on to train them."""
    from replearn.data.sources.npz import Npz

    loads = []
    original = Npz.load
    monkeypatch.setattr(Npz, "load", lambda self, cfg: loads.append(cfg) or original(self, cfg))
    monkeypatch.chdir(tmp_path)
    argv = sweep_spec(tmp_path, "grid: {train.lr: [" + ", ".join(f"{i / 1000:g}" for i in range(1, 51)) + "]}\n")
    capsys.readouterr()
    assert main(argv + ["--dry-run", "--out", str(tmp_path / "sw")]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 50 and len(loads) == 1
    assert "planning the sweep: 50/50 configs resolved" in err and "50/50 grid points checked" in err, err
    assert not (tmp_path / "sw").exists()


def test_two_sweeps_into_one_directory_at_once_one_is_refused_and_the_other_completes(tmp_path):
    """The second `replearn sweep` (a real process, started while the first is running) is refused in one line;
    the first completes every run."""
    import subprocess
    import sys

    argv = sweep_spec(tmp_path, "grid: {model.latent_dim: [4, 6]}\n") + ["--out", str(tmp_path / "sw"), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    command = [sys.executable, "-m", "replearn", *argv]
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "sw").glob("*/status.json")):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert second.returncode == 2 and "is in use by another replearn process" in second.stderr, second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    manifest = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert [r["state"] for r in manifest["runs"]] == ["complete", "complete"]
