"""Orderly stops on SIGINT/SIGTERM."""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Any, Iterator


class Stopper:
    """Turns SIGINT/SIGTERM into an orderly stop of a run, wherever the signal lands.

    While the training loop runs (inside ``deferring()``) the signal only sets ``requested``; the loop
    checks it after every step and after every epoch's validation, writes a resumable checkpoint and
    raises ``TrainingInterrupted``. At any other moment (extraction, analyses, rendering), or on a second
    signal, it interrupts at once with ``KeyboardInterrupt``, since those phases are redone on resume;
    ``requested`` still names the signal, so the run can record that it was interrupted and by what.
    A repeat within ``ECHO_SECONDS`` of the first, while training, is the same request (torchrun forwards
    the Ctrl-C that the terminal has already sent every process), not a second one.
    """

    ECHO_SECONDS = 2.0

    def __init__(self) -> None:
        self.requested: str | None = None
        self._deferring = False
        self._previous: dict[int, Any] = {}
        self._first_at = 0.0

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.requested is None
        if not first and self._deferring and time.monotonic() - self._first_at < self.ECHO_SECONDS:
            return
        self._first_at = time.monotonic() if first else self._first_at
        self.requested = self.requested or signal.Signals(signum).name
        if not self._deferring or not first:
            raise KeyboardInterrupt

    def request(self, name: str) -> None:
        """Ask for the orderly stop from another thread (no signal): training stops at its next step with its
        state saved; a stop already asked for is kept."""
        self.requested = self.requested or name

    @contextlib.contextmanager
    def deferring(self) -> Iterator[None]:
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False

    def __enter__(self) -> "Stopper":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
