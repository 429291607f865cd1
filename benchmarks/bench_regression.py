"""Regression: this checkout vs an earlier commit on the same experiment, quiet, runs interleaved.

The earlier commit (default: 348a773, the last one before the Experiment API, the trainer's callbacks and
datasets as plug-ins) is checked out in a temporary git worktree and run from there; both sides run the
digits default and the Fashion-MNIST default (experiments/fashion_mnist.yaml), with the same budget, so that
the ratio measures the code. Ratio = this checkout's wall time / the earlier commit's.

    python benchmarks/bench_regression.py [--baseline COMMIT] [--skip-fashion]

(``--baseline 16b9c89`` runs the earlier comparison: that commit's 8+3-epoch budget on both sides.)
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from common import ROOT, fashion_mnist_or_none, machine, matmul_peak_gflops, report

NEW_BUDGET = ["--set", "train.epochs=8", "--set", "train.budget=per-regime", "--set", "regimes.autoencoder.epochs=3"]


def timed_run(code: Path, args: list[str], out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "replearn.cli", "run", *args, "--out", str(out), "--quiet"], cwd=code,
                   env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    probes = pd.read_csv(out / "metrics" / "probes.csv").query("probe == 'linear' and layer in ['latent', 'input']")
    return {"wall_s": wall, "latent_probe": {m: float(v) for m, v in probes.set_index("model").test_accuracy.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="348a773", help="the earlier commit to compare with")
    parser.add_argument("--skip-fashion", action="store_true", help="compare only the digits run")
    args = parser.parse_args()
    peak = matmul_peak_gflops(2048, 5)
    workloads = {"digits": ([], [])}
    if not args.skip_fashion and fashion_mnist_or_none(train_subset=100) is not None:
        if args.baseline.startswith("16b9c89"):
            workloads["fashion-mnist 8+3 epochs"] = (["experiments/fashion_mnist.yaml"],
                                                     ["experiments/fashion_mnist.yaml", *NEW_BUDGET])
        else:
            workloads["fashion-mnist default"] = (["experiments/fashion_mnist.yaml"], ["experiments/fashion_mnist.yaml"])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(old), args.baseline],
                       check=True)
        try:
            for name, (old_args, new_args) in workloads.items():
                baseline = timed_run(old, old_args, Path(tmp) / f"old-{len(results)}")
                current = timed_run(ROOT, new_args, Path(tmp) / f"new-{len(results)}")
                results[name] = {"baseline": baseline, "current": current,
                                 "ratio": current["wall_s"] / baseline["wall_s"]}
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)
    parts = []
    for name, r in results.items():
        b, c = r["baseline"], r["current"]
        ae_b, ae_c = b["latent_probe"].get("autoencoder", float("nan")), c["latent_probe"].get("autoencoder", float("nan"))
        parts.append(f"{name}: {c['wall_s']:.0f}s vs {b['wall_s']:.0f}s at {args.baseline} (ratio {r['ratio']:.2f}); "
                     f"AE latent probe {ae_c:.4f} vs {ae_b:.4f}")
    report("regression", {"summary": "; ".join(parts) + f" [matmul {peak:.0f} GFLOP/s]", "results": results,
                          "baseline": args.baseline, "matmul_gflops": peak, "machine": machine(),
                          "target": "ratio <= 1.05 (quiet-machine timings do not regress by more than 5%)"})


if __name__ == "__main__":
    main()
