"""Run every benchmark (each in its own process), then rewrite the results tables of benchmarks/README.md
and README.md from ``benchmarks/results/*.json``.

    python benchmarks/run_all.py
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["bench_training.py", "bench_probe.py", "bench_projection.py", "bench_extraction.py",
              "bench_end_to_end.py", "bench_contention.py", "bench_setup.py"]


def main() -> None:
    for script in BENCHMARKS:
        subprocess.run([sys.executable, str(HERE / script)], cwd=HERE, check=False)
    subprocess.run([sys.executable, str(HERE / "update_readmes.py")], cwd=HERE, check=True)


if __name__ == "__main__":
    main()
