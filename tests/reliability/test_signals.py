"""SIGTERM at every phase of a run: training step, the last epoch's validation, feature extraction, each
analysis, rendering. Each time the run must stop at once (nothing of a later phase written), record
``interrupted`` and print a resume hint whose path is shell-quoted. One run is stopped at the first phase, its
resume at the next, and so on; the last resume must finish with the same metrics as a run that was never
interrupted.

The signal is real (``os.kill`` of this process, handled by replearn's handler); the test only chooses the
moment, by wrapping the function that starts the phase.
"""

from __future__ import annotations

import os
import shlex
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import replearn.report.html
import replearn.experiment.experiment
import replearn.training.loop
from replearn.analyses import ANALYSES
from replearn.analyses.plots import plt
from replearn.rundir.io import read_json
from replearn.cli.main import main

from helpers import INTERPRETABILITY, make_blob_images, tiny_config

TIMING_COLUMNS = ("train_seconds", "train_images_per_s", "seconds")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> tuple[Path, Path]:
    """A two-epoch, two-regime experiment and its uninterrupted run."""
    tmp = tmp_path_factory.mktemp("signals")
    x, y = make_blob_images(120, seed=1)
    tx, ty = make_blob_images(40, seed=2)
    np.savez(tmp / "blobs.npz", train_x=x, train_y=y, test_x=tx, test_y=ty)
    raw = tiny_config(tmp / "blobs.npz", epochs=2)
    raw["analysis"].update(projection_points=30, label_counts=[1], label_draws=1, reconstructions=2)
    config = tmp / "exp.yaml"
    config.write_text(yaml.safe_dump(raw))
    reference = tmp / "reference"
    assert main(["run", str(config), "--out", str(reference), "--quiet", "--threads", "1"]) == 0
    return config, reference


def metrics(run_dir: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for path in sorted((run_dir / "metrics").glob("*.csv")):
        frame = pd.read_csv(path)
        out[path.name] = frame.drop(columns=[c for c in frame.columns if c in TIMING_COLUMNS])
    return out


class SignalAt:
    """Wraps a function so that its ``nth`` call first sends SIGTERM to this process."""

    def __init__(self, original, nth: int = 1) -> None:
        self.original, self.nth, self.calls, self.sent_at, self.sent_ns = original, nth, 0, None, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.nth:
            self.sent_at, self.sent_ns = time.perf_counter(), time.time_ns()
            os.kill(os.getpid(), signal.SIGTERM)
        return self.original(*args, **kwargs)


def _phases() -> list[tuple[str, object, str, int]]:
    """(phase id, owner object, attribute to wrap, which call sends the signal)."""
    phases = [
        ("training-step", replearn.training.loop, "step_generator", 3),
        ("last-epoch-validation", replearn.training.loop, "evaluate", 2),
        ("extraction", replearn.experiment.experiment, "extract_splits", 1),
    ]
    phases += [
        (f"analysis-{name}", cls, "compute", 1) for name, cls in ANALYSES.items() if name not in INTERPRETABILITY
    ]  # the tiny run leaves those out (tested in their own runs)
    phases.append(("rendering", replearn.report.html, "build_context", 1))
    return phases


PHASES = _phases()


def stop_at(
    phase: str, owner, attribute: str, nth: int, argv: list[str], out: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """Run ``argv`` with SIGTERM sent at ``phase``; check that it stopped there at once and recorded it."""
    wrapper = SignalAt(getattr(owner, attribute), nth)
    monkeypatch.setattr(owner, attribute, wrapper)
    capsys.readouterr()
    figures_before = set(plt.get_fignums())
    code = main(argv)
    stopped = time.perf_counter()
    err = capsys.readouterr().err
    monkeypatch.undo()

    assert wrapper.sent_at is not None, f"{phase}: the phase never ran"
    assert code == 130, f"{phase}: exit {code}, {err}"
    assert stopped - wrapper.sent_at < 20.0, f"{phase}: took {stopped - wrapper.sent_at:.1f}s to stop"
    status = read_json(out / "status.json")
    assert status["state"] == "interrupted" and "SIGTERM" in status["message"], (phase, status)
    hint = f"Resume with: replearn run --resume {shlex.quote(str(out))}"
    assert hint in err, f"{phase}: {err}"
    assert shlex.split(hint.split(": ", 1)[1])[-1] == str(out)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
    assert not (out / "report.html").exists(), f"{phase}: the run went on to render its report"
    assert set(plt.get_fignums()) <= figures_before, f"{phase}: figures of the stopped report left open"
    if phase in ("training-step", "last-epoch-validation"):
        assert not (out / "checkpoints" / "supervised_seed0.pt").exists(), "training went on after the signal"
        assert (out / "checkpoints" / "supervised_seed0.state.pt").exists()
    if phase == "extraction" or phase.startswith("analysis-"):  # the tables of analyses done before it may exist
        late = [
            p.name
            for p in (out / "metrics").glob("*.csv")
            if not p.name.startswith("train_") and p.stat().st_mtime_ns > wrapper.sent_ns
        ]
        assert late == [], f"{phase}: analyses' tables written after the signal: {late}"
        assert not (out / "metrics" / "summary.json").exists(), f"{phase}: the run went on to finish its analyses"


@pytest.mark.slow
def test_sigterm_at_every_phase_stops_records_and_resumes_to_the_same_metrics(
    experiment, tmp_path, capsys, monkeypatch
):
    """One run stopped at the first phase, then resumed and stopped at the next, and so on through every phase
    in the order a run meets them; each stop is checked, and the last resume must finish with the metrics of the
    uninterrupted run (a chain: each resume starts from the state the previous stop left)."""
    config, reference = experiment
    out = tmp_path / "run $(touch pwned); x"
    argv = ["run", str(config), "--out", str(out), "--quiet", "--threads", "1"]
    for phase, owner, attribute, nth in PHASES:
        stop_at(phase, owner, attribute, nth, argv, out, tmp_path, capsys, monkeypatch)
        argv = ["run", "--resume", str(out), "--quiet"]

    assert main(argv) == 0
    assert read_json(out / "status.json")["state"] == "complete" and (out / "report.html").is_file()
    expected, got = metrics(reference), metrics(out)
    assert expected.keys() == got.keys()
    for name in expected:
        pd.testing.assert_frame_equal(expected[name], got[name], check_exact=False, rtol=1e-9, obj=name)


def test_a_report_stopped_inside_a_section_leaves_no_figure_open(experiment, monkeypatch):
    """A stop (here Ctrl-C) while a section is drawing: the figures that section opened are closed."""
    _, reference = experiment
    training = ANALYSES.get("training")

    def draw_then_stop(self, run):
        plt.subplots(2, 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "sections", draw_then_stop)
    before = set(plt.get_fignums())
    with pytest.raises(KeyboardInterrupt):
        replearn.report.html.build_context(reference)
    assert set(plt.get_fignums()) == before
