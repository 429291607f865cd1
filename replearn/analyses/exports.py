"""The report's SVG and PDF figure copies, written beside the report by worker processes.

``RunArtifacts`` owns one ``VectorExports``; ``render.figure`` submits each figure to it.
"""

from __future__ import annotations

import json
import os
import pickle
import queue
import subprocess
import sys
import threading
from typing import Any

from replearn.analyses import plots
from replearn.rundir import layout


class VectorExports:
    """SVG and PDF copies of the report's figures, written by worker processes
    (``rundir.figure_files.vector_worker``) so that the slow vector formats (PDF font subsetting costs a
    quarter of a second per figure) overlap with the rest of the report; written inline where no worker can
    start or one dies. The workers are plain subprocesses, not multiprocessing, so that a user's unguarded
    script or notebook is never re-imported. One feeder thread per worker takes the next figure from a shared
    queue when its worker is free, so the report never waits and a slow figure holds up only its own worker."""

    def __init__(self, workers: int | None = None) -> None:
        self._workers: list[subprocess.Popen] = []
        self._count = workers or min(WORKERS, os.cpu_count() or 1)
        self._inline = False
        self._notes: list[str] = []
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self._feeders: list[threading.Thread] = []
        self._unsent: list[tuple[str, str, bytes, tuple[str, ...], tuple[float, float, float, float] | None]] = []
        self._lock = threading.Lock()

    def _start(self) -> bool:
        """Start the workers on the first figure; False when none could start (figures are written inline)."""
        if not self._workers and not self._inline:
            for i in range(self._count):
                try:
                    worker = subprocess.Popen(
                        [sys.executable, "-c", WORKER_CODE],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                    )
                except OSError:
                    break
                self._workers.append(worker)
                feeder = threading.Thread(
                    target=self._feed, args=(worker,), daemon=True, name=f"replearn-vector-feeder-{i}"
                )
                feeder.start()
                self._feeders.append(feeder)
            self._inline = not self._workers
        return bool(self._workers)

    def _feed(self, worker: subprocess.Popen) -> None:
        """Write the next queued figure to ``worker`` once it has read the last; once its pipe breaks, keep the
        figures it takes for ``finish`` to write inline."""
        broken, pipe = False, worker.stdin
        assert pipe is not None  # started with stdin=PIPE
        while (blob := self._queue.get()) is not None:
            if not broken:
                try:
                    pipe.write(len(blob).to_bytes(8, "little") + blob)
                    pipe.flush()
                    continue
                except OSError:  # the worker died: this and the figures this feeder takes later go inline
                    broken = True
            with self._lock:
                self._unsent.append(pickle.loads(blob))

    def submit(
        self,
        fig: Any,
        run_dir: Any,
        name: str,
        formats: list[str] | None = None,
        bbox: tuple[float, float, float, float] | None = None,
    ) -> None:
        """Queue ``fig``'s vector copies, cropped to ``bbox`` (inches; the PNG's box) when given."""
        chosen = tuple(formats or ("svg", "pdf"))
        try:
            blob = pickle.dumps((str(run_dir), name, pickle.dumps(fig), chosen, bbox))
        except (pickle.PicklingError, AttributeError, TypeError):  # e.g. a plug-in's figure with a lambda
            self._notes += plots.write_figure_vectors(fig, str(run_dir), name, chosen, bbox=bbox)
            return
        if self._start():
            self._queue.put(blob)
            return
        self._notes += plots.write_figure_vectors(fig, str(run_dir), name, chosen, bbox=bbox)

    def finish(self) -> list[str]:
        """Wait for every queued figure; the notes of files that could not be written, each once."""
        workers, self._workers = self._workers, []
        for _ in self._feeders:
            self._queue.put(None)
        for feeder in self._feeders:
            feeder.join()
        self._feeders = []
        for run_dir, name, pickled, formats, bbox in self._unsent:
            self._notes += plots.write_figure_vectors(pickle.loads(pickled), run_dir, name, formats, bbox=bbox)
        self._unsent = []
        for worker in workers:
            try:
                out, _ = worker.communicate(timeout=600)
                self._notes += (
                    json.loads(out.decode() or "[]")
                    if worker.returncode == 0
                    else [f"{layout.FIGURES}/ SVG and PDF copies failed (worker exit {worker.returncode})"]
                )
            except (OSError, ValueError, subprocess.TimeoutExpired):
                worker.kill()
                self._notes.append(f"{layout.FIGURES}/ SVG and PDF copies failed (worker did not finish)")
        return list(dict.fromkeys(self._notes))


WORKER_CODE = "from replearn.rundir.figure_files import vector_worker; vector_worker()"
WORKERS = 2  # vector-export processes: PDF and SVG writing is the longest part of rendering a report
