"""The report's SVG and PDF figure copies, written beside the report by one worker process.

``RunArtifacts`` owns one ``VectorExports``; ``render.figure`` submits each figure to it.
"""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
from typing import Any

from replearn.analyses import plots
from replearn.rundir import layout


class VectorExports:
    """SVG and PDF copies of the report's figures, written by one worker process (``plots.vector_worker``) so
    that the slow vector formats (PDF font subsetting costs a quarter of a second per figure) overlap with the
    rest of the report; written inline where the worker cannot start or dies. The worker is a plain
    subprocess, not multiprocessing, so that a user's unguarded script or notebook is never re-imported."""

    def __init__(self) -> None:
        self._worker: subprocess.Popen | None = None
        self._inline = False
        self._notes: list[str] = []

    def _start(self) -> subprocess.Popen | None:
        if self._worker is None and not self._inline:
            try:
                self._worker = subprocess.Popen(
                    [sys.executable, "-c", "from replearn.analyses.plots import vector_worker; vector_worker()"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            except OSError:
                self._inline = True
        return self._worker

    def submit(self, fig: Any, run_dir: Any, name: str, formats: list[str] | None = None) -> None:
        formats = formats or ["svg", "pdf"]
        try:
            blob = pickle.dumps((str(run_dir), name, pickle.dumps(fig), formats))
        except (pickle.PicklingError, AttributeError, TypeError):  # e.g. a plug-in's figure with a lambda
            self._notes += plots.write_figure_vectors(fig, str(run_dir), name, formats)
            return
        worker = self._start()
        if worker is not None:
            try:
                worker.stdin.write(len(blob).to_bytes(8, "little") + blob)
                worker.stdin.flush()
                return
            except OSError:  # the worker died: this and later figures are written here
                self._inline = True
        self._notes += plots.write_figure_vectors(fig, str(run_dir), name, formats)

    def finish(self) -> list[str]:
        """Wait for every queued figure; the notes of files that could not be written, each once."""
        worker, self._worker = self._worker, None
        if worker is not None:
            try:
                out, _ = worker.communicate(timeout=600)
                self._notes += json.loads(out.decode() or "[]") if worker.returncode == 0 else [
                    f"{layout.FIGURES}/ SVG and PDF copies failed (worker exit {worker.returncode})"]
            except (OSError, ValueError, subprocess.TimeoutExpired):
                worker.kill()
                self._notes.append(f"{layout.FIGURES}/ SVG and PDF copies failed (worker did not finish)")
        return list(dict.fromkeys(self._notes))
