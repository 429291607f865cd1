"""Progress messages on stderr, one line each, written above the progress bars; silenced with ``set_quiet``.
A run's overall ETA comes from the ``RunClock`` its ``Experiment`` holds."""
from __future__ import annotations

import sys
import time
from typing import Any

from tqdm.auto import tqdm

_quiet = False
_start = time.perf_counter()


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def log(message: str) -> None:
    """One timestamped line on stderr, written above any progress bar (never into it)."""
    if not _quiet:
        tqdm.write(f"[{time.perf_counter() - _start:6.1f}s] {message}", file=sys.stderr)


def progress_bar(total: int, desc: str, enabled: bool = True) -> Any:
    """A tqdm bar on stderr that disappears when done (disabled when quiet or not wanted)."""
    return tqdm(total=total, desc=desc, leave=False, disable=not enabled or _quiet or None)


def format_duration(seconds: float) -> str:
    """12 s, 4 min 05 s, 1 h 02 min."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class RunClock:
    """A run's overall progress: the training work planned (steps × each regime's FLOPs per step) and done,
    at the rate measured so far, plus the analyses of every seed not yet analysed. Before the first seed's
    analyses have run they are estimated as ``ANALYSIS_SHARE`` of a seed's training time (0.7–0.8 measured
    on digits and Fashion-MNIST)."""

    ANALYSIS_SHARE = 0.75

    def __init__(self, seeds: int) -> None:
        self.seeds = seeds
        self.step_cost: dict[str, float] = {}
        self.current: str | None = None
        self.planned_work = self.done_work = self.train_seconds = 0.0
        self.analysis_seconds: list[float] = []

    def plan(self, regime: str, steps: int, step_cost: float) -> None:
        """``steps`` training steps of ``regime`` to come, each costing ``step_cost`` (e.g. FLOPs)."""
        self.step_cost[regime] = max(step_cost, 1e-9)
        self.planned_work += steps * self.step_cost[regime]

    def skip(self, regime: str, steps: int) -> None:
        """Planned steps that will not run (a regime loaded from its finished checkpoint)."""
        self.planned_work -= steps * self.step_cost.get(regime, 0.0)

    def begin(self, regime: str) -> None:
        self.current = regime

    def trained(self, steps: int, seconds: float) -> None:
        self.done_work += steps * self.step_cost.get(self.current or "", 0.0)
        self.train_seconds += seconds

    def analysed(self, seconds: float) -> None:
        self.analysis_seconds.append(seconds)

    def eta(self) -> float | None:
        """Seconds left, or None until one epoch has given a training rate."""
        if self.done_work <= 0:
            return None
        per_work = self.train_seconds / self.done_work
        training_left = max(0.0, self.planned_work - self.done_work) * per_work
        per_seed = (sum(self.analysis_seconds) / len(self.analysis_seconds) if self.analysis_seconds
                    else self.ANALYSIS_SHARE * per_work * self.planned_work / max(1, self.seeds))
        return training_left + max(0, self.seeds - len(self.analysis_seconds)) * per_seed

    def suffix(self) -> str:
        eta = self.eta()
        return "" if eta is None or eta < 1 else f"; run ETA ≈ {format_duration(eta)}"
