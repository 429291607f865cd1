"""User-facing errors: each names the problem and the fix, and the CLI prints it as one line."""
from __future__ import annotations


class ReplearnError(ValueError):
    """An error caused by the user's input, with a hint on how to fix it.

    The CLI catches these and prints ``error: <problem> (fix: <hint>)`` on one line, without a traceback. It is a
    ``ValueError`` (a bad argument, file or setting), so a Python caller's ``except ValueError`` catches it too.
    """

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = " ".join(self.problem.split())
        if self.fix:
            text += f" — fix: {' '.join(self.fix.split())}"
        return text


class ConfigError(ReplearnError):
    """A config file, key or value that replearn cannot use."""


class DataError(ReplearnError):
    """Dataset files missing, malformed, or unsuitable for the experiment."""


class CheckpointError(ReplearnError):
    """A checkpoint that cannot be loaded safely or does not match the model."""


class RunDirError(ReplearnError):
    """A run directory that is missing, foreign, incomplete or would be overwritten."""


class TrainingDiverged(ReplearnError):
    """Training produced a non-finite loss or gradient."""


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after checkpointing the last completed step."""

    def __init__(self, run_dir: str, signal_name: str) -> None:
        self.run_dir = run_dir
        self.signal_name = signal_name
        super().__init__(f"interrupted by {signal_name}")
