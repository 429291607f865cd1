"""Drawing the report's sections ahead, in a second process, while the run's later analyses still compute.

Why: drawing the report's figures (and their SVG and PDF copies) took a third of the default digits run,
after the analyses, most of which keep one core busy and leave the other idle. A run therefore starts one
drawing process (``SectionDrawer``) before its last seed's analyses; as soon as an analysis's tables and
arrays are final, the drawer draws that analysis's sections from the run directory, exactly as the report
would (``draw_sections``), recording every file and run-level value they read with a fingerprint of its
content (``RunArtifacts.tracking``). The report (``html.build_context``) then reuses a drawn analysis only
if everything it read is unchanged, and draws the rest itself: sections that read the run's summary or its
final status, an analysis whose tables were written later, or all of them when the drawer could not start
or died. Either way the report is what ``replearn report`` draws from the same files.

The drawer is a plain subprocess (not multiprocessing), reading requests as JSON lines on stdin and
answering with length-prefixed pickles on stdout.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from replearn.analyses import Analysis, RunArtifacts

WORKER_CODE = "from replearn.report.predraw import serve; serve()"
QUIET_LIMIT_SECONDS = 300.0  # collect() gives up on a drawer that has answered nothing for this long
# Drawing is one thread's work; a BLAS or OpenMP pool in the drawer would only compete with the run's analyses
# (the run's own thread policy is not applied there). A setting of these in the environment wins.
POOLS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class DrawnSections:
    """One analysis's report sections as drawn, with the notes drawing them gave and what they read."""

    analysis: str
    sections: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    not_written: list[str] = field(default_factory=list)
    reads: dict[str, str] = field(default_factory=dict)
    failed: bool = False  # drawing raised: the report draws this analysis itself (and names the error)
    used: bool = False  # set by the report when it used these sections

    def still_valid(self, run: RunArtifacts) -> bool:
        """Whether every file and value the sections read is what ``run`` holds now."""
        return not self.failed and all(run.fingerprint(key) == seen for key, seen in self.reads.items())


def draw_sections(analysis: Analysis, run: RunArtifacts) -> DrawnSections:
    """``analysis.sections(run)`` as plain data, with the notes they added to ``run`` and what they read."""
    unreadable, not_written = len(run.unreadable), len(run.not_written)
    with run.tracking() as reads:
        sections = [dataclasses.asdict(s) for s in analysis.sections(run)]
    return DrawnSections(
        analysis.name, sections, run.unreadable[unreadable:], run.not_written[not_written:], dict(reads)
    )


def serve() -> None:
    """The drawer: for each request line ``{"run_dir", "analysis"}`` on stdin, draw that analysis's sections
    from the run directory as it is now and write them back; at the end of stdin, wait for the figures'
    vector copies and write the notes of files that could not be written."""
    from replearn.analyses import report_analyses
    from replearn.analyses.exports import VectorExports
    from replearn.analyses.plots import plt

    out = sys.stdout.buffer
    exports, notes, seen = VectorExports(), [], set()
    for line in sys.stdin:
        request = json.loads(line)
        if request["analysis"] in seen:  # drawn again: its earlier figures' copies must not land after these
            notes += exports.finish()
            exports = VectorExports()
        seen.add(request["analysis"])
        run = RunArtifacts(Path(request["run_dir"]))
        run.vector_exports = exports
        analyses, _ = report_analyses(run.config)
        chosen = [a for a in analyses if a.name == request["analysis"]]
        if not chosen:
            drawn = DrawnSections(request["analysis"], failed=True)
        else:
            try:
                drawn = draw_sections(chosen[0], run)
            except Exception:  # the report draws it again and names the error there
                drawn = DrawnSections(request["analysis"], failed=True)
            finally:
                plt.close("all")
        _send(out, drawn)
    _send(out, ("done", list(dict.fromkeys(notes + exports.finish()))))


def _send(out: Any, message: Any) -> None:
    blob = pickle.dumps(message)
    out.write(len(blob).to_bytes(8, "little") + blob)
    out.flush()


