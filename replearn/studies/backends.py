"""Running a planned sweep (``sweep.Sweep``): locally one run after another, N side by side in subprocesses
with the cores split between them, or as a SLURM job array through submitit. Every backend runs each cell
with ``run_cell``, which skips a complete run, resumes an interrupted one and starts a missing one; the
manifest (``sweep.json``) records each run's state, and a progress line with an ETA (from the finished
runs' wall times) is printed as runs start and finish."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from replearn.experiment import second_process
from replearn.runtime import threads as parallel
from replearn.rundir.io import write_json
from replearn.errors import ReplearnError, TrainingInterrupted
from replearn.runtime.log import format_duration, set_quiet
from replearn.rundir.directory import RunDir
from replearn.studies.sweep import MANIFEST, Cell, Sweep
from replearn.rundir import layout
from replearn.rundir.directory import lock_directory, unlock_directory


def job(sweep: Sweep, cell: Cell, threads: int | None, alone: bool = True) -> dict[str, Any]:
    """What a worker needs to run one cell (plain data: it is pickled for SLURM and passed as JSON); ``alone``
    is False for a cell that runs beside others on the same cores (no second training process)."""
    return {"name": cell.name, "base": sweep.base, "overrides": cell.overrides,
            "dir": str((sweep.out / cell.name).absolute()), "threads": threads, "alone": alone}


def run_cell(task: dict[str, Any]) -> dict[str, Any]:
    """Run one cell to completion in this process: skip it when complete, resume it when interrupted."""
    from replearn.experiment.experiment import Experiment

    set_quiet(True)
    second_process.allow(task.get("alone", True))
    if task.get("threads") is not None:
        parallel.set_threads(task["threads"])
    run_dir = RunDir(task["dir"])
    if run_dir.status().get("state") == "complete":
        return run_state(run_dir.path)
    if run_dir.is_run():
        experiment = Experiment.resume(run_dir.path, progress=False)
    else:
        experiment = Experiment(task["base"], task["overrides"], out=run_dir.path, progress=False)
    experiment.run()
    return run_state(run_dir.path)


def run_state(path: Path) -> dict[str, Any]:
    """A run's state, message and wall time from its status.json ('pending' before it exists)."""
    status = RunDir(path).status() if (path / layout.STATUS).is_file() else {}
    return {"state": status.get("state", "pending"), "message": status.get("message", ""),
            "wall_seconds": status.get("wall_seconds")}


def stopped_state(path: Path) -> dict[str, Any]:
    """The state of a run the sweep was stopped in: complete if it finished just before the signal came."""
    outcome = run_state(path)
    return outcome if outcome["state"] == "complete" else {**outcome, "state": "interrupted"}


class Manifest:
    """``sweep.json``: the spec and every run's values, overrides, directory and state, rewritten atomically."""

    def __init__(self, sweep: Sweep) -> None:
        self.sweep = sweep
        self.runs = {c.name: {"name": c.name, "dir": c.name, "values": c.values, "seed": c.seed,
                              "overrides": c.overrides, **run_state(sweep.out / c.name)} for c in sweep.cells}
        self.extra: dict[str, Any] = {}

    def update(self, name: str, **fields: Any) -> None:
        self.runs[name].update(fields)
        self.write()

    def write(self) -> None:
        write_json(self.sweep.out / MANIFEST, {
            "format": 1, "name": self.sweep.name, "spec": self.sweep.spec(), "keys": list(self.sweep.grid),
            "seeds": self.sweep.seeds, "updated": dt.datetime.now().isoformat(timespec="seconds"),
            **self.extra, "runs": list(self.runs.values())})

    def count(self, state: str) -> int:
        return sum(1 for r in self.runs.values() if r["state"] == state)


class Progress:
    """Progress lines on stderr: which run, how many are done, and the ETA from finished runs' wall times."""

    def __init__(self, manifest: Manifest, side_by_side: int, quiet: bool) -> None:
        self.manifest, self.side_by_side, self.quiet = manifest, max(1, side_by_side), quiet
        self.total = len(manifest.runs)
        self.started = time.perf_counter()
        self.started_runs: set[str] = set()  # runs this sweep started, in this process
        self.recorded: set[str] = set()  # runs whose outcome it has recorded and said

    def eta(self) -> str:
        runs = self.manifest.runs.values()
        walls = [r.get("elapsed_seconds") or r["wall_seconds"] for r in runs
                 if r["state"] == "complete" and (r.get("elapsed_seconds") or r.get("wall_seconds"))]
        left = sum(1 for r in runs if r["state"] != "complete")
        if not left:
            return "done"
        if not walls:
            return f"{left} left, ETA after the first run"
        return f"{left} left, ETA {format_duration(sum(walls) / len(walls) * left / self.side_by_side)}"

    def say(self, text: str) -> None:
        if not self.quiet:
            done = self.manifest.count("complete")
            print(f"[sweep {done}/{self.total} · {format_duration(time.perf_counter() - self.started)}] {text}; "
                  f"{self.eta()}", file=sys.stderr, flush=True)


