"""A second process that trains some of a seed's regimes while the run's own process trains the others.

Why: a small model (the digits default) trains on one thread, its operations being too small to split over
cores, so on a machine with two or more cores the others idle through the whole of training. Every regime
of a seed starts from the same saved initial encoder and draws its batches and noise from generators seeded
by (seed, epoch, step), so a regime trained in another process ends with the same weights, bit for bit, as
one trained here (tests/integration/test_second_process.py). The run then goes on as if it had trained it:
``Experiment.train`` finds the finished checkpoint and loads it. What the second process did not finish
(it failed, or was stopped) the run trains itself, from the training state it saved, so nothing is lost.

The second process writes what training writes (checkpoints, the training state, metrics and gradient
norms) and nothing else; its log lines come back through a pipe and the run prints them with its own clock.
It stops at its next step, with its training state saved, when its stdin closes: when the run stops (Ctrl-C,
SIGTERM, an error) or dies, even by SIGKILL; ``replearn run --resume`` then continues both.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from replearn.runtime import threads as parallel
from replearn.runtime.log import log

if TYPE_CHECKING:
    from replearn.experiment.experiment import Experiment
    from replearn.regimes import Regime

MAX_DATA_BYTES = 1 << 30  # auto: the second process loads the data again; above this the copy costs too much
# auto: the training it takes over must be predicted to last this long: starting it costs ~2.5 CPU-seconds
MIN_SECONDS = 2.0
STOP_WAIT_SECONDS = 60.0  # a stopped second process has this long to save its training state
WORKER_CODE = "from replearn.experiment.training_worker import serve; serve()"


_allowed = True  # False in a sweep's cell that runs beside other cells: the cores are theirs


def allow(allowed: bool) -> None:
    """Let runs in this process use a second process (``auto`` and ``always``) or not (a sweep running cells
    side by side gives each one its share of the cores)."""
    global _allowed
    _allowed = allowed


def regimes_for_second_process(experiment: Experiment, seed: int) -> list[Regime]:
    """The regimes of ``seed`` that a second process is to train: the later half of those not trained yet
    (``train.second_process``; for auto: on the CPU, in one process, with ≥ 2 cores, each regime training on
    one thread, the data under ``MAX_DATA_BYTES`` and that half predicted to train for ``MIN_SECONDS``).
    Empty when none is to be started."""
    choice = experiment.config.train.second_process
    pending = [r for r in experiment.regimes if not experiment.run_dir.checkpoint(r.name, seed).exists()]
    if not _allowed or choice == "never" or len(pending) < 2 or not experiment.world.main or experiment.world.size > 1:
        return []
    later = pending[(len(pending) + 1) // 2 :]
    if choice == "auto":
        data = experiment.data
        assert data is not None
        if not _worth_it(experiment, len(later) / len(pending)):
            return []
        data_bytes = sum(_held_bytes(x) for x in (data.train_x, data.val_x, data.test_x))
        if (
            experiment.device.type != "cpu"
            or parallel.library_defaults()
            or parallel.available_cores() < 2
            or data_bytes > MAX_DATA_BYTES
        ):
            return []
        if any(parallel.threads_for(experiment.step_flops(r)) * 2 > parallel.available_cores() for r in pending):
            return []
    return later


def _held_bytes(images: object) -> int:
    """Bytes ``images`` hold in memory (none for images streamed from a file)."""
    import torch

    return images.element_size() * images.nelement() if isinstance(images, torch.Tensor) else 0


def _worth_it(experiment: Experiment, share: float) -> bool:
    """Whether ``share`` of the run's predicted training (the cost model's) lasts ``MIN_SECONDS`` or more."""
    from replearn.experiment.costs import TRAINING

    seconds = sum(phase.seconds for phase in experiment.phases if phase.name == TRAINING)
    return seconds / max(1, len(experiment.seeds)) * share >= MIN_SECONDS


_spare: subprocess.Popen | None = None  # started by prestart(), taken by the first SecondProcess


def prestart(experiment: Experiment) -> None:
    """Start the second process now, once the data are loaded and checked, if the first seed will want one
    (``regimes_for_second_process``): it imports what training needs while this one prepares the run, then
    waits for its job (``SecondProcess.start`` takes it; ``release_spare`` stops it unused)."""
    global _spare
    if _spare is None and experiment.seeds and regimes_for_second_process(experiment, experiment.seeds[0]):
        try:
            _spare = _spawn()
        except OSError:
            _spare = None


def release_spare() -> None:
    """Stop a pre-started second process that no job took (it has only imported)."""
    global _spare
    if _spare is not None:
        try:
            _spare.kill()
            _spare.wait()
        except OSError:
            pass
        _close(_spare)
        _spare = None


def _spawn() -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER_CODE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _close(process: subprocess.Popen, streams: tuple[str, ...] = ("stdin", "stdout", "stderr")) -> None:
    for name in streams:
        try:
            stream = getattr(process, name)
            if stream is not None:
                stream.close()
        except OSError:
            pass


class SecondProcess:
    """The run's side: ``start`` the second process on some regimes of a seed, ``wait`` for it (its log lines
    are printed as they come), ``stop`` it. Nothing here raises: what it does not train, the run trains."""

    def __init__(self, run_dir: Path, seed: int, regimes: list[str]) -> None:
        self.run_dir, self.seed, self.regimes = Path(run_dir), seed, list(regimes)
        self.trained: list[str] = []
        self.failure = ""
        self._process: subprocess.Popen | None = None
        self._errors: collections.deque[str] = collections.deque(maxlen=5)
        self._readers: list[threading.Thread] = []

    def start(self) -> bool:
        """Start the second process (or take the pre-started one); False if it cannot be started."""
        global _spare
        spec = {
            "run_dir": str(self.run_dir),
            "seed": self.seed,
            "regimes": self.regimes,
            "threads": parallel.thread_setting(),
        }
        try:
            if _spare is not None and _spare.poll() is None:
                self._process, _spare = _spare, None
            else:
                release_spare()
                self._process = _spawn()
            assert self._process.stdin is not None
            self._process.stdin.write((json.dumps(spec) + "\n").encode("utf-8"))
            self._process.stdin.flush()
        except OSError as exc:
            self.failure = f"it could not be started ({exc.strerror or type(exc).__name__})"
            if self._process is not None:
                self._process.kill()
                self._process.wait()
                _close(self._process)
            self._process = None
            return False
        for target, name in ((self._read_messages, "messages"), (self._read_errors, "errors")):
            reader = threading.Thread(target=target, daemon=True, name=f"replearn-second-process-{name}")
            reader.start()
            self._readers.append(reader)
        log(
            f"seed {self.seed}: {', '.join(self.regimes)} trained in a parallel process while this one trains the "
            f"other regimes"
        )
        return True

    def _read_messages(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for raw in self._process.stdout:
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            if "log" in message:
                log(str(message["log"]))
            elif "trained" in message:
                self.trained.append(str(message["trained"]))
                if isinstance(message.get("threads"), dict):  # for environment.json, as if trained here
                    parallel.add_decisions(message["threads"])
            elif "failed" in message:
                self.failure = str(message["failed"])

    def _read_errors(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        for raw in self._process.stderr:
            line = raw.decode("utf-8", "replace").strip()
            if line:
                self._errors.append(line)

    def wait(self) -> list[str]:
        """Wait for the second process to end; the regimes it trained (the run trains the others itself)."""
        if self._process is None:
            return []
        self._process.wait()  # its stdin stays open: closing it is how the run asks it to stop
        for reader in self._readers:
            reader.join(timeout=5)
        _close(self._process)
        if self._process.returncode != 0 and not self.failure:
            self.failure = self._errors[-1] if self._errors else f"it exited with code {self._process.returncode}"
        left = [name for name in self.regimes if name not in self.trained]
        if left:
            log(
                f"seed {self.seed}: the second process did not finish {', '.join(left)}"
                f"{f' ({self.failure})' if self.failure else ''}; training it here"
            )
        return list(self.trained)

    def stop(self) -> None:
        """Ask the second process to stop at its next step (its training state saved) and wait for it: its
        stdin is closed (a Ctrl-C has reached it already; a second signal would interrupt it mid-step)."""
        if self._process is None:
            return
        _close(self._process, ("stdin",))
        try:
            self._process.wait(timeout=STOP_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        _close(self._process)
