"""The HTML report: rendered only from a run directory's saved artifacts, never by retraining.

Every analysis the run used (the built-ins and its ``analysis.extra`` plug-ins, read from its saved config)
renders its own sections from the run directory (``Analysis.sections``); this module orders them, adds the
run's state, and writes one self-contained file: figures are embedded PNG data URIs, every user-supplied
string is escaped by Jinja2's autoescaping, and a Content-Security-Policy forbids loading anything from the
network. Sections whose artifacts are missing (an interrupted or diverged run) are left out, and the report
says that the run is incomplete; a plug-in that cannot be imported where the report is rendered is named
instead of its sections.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jinja2

from replearn.version import __version__
from replearn.analyses import RunArtifacts, report_analyses
from replearn.analyses.plots import plt
from replearn.report.predraw import DrawnSections
from replearn.rundir.io import atomic_write_text, check_run_dir
from replearn.rundir import layout


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("replearn.report", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined)


def build_context(run_dir: Path, status: dict[str, Any] | None = None,
                  progress: Callable[[str, int, int], None] | None = None,
                  drawn: Mapping[str, DrawnSections] | None = None, not_written: Sequence[str] = ()) -> dict[str, Any]:
    """Everything the template shows, read from the run directory; ``progress(name, done, total)`` is called
    after each analysis's sections are drawn. ``drawn``: sections drawn ahead (``predraw``), each used only
    if every file and value it read is unchanged."""
    run = RunArtifacts(run_dir)
    if status is not None:
        run.status = status
    analyses, notes = report_analyses(run.config)
    run.unreadable.extend(notes)
    sections = []
    open_before = set(plt.get_fignums())
    try:
        for done, analysis in enumerate(analyses, 1):
            try:
                ahead = (drawn or {}).get(analysis.name)
                if ahead is not None and ahead.still_valid(run):
                    sections += ahead.sections
                    run.unreadable += [n for n in ahead.unreadable if n not in run.unreadable]
                    run.not_written += [n for n in ahead.not_written if n not in run.not_written]
                    ahead.used = True
                else:
                    sections += [dataclasses.asdict(s) for s in analysis.sections(run)]
                if progress is not None:
                    progress(analysis.name, done, len(analyses))
            except Exception as exc:  # damaged or foreign artifacts: show every other section, name this one
                detail = " ".join(str(exc).split())[:100]
                run.unreadable.append(f"the '{analysis.name}' section, whose files could not be used "
                                      f"({type(exc).__name__}{': ' + detail if detail else ''})")
    finally:  # a section stopped half-way (a signal, an error) leaves its figures open: close them
        for number in set(plt.get_fignums()) - open_before:
            plt.close(number)
        run.finish_exports()
        run.not_written += [note for note in not_written if note not in run.not_written]
    marker = run.json_file(layout.MARKER, dict) or {}
    state = run.status.get("state", "unknown")
    return {
        "title": f"replearn — {marker.get('name', run_dir.name)}", "run_dir": str(run_dir),
        "dataset_name": run.dataset.get("name", "?"), "state": state,
        "state_message": run.status.get("message", ""), "complete": state == "complete",
        "wall_seconds": run.summary.get("wall_seconds"), "sections": sections, "unreadable": run.unreadable,
        "not_written": run.not_written,
        "version": __version__, "rendered": dt.datetime.now().isoformat(timespec="seconds"),
    }


def render_report(run_dir: str | Path, out: str | Path | None = None, status: dict[str, Any] | None = None,
                  progress: Callable[[str, int, int], None] | None = None,
                  drawn: Mapping[str, DrawnSections] | None = None, not_written: Sequence[str] = ()) -> Path:
    """Render ``run_dir``'s report from its artifacts and write it atomically (default: run_dir/report.html).
    ``status`` stands in for status.json: a run renders its report before it records itself complete;
    ``progress`` is told of each analysis's sections drawn and ``drawn`` gives those drawn ahead, with
    ``not_written`` the files their process could not write (``build_context``)."""
    run_dir = check_run_dir(run_dir, need="report")
    html = _env().get_template("report.html.j2").render(**build_context(run_dir, status, progress, drawn,
                                                                          not_written))
    return atomic_write_text(Path(out) if out else run_dir / layout.REPORT, html)
