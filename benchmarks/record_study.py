"""Save a finished study (a sweep and its `replearn compare` tables) as benchmarks/results/study-<name>.json, so
that `benchmarks/update_readmes.py` writes its curves and wall time into README.md and docs/studies.md.

    replearn sweep experiments/bottleneck_sweep.yaml && replearn compare reports/sweeps/bottleneck
    python benchmarks/record_study.py reports/sweeps/bottleneck --wall 2099 --conditions "beside the test suite"

The wall time is the sweep's own (e.g. from /usr/bin/time); without --wall the runs' wall times are summed. No
matmul rate is recorded: the sweep ran before this script, so ``--conditions`` says what the machine was doing.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from common import machine, report

TABLES = ("probes", "gap", "grad_init", "best_layer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, help="the sweep directory (with compare/ written by replearn compare)")
    parser.add_argument("--wall", type=float, help="the sweep's wall time in seconds")
    parser.add_argument("--conditions", default="quiet", help="what else ran on the machine")
    args = parser.parse_args()
    manifest = json.loads((args.sweep / "sweep.json").read_text(encoding="utf-8"))
    runs = manifest["runs"]
    wall = args.wall if args.wall is not None else sum(r.get("wall_seconds") or 0 for r in runs)
    tables = {}
    for name in TABLES:
        path = args.sweep / "compare" / "tables" / f"{name}.csv"
        if path.is_file():
            tables[name] = pd.read_csv(path).to_dict(orient="records")
    spec = manifest["spec"]
    summary = (f"study {spec['name']}: {len(runs)} runs ({', '.join(spec['grid'])} × seeds {spec['seeds']}) "
               f"in {wall / 60:.1f} min, {args.conditions}")
    report(f"study-{spec['name']}", {"summary": summary, "wall_s": wall, "runs": len(runs), "spec": spec,
                                      "conditions": args.conditions, "tables": tables, "machine": machine()})


if __name__ == "__main__":
    main()
