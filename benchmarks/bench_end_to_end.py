"""End to end: the default digits comparison, the full Fashion-MNIST comparison, (with --objectives) the
five-objective Fashion-MNIST comparison and (with --only-families) the ten-regime `families` comparison, each
as a fresh `replearn run` process, with wall time, peak memory (max RSS) and the headline accuracies.

    python benchmarks/bench_end_to_end.py [--skip-fashion] [--objectives] [--only-objectives] [--only-families]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from common import ROOT, fashion_mnist_or_none, machine, matmul_peak_gflops, report


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
            "latent_probe": {m: float(v) for m, v in final.items()},
            "threads": json.loads((out / "environment.json").read_text()).get("threads", {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-fashion", action="store_true", help="run only the digits comparison")
    parser.add_argument("--objectives", action="store_true", help="also run experiments/objectives.yaml (all regimes)")
    parser.add_argument("--only-objectives", action="store_true", help="run only experiments/objectives.yaml")
    parser.add_argument("--only-families", action="store_true", help="run only experiments/families.yaml (ten "
                        "regimes, every family of objective; about half an hour on 2 cores)")
    parser.add_argument("--conditions", default="quiet", help="what else ran on the machine, as the README states it "
                        "(e.g. 'beside the test suite')")
    parser.add_argument("--keep", metavar="DIR", help="write the two run directories under DIR (a new directory) "
                        "and keep them, e.g. for `replearn probe` or `benchmarks/bench_extraction.py --run-dir`")
    args = parser.parse_args()
    results = {}
    peak_gflops = matmul_peak_gflops(2048, 5)
    if args.only_families:
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(args.keep) if args.keep else Path(tmp)
            results["families"] = run(str(ROOT / "experiments" / "families.yaml"), base / "families")
            collapse = pd.read_csv(base / "families" / "metrics" / "collapse.csv")
            flagged = (sorted(set(collapse.loc[collapse.collapsed.astype(bool), "model"]))
                       if "collapsed" in collapse else [])
            results["families"]["collapse_flagged"] = flagged
        r = results["families"]
        probes = ", ".join(f"{m} {v:.4f}" for m, v in sorted(r["latent_probe"].items(), key=lambda kv: -kv[1]))
        report("families", {"summary": f"families {r['wall_s']:.0f}s ({r['wall_s'] / 60:.1f} min), peak "
                                       f"{r['peak_rss_mb']:.0f} MB, collapse flagged: {', '.join(flagged) or 'none'}; "
                                       f"latent probes: {probes} [matmul {peak_gflops:.0f} GFLOP/s]",
                            "results": results, "machine": machine(), "matmul_gflops": peak_gflops,
                            "conditions": args.conditions, "target": "collapse flag silent; about half an hour"})
        return
    have_fashion = fashion_mnist_or_none(train_subset=100) is not None
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.keep) if args.keep else Path(tmp)
        if not args.only_objectives:
            results["digits"] = run(None, base / "digits")
            if not args.skip_fashion and have_fashion:
                results["fashion-mnist"] = run(str(ROOT / "experiments" / "fashion_mnist.yaml"), base / "fashion-mnist")
        if (args.objectives or args.only_objectives) and have_fashion:
            results["objectives"] = run(str(ROOT / "experiments" / "objectives.yaml"), base / "objectives")
    parts = []
    for name, r in results.items():
        probes = r["latent_probe"]
        if name == "objectives":
            regimes = ", ".join(f"{m} {probes[m]:.4f}" for m in ("supervised", "autoencoder", "denoising", "vae",
                                                                  "contrastive") if m in probes)
            parts.append(f"objectives {r['wall_s']:.0f}s ({r['wall_s'] / 60:.1f} min), peak {r['peak_rss_mb']:.0f} MB, "
                         f"latent probes: {regimes}")
            continue
        parts.append(f"{name} {r['wall_s']:.0f}s, peak {r['peak_rss_mb']:.0f} MB, supervised {r['supervised_test_accuracy']:.4f}, "
                     f"AE latent probe {probes.get('autoencoder', float('nan')):.4f}, "
                     f"pixels {probes.get('pixels', float('nan')):.4f}")
    report("objectives" if args.only_objectives else "end_to_end", {"summary": "; ".join(parts) + f" [matmul {peak_gflops:.0f} GFLOP/s]", "results": results,
                          "machine": machine(), "matmul_gflops": peak_gflops,
                          "target": "fashion-mnist < 360 s with supervised >= 0.915 and AE probe >= 0.86; digits < 30 s; "
                                    "objectives < 15 min"})


if __name__ == "__main__":
    main()
