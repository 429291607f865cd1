"""The CUDA path, on a machine with a GPU: (1) the Fashion-MNIST ResNet-18 comparison end to end
(experiments/fashion_mnist_resnet18.yaml, supervised and autoencoder), wall time and accuracies; (2) the
CIFAR-10 ResNet-18 config's training speed, one epoch per regime, on CIFAR-format files of random pixels
(the real CIFAR-10 cannot be fetched where this runs; speed does not depend on the pixels, accuracy does,
so none is reported); (3) `replearn probe` of torchvision and timm ResNet-18 state_dicts by import path,
at named layers, as documented in README (skipped for a library that is not installed).

    python benchmarks/gpu_check.py --out DIR [--data-root FASHION_MNIST_DIR] [--device cuda]
        [--fm-epochs 10] [--fm-width 64] [--fm-subset 0]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import ROOT, machine


def cli(*args: str, log: Path, timeout: float | None = None) -> float:
    started = time.perf_counter()
    with open(log, "a") as fh:
        fh.write(f"$ replearn {' '.join(args)}\n")
        fh.flush()
        try:
            code = subprocess.run([sys.executable, "-m", "replearn.cli", *args], cwd=ROOT, stdout=fh, stderr=fh,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    if code != 0:
        print(f"replearn {' '.join(args[:2])} failed with exit {code}; see {log}")
    return time.perf_counter() - started if code == 0 else float("nan")


def write_random_cifar10(folder: Path, n_train: int, n_test: int) -> None:
    """CIFAR-10 binary layout (label byte + 3,072 pixel bytes per record), random pixels and labels."""
    rng = np.random.default_rng(0)
    out = folder / "cifar-10-batches-bin"
    out.mkdir(parents=True, exist_ok=True)
    per = n_train // 5
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name, n in zip(names, [per] * 5 + [n_test]):
        records = np.empty((n, 3073), dtype=np.uint8)
        records[:, 0] = np.arange(n) % 10
        records[:, 1:] = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        (out / name).write_bytes(records.tobytes())
    (out / "batches.meta.txt").write_text("\n".join(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                                     "horse", "ship", "truck"]) + "\n")


def cifar_epoch_times(root: Path, device: str) -> dict:
    """Seconds for one training epoch of each regime of experiments/cifar10_resnet18.yaml."""
    import torch

    from replearn.config.sections import load_config
    from replearn.encoders import build_encoder
    from replearn.experiment.experiment import build_head
    from replearn.experiment.plugins import resolve
    from replearn.training import Trainer, TrainSettings

    cfg = load_config(ROOT / "experiments" / "cifar10_resnet18.yaml",
                      [f"data.root={root}", "train.epochs=1", "train.probe_every_epoch=false", f"train.device={device}"])
    plugins = resolve(cfg)
    data = plugins.dataset.load(plugins.config.data)
    out = {"train_images": len(data.train_y)}
    for regime in plugins.regimes:
        encoder = build_encoder(cfg.model, data.image_shape, 0)
        head = build_head(regime, encoder, data, 0)
        with tempfile.TemporaryDirectory() as tmp:
            if device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            Trainer(regime, encoder, head, data, TrainSettings.from_config(cfg.train, 1), device=device).fit()
            if device == "cuda":
                torch.cuda.synchronize()
            out[f"{regime.name}_epoch_seconds"] = round(time.perf_counter() - started, 1)
    out["config_epochs"] = load_config(ROOT / "experiments" / "cifar10_resnet18.yaml").train.epochs
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--data-root", help="folder holding the Fashion-MNIST IDX files")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--fm-epochs", type=int, default=10)
    parser.add_argument("--fm-width", type=int, default=64)
    parser.add_argument("--fm-subset", type=int, default=0)
    parser.add_argument("--cifar-train", type=int, default=50_000)
    parser.add_argument("--fm-timeout", type=float, default=400, help="seconds allowed for the Fashion-MNIST run")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: smoke, cifar, foreign, fm")
    args = parser.parse_args()
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "gpu_check.log"
    result: dict = {"machine": machine(), "device": args.device,
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    skip = set(filter(None, args.skip.split(",")))

    def save() -> None:  # after every part, so a part cut short by the time limit leaves the others' results
        (out / "gpu_check.json").write_text(json.dumps(result, indent=1))

    if "smoke" not in skip:  # the default digits comparison, one epoch: does the CUDA path run at all?
        wall = cli("run", "--set", f"train.device={args.device}", "--set", "train.epochs=1", "--out",
                   str(Path(tempfile.mkdtemp()) / "digits"), "--quiet", log=log, timeout=120)
        result["digits_smoke_seconds"] = round(wall, 1)
        save()
    with tempfile.TemporaryDirectory() as tmp:
        cifar = Path(tmp) / "cifar"
        write_random_cifar10(cifar, args.cifar_train, 10_000)
        if "cifar" not in skip:
            result["cifar10_resnet18_random_pixels"] = cifar_epoch_times(cifar, args.device)
        if "foreign" not in skip:
            result["foreign"] = {}
            for lib, factory, kwargs in (("torchvision", "torchvision.models:resnet18", {"num_classes": 10}),
                                         ("timm", "timm:create_model", {"model_name": "resnet18", "num_classes": 10})):
                try:
                    module = __import__(lib)
                    model = (module.models.resnet18(num_classes=10) if lib == "torchvision"
                             else module.create_model("resnet18", num_classes=10))
                except Exception as exc:  # a library missing or broken here is reported, not fatal
                    result["foreign"][lib] = f"skipped: {type(exc).__name__}: {exc}"[:200]
                    continue
                weights = Path(tmp) / f"{lib}.pt"
                torch.save(model.state_dict(), weights)
                json_out = out / f"probe_{lib}.json"
                wall = cli("probe", str(weights), "--model", factory, "--model-kwargs", json.dumps(kwargs), "--dataset",
                           "cifar10", "--set", f"data.root={cifar}", "--set", "data.train_subset=2000", "--set",
                           "data.test_subset=500", "--layer", "layer2", "--layer", "layer4", "--json", str(json_out),
                           log=log)
                result["foreign"][lib] = {"seconds": round(wall, 1), "ok": json_out.is_file()}
                if json_out.is_file():
                    rows = json.loads(json_out.read_text())["results"]
                    result["foreign"][lib]["linear"] = {r["layer"]: r.get("linear_test_accuracy", r.get("test_accuracy"))
                                                        for r in rows}
        save()
    if "fm" not in skip:
        run_dir = Path(tempfile.mkdtemp()) / "fm"
        extra = [f"--data-root={args.data_root}"] if args.data_root else []
        wall = cli("run", "fashion_mnist_resnet18", *extra, "--set", f"train.device={args.device}", "--set",
                   f"train.epochs={args.fm_epochs}", "--set", f"model.width={args.fm_width}", "--set",
                   f"data.train_subset={args.fm_subset}", "--out", str(run_dir), "--quiet", log=log,
                   timeout=args.fm_timeout)
        fm = {"wall_seconds": round(wall, 1), "epochs": args.fm_epochs, "width": args.fm_width}
        if (run_dir / "metrics" / "models.csv").is_file():
            import pandas as pd

            models = pd.read_csv(run_dir / "metrics" / "models.csv")
            probes = pd.read_csv(run_dir / "metrics" / "probes.csv")
            latent = probes[(probes.probe == "linear") & probes.layer.isin(["latent", "input"])]
            fm["test_accuracy"] = {str(r.model): float(r.test_accuracy) for r in models.itertuples()
                                   if r.test_accuracy == r.test_accuracy}
            fm["latent_linear_probe"] = {str(r.model): round(float(r.test_accuracy), 4) for r in latent.itertuples()}
            fm["summary"] = json.loads((run_dir / "metrics" / "summary.json").read_text())
            for name in ("models.csv", "probes.csv"):
                (out / f"fm_{name}").write_bytes((run_dir / "metrics" / name).read_bytes())
        result["fashion_mnist_resnet18"] = fm
    result["summary"] = "; ".join(f"{k}: {v}" for k, v in result.items() if k not in ("machine", "device"))[:600]
    save()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
