"""Training throughput: replearn's trainer vs a minimal hand-written loop over the same model, loss and batches.

For each regime, both train the Fashion-MNIST experiment's encoder and the regime's head for one epoch (the
same optimizer steps from the same initial weights, the regime's own loss with the same per-step random
generator, the same thread count) and then evaluate the validation split once, as any training loop
does; the minimal loop gets pre-made batches, the trainer batches by index and also records per-layer
gradient norms, checks for divergence and writes its resumable state. The per-epoch latent probe (an
analysis, off by `train.probe_every_epoch=false`) is not timed. Ratio = minimal time / trainer time
(1.0 = no overhead). Also prints achieved GFLOP/s as a fraction of this machine's float32 matmul peak.

    python benchmarks/bench_training.py [--images 12800] [--regimes supervised,autoencoder,denoising,vae,contrastive]
    python benchmarks/bench_training.py --resnet18 [--width 64] --images 1280 --regimes supervised,autoencoder --repeats 3

--resnet18 measures the ResNet-18 encoder (CIFAR stem, stage widths w, 2w, 4w, 8w) and its mirrored decoder
instead of the conv encoder (results in benchmarks/results/training-resnet18.json).
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch
import torch._dynamo  # noqa: F401 — torch.optim imports it on the baseline's first step: not inside the timed loop
from torch.utils.flop_counter import FlopCounterMode

from common import fashion_mnist_or_none, machine, matmul_peak_gflops, report
from replearn.runtime import threads as parallel
from replearn.config.sections import load_config
from replearn.data import Dataset
from replearn.encoders import build_encoder
from replearn.experiment.experiment import build_head
from replearn.experiment.plugins import resolve
from replearn.regimes import make_regime
from replearn.training import Checkpoint, MetricsCSV, Trainer, TrainSettings, eval_batch_size

REGIMES = ["supervised", "autoencoder", "denoising", "vae", "contrastive"]


def minimal_loop(regime, encoder, head, batches, val_batches, threads: int) -> float:
    """One epoch of the textbook loop, then the textbook validation pass (both loops do the same work)."""
    params = list(encoder.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.1)
    encoder.train(), head.train()
    with parallel.use_threads(threads):
        started = time.perf_counter()
        for step, (x, y) in enumerate(batches):
            loss, _ = regime.loss(encoder, head, x, y if regime.needs_labels else None,
                                  torch.Generator().manual_seed(step))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        encoder.eval(), head.eval()
        with torch.no_grad():
            for step, (x, y) in enumerate(val_batches):
                regime.loss(encoder, head, x, y if regime.needs_labels else None, torch.Generator().manual_seed(step))
        return time.perf_counter() - started


def step_flops(regime, encoder, head, x, y) -> int:
    with FlopCounterMode(display=False) as counter:
        loss, _ = regime.loss(encoder, head, x, y if regime.needs_labels else None, torch.Generator().manual_seed(0))
        loss.backward()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=0, help="training images per timed epoch (0 = all 54k)")
    parser.add_argument("--regimes", default=",".join(REGIMES), help="comma-separated regimes to measure")
    parser.add_argument("--resnet18", action="store_true", help="measure the ResNet-18 encoder instead")
    parser.add_argument("--width", type=int, default=64, help="ResNet-18 width of the first stage (64 = standard)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating timings of each loop (the fastest counts)")
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    resnet = ["model.name=resnet", "model.depth=18", f"model.width={args.width}", "model.latent_dim=128"]
    cfg = load_config(root / "experiments" / "objectives.yaml", ["train.epochs=1", "train.probe_every_epoch=false"]
                      + [f"regimes.{r}.epochs=1" for r in ("supervised", "autoencoder", "denoising", "vae", "contrastive")]
                      + (resnet if args.resnet18 else []))
    data = fashion_mnist_or_none(train_subset=args.images + args.images // 9 if args.images else 0, val_fraction=0.1)
    source = "Fashion-MNIST"
    if data is None:
        g = torch.Generator().manual_seed(0)
        n = args.images or 12800
        data = Dataset("synthetic", torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g),
                       torch.randn(n // 10, 1, 28, 28, generator=g), torch.randint(0, 10, (n // 10,), generator=g),
                       torch.randn(10, 1, 28, 28), torch.zeros(10, dtype=torch.long), [str(i) for i in range(10)],
                       (0.0,), (1.0,), "synthetic")
        source = "synthetic 28×28"
    peak = matmul_peak_gflops()
    bs = cfg.train.batch_size
    n = len(data.train_x)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    batches = [(data.train_x[order[i:i + bs]].contiguous(memory_format=torch.channels_last), data.train_y[order[i:i + bs]])
               for i in range(0, n, bs)]

    def val_batches(size: int) -> list:
        return [(data.val_x[i:i + size].contiguous(memory_format=torch.channels_last), data.val_y[i:i + size])
                for i in range(0, len(data.val_x), size)]
    results = {}
    regimes = {r.name: r for r in resolve(cfg).regimes}
    for name in args.regimes.split(","):
        regime = regimes[name] if name in regimes else make_regime(name)
        init = build_encoder(cfg.model, data.image_shape, 0).to(memory_format=torch.channels_last)
        head0 = build_head(regime, init, data, 0).to(memory_format=torch.channels_last)
        minimal, trainer = [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                enc, head = copy.deepcopy(init), copy.deepcopy(head0)
                started = time.perf_counter()
                # the trainer with a run's per-epoch side effects: checkpoint and metrics CSV
                Trainer(regime, enc, head, data, TrainSettings.from_config(cfg.train, 1),
                        callbacks=[MetricsCSV(Path(tmp) / "m.csv"), Checkpoint(Path(tmp) / "s.pt")]).fit()
                trainer.append(time.perf_counter() - started)
            threads = parallel.decisions()[f"training {regime.name}"]
            minimal.append(minimal_loop(regime, copy.deepcopy(init), copy.deepcopy(head0), batches,
                                        val_batches(eval_batch_size(regime, cfg.train.batch_size)), threads))
        flops = step_flops(regime, copy.deepcopy(init), copy.deepcopy(head0), *batches[0]) * len(batches)
        results[name] = {"minimal_s": min(minimal), "trainer_s": min(trainer), "ratio": min(minimal) / min(trainer),
                         "minimal_all_s": [round(t, 2) for t in minimal], "trainer_all_s": [round(t, 2) for t in trainer],
                         "gflops": flops / min(trainer) / 1e9, "threads": threads}
    summary = ", ".join(f"{r} ratio {v['ratio']:.3f} ({v['gflops']:.1f} GFLOP/s = {v['gflops'] / peak:.0%} of "
                        f"{peak:.0f} GFLOP/s matmul peak)" for r, v in results.items())
    model = f"ResNet-18 (width {args.width}) " if args.resnet18 else ""
    report("training-resnet18" if args.resnet18 else "training",
           {"summary": f"{model}trainer vs minimal loop, {n} {source} images/epoch: {summary}",
                        "results": results, "peak_gflops": peak, "machine": machine(),
                        "target": "ratio >= 0.95 for every regime"})


if __name__ == "__main__":
    main()
