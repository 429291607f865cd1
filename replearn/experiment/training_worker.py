"""The second training process's side (``second_process``): it imports what training needs, reads one job,
trains its regimes of a seed in the run's directory and reports on stdout as JSON lines."""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

from replearn.errors import ReplearnError, TrainingInterrupted
from replearn.experiment.experiment import Experiment
from replearn.runtime import threads as parallel
from replearn.runtime.log import set_sink
from replearn.training import Stopper


def serve() -> None:
    """The second process, its imports done: read one job from stdin (none: exit), train its regimes one
    after the other and report on stdout as JSON lines. The end of stdin (the run stopped, or died) stops the
    training at its next step with its state saved. Anything else printed goes to stderr, never into the
    messages."""
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
        threading.Thread(target=_stop_at_end_of_input, args=(experiment.stopper,), daemon=True).start()
        with experiment.stopper:
            for name in spec["regimes"]:
                if experiment.stopper.requested:
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


def _stop_at_end_of_input(stopper: Stopper) -> None:
    sys.stdin.read()
    stopper.request("SIGTERM")
