"""The second training process's side (``second_process``): it imports what training needs, reads its job,
trains the regimes of a seed the run gives it, one at a time, in the run's directory and reports on stdout as
JSON lines."""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
from typing import Any

from replearn.errors import ReplearnError, TrainingInterrupted
from replearn.experiment.experiment import Experiment
from replearn.runtime import threads as parallel
from replearn.runtime.log import set_sink
from replearn.training import Stopper


def serve() -> None:
    """The second process, its imports done: read its job from stdin (none: exit), then ask for regimes one
    at a time (``{"next": true}``; the run answers ``{"regime": name}``, or null when none is left) and train
    each, reporting on stdout as JSON lines. The end of stdin (the run stopped, or died) stops the training at
    its next step with its state saved. Anything else printed goes to stderr, never into the messages."""
    messages = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    out_lock = threading.Lock()

    def send(message: dict[str, Any]) -> None:
        with out_lock:
            messages.write(json.dumps(message) + "\n")
            messages.flush()

    set_sink(lambda text: send({"log": text}))
    line = sys.stdin.readline()
    if not line.strip():
        return
    spec = json.loads(line)
    parallel.set_threads(spec["threads"])
    parallel.quiet_native_pools()
    try:
        experiment = Experiment.attach(spec["run_dir"])
        answers: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_read_answers, args=(answers, experiment.stopper), daemon=True).start()
        with experiment.stopper:
            while not experiment.stopper.requested:
                send({"next": True})
                name = answers.get()
                if name is None or experiment.stopper.requested:
                    return
                experiment.train(name, int(spec["seed"]))
                send({"trained": name, "threads": parallel.decisions()})
    except TrainingInterrupted:
        return
    except ReplearnError as exc:
        send({"failed": str(exc).splitlines()[0]})
        sys.exit(1)
    except Exception as exc:  # the run trains it itself, and names the error if it recurs there
        send({"failed": f"{type(exc).__name__}: {exc}".splitlines()[0]})
        sys.exit(1)


def _read_answers(answers: queue.Queue[str | None], stopper: Stopper) -> None:
    """The run's answers, one regime (or None) per line; the end of stdin (or anything unreadable there)
    stops the training."""
    try:
        for line in sys.stdin:
            try:
                answer = json.loads(line).get("regime")
            except (ValueError, AttributeError):
                continue
            answers.put(str(answer) if answer is not None else None)
    finally:
        stopper.request("SIGTERM")
        answers.put(None)