def _record(manifest: Manifest, progress: Progress, name: str, outcome: dict[str, Any]) -> None:
    manifest.update(name, **outcome)
    wall = f" in {format_duration(outcome['wall_seconds'])}" if outcome.get("wall_seconds") else ""
    note = f" ({outcome['message']})" if outcome["state"] != "complete" and outcome.get("message") else ""
    progress.say(f"{name}: {outcome['state']}{wall}{note}")
    progress.recorded.add(name)


class _TermAsInterrupt:
    """SIGTERM (a scheduler's or a user's stop) stops the sweep like Ctrl-C between runs."""

    def __enter__(self) -> "_TermAsInterrupt":
        self.previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        signal.signal(signal.SIGTERM, self.previous)


def run_sequential(sweep: Sweep, manifest: Manifest, progress: Progress) -> None:
    """One run after another in this process; a failed run is recorded and the next one starts."""
    with _TermAsInterrupt():
        try:
            for cell in sweep.cells:
                if manifest.runs[cell.name]["state"] != "complete":
                    _run_here(sweep, manifest, progress, cell)
        except KeyboardInterrupt:  # between two runs, or while one that ended was being recorded: record it whole
            unrecorded = [c.name for c in sweep.cells if c.name in progress.started_runs - progress.recorded]
            for name in unrecorded:
                _record(manifest, progress, name, stopped_state(sweep.out / name))
            raise TrainingInterrupted(str(sweep.out), "SIGINT") from None


def _run_here(sweep: Sweep, manifest: Manifest, progress: Progress, cell: Cell) -> None:
    """One cell in this process, its outcome recorded; a stop is recorded and raised as TrainingInterrupted."""
    progress.say(f"{cell.name}: running")
    progress.started_runs.add(cell.name)
    started, threads = time.perf_counter(), parallel.thread_setting()
    try:
        outcome = {**run_cell(job(sweep, cell, sweep.threads)),
                   "elapsed_seconds": round(time.perf_counter() - started, 1)}
    except (TrainingInterrupted, KeyboardInterrupt):
        _record(manifest, progress, cell.name, stopped_state(sweep.out / cell.name))
        raise TrainingInterrupted(str(sweep.out), "SIGINT") from None
    except Exception as exc:  # noqa: BLE001 — recorded in the manifest; the other runs go on
        message = exc.one_line() if isinstance(exc, ReplearnError) else f"{type(exc).__name__}: {exc}"[:300]
        outcome = {**run_state(sweep.out / cell.name), "state": "failed", "message": message}
    finally:  # the next run, and this process after the sweep, start from the caller's settings
        parallel.set_threads(threads)
        set_quiet(False)
    _record(manifest, progress, cell.name, outcome)


