"""The losses that need the whole batch, gathered over two real gloo processes on the CPU, against one process
on the whole batch (as tests/unit/test_gather.py does for NT-Xent): Barlow Twins' cross-correlation, VICReg's
statistics and SupCon's positives and negatives, loss and gradients to 1e-6."""
from __future__ import annotations

import os
import socket
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp

from replearn.runtime import distributed
from replearn.regimes.losses import barlow_twins_loss, supcon_loss, vicreg_loss

N, DIM = 7, 5  # odd: the ranks' shares differ (3 and 4)
TRAIN = SimpleNamespace(backend="gloo", sync_batchnorm=False, collective_timeout=60.0)
LOSSES = {
    "barlow_twins": lambda z1, z2, y, gather=True: barlow_twins_loss(z1, z2, 0.0051, gather=gather),
    "vicreg": lambda z1, z2, y, gather=True: vicreg_loss(z1, z2, gather=gather)[0],
    "supcon": lambda z1, z2, y, gather=True: supcon_loss(torch.cat([z1, z2], 1).view(-1, DIM), y.repeat_interleave(2),
                                                         0.2, gather=gather),
}


def embeddings() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(N, DIM, generator=g, dtype=torch.float64)
    return z1, z1 + 0.5 * torch.randn(N, DIM, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2, 0])


def worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    world, _ = distributed.init(TRAIN, torch.device("cpu"))
    z1_all, z2_all, y_all = embeddings()
    mine = distributed.share(N)
    results = {"share": (mine.start, mine.stop)}
    for name, fn in LOSSES.items():
        z1, z2 = z1_all[mine].clone().requires_grad_(), z2_all[mine].clone().requires_grad_()
        with distributed.sharded_batch():
            loss = fn(z1, z2, y_all[mine])
            local = fn(z1.detach(), z2.detach(), y_all[mine], gather=False)
        (loss * (world.size * len(z1) / N)).backward()  # the trainer's weighting of a rank's share
        whole = distributed.all_reduce_sum((loss * len(z1) / N).detach().clone())
        results[name] = {"loss": whole, "local": local, "grad1": z1.grad, "grad2": z2.grad}
    torch.save(results, f"{out}/rank{rank}.pt")
    distributed.shutdown()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("gather_losses")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(port, str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("name", list(LOSSES))
def test_gathered_loss_and_gradients_equal_one_process_on_the_whole_batch(ranks, name):
    z1, z2, y = embeddings()
    z1, z2 = z1.requires_grad_(), z2.requires_grad_()
    loss = LOSSES[name](z1, z2, y)
    loss.backward()
    for r in ranks:
        got = r[name]
        assert abs(got["loss"].item() - loss.item()) < 1e-6, (got["loss"], loss)
        lo, hi = r["share"]
        # each rank's gradient is the sum over both ranks' losses: DDP's average (÷ 2) is the one-process gradient
        assert torch.allclose(got["grad1"] / 2, z1.grad[lo:hi], atol=1e-6, rtol=0), name
        assert torch.allclose(got["grad2"] / 2, z2.grad[lo:hi], atol=1e-6, rtol=0), name
        # without the gather a rank's statistics are its share's alone: another number
        assert abs(got["local"].item() - loss.item()) > 1e-3
