"""Progress messages on stderr, one line each, written above the progress bars; silenced with ``set_quiet``.
A run's overall ETA comes from the ``RunClock`` its ``Experiment`` holds."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from tqdm.auto import tqdm

_quiet = False
_start = time.perf_counter()


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


_sink: Callable[[str], None] | None = None


def set_sink(sink: Callable[[str], None] | None) -> None:
    """Send every message to ``sink`` (untimestamped) instead of stderr; None restores stderr. A process that
    works for a run's own (the second training process) hands its lines to the run, which stamps them."""
    global _sink
    _sink = sink


def log(message: str) -> None:
    """One timestamped line on stderr, written above any progress bar (never into it)."""
    if _sink is not None:
        _sink(message)
    elif not _quiet:
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
    at the rate measured so far, plus the analyses of every seed not yet analysed and the report. With a plan
    of the analyses (``plan_analyses``: each one's predicted seconds per seed, from ``replearn.experiment.costs``), the
    analyses left are the plan's, scaled by how far the analyses already done took longer or shorter than
    predicted, and the estimate is updated after each one (``analysis_done``); without one they are estimated
    as ``ANALYSIS_SHARE`` of a seed's training time (0.7–0.8 measured on digits and Fashion-MNIST)."""

    ANALYSIS_SHARE = 0.75
    # how far the measured/predicted ratio may move the plan (the model is rough, not arbitrary)
    CORRECTION_RANGE = (0.1, 10.0)
    # the plan counts as this share of its own total already measured, so that the first, short analyses (whose
    # fixed costs the model knows least) do not swing the ETA of the long ones: a 256 px run's ETA went to
    # 32 min after probes took 17 s for a predicted 2 s, and 52 min after label efficiency, with 6 min left
    PRIOR_SHARE = 0.25

    def __init__(self, seeds: int) -> None:
        self.seeds = seeds
        self.step_cost: dict[str, float] = {}
        self.current: str | None = None
        self.planned_work = self.done_work = self.train_seconds = 0.0
        self.analysis_seconds: list[float] = []
        self.analysis_plan: dict[str, float] = {}
        self.render_plan = 0.0
        self.measured = self.predicted = 0.0  # of the analyses done so far (all seeds)
        self.done_in_seed: list[str] = []
        self.rendered = False

    def plan(self, regime: str, steps: int, step_cost: float) -> None:
        """``steps`` training steps of ``regime`` to come, each costing ``step_cost`` (e.g. FLOPs)."""
        self.step_cost[regime] = max(step_cost, 1e-9)
        self.planned_work += steps * self.step_cost[regime]

    def plan_analyses(self, per_seed: dict[str, float], render_seconds: float = 0.0) -> None:
        """The analyses' predicted seconds on one seed (by name, in the order they run) and the report's. (The
        plan is not scaled by how training compared with its own prediction: a small run's training is mostly
        per-epoch overhead, and that ratio put the ETA 3–7× too high in ``bench_research_scale.py``.)"""
        self.analysis_plan = dict(per_seed)
        self.render_plan = render_seconds

    def skip(self, regime: str, steps: int) -> None:
        """Planned steps that will not run (a regime loaded from its finished checkpoint)."""
        self.planned_work -= steps * self.step_cost.get(regime, 0.0)

    def begin(self, regime: str) -> None:
        self.current = regime

    def trained(self, steps: int, seconds: float) -> None:
        self.done_work += steps * self.step_cost.get(self.current or "", 0.0)
        self.train_seconds += seconds

    def analysis_done(self, name: str, seconds: float) -> None:
        """One analysis of the current seed finished in ``seconds``."""
        self.done_in_seed.append(name)
        if name in self.analysis_plan:
            self.measured += seconds
            self.predicted += self.analysis_plan[name]

    def analysed(self, seconds: float) -> None:
        """Every analysis of a seed finished (with extraction, in ``seconds``)."""
        self.analysis_seconds.append(seconds)
        self.done_in_seed = []

    def finished_rendering(self) -> None:
        self.rendered = True

    def correction(self) -> float:
        """Measured over predicted time of the planned analyses done so far, the plan weighing as PRIOR_SHARE of
    itself measured (1 before any)."""
        if self.predicted <= 0:
            return 1.0
        lo, hi = self.CORRECTION_RANGE
        prior = self.PRIOR_SHARE * sum(self.analysis_plan.values())  # the plan's weight until enough is measured
        return min(hi, max(lo, (self.measured + prior) / (self.predicted + prior)))

    def eta(self) -> float | None:
        """Seconds left, or None until one epoch has given a training rate (or, with a plan, until then the
        analyses and the report alone)."""
        training_left = 0.0
        if self.done_work > 0:
            per_work = self.train_seconds / self.done_work
            training_left = max(0.0, self.planned_work - self.done_work) * per_work
        elif not self.analysis_plan or self.planned_work > 0:
            return None
        seeds_left = max(0, self.seeds - len(self.analysis_seconds))
        if self.analysis_plan:
            factor = self.correction()
            per_seed = sum(self.analysis_plan.values()) * factor
            this_seed = sum(v for k, v in self.analysis_plan.items() if k not in self.done_in_seed) * factor
            analyses = this_seed + max(0, seeds_left - 1) * per_seed if seeds_left else 0.0
            return training_left + analyses + (0.0 if self.rendered else self.render_plan * factor)
        per_seed = (sum(self.analysis_seconds) / len(self.analysis_seconds) if self.analysis_seconds
                    else self.ANALYSIS_SHARE * self.train_seconds / max(self.done_work, 1e-12) * self.planned_work
                    / max(1, self.seeds))
        return training_left + seeds_left * per_seed

    def suffix(self) -> str:
        eta = self.eta()
        return "" if eta is None or eta < 1 else f"; run ETA ≈ {format_duration(eta)}"


class Heartbeat:
    """Logs ``message`` with the seconds elapsed every ``every`` seconds while a long step runs (a daemon
    timer; nothing is logged for a step that ends sooner)."""

    def __init__(self, message: str, every: float = 10.0) -> None:
        self.message, self.every = message, every
        self.started = time.perf_counter()
        self._timer: Any = None

    def _beat(self) -> None:
        log(f"{self.message} ({time.perf_counter() - self.started:.0f}s so far)")
        self._arm()

    def _arm(self) -> None:
        import threading

        self._timer = threading.Timer(self.every, self._beat)
        self._timer.daemon = True
        self._timer.start()

    def __enter__(self) -> "Heartbeat":
        self._arm()
        return self

    def __exit__(self, *_: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
