"""What the interpretability analyses (attributions, sanity, faithfulness, invariance, robustness, units) cost
a default run, as fresh `replearn run` processes:

- digits: the default run with and without them (``analysis.skip``), interleaved; the 30 s target is for the
  run with them, scaled to a 193 GFLOP/s machine by the same-run 2048² matmul rate.
- Fashion-MNIST: one default run; the growth is what the six analyses took in it — each one's compute time
  (from the run's log) plus the time to draw their report sections (re-timed on the finished run, PNG only:
  SVG/PDF copies are written by the report's background worker).

    python benchmarks/bench_interpret.py [--skip-fashion] [--repeats 2] [--keep DIR]
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, fashion_mnist_or_none, machine, matmul_peak_gflops, report

NEW = ["attributions", "sanity", "faithfulness", "invariance", "robustness", "units"]
REFERENCE_GFLOPS = 193.0


def run(args: list[str], out: Path) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "replearn.cli", "run", *args, "--out", str(out), "--force"]
    started = time.perf_counter()
    done = subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True)
    return time.perf_counter() - started, done.stdout + done.stderr


def compute_seconds(log: str) -> dict[str, float]:
    """Each new analysis's compute time from the run's log ("seed 0: sanity done (3.1s)"; analyses under
    0.5 s are not logged and count as 0.5 s, an upper bound)."""
    found = {name: float(s) for name, s in re.findall(r"seed \d+: (\w+) done \(([\d.]+)s\)", log)}
    return {name: found.get(name, 0.5) for name in NEW}


def section_seconds(run_dir: Path) -> dict[str, float]:
    """Time to draw each new analysis's report sections from the finished run (PNG only)."""
    from replearn.analyses import RunArtifacts, report_analyses
    run = RunArtifacts(run_dir)
    run.figure_formats = ["png"]
    analyses = {a.name: a for a in report_analyses(run.config)[0]}
    out = {}
    for name in NEW:
        started = time.perf_counter()
        analyses[name].sections(run)
        out[name] = time.perf_counter() - started
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-fashion", action="store_true", help="time only the digits runs")
    parser.add_argument("--repeats", type=int, default=2, help="digits runs of each kind (interleaved)")
    parser.add_argument("--keep", metavar="DIR", help="write the runs under DIR and keep them (the Fashion-MNIST "
                        "report shows every interpretability section)")
    args = parser.parse_args()
    gflops = matmul_peak_gflops(2048, 5)
    skip = ["--set", f"analysis.skip=[{', '.join(NEW)}]"]
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        with_new, without = [], []
        for _ in range(args.repeats):
            without.append(run(skip, Path(tmp) / "digits-without")[0])
            wall, log = run([], Path(tmp) / "digits")
            with_new.append(wall)
        results = {"digits": {"with_s": min(with_new), "without_s": min(without),
                              "with_scaled_to_193_s": min(with_new) * gflops / REFERENCE_GFLOPS,
                              "compute_s": compute_seconds(log), "sections_s": section_seconds(Path(tmp) / "digits")}}
        if not args.skip_fashion and fashion_mnist_or_none(train_subset=100) is not None:
            wall, log = run(["fashion_mnist"], Path(tmp) / "fashion-mnist")
            compute, sections = compute_seconds(log), section_seconds(Path(tmp) / "fashion-mnist")
            results["fashion-mnist"] = {"wall_s": wall, "compute_s": compute, "sections_s": sections,
                                        "growth_s": sum(compute.values()) + sum(sections.values())}
    d = results["digits"]
    summary = (f"digits default run {d['with_s']:.1f}s with the six analyses, {d['without_s']:.1f}s without "
               f"({d['with_scaled_to_193_s']:.1f}s scaled to 193 GFLOP/s)")
    if "fashion-mnist" in results:
        f = results["fashion-mnist"]
        summary += (f"; fashion-mnist default run {f['wall_s']:.0f}s, of which the six analyses "
                    f"{f['growth_s']:.0f}s (compute {sum(f['compute_s'].values()):.0f}s, sections "
                    f"{sum(f['sections_s'].values()):.0f}s)")
    report("interpret", {"summary": summary + f" [matmul {gflops:.0f} GFLOP/s]", "results": results,
                         "machine": machine(), "matmul_gflops": gflops,
                         "target": "digits < 30 s scaled to 193 GFLOP/s; fashion-mnist growth <= 90 s"})


if __name__ == "__main__":
    main()