class SectionDrawer:
    """The run's side of the drawing process: ``submit`` an analysis whose files are final, ``collect`` what
    was drawn (waiting for the rest and for the figures' vector copies). Nothing here raises: a drawer that
    cannot start or dies leaves the drawing to the report."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.drawn: dict[str, DrawnSections] = {}
        self.not_written: list[str] = []
        self._process: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._submitted: list[str] = []
        self._last_answer = time.monotonic()
        self._stopped = False  # no drawer is to be started (again)
        self._done = False  # the drawer drew everything it was given and wrote the vector copies

    def start(self) -> None:
        """Start the drawing process now (``submit`` starts it otherwise), so that its imports are done
        before the first request."""
        if self._process is None:
            self._start()

    def submit(self, analysis: str) -> None:
        """Ask for ``analysis``'s sections to be drawn now (its files will not change again)."""
        if self._process is None and not self._start():
            return
        assert self._process is not None and self._process.stdin is not None
        try:
            self._process.stdin.write(
                (json.dumps({"run_dir": str(self.run_dir), "analysis": analysis}) + "\n").encode("utf-8")
            )
            self._process.stdin.flush()
            self._submitted.append(analysis)
            self._last_answer = time.monotonic()  # the silence limit counts from the last request too
        except OSError:  # the drawer died: the report draws what it did not
            self.close()

    def _start(self) -> bool:
        if self._stopped:
            return False
        self._stopped = True  # one drawer per run: if it dies, the report draws the rest
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", WORKER_CODE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: close() stops its figure workers with it
                env={**{name: "1" for name in POOLS}, **os.environ, "PYTHONWARNINGS": "ignore"},
            )
        except OSError:
            return False
        self._reader = threading.Thread(target=self._read, daemon=True, name="replearn-section-drawer")
        self._reader.start()
        return True

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        stream = self._process.stdout
        try:
            while len(header := stream.read(8)) == 8:
                message = pickle.loads(stream.read(int.from_bytes(header, "little")))
                self._last_answer = time.monotonic()
                if isinstance(message, DrawnSections):
                    self.drawn[message.analysis] = message
                elif isinstance(message, tuple) and message[0] == "done":
                    self.not_written = list(message[1])
                    self._done = True
        except Exception:  # a broken or killed drawer: what arrived is kept
            pass

    def draw_the_rest(self, analyses: list[str]) -> None:
        """Once every file of the run is written (its summary too): ask for the analyses not drawn yet, and again
        for those whose drawing has already read a file that changed since, so that the report finds them all
        drawn (the drawer's figure workers are already running, and the run's process has nothing else to do)."""
        if self._process is None:
            return
        now = RunArtifacts(self.run_dir)
        stale = [name for name in analyses if name in self.drawn and not self.drawn[name].still_valid(now)]
        for name in [name for name in analyses if name not in self._submitted] + stale:  # redrawn ones last
            self.submit(name)

    def collect(self, quiet_limit: float = QUIET_LIMIT_SECONDS) -> Mapping[str, DrawnSections]:
        """Everything drawn, after the drawer has drawn all it was given and written the vector copies (a
        drawer silent for ``quiet_limit`` seconds is stopped; what it did not answer is drawn by the report)."""
        if self._process is None:
            return {}
        try:
            assert self._process.stdin is not None
            self._process.stdin.close()
        except OSError:
            pass
        assert self._reader is not None
        self._last_answer = time.monotonic()
        while not self._done and self._reader.is_alive() and time.monotonic() - self._last_answer < quiet_limit:
            self._reader.join(timeout=0.05)
        if not self._done:  # it died or hung: its vector copies may be missing, so nothing it drew is used
            self.close()
            return {}
        self.close()
        return dict(self.drawn)

    def close(self) -> None:
        """Stop the drawer (at once, if it is still running)."""
        process, self._process = self._process, None
        if process is None:
            return
        try:  # the drawer and the figure workers it started
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, AttributeError):
            if process.poll() is None:
                process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        if self._reader is not None:
            self._reader.join(timeout=5)
