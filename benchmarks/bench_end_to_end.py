"""End to end: the default digits comparison and the full Fashion-MNIST comparison, each as a fresh
`replearn run` process, with wall time, peak memory (max RSS) and the headline accuracies.

    python benchmarks/bench_end_to_end.py [--skip-fashion]
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from common import ROOT, fashion_mnist_or_none, machine, report


def run(config: str | None, out: Path) -> dict:
    cmd = [sys.executable, "-m", "replearn.cli", "run", *([config] if config else []), "--out", str(out), "--quiet"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    models = pd.read_csv(out / "metrics" / "models.csv")
    probes = pd.read_csv(out / "metrics" / "probes.csv").query("probe == 'linear'")
    final = probes[probes.layer.isin(["latent", "input"])].set_index("model").test_accuracy
    return {"wall_s": wall, "peak_rss_mb": max(peak, before) / 1024,
            "supervised_test_accuracy": float(models.query("model == 'supervised'").test_accuracy.iloc[0]),
            "latent_probe": {m: float(v) for m, v in final.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-fashion", action="store_true", help="run only the digits comparison")
    parser.add_argument("--keep", metavar="DIR", help="write the two run directories under DIR (a new directory) "
                        "and keep them, e.g. for `replearn probe` or `benchmarks/bench_extraction.py --run-dir`")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.keep) if args.keep else Path(tmp)
        results["digits"] = run(None, base / "digits")
        if not args.skip_fashion and fashion_mnist_or_none(train_subset=100) is not None:
            results["fashion-mnist"] = run(str(ROOT / "experiments" / "fashion_mnist.yaml"), base / "fashion-mnist")
    parts = []
    for name, r in results.items():
        parts.append(f"{name} {r['wall_s']:.0f}s, peak {r['peak_rss_mb']:.0f} MB, supervised {r['supervised_test_accuracy']:.4f}, "
                     f"AE latent probe {r['latent_probe'].get('autoencoder', float('nan')):.4f}, "
                     f"pixels {r['latent_probe'].get('pixels', float('nan')):.4f}")
    report("end_to_end", {"summary": "; ".join(parts), "results": results, "machine": machine(),
                          "target": "fashion-mnist < 360 s with supervised >= 0.915 and AE probe >= 0.86; digits < 30 s"})


if __name__ == "__main__":
    main()