def worker_command(task: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", "replearn.studies.backends", json.dumps(task)]


def run_side_by_side(sweep: Sweep, manifest: Manifest, progress: Progress) -> None:
    """``sweep.parallel`` runs at a time, each in its own process on its share of the cores (``--threads``);
    its output goes to logs/<run>.log. Ctrl-C or SIGTERM stops every running one resumably."""
    threads = sweep.threads or max(1, parallel.available_cores() // sweep.parallel)
    todo = [c for c in sweep.cells if manifest.runs[c.name]["state"] != "complete"]
    running: dict[str, subprocess.Popen] = {}
    started: dict[str, float] = {}
    (sweep.out / "logs").mkdir(exist_ok=True)
    with _TermAsInterrupt():
        try:
            while todo or running:
                while todo and len(running) < sweep.parallel:
                    cell = todo.pop(0)
                    with open(sweep.out / "logs" / f"{cell.name}.log", "ab") as log_file:
                        running[cell.name] = subprocess.Popen(worker_command(job(sweep, cell, threads, alone=False)), stdout=log_file,
                                                              stderr=subprocess.STDOUT, start_new_session=True)
                    started[cell.name] = time.perf_counter()
                    progress.say(f"{cell.name}: running ({threads} thread{'s' if threads > 1 else ''})")
                for name in [n for n, p in running.items() if p.poll() is not None]:
                    _finish_worker(sweep, manifest, progress, name, running.pop(name),
                                   time.perf_counter() - started[name])
                time.sleep(0.2)
        except KeyboardInterrupt:
            for process in running.values():
                process.send_signal(signal.SIGINT)
            for name, process in running.items():
                process.wait()
                _record(manifest, progress, name, stopped_state(sweep.out / name))
            raise TrainingInterrupted(str(sweep.out), "SIGINT") from None


def _finish_worker(sweep: Sweep, manifest: Manifest, progress: Progress, name: str, process: subprocess.Popen,
                   elapsed: float) -> None:
    outcome = {**run_state(sweep.out / name), "elapsed_seconds": round(elapsed, 1)}
    if process.returncode != 0 and outcome["state"] == "complete":
        outcome["state"] = "failed"
    if process.returncode != 0 and not outcome["message"]:
        outcome.update(state="failed", message=f"worker exited with status {process.returncode}; see logs/{name}.log")
    _record(manifest, progress, name, outcome)


def run_slurm(sweep: Sweep, manifest: Manifest, progress: Progress) -> None:
    """Every unfinished run as one task of a job array (``executor.map_array``); with ``wait`` (the default)
    the sweep waits and records each task as it ends, else it returns after submitting."""
    import submitit

    params = dict(sweep.slurm)
    cluster, wait = params.pop("cluster", "slurm"), params.pop("wait", True)
    todo = [c for c in sweep.cells if manifest.runs[c.name]["state"] != "complete"]
    if not todo:
        return
    executor = submitit.AutoExecutor(folder=(sweep.out / "slurm" / "%j").absolute(), cluster=cluster)
    executor.update_parameters(name=f"replearn-{sweep.name}", **params)
    jobs = executor.map_array(run_cell, [job(sweep, c, sweep.threads) for c in todo])
    for cell, submitted in zip(todo, jobs):
        manifest.runs[cell.name].update(state="submitted", job_id=str(submitted.job_id))
    manifest.write()
    progress.say(f"submitted {len(jobs)} runs as a job array ({executor.cluster})")
    if not wait:
        return
    for cell, submitted in zip(todo, jobs):
        try:
            outcome = submitted.result()
        except Exception as exc:  # noqa: BLE001 — the job failed: recorded, the others are still waited for
            detail = " ".join(str(exc).split())[-300:]
            outcome = {**run_state(sweep.out / cell.name), "state": "failed", "message": detail}
        _record(manifest, progress, cell.name, outcome)


def execute(sweep: Sweep, quiet: bool = False) -> Manifest:
    """Create the sweep directory, write the manifest and run every unfinished cell with the spec's backend.
    Raises ``TrainingInterrupted`` when stopped (the sweep resumes when run again) and a ``ReplearnError``
    naming the failed runs at the end. The sweep directory is locked while the sweep runs: a second sweep into
    it is refused (``rundir.lock_directory``)."""
    sweep.out.mkdir(parents=True, exist_ok=True)
    lock = lock_directory(sweep.out, "sweep directory")
    try:
        return _execute(sweep, quiet)
    finally:
        unlock_directory(lock)


def _execute(sweep: Sweep, quiet: bool) -> Manifest:
    manifest = Manifest(sweep)
    manifest.write()
    progress = Progress(manifest, sweep.parallel if sweep.backend == "local" else len(sweep.cells), quiet)
    done = manifest.count("complete")
    progress.say(f"sweep '{sweep.name}' in {sweep.out}: {len(sweep.cells)} runs, {done} already complete, backend "
                 f"{sweep.backend}" + (f" × {sweep.parallel}" if sweep.backend == "local" and sweep.parallel > 1 else ""))
    runner = {"slurm": run_slurm}.get(sweep.backend) or (run_side_by_side if sweep.parallel > 1 else run_sequential)
    runner(sweep, manifest, progress)
    failed = [r for r in manifest.runs.values() if r["state"] == "failed"]
    if failed:
        first = failed[0]
        raise ReplearnError(f"{len(failed)} of {len(manifest.runs)} sweep runs failed; first: {first['name']}: "
                            f"{first.get('message') or 'no message'}",
                            f"fix the cause and run the sweep again: its {manifest.count('complete')} complete runs "
                            f"are skipped (states in {sweep.out / MANIFEST})")
    return manifest


def _worker_main(argv: list[str]) -> int:
    """``python -m replearn.studies.backends TASK_JSON``: one cell in its own process (local side-by-side runs)."""
    try:
        run_cell(json.loads(argv[0]))
    except (TrainingInterrupted, KeyboardInterrupt):
        return 130
    except ReplearnError as exc:
        print(f"replearn: error: {exc.one_line()}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(_worker_main(sys.argv[1:]))
