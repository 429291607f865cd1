"""How many threads each phase of a run uses, chosen from the work and the machine, not the libraries' defaults.

Why: torch's OpenMP workers and NumPy's OpenBLAS workers spin while they wait for each other. On a quiet
machine that saves microseconds per operation; beside one other busy process, a worker that has been
descheduled stalls every operation of thousands, and the default digits run went from 45 s to 570 s.
So replearn

* makes waiting OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``, set in ``replearn/__init__.py``
  before torch starts its pool, unless you set it yourself): an idle core then lets the kernel move a
  stalled worker onto it instead of watching it spin;
* runs an operation on several threads only where that pays on a quiet machine and costs nothing on a
  busy one — large convolutions and matrix products (``threads_for``, by FLOPs per call). Small
  operations and memory-bound ones (the linear probes' tall-skinny products, UMAP's per-edge updates)
  run on one thread, and NumPy's BLAS pool is kept at one thread, so the two pools never compete;
* uses the cores for independent work instead where there is some (``map_tasks``: the probes of
  different layers run side by side, each on one thread — no barrier for a descheduled thread to stall).

``--threads N`` / ``REPLEARN_THREADS=N`` replace the automatic choice by N threads for every phase that
runs in parallel; the resolved setting and each phase's choice go to ``environment.json``.
``REPLEARN_THREADS=library`` leaves every pool at its library default (spinning waits, all cores for
everything, one task at a time): replearn's behaviour before this policy, kept for comparison
(``benchmarks/bench_contention.py``). Results are
bit-for-bit reproducible at a fixed setting; training at another thread count sums gradients in
another order, so trained weights (and their probe accuracies) differ at the level of seed noise.
"""
from __future__ import annotations

import contextlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, TypeVar

from replearn.errors import ConfigError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")
R = TypeVar("R")

ENV_VAR = "REPLEARN_THREADS"
LIBRARY_DEFAULTS = "library"
# A call below this many FLOPs runs on one thread: on the 2-core machines measured, a digits training
# step (≈ 0.05 GFLOP) is as fast on one thread as on two when quiet and 4× faster beside a busy process;
# a Fashion-MNIST step (≈ 1.6 GFLOP) is 1.4–1.6× faster on two threads and no slower on them when busy.
PARALLEL_MIN_FLOPS = 3e8

_setting: int | None = None
_decisions: dict[str, int] = {}


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota if one is set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup (v2 ``cpu.max`` or v1 CFS quota), or None when unlimited or unknown."""
    try:
        text = (root / "cpu.max").read_text().split()
        if len(text) == 2 and text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


THREADS_PER_CORE = 4  # how far a fixed thread count may oversubscribe the cores (to reproduce another machine's)


def parse_threads(value: str | int | None, source: str) -> int | None:
    """A thread setting from a flag or the environment: None or 'auto' for automatic, else an int ≥ 1."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source} must be a whole number of threads or 'auto', got {str(value)[:40]!r}",
                          f"set {source} to e.g. 2, or to auto") from None
    if n < 1:
        raise ConfigError(f"{source} must be at least 1, got {n}", f"set {source} to 1 or more, or to auto")
    most = THREADS_PER_CORE * available_cores()
    if n > most:  # thousands of OpenMP threads exhaust memory (libgomp aborts) long before they could help
        raise ConfigError(f"{source} {n} is more than {THREADS_PER_CORE} threads for each of this machine's "
                          f"{available_cores()} available cores ({most})",
                          f"set {source} to {most} or fewer, or to auto")
    return n


def set_threads(n: int | None) -> None:
    """Fix the thread count of every parallel phase to ``n`` (None: choose automatically)."""
    global _setting
    _setting = n


def thread_setting() -> int | None:
    """The fixed setting: ``set_threads``, else ``$REPLEARN_THREADS``, else None (automatic)."""
    if _setting is not None:
        return _setting
    if library_defaults():
        return None
    return parse_threads(os.environ.get(ENV_VAR), ENV_VAR)


def library_defaults() -> bool:
    """Whether ``REPLEARN_THREADS=library`` asks to leave every thread pool at its library default."""
    return _setting is None and os.environ.get(ENV_VAR, "").strip().lower() == LIBRARY_DEFAULTS


