"""Sections drawn ahead (report.predraw) are reused only while every file and value they read is unchanged."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from replearn.analyses import Analysis, RunArtifacts, Section
from replearn.report.predraw import DrawnSections, SectionDrawer, draw_sections


class ReadsATableAnArrayAndTheSummary(Analysis):
    name = "reader"

    def sections(self, run: RunArtifacts) -> list[Section]:
        frame = run.csv("scores")
        arrays = run.arrays("maps")
        wall = run.summary.get("wall_seconds")
        return [Section("reader", f"{len(frame)} rows, {len(arrays)} seeds, wall {wall}")]


class ReadsOnlyTheTable(Analysis):
    name = "table_only"

    def sections(self, run: RunArtifacts) -> list[Section]:
        return [Section("table_only", f"{len(run.csv('scores'))} rows")]


def make_run(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "artifacts").mkdir()
    pd.DataFrame({"model": ["a", "b"], "score": [0.5, 0.7]}).to_csv(tmp_path / "metrics" / "scores.csv", index=False)
    np.savez(tmp_path / "artifacts" / "maps_seed0.npz", x=np.zeros(3))
    return tmp_path


def test_what_a_section_read_is_recorded_with_a_content_fingerprint(tmp_path):
    run = RunArtifacts(make_run(tmp_path))
    drawn = draw_sections(ReadsATableAnArrayAndTheSummary(), run)
    assert drawn.sections[0]["title"] == "2 rows, 1 seeds, wall None"
    assert set(drawn.reads) == {
        "file:metrics/scores.csv",
        "glob:artifacts/maps_seed*.npz",
        "file:artifacts/maps_seed0.npz",
        "value:summary",
    }
    assert drawn.still_valid(RunArtifacts(tmp_path))


def test_a_changed_table_a_new_seed_file_or_a_written_summary_makes_drawn_sections_stale(tmp_path):
    make_run(tmp_path)
    drawn = draw_sections(ReadsATableAnArrayAndTheSummary(), RunArtifacts(tmp_path))
    table_only = draw_sections(ReadsOnlyTheTable(), RunArtifacts(tmp_path))

    np.savez(tmp_path / "artifacts" / "maps_seed1.npz", x=np.ones(3))  # a file the glob now also matches
    assert not drawn.still_valid(RunArtifacts(tmp_path))
    assert table_only.still_valid(RunArtifacts(tmp_path))
    (tmp_path / "artifacts" / "maps_seed1.npz").unlink()
    assert drawn.still_valid(RunArtifacts(tmp_path))

    (tmp_path / "metrics" / "summary.json").write_text(json.dumps({"wall_seconds": 12.0}))
    assert not drawn.still_valid(RunArtifacts(tmp_path))
    assert table_only.still_valid(RunArtifacts(tmp_path))

    pd.DataFrame({"model": ["a"], "score": [0.5]}).to_csv(tmp_path / "metrics" / "scores.csv", index=False)
    assert not table_only.still_valid(RunArtifacts(tmp_path))


def test_a_table_rewritten_with_the_same_content_keeps_drawn_sections(tmp_path):
    make_run(tmp_path)
    drawn = draw_sections(ReadsOnlyTheTable(), RunArtifacts(tmp_path))
    frame = pd.read_csv(tmp_path / "metrics" / "scores.csv")
    frame.to_csv(tmp_path / "metrics" / "scores.csv", index=False)  # a later write of every table: same bytes
    assert drawn.still_valid(RunArtifacts(tmp_path))


def test_a_status_given_to_the_report_counts_as_what_a_section_read(tmp_path):
    class ReadsStatus(Analysis):
        name = "status_reader"

        def sections(self, run: RunArtifacts) -> list[Section]:
            return [Section("s", run.status["state"])]

    make_run(tmp_path)
    (tmp_path / "status.json").write_text(json.dumps({"state": "running"}))
    drawn = draw_sections(ReadsStatus(), RunArtifacts(tmp_path))
    final = RunArtifacts(tmp_path)
    assert drawn.still_valid(final)
    final.status = {"state": "complete"}  # what a finishing run passes to the report
    assert not drawn.still_valid(final)


def test_a_failed_drawing_is_never_used(tmp_path):
    assert not DrawnSections("x", failed=True).still_valid(RunArtifacts(make_run(tmp_path)))


def test_a_drawer_that_dies_leaves_the_drawing_to_the_report(tmp_path):
    drawer = SectionDrawer(make_run(tmp_path))
    drawer.submit("probes")
    drawer._process.kill()  # e.g. killed for memory: nothing it drew is used, so no figure copy can be missing
    assert drawer.collect() == {}
    drawer.submit("probes")  # one drawer per run: no second one is started
    assert drawer._process is None
