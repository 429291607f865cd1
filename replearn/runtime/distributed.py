"""Several processes, one run: torchrun's process group, which part of each batch a process takes, and the
collectives the rest of replearn needs (sums of statistics, a stop on any rank, gathers that keep gradients).

Started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) every process trains the same model on its
contiguous share of each global batch (the one-process batch, cut in rank order), ``DistributedDataParallel``
averages the gradients, and rank 0 alone writes. With one process every function here is the identity, so a
one-process run computes exactly what it did before. Losses that need the whole batch gather it inside
``sharded_batch()`` (the trainer's step) with ``gather_with_grad``, whose backward returns each rank the
gradient of its own rows summed over every rank's loss (as solo-learn's and lightly's gather layers).
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
import torch.nn as nn

from replearn.errors import ConfigError
from replearn.runtime.log import set_quiet

BACKENDS = ("auto", "gloo", "nccl")
WAIT_FOR_MAIN = datetime.timedelta(days=7)  # the other ranks wait this long while rank 0 runs the analyses


@dataclass(frozen=True)
class World:
    """This process's place in the run: rank, number of processes, rank on this machine, backend."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


_world = World()
_sharded = False
_waiting_group: Any = None
_joined = False  # whether this process has been part of a process group (kept after ``shutdown``)


def world() -> World:
    """The current process's ``World`` (one process, rank 0, until ``init`` joins a torchrun group)."""
    return _world


TORCHRUN_FIX = ("start the processes with torchrun (or replearn run --nproc N), which sets WORLD_SIZE, RANK, "
                "LOCAL_RANK, MASTER_ADDR and MASTER_PORT; or unset WORLD_SIZE to run one process")


def _environment_int(name: str, default: str, low: int, high: int | None = None) -> int:
    """An integer variable of torchrun's environment in ``low..high``, refused in one line otherwise."""
    text = os.environ.get(name, default).strip() or default
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"the environment variable {name}={text[:40]!r} is not a whole number", TORCHRUN_FIX) \
            from None
    if value < low or (high is not None and value > high):
        span = f"{low}..{high}" if high is not None else f"at least {low}"
        raise ConfigError(f"the environment variable {name}={value} is outside {span}", TORCHRUN_FIX)
    return value


def launched_size() -> int:
    """How many processes torchrun started (``WORLD_SIZE``; 1 when not started by torchrun). The rest of
    torchrun's environment is checked with it, so that a hand-set or partial one is refused in one line."""
    size = _environment_int("WORLD_SIZE", "1", 1)
    if size > 1:
        if "RANK" not in os.environ:
            raise ConfigError(f"WORLD_SIZE={size} is set but RANK is not", TORCHRUN_FIX)
        _environment_int("RANK", "", 0, size - 1)
        _environment_int("LOCAL_RANK", "0", 0, size - 1)
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name, "").strip()]
        if missing:
            raise ConfigError(f"WORLD_SIZE={size} is set but {' and '.join(missing)} "
                              f"{'is' if len(missing) == 1 else 'are'} not (where the processes meet)", TORCHRUN_FIX)
        _environment_int("MASTER_PORT", "", 1, 65535)
    return size


def backend_for(requested: str, device: torch.device) -> str:
    """The collective backend: NCCL on CUDA, gloo on the CPU (``train.backend`` auto), or the one asked for."""
    if requested == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    return requested


def check(train: Any, device: torch.device) -> None:
    """Refuse, before anything is written, what this machine cannot run: NCCL without CUDA, SyncBatchNorm
    without NCCL."""
    backend = backend_for(train.backend, device)
    if backend == "nccl" and not torch.cuda.is_available():
        raise ConfigError("train.backend is 'nccl' but no CUDA device is available (NCCL needs GPUs)",
                          "use --set train.backend=gloo (or auto), which runs on the CPU")
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError("train.backend is 'nccl' but train.device is 'cpu'", "use --set train.backend=gloo")
    if train.sync_batchnorm and backend != "nccl":
        raise ConfigError(f"train.sync_batchnorm needs the NCCL backend (CUDA), but this run uses {backend}",
                          "drop --set train.sync_batchnorm=true (each process then normalises its own share)")


def init(train: Any, device: torch.device) -> tuple[World, torch.device]:
    """Join torchrun's process group (once; nothing when one process) and return the world and this rank's
    device (``cuda:LOCAL_RANK`` on GPUs). Ranks other than 0 print nothing from here on."""
    global _world, _waiting_group, _joined
    check(train, device)
    if launched_size() <= 1:
        return _world, device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    backend = backend_for(train.backend, device)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=train.collective_timeout),
                                device_id=device if device.type == "cuda" else None)
        _waiting_group = dist.new_group(backend="gloo", timeout=WAIT_FOR_MAIN)
    _world, _joined = World(dist.get_rank(), dist.get_world_size(), local, backend), True
    if not _world.main:
        set_quiet(True)
    return _world, device


def shutdown() -> None:
    """Leave the process group (at the end of a run; harmless when there is none)."""
    global _world, _waiting_group
    if dist.is_initialized():
        dist.destroy_process_group()
    _world, _waiting_group = World(), None


def describe() -> dict[str, Any]:
    """What environment.json records of the processes: their number and backend."""
    return {"world_size": _world.size, "backend": _world.backend or None}


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (e.g. the run directory a timestamp named)."""
    if not _world.active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wait_for_main() -> None:
    """Wait, without the collective timeout, until rank 0 has finished what it alone does (the analyses)."""
    if _world.active:
        dist.barrier(group=_waiting_group)


def share(n: int) -> slice:
    """This rank's contiguous share of ``n`` items (rank order = the items' order; sizes differ by ≤ 1)."""
    return slice(_world.rank * n // _world.size, (_world.rank + 1) * n // _world.size)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over every rank (in place; the tensor itself when one process)."""
    if _world.active:
        dist.all_reduce(tensor)
    return tensor