def threads_for(flops_per_call: float, phase: str | None = None) -> int:
    """Threads for a phase whose typical call costs ``flops_per_call``: all cores for large calls, one for
    small ones; a fixed setting overrides both. The choice is recorded under ``phase``."""
    fixed = thread_setting()
    if fixed is not None:
        n = fixed
    elif library_defaults():
        n = available_cores()
    else:
        n = available_cores() if flops_per_call >= PARALLEL_MIN_FLOPS else 1
    if phase:
        _decisions[phase] = n
    return n


def task_workers(tasks: int, phase: str | None = None) -> int:
    """Workers for ``tasks`` independent single-threaded tasks."""
    fixed = thread_setting()
    n = 1 if library_defaults() else max(1, min(tasks, fixed if fixed is not None else available_cores()))
    if phase:
        _decisions[phase] = n
    return n


def decisions() -> dict[str, int]:
    """Threads chosen so far in this process, by phase."""
    return dict(_decisions)


def add_decisions(chosen: dict[str, int]) -> None:
    """Record threads another process of the run chose (its second training process), by phase."""
    _decisions.update({str(phase): int(n) for phase, n in chosen.items()})


def record() -> dict[str, Any]:
    """The thread policy for environment.json."""
    fixed = thread_setting()
    setting = LIBRARY_DEFAULTS if library_defaults() else "auto" if fixed is None else fixed
    return {"setting": setting, "available_cores": available_cores(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "library default"),
            "parallel_min_flops": PARALLEL_MIN_FLOPS, "phases": decisions()}


@contextlib.contextmanager
def use_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads and ``n`` BLAS/OpenMP threads in the other libraries
    (NumPy's OpenBLAS, scikit-learn's OpenMP); restore the previous counts afterwards."""
    import torch

    if library_defaults():
        yield
        return
    before = torch.get_num_threads()
    limiter = _limit_native_pools(n)
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if limiter is not None:
            limiter.restore_original_limits()


def _limit_native_pools(n: int) -> Any:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # threadpoolctl comes with scikit-learn; without it only torch is limited
        return None
    return threadpool_limits(limits=n)


def quiet_native_pools() -> None:
    """Keep NumPy's BLAS pool at one thread for the rest of the process: every NumPy product replearn
    runs outside ``use_threads`` is memory-bound (probes), where a second thread only adds contention."""
    if library_defaults():
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=1, user_api="blas")


def map_tasks(fn: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """``[fn(x) for x in items]`` with up to ``workers`` items at a time, each on one torch thread; results
    keep the order of ``items``, and the first exception is re-raised after the others finish."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        with use_threads(1):
            return [fn(x) for x in items]
    with use_threads(1), ThreadPoolExecutor(max_workers=workers, thread_name_prefix="replearn") as pool:
        return list(pool.map(fn, items))


def forward_flops(module: "torch.nn.Module", *inputs: Any) -> float:
    """FLOPs of one ``module(*inputs)``; see ``count_flops``."""
    return count_flops([module], lambda: module(*inputs))


def count_flops(modules: "list[torch.nn.Module]", run: Callable[[], Any]) -> float:
    """Multiply-add FLOPs that ``run()`` spends in the convolutions and linear layers of ``modules`` (where
    nearly all of the work is), counted from their shapes by forward hooks; ``run`` goes without autograd.
    Callers put the modules in eval mode so that no running statistic changes. (torch's FlopCounterMode
    gives the same counts but costs 2 s of imports on first use.)"""
    import torch
    import torch.nn as nn
    from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

    total = 0.0

    def count(layer: nn.Module, args: Any, out: Any) -> None:
        nonlocal total
        kernel = math.prod(getattr(layer, "kernel_size", (1,)))
        if isinstance(layer, nn.Linear):
            total += 2.0 * out.numel() * layer.in_features
        elif isinstance(layer, _ConvTransposeNd):  # every input element meets out_channels × kernel weights
            total += 2.0 * args[0].numel() * layer.out_channels // layer.groups * kernel
        else:  # every output element is a dot product over (in_channels / groups) × kernel
            total += 2.0 * out.numel() * layer.in_channels // layer.groups * kernel

    layers = {id(m): m for module in modules for m in module.modules() if isinstance(m, (nn.Linear, _ConvNd))}
    handles = [m.register_forward_hook(count) for m in layers.values()]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return total
