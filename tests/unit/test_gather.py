"""The collectives of a distributed run against one process, with two real gloo processes on the CPU: the
gathered contrastive loss and its gradients, gathered features of an odd-sized split, the global batch mean
(the VAE's σ), the stop request and the share of each batch."""
from __future__ import annotations

import os
import socket
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp

from replearn.runtime import distributed
from replearn.encoders import build_encoder
from replearn.config.sections import ModelConfig
from replearn.encoders.extract import extract_splits
from replearn.regimes.contrastive import nt_xent

N, DIM, TEMPERATURE, SPLIT = 7, 5, 0.5, 13  # odd sizes: the ranks' shares differ (3 and 4; 6 and 7)
TRAIN = SimpleNamespace(backend="gloo", sync_batchnorm=False, collective_timeout=60.0)


def projections() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, DIM, generator=g), torch.randn(N, DIM, generator=g)


def encoder_and_images() -> tuple[torch.nn.Module, torch.Tensor]:
    encoder = build_encoder(ModelConfig(latent_dim=6, plugin_options={"channels": [4, 8]}), (1, 8, 8), 0)
    return encoder, torch.randn(SPLIT, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    world, _ = distributed.init(TRAIN, torch.device("cpu"))
    z1_all, z2_all = projections()
    mine = distributed.share(N)
    z1, z2 = z1_all[mine].clone().requires_grad_(), z2_all[mine].clone().requires_grad_()
    with distributed.sharded_batch():
        loss, top1 = nt_xent(z1, z2, TEMPERATURE, gather=distributed.batch_is_sharded())
        mean = distributed.batch_mean(z1_all[mine, 0])
    (loss * (world.size * len(z1) / N)).backward()  # the trainer's weighting of a rank's share
    whole = distributed.all_reduce_sum((loss * len(z1) / N).detach().clone())
    encoder, images = encoder_and_images()
    features = extract_splits(encoder, {"test": images}, 64, gathered=True)
    request = distributed.first_request("SIGINT" if rank == 1 else None)
    torch.save({"rank": rank, "share": (mine.start, mine.stop), "loss": whole, "top1": distributed.all_reduce_sum(top1),
                "grad1": z1.grad, "grad2": z2.grad, "mean": mean, "features": features, "request": request},
               f"{out}/rank{rank}.pt")
    distributed.shutdown()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("gather")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(port, str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_each_rank_takes_a_contiguous_share_in_rank_order(ranks):
    assert [r["share"] for r in ranks] == [(0, 3), (3, 7)]


def test_gathered_contrastive_loss_and_gradients_match_one_process_on_the_whole_batch(ranks):
    z1, z2 = (z.clone().requires_grad_() for z in projections())
    loss, top1 = nt_xent(z1, z2, TEMPERATURE)
    loss.backward()
    for r in ranks:
        assert torch.allclose(r["loss"], loss.detach(), atol=1e-6)
        assert int(r["top1"]) == int(top1)
        lo, hi = r["share"]
        # each rank's gradient is the sum over both ranks' losses: DDP's average (÷ 2) is the one-process gradient
        assert torch.allclose(r["grad1"] / 2, z1.grad[lo:hi], atol=1e-6), (r["grad1"] / 2, z1.grad[lo:hi])
        assert torch.allclose(r["grad2"] / 2, z2.grad[lo:hi], atol=1e-6)


def test_gathered_features_of_an_odd_split_match_one_process(ranks):
    encoder, images = encoder_and_images()
    alone = extract_splits(encoder, {"test": images}, 64)
    for r in ranks:
        assert r["features"].keys() == alone.keys()
        for layer, splits in alone.items():
            got = r["features"][layer]["test"]
            assert got.shape == splits["test"].shape and len(got) == SPLIT  # no padding, no row twice
            assert torch.allclose(got, splits["test"], atol=1e-5), layer


def test_batch_mean_spans_every_rank_and_a_stop_on_one_rank_reaches_all(ranks):
    z1, _ = projections()
    for r in ranks:
        assert torch.allclose(r["mean"], z1[:, 0].mean(), atol=1e-6)
        assert r["request"] == "SIGINT"
