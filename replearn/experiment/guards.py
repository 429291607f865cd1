"""What stops an experiment's stage, and what is recorded when one fails: stages called out of order, a second
run of a finished experiment, a signal between stages, and the failure recorded in the run directory's status
(interrupted, diverged, failed) with the exception to raise."""

from __future__ import annotations

import shlex
from typing import Any

from replearn.errors import ReplearnError, TrainingDiverged, TrainingInterrupted
from replearn.experiment.records import outside_run
from replearn.runtime import distributed


class StageGuards:
    """The guards ``Experiment`` runs around its stages (a mixin: it reads the experiment's ``run_dir``,
    ``stopper``, ``results``, ``model_rows`` and its ``_completed``/``_running``/``resuming`` state)."""

    run_dir: Any
    stopper: Any
    results: Any
    model_rows: Any
    resuming: bool
    _completed: bool
    _running: bool

    def render(self, status: Any = None) -> Any:  # provided by Experiment
        raise NotImplementedError

    def _need_stage(self, called: str, first: str, done: bool) -> None:
        """Refuse a stage called out of order, naming the stage that must come first (nothing is touched)."""
        self._refuse_if_complete(called)
        if not done:
            raise ReplearnError(
                f"{called} was called before {first}",
                f"call {first} first (the stages run in the order prepare, train, extract, analyse, "
                "finish, render; run() chains them)",
            )

    def _refuse_if_complete(self, called: str) -> None:
        """A finished experiment is not run again: its run directory stays as it is."""
        if self._completed:
            raise ReplearnError(
                f"{called}: this experiment has already run to completion in {self.run_dir}",
                "build a new Experiment with another out= (or force=True to replace the run) to run it again",
            )

    def _stop_if_asked(self) -> None:
        """Stop between stages when a signal arrived after the training loop's last look (it only records
        the signal while training): what is finished is on disk, and a resume continues from there."""
        requested = distributed.first_request(self.stopper.requested)  # a signal on any rank stops them all
        if requested:
            raise TrainingInterrupted(str(self.run_dir), requested)

    def _failed(self, exc: BaseException) -> BaseException:
        """Record why the run stopped and return the exception to raise. Only a run this process has marked
        running is recorded: a failure before that (a refused resume, a taken --out) leaves the disk as it was."""
        rd = self.run_dir
        if not self._running:
            return exc
        if isinstance(exc, KeyboardInterrupt):  # a signal outside the training loop: those phases are redone
            stop = TrainingInterrupted(str(rd), self.stopper.requested or "SIGINT")
            rd.record_failure("interrupted", f"stopped by {stop.signal_name}; resume to finish")
            return stop
        if isinstance(exc, TrainingInterrupted):
            rd.record_failure("interrupted", f"stopped by {exc.signal_name}; state saved in {exc.run_dir}")
        elif isinstance(exc, TrainingDiverged):
            rd.record_failure("diverged", exc.one_line())
            try:  # best effort: what was measured before the divergence, and a report saying it diverged
                rd.write_tables(self.results, self.model_rows)
                self.render()
            except Exception:  # the divergence is the error to report, not a failure while recording it
                pass
        elif isinstance(exc, OSError) and not outside_run(exc, rd.path):  # disk full, or the run's files changed
            return rd.write_failure(exc, self.resuming)
        elif isinstance(exc, OSError):  # a file the run reads (the dataset's, a cache) went missing or unreadable
            error = ReplearnError(
                f"could not read '{exc.filename}' during the run ({exc.strerror or type(exc).__name__})",
                "check that the file is there and readable, then resume with: replearn run "
                f"--resume {shlex.quote(str(rd))}",
            )
            rd.record_failure("failed", error.one_line())
            return error
        elif isinstance(exc, ReplearnError):
            rd.record_failure("failed", exc.one_line())
        elif isinstance(exc, SystemExit):
            rd.record_failure("failed", f"code run by replearn (a plug-in or a library) called sys.exit({exc.code!r})")
        elif isinstance(exc, Exception):
            detail = " ".join(str(exc).split())[:200]
            rd.record_failure("failed", f"{type(exc).__name__}{': ' + detail if detail else ''}")
        return exc
