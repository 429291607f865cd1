"""``replearn run --nproc N``: check what N processes need, then start them with torchrun (standalone
rendezvous on this machine) running the same command, and answer for them."""
from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from replearn.runtime import distributed
from replearn.errors import ConfigError, ReplearnError
from replearn.rundir.directory import RunDir

NPROC_OPTION = "--nproc"


def available_slots(device: torch.device) -> tuple[int, str]:
    """How many processes this machine can give a device each: its GPUs on CUDA, else its CPU cores."""
    if device.type == "cuda":
        return torch.cuda.device_count(), "CUDA devices"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores, "CPU cores"


def check_nproc(nproc: int, train: Any, device: torch.device) -> None:
    """Refuse a process count this machine cannot run, and what the chosen backend cannot do."""
    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}", "pass --nproc 1 or more")
    if nproc > train.batch_size:
        raise ConfigError(f"--nproc {nproc} is more than train.batch_size ({train.batch_size}): some processes "
                          "would get no images", f"use --set train.batch_size={nproc} or more, or fewer processes")
    slots, what = available_slots(device)
    if nproc > slots:
        raise ConfigError(f"--nproc {nproc} asks for more processes than this machine has {what} ({slots})",
                          f"pass --nproc {slots} or fewer; for more, add machines (docs/distributed.md: torchrun "
                          "--nnodes)")
    distributed.check(train, device)


def without_nproc(argv: list[str]) -> list[str]:
    """The command line with ``--nproc N`` (or ``--nproc=N``) taken out."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == NPROC_OPTION:
            skip = True
        elif not arg.startswith(NPROC_OPTION + "="):
            out.append(arg)
    return out


LOG_NAME = "torchrun.log"  # torchrun's and the ranks' own output, in the run directory
GRACE_SECONDS = 90.0  # after a forwarded signal: how long the ranks may take to save their state and stop
LOG_LINE = re.compile(r"^\[\s*\d+(\.\d+)?s\] ")  # replearn's progress lines (rank 0's), shown as they come


def launch(nproc: int, argv: list[str], run_dir: Path) -> int:
    """Run ``replearn`` + ``argv`` under torchrun with ``nproc`` processes and return the run's exit status
    (130 when it was interrupted: the state is saved and ``replearn run --resume`` continues it).

    torchrun and its ranks run in a process group of their own: SIGINT or SIGTERM sent to this launcher (or
    Ctrl-C) is passed to every one of them, and the launcher waits for them (killing what is left after
    ``GRACE_SECONDS``), so none outlives it. Rank 0's progress lines are shown; everything else torchrun and the
    ranks print goes to ``RUN_DIR/torchrun.log`` (kept when the run does not complete), and a failure ends in
    one line naming the rank that failed."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "replearn", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    log_file = tempfile.NamedTemporaryFile("w", prefix="replearn-torchrun-", suffix=".log", delete=False,
                                           encoding="utf-8", errors="replace")
    received: list[str] = []
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, errors="replace",
                               start_new_session=True)

    def forward(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if name not in received:
            received.append(name)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signum)  # torchrun and every rank: each saves its state and stops

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    reader = threading.Thread(target=_relay, args=(process.stderr, log_file), daemon=True)
    reader.start()
    try:
        code = _wait(process, received)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # nothing of the group may outlive the launcher
    reader.join(timeout=10)
    log_file.close()
    if code == 0 and not received and RunDir(run_dir).status().get("state") == "complete":
        Path(log_file.name).unlink(missing_ok=True)  # kept only when the run did not complete
        return 0
    log_path = _keep_log(Path(log_file.name), Path(run_dir))
    return _outcome(code, received, Path(run_dir), log_path)


def _relay(stream: Any, log_file: Any) -> None:
    """Copy torchrun's stderr to the log, showing replearn's progress lines on this stderr as they come."""
    for line in stream:
        log_file.write(line)
        log_file.flush()
        if LOG_LINE.match(line):
            sys.stderr.write(line)
            sys.stderr.flush()


def _wait(process: subprocess.Popen, received: list[str]) -> int:
    """torchrun's exit status; once a signal was forwarded, at most ``GRACE_SECONDS`` later (then the group is
    killed)."""
    deadline: float | None = None
    while True:
        try:
            return process.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
        if received and deadline is None:
            deadline = time.monotonic() + GRACE_SECONDS
        if deadline is not None and time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            return process.wait()


def _keep_log(temporary: Path, run_dir: Path) -> Path:
    """The log moved into the run directory when there is one (else left where it is)."""
    if not run_dir.is_dir():
        return temporary
    try:
        return Path(shutil.move(str(temporary), str(run_dir / LOG_NAME)))
    except OSError:
        return temporary


def _outcome(code: int, received: list[str], run_dir: Path, log_path: Path) -> int:
    """Print one line on how the run ended, record it in status.json if no rank did, and return the exit status."""
    run = RunDir(run_dir)
    status = run.status() if run_dir.is_dir() else {}
    resume = f"replearn run --resume {shlex.quote(str(run_dir))}"
    text = log_path.read_text(encoding="utf-8", errors="replace")[-200_000:] if log_path.is_file() else ""
    if received:
        if status.get("state") == "running":
            run.record_failure("interrupted", f"stopped by {received[0]} sent to replearn run --nproc; resume to "
                                              "finish")
        if run_dir.is_dir():
            print(f"interrupted by {received[0]}; the work done so far is saved. Resume with: {resume} "
                  f"(the processes' output: {log_path})", file=sys.stderr)
        else:
            print(f"replearn: interrupted by {received[0]} (the processes' output: {log_path})", file=sys.stderr)
        return 130
    if status.get("state") == "interrupted":
        print(f"interrupted; the work done so far is saved. Resume with: {resume}", file=sys.stderr)
        return 130
    failed = failed_rank(text)
    own = [line[len("replearn: error: "):] for line in text.splitlines() if line.startswith("replearn: error: ")]
    own = [line for line in own if "another process of this distributed run" not in line] or own
    if failed is not None and failed[1] < 0:
        rank, exit_code = failed
        name = _signal_name(-exit_code)
        problem = f"the process of rank {rank} was killed by {name} (exit code {exit_code}) and the run stopped"
    elif own:
        problem = own[0].split(" — fix: ")[0]
    elif failed is not None:
        problem = f"the process of rank {failed[0]} failed with exit code {failed[1]} and the run stopped"
    else:
        problem = f"torchrun ended with exit code {code}"
    if status.get("state") == "running":
        run.record_failure("failed", problem)
    fix = f"the processes' output is in {log_path}"
    if run_dir.is_dir():
        fix += f"; once the cause is fixed, continue with: {resume}"
    print(f"replearn: error: {ReplearnError(problem, fix).one_line()}", file=sys.stderr)
    return 2


def failed_rank(text: str) -> tuple[int, int] | None:
    """(rank, exit code) of the first failure in torchrun's summary (its ``rank : N`` and ``exitcode : N``, in
    the "Root Cause" block when there is one: the ranks torchrun stopped afterwards are listed first)."""
    if "Root Cause" in text:
        text = text[text.rindex("Root Cause"):]
    rank = re.search(r"^\s*rank\s*:\s*(\d+)", text, re.MULTILINE)
    exit_code = re.search(r"^\s*exitcode\s*:\s*(-?\d+)", text, re.MULTILINE)
    if rank is None or exit_code is None:
        return None
    return int(rank.group(1)), int(exit_code.group(1))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