def collective_device() -> torch.device:
    """Where small tensors for a collective live: this rank's GPU under NCCL, else the CPU."""
    return torch.device("cuda", _world.local_rank) if _world.backend == "nccl" else torch.device("cpu")


def all_true(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank (so that every rank takes the same branch)."""
    if not _world.active:
        return flag
    t = torch.tensor([0.0 if flag else 1.0], device=collective_device())
    return float(all_reduce_sum(t)) == 0.0


def first_request(name: str | None) -> str | None:
    """A stop request (a signal's name) made on any rank, seen by every rank at the same step."""
    if not _world.active:
        return name
    names = [None] * _world.size
    flag = torch.tensor([1.0 if name else 0.0], device=collective_device())
    if float(all_reduce_sum(flag)) == 0.0:
        return None
    dist.all_gather_object(names, name)
    return next(n for n in names if n)


@contextlib.contextmanager
def sharded_batch() -> Iterator[None]:
    """Marks a training step, in which each rank holds its share of the global batch: batch statistics and
    losses that compare images (``gather_with_grad``, ``batch_mean``) then span every rank."""
    global _sharded
    _sharded = _world.active
    try:
        yield
    finally:
        _sharded = False


def batch_is_sharded() -> bool:
    return _sharded


def batch_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over the global batch (every rank's share, inside ``sharded_batch``), no gradient."""
    if not _sharded:
        return values.mean()
    both = torch.stack([values.detach().sum(), torch.tensor(float(len(values)), device=values.device)])
    total, count = all_reduce_sum(both)
    return total / count


def _gather_padded(x: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``x`` (first dimensions may differ), in rank order."""
    sizes = torch.tensor([len(x)], device=x.device)
    all_sizes = [torch.zeros_like(sizes) for _ in range(_world.size)]
    dist.all_gather(all_sizes, sizes)
    longest = int(max(s.item() for s in all_sizes))
    padded = torch.zeros((longest, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[:len(x)] = x
    parts = [torch.empty_like(padded) for _ in range(_world.size)]
    dist.all_gather(parts, padded.contiguous())
    return [part[:int(size.item())] for part, size in zip(parts, all_sizes)]


class GatherLayer(torch.autograd.Function):
    """All-gather with gradients: forward concatenates every rank's rows in rank order; backward sums the
    gradient of the concatenation over ranks (each rank's loss may depend on every row) and returns this
    rank's rows of it."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        parts = _gather_padded(x)
        ctx.bounds = (sum(len(p) for p in parts[:_world.rank]), len(x))
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start, n = ctx.bounds
        return grad[start:start + n]


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(every rank's rows of ``x`` concatenated in rank order, where this rank's rows start); inside
    ``sharded_batch`` only, else ``(x, 0)``."""
    if not _sharded:
        return x, 0
    starts = _gather_padded(torch.tensor([len(x)], device=x.device))
    offset = int(sum(int(s.item()) for s in starts[:_world.rank]))
    return GatherLayer.apply(x), offset


def gather_rows(compute: Callable[[int, int], dict[str, torch.Tensor]], n: int) -> dict[str, torch.Tensor]:
    """``compute(0, n)`` assembled from shares: each rank computes rows [start, end) of its ``share(n)``,
    and every rank receives them all in order (odd sizes: no padding left in, no row twice)."""
    if not _world.active:
        return compute(0, n)
    mine = share(n)
    out = compute(mine.start, mine.stop) if mine.stop > mine.start else None
    template = out if out is not None else {k: v[:0] for k, v in compute(0, 1).items()}
    return {k: torch.cat([p.cpu() for p in _gather_padded(v.to(collective_device()))]) for k, v in template.items()}


def ddp_loss(regime: Any, encoder: nn.Module, head: nn.Module, device: torch.device, sync_batchnorm: bool
             ) -> Callable[..., Any]:
    """``regime.loss`` as the trainer calls it: with several processes, run inside one
    ``DistributedDataParallel`` module holding the encoder and the head (gradients averaged over ranks)."""
    if not _world.active:
        return lambda x, y, generator: regime.loss(encoder, head, x, y, generator)
    if sync_batchnorm:
        nn.SyncBatchNorm.convert_sync_batchnorm(encoder)
        nn.SyncBatchNorm.convert_sync_batchnorm(head)
    module = RegimeLoss(regime, encoder, head)
    return nn.parallel.DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None,
                                               static_graph=True)  # a head's unused parameters are allowed


class RegimeLoss(nn.Module):
    """The regime's loss as one module's forward, so that DistributedDataParallel sees the whole step."""

    def __init__(self, regime: Any, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.regime, self.encoder, self.head = regime, encoder, head

    def forward(self, x: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator) -> Any:
        return self.regime.loss(self.encoder, self.head, x, y, generator)


def sync_buffers(*modules: nn.Module) -> None:
    """Rank 0's buffers (batch norm's running statistics) on every rank, so that every rank's copy of the
    trained model is the same function."""
    if _world.active:
        for module in modules:
            for buffer in module.buffers():
                dist.broadcast(buffer.data, src=0)


PEER_WORDS = ("connection closed by peer", "connection reset by peer", "broken pipe", "timed out", "timeout",
              "nccl", "gloo")


def peer_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective that failed because another rank died or stopped answering."""
    if not _joined:
        return False
    text = str(exc).lower()
    return isinstance(exc, dist.DistError) or (isinstance(exc, RuntimeError) and any(w in text for w in PEER_WORDS))
