"""What the `rulers` analysis (several similarity measures and their tests, on by default with its cheap
measures) costs the digits default run: `replearn run --threads 1` with and without it (``analysis.skip``),
interleaved, as fresh processes. Reports each run's wall time and CPU time (one thread: on a loaded machine the
CPU time is the better estimate of the quiet wall time), the rulers' own compute time from the run's log, and
the wall time scaled to a 193 GFLOP/s machine by the same-run 2048² matmul rate.

    python benchmarks/bench_rulers.py [--repeats 1]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, matmul_peak_gflops

REFERENCE_GFLOPS = 193.0


def run(args: list[str], out: Path) -> dict[str, float]:
    cmd = [sys.executable, "-m", "replearn.cli", "run", "--threads", "1", *args, "--out", str(out), "--force"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    found = re.findall(r"seed \d+: rulers done \(([\d.]+)s\)", done.stdout + done.stderr)
    return {"wall_s": wall, "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "rulers_s": float(found[0]) if found else 0.5}  # under 0.5 s an analysis is not logged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each kind (interleaved)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for kind, extra in (("without", ["--set", "analysis.skip=[rulers]"]), ("with", [])):
                gflops = matmul_peak_gflops(2048, 5)
                load = os.getloadavg()[0]
                r = run(extra, Path(tmp) / kind)
                rows.append({"kind": kind, **r, "matmul_gflops": gflops, "load": load,
                             "wall_scaled_to_193_s": r["wall_s"] * gflops / REFERENCE_GFLOPS})
                print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
