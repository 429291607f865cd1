"""A run directory: where each artifact lives, its status, its marker, the checks before creating or
resuming it, and what happens to it when a run fails. Every write is atomic (``artifacts``)."""
from __future__ import annotations

import datetime as dt
import math
import os
import shlex
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from replearn.runtime import threads as parallel
from replearn.rundir.io import (RUN_MARKER, atomic_write_text, check_run_dir, mark_run_dir, read_json, write_csv,
                        write_json)
from replearn.errors import RunDirError
from replearn.rundir import layout

STATUS = layout.STATUS
IN_USE_FIX = "wait for the other replearn process to finish (or stop it), or choose another directory"


def lock_directory(path: Path, what: str) -> int | None:
    """An exclusive lock on the directory ``path`` (``flock`` on its descriptor: released when the descriptor is
    closed or the process ends, however it ends), so that a second replearn process writing into it is refused;
    None where the file system has no such locks."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system: no lock
        return None
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDirError(f"{what} '{path}' is in use by another replearn process (it is writing there now)",
                          IN_USE_FIX) from None
    except OSError:  # a file system without flock: go on unlocked
        os.close(fd)
        return None
    return fd


def unlock_directory(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def check_not_in_use(path: Path, what: str) -> None:
    """Refuse a directory another replearn process holds locked (``lock_directory``); nothing is kept locked."""
    if path.is_dir():
        unlock_directory(lock_directory(path, what))


class RunDir:
    """The directory one experiment writes (or resumes): paths, status and the checks around them."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    def __truediv__(self, rel: str) -> Path:
        return self.path / rel

    @classmethod
    def default(cls, name: str, base: str | Path = "reports") -> "RunDir":
        """reports/<name>-<timestamp>, with a numeric suffix if that already exists."""
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        candidate = Path(base) / f"{name}-{stamp}"
        suffix = 2
        while candidate.exists():
            candidate = Path(base) / f"{name}-{stamp}-{suffix}"
            suffix += 1
        return cls(candidate)

    def checkpoint(self, regime: str, seed: int) -> Path:
        return self.path / layout.checkpoint(regime, seed)

    def train_state(self, regime: str, seed: int) -> Path:
        return self.path / layout.train_state(regime, seed)

    def train_metrics(self, regime: str, seed: int) -> Path:
        return self.path / layout.train_metrics(regime, seed)

    def initial_weights(self, seed: int) -> Path:
        return self.path / layout.initial_weights(seed)

    def check_free(self, force: bool) -> None:
        """Raise unless the directory may be created: absent or empty, or (with ``force``) a replearn run."""
        run_dir = self.path
        too_long = next((part for part in run_dir.parts if len(os.fsencode(part)) > 255), None)
        if too_long is not None:
            raise RunDirError(f"output path component '{too_long[:40]}…' is {len(os.fsencode(too_long))} bytes, "
                              "longer than file systems allow (255)", "choose a shorter --out directory or run name")
        if force and run_dir.is_symlink():
            raise RunDirError(f"output path '{run_dir}' is a symbolic link, so --force will not replace it",
                              f"pass the directory it points to ({os.path.realpath(run_dir)}) or another --out")
        if run_dir.exists() and not run_dir.is_dir():
            raise RunDirError(f"output path '{run_dir}' exists and is a file", "choose another --out directory")
        check_not_in_use(run_dir, "run directory")
        if run_dir.exists() and any(run_dir.iterdir()):
            if not force:
                raise RunDirError(f"output directory '{run_dir}' already exists",
                                  "choose another --out, resume it with --resume, or pass --force to replace it")
            if not (run_dir / RUN_MARKER).is_file():
                raise RunDirError(f"output directory '{run_dir}' is not empty and is not a replearn run, so --force "
                                  "will not delete it", "choose another --out directory")
        parent = next((p for p in [run_dir, *run_dir.parents] if p.exists()), Path("."))
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise RunDirError(f"cannot create output directory '{run_dir}' ('{parent}' is not a writable directory)",
                              "choose a writable --out directory")

    def create(self, force: bool) -> None:
        """Create a fresh directory; never overwrite an existing one unless ``force`` and it is replearn's."""
        self.check_free(force)
        if self.path.exists() and any(self.path.iterdir()):
            shutil.rmtree(self.path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise RunDirError(f"cannot write to output directory '{self.path}' ({exc.strerror or type(exc).__name__})",
                              "choose a writable --out directory") from None

    def start(self, config_yaml: str, config: dict[str, Any], environment: dict[str, Any]) -> None:
        """Write what a new run starts with: its config, environment and the marker (which records the config
        it started with, so that a resume can refuse an edited one)."""
        atomic_write_text(self.path / "config.yaml", config_yaml)
        write_json(self.path / "environment.json", environment)
        mark_run_dir(self.path, {"name": config.get("name"), "created": dt.datetime.now().isoformat(timespec="seconds"),
                                 "config": config})

    def clear_temporaries(self) -> None:
        """Remove temporaries of writes cut short by a crash (never artifacts)."""
        for stale in self.path.rglob(".*.tmp"):
            stale.unlink(missing_ok=True)

    def set_status(self, state: str, message: str = "", **extra: Any) -> None:
        write_json(self.path / STATUS, {"state": state, "message": message,
                                        "updated": dt.datetime.now().isoformat(timespec="seconds"), **extra})

    def record_failure(self, state: str, message: str) -> None:
        """Set the status after a stop or failure, if the disk still allows it."""
        try:
            self.set_status(state, message)
        except OSError:
            pass

    def write_failure(self, exc: OSError, resume: bool) -> RunDirError:
        """The one-line error for a failed write; a run that had not yet saved anything is removed (it could not
        be resumed), any other is left resumable."""
        where = f" '{exc.filename}'" if getattr(exc, "filename", None) else ""
        problem = f"could not write the run's files{where} ({exc.strerror or type(exc).__name__})"
        if not resume and not (self.path / RUN_MARKER).is_file():
            shutil.rmtree(self.path, ignore_errors=True)
            return RunDirError(problem + "; nothing was kept", "free disk space (or fix permissions), then run again")
        error = RunDirError(problem, "free disk space (or fix permissions), then resume with: "
                                     f"replearn run --resume {shlex.quote(str(self.path))}")
        self.record_failure("failed", error.one_line())
        return error

    def lock(self) -> int | None:
        """Hold this run directory against a second writer until ``unlock_directory`` (or the process's end)."""
        return lock_directory(self.path, "run directory")

    def is_run(self) -> bool:
        return (self.path / RUN_MARKER).is_file()

    def write_tables(self, results: dict[str, list], model_rows: list[dict[str, Any]]) -> None:
        """metrics/<table>.csv from each table's frames (one per seed, concatenated) and metrics/models.csv."""
        for key, frames in results.items():
            frames = [f for f in frames if f is not None and len(f)]
            if frames:
                write_csv(self.path / "metrics" / f"{key}.csv", pd.concat(frames, ignore_index=True))
        if model_rows:
            write_csv(self.path / "metrics" / "models.csv", pd.DataFrame(model_rows))

    def record_thread_choices(self) -> None:
        """Add the threads each phase used to environment.json (the setting itself was recorded at the start)."""
        path = self.path / "environment.json"
        if path.is_file():
            env = read_json(path)
            threads = env.get("threads") if isinstance(env.get("threads"), dict) else {}
            env["threads"] = {**threads, "phases": {**threads.get("phases", {}), **parallel.decisions()}}
            write_json(path, env)

    def recorded_thread_setting(self) -> int | None:
        """The --threads setting the run was started with (None for automatic), so that a resume repeats it."""
        try:
            setting = read_json(self.path / "environment.json").get("threads", {}).get("setting")
        except (OSError, ValueError, AttributeError):
            return None
        return setting if isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1 else None

    def check_resumable(self, config_now: dict[str, Any]) -> None:
        """Refuse to resume a run whose config.yaml was edited after it started, or that is already complete."""
        check_run_dir(self.path, need="resume")
        check_not_in_use(self.path, "run directory")
        started_with = read_json(self.path / RUN_MARKER).get("config")
        if isinstance(started_with, dict):
            changed = first_difference(started_with, _recorded_keys(config_now, started_with))
            if changed is not None:
                key, before, now = changed
                raise RunDirError(f"{self.path / 'config.yaml'} was changed after the run started: {key} was {before}, "
                                  f"now {now}; its checkpoints and splits were made with the original",
                                  f"set {key} back to {before} to resume, or start a new run with the new config")
        if self.status().get("state") == "complete":
            quoted = shlex.quote(str(self.path))
            if (self.path / "report.html").is_file():
                raise RunDirError(f"run '{self.path}' is already complete", f"re-render it with `replearn report {quoted}`")
            raise RunDirError(f"run '{self.path}' is complete but its report.html is missing",
                              f"write it with `replearn report {quoted}`")

    def status(self) -> dict[str, Any]:
        try:
            status = read_json(self.path / STATUS)
        except (OSError, ValueError):
            return {}
        return status if isinstance(status, dict) else {}

    def check_same_data(self, summary: dict[str, Any]) -> None:
        """Refuse to resume on data other than the run's: same split sizes, shapes, classes and pixel statistics."""
        try:
            saved = read_json(self.path / "dataset.json")
        except (OSError, ValueError):
            return
        if not isinstance(saved, dict):
            return
        for key in ("train", "val", "test", "unlabelled", "image_shape", "num_classes", "class_names", "pixel_mean",
                    "pixel_std"):
            if key not in saved:
                continue
            a, b = saved[key], summary.get(key)
            if not _same_value(a, b):
                raise RunDirError(f"the dataset differs from the one run '{self.path}' started with ({key}: "
                                  f"{_short(a)} then, {_short(b)} now)",
                                  "restore the original data files to resume, or start a new run")


def first_difference(before: Any, now: Any, prefix: str = "") -> tuple[str, str, str] | None:
    """The first key (dotted) whose value differs between two nested config dicts, with both values."""
    if isinstance(before, dict) and isinstance(now, dict):
        for key in list(before) + [k for k in now if k not in before]:
            found = first_difference(before.get(key), now.get(key), f"{prefix}{key}.")
            if found is not None:
                return found
        return None
    if before != now:
        return prefix.rstrip("."), _short(before), _short(now)
    return None


def _recorded_keys(now: Any, recorded: Any) -> Any:
    """``now`` cut to the keys ``recorded`` has: an option added to replearn after a run started takes its
    default when the run is resumed (its config.yaml does not name it), which is no change to the run."""
    if isinstance(now, dict) and isinstance(recorded, dict):
        return {key: _recorded_keys(value, recorded[key]) for key, value in now.items() if key in recorded}
    return now


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "…"


def _same_value(a: Any, b: Any) -> bool:
    """Equal, with floats (also inside lists) compared to a relative 1e-6: statistics recomputed on resume."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    return a == b
