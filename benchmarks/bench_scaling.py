"""Scaling: training throughput with 1 and 2 processes on the CPU (torchrun, gloo, the same global batch), and,
when CUDA is available, single-GPU images per second against a bare CUDA loop, and the Fashion-MNIST
five-regime comparison's wall time.

CPU: the trainer trains the Fashion-MNIST experiment's conv encoder (supervised and contrastive) for one
epoch of ``--images`` images, first as one process (with a thread per core and with one thread; the faster
counts), then as 2 processes (`torchrun --nproc_per_node=2`, the cores shared out between them,
DistributedDataParallel over gloo); each figure is images per second of the timed epoch (the second of two,
so start-up is not counted). On a machine whose
cores one process already keeps busy, two processes cannot be faster: they split the same cores and add
an all-reduce per step; the result says which happened.

GPU (only when ``torch.cuda.is_available()``): images/s of the trainer (bf16 autocast, channels-last, the
training images held on the GPU) for the conv encoder and ResNet-18, each divided by the images/s of a
bare loop over GPU-resident batches (forward, loss, backward, Adam step; no gradient norms, checks or
callbacks); then `replearn run fashion_mnist` (five regimes) on the GPU, timed.

    python benchmarks/bench_scaling.py [--images 3200] [--regimes supervised,contrastive]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import ROOT, fashion_mnist_or_none, machine, matmul_peak_gflops, report
from replearn.config.sections import load_config
from replearn.data import Dataset
from replearn.encoders import build_encoder
from replearn.experiment.experiment import build_head
from replearn.experiment.plugins import resolve
from replearn.training import Trainer, TrainSettings

RESULT_PREFIX = "SCALING-RESULT "


def dataset(images: int) -> tuple[Dataset, str]:
    data = fashion_mnist_or_none(train_subset=images + images // 9, val_fraction=0.1)
    if data is not None:
        return data, "Fashion-MNIST"
    g = torch.Generator().manual_seed(0)
    return Dataset("synthetic", torch.randn(images, 1, 28, 28, generator=g), torch.randint(0, 10, (images,), generator=g),
                   torch.randn(images // 10, 1, 28, 28, generator=g), torch.randint(0, 10, (images // 10,), generator=g),
                   torch.randn(10, 1, 28, 28), torch.zeros(10, dtype=torch.long), [str(i) for i in range(10)],
                   (0.0,), (1.0,), "synthetic"), "synthetic 28×28"


def experiment_config(overrides: list[str]):
    return load_config(ROOT / "experiments" / "objectives.yaml",
                       ["train.epochs=2", "train.probe_every_epoch=false"] + overrides)


def trainer_rate(regime_name: str, images: int, device: str, overrides: list[str]) -> float:
    """Images/s of the trainer's second epoch (the first warms up); with torchrun, of this rank's process group."""
    from replearn.runtime import distributed

    cfg = experiment_config(overrides + [f"train.device={device}"])
    world, dev = distributed.init(cfg.train, torch.device(device))
    data, _ = dataset(images)
    regime = next(r for r in resolve(cfg).regimes if r.name == regime_name)
    encoder = build_encoder(cfg.model, data.image_shape, 0)
    head = build_head(regime, encoder, data, 0)
    trainer = Trainer(regime, encoder, head, data, TrainSettings.from_config(cfg.train, 2), device=dev)
    rows = trainer.fit().history
    distributed.shutdown()
    return rows[-1]["train_images_per_s"]


def worker(args: argparse.Namespace) -> None:
    """One process of a measurement: prints its rate on a line that the parent reads."""
    rate = trainer_rate(args.regime, args.images, args.device, args.overrides)
    if int(os.environ.get("RANK", "0")) == 0:
        print(RESULT_PREFIX + json.dumps({"rate": rate}), flush=True)


def measure(regime: str, images: int, nproc: int, device: str = "cpu", overrides: list[str] = (),
            threads: int = 0) -> float:
    """Images/s with ``nproc`` processes (1: a plain process, else torchrun standalone), each with ``threads``
    threads (0: the cores shared out between the processes)."""
    me = [str(Path(__file__).resolve()), "--worker", "--regime", regime, "--images", str(images), "--device", device,
          *[f"--set={o}" for o in overrides]]
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                      f"--nproc_per_node={nproc}"]
    threads = threads or max(1, (os.cpu_count() or 1) // nproc)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "REPLEARN_THREADS": str(threads)}
    done = subprocess.run(launcher + me, capture_output=True, text=True, env=env, check=True)
    line = next(line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX))
    return json.loads(line[len(RESULT_PREFIX):])["rate"]


def bare_cuda_rate(overrides: list[str], images: int) -> float:
    """Images/s of a bare loop (forward, loss, backward, Adam) over GPU-resident batches, bf16 autocast."""
    cfg = experiment_config(overrides)
    data, _ = dataset(images)
    regime = resolve(experiment_config(overrides + ["train.regimes=[supervised]"])).regimes[0]
    encoder = build_encoder(cfg.model, data.image_shape, 0).cuda().to(memory_format=torch.channels_last)
    head = build_head(regime, encoder, data, 0).cuda()
    x, y = data.train_x.cuda().contiguous(memory_format=torch.channels_last), data.train_y.cuda()
    opt = torch.optim.Adam(list(encoder.parameters()) + list(head.parameters()))
    bs = cfg.train.batch_size
    rates = []
    for _ in range(2):
        torch.cuda.synchronize()
        started = time.perf_counter()
        for i in range(0, len(x), bs):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss, _ = regime.loss(encoder, head, x[i:i + bs], y[i:i + bs], torch.Generator("cuda").manual_seed(i))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        torch.cuda.synchronize()
        rates.append(len(x) / (time.perf_counter() - started))
    return rates[-1]


def gpu_results(images: int) -> dict:
    """Single-GPU trainer vs bare loop for the conv encoder and ResNet-18, and the five-regime comparison."""
    resnet = ["model.name=resnet", "model.depth=18", "model.width=64", "model.latent_dim=128"]
    out = {"device": torch.cuda.get_device_name(0)}
    for name, model in (("conv", []), ("resnet18", resnet)):
        fast = model + ["train.precision=bf16", "train.regimes=[supervised]"]
        trainer = measure("supervised", images, 1, "cuda", fast)
        bare = bare_cuda_rate(model, images)
        out[name] = {"trainer_images_per_s": trainer, "bare_images_per_s": bare, "ratio": trainer / bare}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "replearn", "run", "fashion_mnist", "--quiet", "--set", "train.device=cuda",
                    "--out", str(ROOT / "reports" / "bench-scaling-fashion-mnist"), "--force"], check=True, cwd=ROOT)
    out["fashion_mnist_five_regimes_s"] = time.perf_counter() - started
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3200, help="training images per timed epoch")
    parser.add_argument("--regimes", default="supervised,contrastive", help="comma-separated regimes to measure")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--regime", default="supervised", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    peak = matmul_peak_gflops(2048, 5)
    _, source = dataset(args.images)
    cpu = {}
    for regime in args.regimes.split(","):
        # one process at its best: a thread per core, or one thread (faster when other work shares the cores)
        ones = {"all_cores": measure(regime, args.images, 1), "one_thread": measure(regime, args.images, 1, threads=1)}
        one, two = max(ones.values()), measure(regime, args.images, 2)
        cpu[regime] = {"one_process_images_per_s": one, "one_process_by_threads": ones,
                       "two_processes_images_per_s": two, "speedup": two / one}
    verdict = ("no speed-up on this CPU: one process already uses every core, two split them and add an all-reduce "
               "per step" if max(v["speedup"] for v in cpu.values()) < 1.1 else "two processes are faster")
    parts = [f"{r} {v['one_process_images_per_s']:.0f} → {v['two_processes_images_per_s']:.0f} img/s "
             f"(×{v['speedup']:.2f})" for r, v in cpu.items()]
    result = {"summary": f"CPU, {args.images} {source} images/epoch, 1 → 2 processes (gloo): {', '.join(parts)}; "
                         f"{verdict}; matmul {peak:.0f} GFLOP/s", "cpu": cpu, "matmul_gflops": peak,
              "machine": machine(), "target": "2 processes give the one-process model; GPU: trainer ≥ 0.9 × bare loop"}
    if torch.cuda.is_available():
        gpu = gpu_results(args.images)
        result["gpu"] = gpu
        result["summary"] += (f"; GPU {gpu['device']}: conv {gpu['conv']['trainer_images_per_s']:.0f} img/s "
                              f"(×{gpu['conv']['ratio']:.2f} of a bare loop), ResNet-18 "
                              f"{gpu['resnet18']['trainer_images_per_s']:.0f} img/s (×{gpu['resnet18']['ratio']:.2f}), "
                              f"Fashion-MNIST five regimes {gpu['fashion_mnist_five_regimes_s']:.0f} s")
    else:
        result["summary"] += "; GPU part not run (no CUDA device here)"
    report("scaling", result)


if __name__ == "__main__":
    main()
