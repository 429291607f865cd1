"""A second process that trains some of a seed's regimes while the run's own process trains the others.

Why: a small model (the digits default) trains on one thread, its operations being too small to split over
cores, so on a machine with two or more cores the others idle through the whole of training. Every regime
of a seed starts from the same saved initial encoder and draws its batches and noise from generators seeded
by (seed, epoch, step), so a regime trained in another process ends with the same weights, bit for bit, as
one trained here (tests/integration/test_second_process.py). The run then goes on as if it had trained it:
``Experiment.train`` finds the finished checkpoint and loads it. What the second process did not finish
(it failed, or was stopped) the run trains itself, from the training state it saved, so nothing is lost.

The regimes wait in a ``TrainingQueue``, the longest predicted first, and each process takes the next one
when it is free: the second process asks for one on stdout and the run answers on its stdin. ``replearn
run`` starts the second process before importing torch (``speculate``), so that both import at once;
``prestart`` keeps it once the run's plan says it is wanted, or stops it.

The second process writes what training writes (checkpoints, the training state, metrics and gradient
norms) and nothing else; its log lines come back through a pipe and the run prints them with its own clock.
It stops at its next step, with its training state saved, when its stdin closes: when the run stops (Ctrl-C,
SIGTERM, an error) or dies, even by SIGKILL; ``replearn run --resume`` then continues both.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING

from replearn.runtime import threads as parallel
from replearn.runtime.log import log

if TYPE_CHECKING:
    from replearn.experiment.experiment import Experiment
    from replearn.regimes import Regime

MAX_DATA_BYTES = 1 << 30  # auto: the second process loads the data again; above this the copy costs too much
# auto: half the seed's training must be predicted to last this long: starting it costs ~2.5 CPU-seconds
MIN_SECONDS = 2.0
STOP_WAIT_SECONDS = 60.0  # a stopped second process has this long to save its training state
WORKER_CODE = "from replearn.experiment.training_worker import serve; serve()"


_allowed = True  # False in a sweep's cell that runs beside other cells: the cores are theirs


def allow(allowed: bool) -> None:
    """Let runs in this process use a second process (``auto`` and ``always``) or not (a sweep running cells
    side by side gives each one its share of the cores)."""
    global _allowed
    _allowed = allowed


def wants_second_process(experiment: Experiment, seed: int) -> bool:
    """Whether a second process is to share the training of ``seed`` (``train.second_process``; for auto: on
    the CPU, in one process, with ≥ 2 cores, each regime training on one thread, the data under
    ``MAX_DATA_BYTES`` and half of the seed's training predicted to take ``MIN_SECONDS`` or more)."""
    choice = experiment.config.train.second_process
    pending = _pending(experiment, seed)
    if not _allowed or choice == "never" or len(pending) < 2 or not experiment.world.main or experiment.world.size > 1:
        return False
    if choice == "always":
        return True
    data = experiment.data
    assert data is not None
    data_bytes = sum(_held_bytes(x) for x in (data.train_x, data.val_x, data.test_x))
    if (
        experiment.device.type != "cpu"
        or parallel.library_defaults()
        or parallel.available_cores() < 2
        or data_bytes > MAX_DATA_BYTES
        or sum(predicted_training_seconds(experiment, r) for r in pending) / 2 < MIN_SECONDS
    ):
        return False
    return all(parallel.threads_for(experiment.step_flops(r)) * 2 <= parallel.available_cores() for r in pending)


def _pending(experiment: Experiment, seed: int) -> list[Regime]:
    return [r for r in experiment.regimes if not experiment.run_dir.checkpoint(r.name, seed).exists()]


def predicted_training_seconds(experiment: Experiment, regime: Regime) -> float:
    """One seed of ``regime``'s training as the cost model predicts it: its steps, each a fixed overhead plus
    its FLOPs at the encoder's share of the machine's matmul rate (``costs``)."""
    from replearn.experiment import costs

    per_step = costs.TRAIN_STEP_SECONDS + experiment.step_flops(regime) / (
        costs.matmul_rate() * costs.ENCODER_EFFICIENCY
    )
    return experiment.planned_steps(regime) * per_step


class TrainingQueue:
    """A seed's regimes left to train, the longest predicted first, taken one at a time by the run's process
    (``take_here``) and the second process (``take_elsewhere``) alike: whichever is free takes the next, so
    that neither waits on the other's imports or on a split made in advance. With ``train.second_process:
    always`` the last regime waits for the second process when it has taken none yet."""

    def __init__(self, regimes: list[Regime], keep_one_for_second: bool = False) -> None:
        self._left = list(regimes)
        self._keep_one = keep_one_for_second
        self._lock = threading.Lock()
        self._closed = False
        self.given: list[str] = []  # taken by the second process, in order

    @classmethod
    def for_seed(cls, experiment: Experiment, seed: int, shared: bool) -> TrainingQueue:
        pending = _pending(experiment, seed)
        if shared:  # longest first (a stable sort: the config's order among equals)
            pending.sort(key=lambda r: -predicted_training_seconds(experiment, r))
        return cls(pending, keep_one_for_second=shared and experiment.config.train.second_process == "always")

    def take_here(self) -> Regime | None:
        with self._lock:
            if not self._left or (self._keep_one and not self.given and len(self._left) == 1):
                return None
            return self._left.pop(0)

    def take_elsewhere(self) -> Regime | None:
        with self._lock:
            if not self._left or self._closed:
                return None
            regime = self._left.pop(0)
            self.given.append(regime.name)
            return regime

    def close(self) -> bool:
        """The run's process has taken its last regime: no more for the second process either. Whether the
        second process has any to train (taken already, or the one kept for it): if not, it need not be
        waited for."""
        with self._lock:
            if self._keep_one and not self.given and self._left:
                return True
            self._closed = True
            return bool(self.given)

    def share_with_none(self) -> None:
        """The second process could not start: every regime is this process's."""
        with self._lock:
            self._keep_one = False


def _held_bytes(images: object) -> int:
    """Bytes ``images`` hold in memory (none for images streamed from a file)."""
    import torch

    return images.element_size() * images.nelement() if isinstance(images, torch.Tensor) else 0


_spare: subprocess.Popen | None = None  # started by speculate() or prestart(), taken by the first SecondProcess


def speculate() -> None:
    """Start the second process now, before this process imports what a run needs (``replearn run``'s first
    step), when the run may well want one: one process, ≥ 2 cores, no GPU in sight, and the run's imports
    still ahead. Its own imports then take the core those leave idle, instead of delaying its first regime by
    as long again; ``prestart`` keeps it once the run's plan says so, or stops it."""
    global _spare
    if (
        _spare is None
        and _allowed
        and "replearn.experiment.experiment" not in sys.modules
        and os.environ.get("WORLD_SIZE", "1") == "1"
        and not os.path.exists("/dev/nvidiactl")
        and not parallel.library_defaults()
        and parallel.available_cores() >= 2
    ):
        try:
            _spare = _spawn()
        except OSError:
            _spare = None


def prestart(experiment: Experiment) -> None:
    """Start the second process now, once the data are loaded and checked, if the first seed will want one
    (``wants_second_process``): it imports what training needs while this one prepares the run, then waits
    for its job (``SecondProcess.start`` takes it). One started by ``speculate`` is kept, or stopped if the
    run will not want it."""
    global _spare
    if not (experiment.seeds and wants_second_process(experiment, experiment.seeds[0])):
        release_spare()
    elif _spare is None or _spare.poll() is not None:
        release_spare()  # one that has exited: its pipes
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
    """The run's side: ``start`` the second process on a seed's ``TrainingQueue``, from which it takes regimes
    one at a time, ``wait`` for it (its log lines are printed as they come), ``stop`` it. Nothing here raises:
    what it does not train, the run trains. ``on_take(name)`` is called as it takes a regime, ``on_done()`` as
    it finds none left (its core is then free), both from a reader thread."""

    def __init__(
        self,
        run_dir: Path,
        seed: int,
        queue: TrainingQueue,
        on_take: Callable[[str], None] | None = None,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        self.run_dir, self.seed, self.queue = Path(run_dir), seed, queue
        self.on_take, self.on_done = on_take, on_done
        self.trained: list[str] = []
        self.failure = ""
        self._process: subprocess.Popen | None = None
        self._errors: collections.deque[str] = collections.deque(maxlen=5)
        self._readers: list[threading.Thread] = []
        self._stdin_lock = threading.Lock()
        self._closing = False  # the run is stopping, or the second process had nothing to train

    def start(self) -> bool:
        """Start the second process (or take the pre-started one); False if it cannot be started."""
        global _spare
        spec = {"run_dir": str(self.run_dir), "seed": self.seed, "threads": parallel.thread_setting()}
        try:
            if _spare is not None and _spare.poll() is None:
                self._process, _spare = _spare, None
            else:
                release_spare()
                self._process = _spawn()
            self._send(spec)
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
        return True

    def _send(self, message: dict) -> None:
        assert self._process is not None and self._process.stdin is not None
        with self._stdin_lock:
            self._process.stdin.write((json.dumps(message) + "\n").encode("utf-8"))
            self._process.stdin.flush()

    def _give_next(self) -> None:
        """Answer the second process's request for a regime: the queue's next, or none (it then exits). The
        answer is always sent, whatever the callbacks do; none once the run is stopping."""
        regime = None
        try:
            regime = None if self._closing else self.queue.take_elsewhere()
            if regime is not None:
                log(f"seed {self.seed}: {regime.name} trained in a parallel process while this one trains the others")
                if self.on_take is not None:
                    self.on_take(regime.name)
        except Exception:  # the ETA or the log failed: the regime is still the second process's
            pass
        finally:
            try:
                self._send({"regime": regime.name if regime is not None else None})
            except (OSError, ValueError):  # it has gone, or the run closed its stdin to stop it
                pass
        if regime is None and self.on_done is not None and not self._closing:
            try:
                self.on_done()
            except Exception:  # only an earlier start of the run's next process is lost
                pass

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
            elif "next" in message:
                self._give_next()
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
        """Wait for the second process to end, once the run's process has taken its last regime; the regimes it
        trained (the run trains the others itself). One that has none to train is stopped at once, not waited
        for (it may still be importing)."""
        if self._process is None:
            return []
        if not self.queue.close():
            self._closing = True
            self._process.kill()
        self._process.wait()  # its stdin stays open: closing it is how the run asks it to stop
        for reader in self._readers:
            reader.join(timeout=5)
        _close(self._process)
        if self._process.returncode != 0 and not self.failure:
            self.failure = self._errors[-1] if self._errors else f"it exited with code {self._process.returncode}"
        left = [name for name in self.queue.given if name not in self.trained]
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
        with self._stdin_lock:
            self._closing = True  # no regime, and no next process started, from here on
            _close(self._process, ("stdin",))
        try:
            self._process.wait(timeout=STOP_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        _close(self._process)
