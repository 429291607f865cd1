"""``replearn run --nproc N``: check what N processes need, then start them with torchrun (standalone
rendezvous on this machine) running the same command, and answer for them."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from . import distributed
from .errors import ConfigError
from .rundir import RunDir

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


def launch(nproc: int, argv: list[str], run_dir: Path) -> int:
    """Run ``replearn`` + ``argv`` under torchrun with ``nproc`` processes and return the run's exit status
    (130 when it was interrupted: the state is saved and ``replearn run --resume`` continues it)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "replearn", *argv]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # torchrun and its processes handle Ctrl-C
    try:
        code = subprocess.call(command, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    finally:
        signal.signal(signal.SIGINT, previous)
    state = RunDir(run_dir).status().get("state") if Path(run_dir).exists() else None
    if state == "interrupted":
        return 130
    return 0 if code == 0 else 2
