"""``replearn sweep``: a grid of config values × seeds, one run directory each."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from replearn.errors import ReplearnError, TrainingInterrupted

EXAMPLES_SWEEP = """\
spec file (docs/studies.md):
  name: bottleneck
  base: fashion_mnist                 # a bundled experiment or a YAML path
  set: {train.epochs: 5}              # fixed overrides of every run
  grid: {model.latent_dim: [8, 32, 128, 512]}
  seeds: [0, 1, 2]
  backend: local                      # or slurm (submitit job array; slurm: {timeout_min: 60, ...})
  parallel: 2                         # local: runs side by side, the cores split between them

examples:
  replearn sweep experiments/bottleneck_sweep.yaml
  replearn sweep --base digits --grid model.latent_dim=8,32 --seeds 0,1 --set train.epochs=3
  replearn sweep experiments/depth_sweep.yaml --parallel 2   # run it again after a stop: only missing runs run
  replearn compare reports/sweeps/bottleneck                 # the cross-run report
"""


def _add_sweep(sub: Any) -> None:
    sweep = sub.add_parser(
        "sweep",
        help="run the cross product of config values x seeds, one run each",
        description="Run one replearn run per combination of the grid's values and per seed, "
        "each in its own run directory under one sweep directory with a manifest "
        "(sweep.json). Every run's config is validated before the first starts. "
        "Running the same sweep again skips finished runs and resumes interrupted "
        "ones. Compare the runs with `replearn compare SWEEP_DIR`.",
        epilog=EXAMPLES_SWEEP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sweep.add_argument("spec", nargs="?", metavar="SPEC.yaml", help="a sweep spec (or give --grid instead)")
    sweep.add_argument("--base", metavar="CONFIG", help="without a spec: the base config (default: digits)")
    sweep.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="without a spec: a swept key and its values, e.g. model.latent_dim=8,32 or "
        "model.channels=[16,32],[16,32,64] (repeatable: the cross product)",
    )
    sweep.add_argument(
        "--seeds",
        metavar="S1,S2",
        help="without a spec: the seeds, e.g. 0,1,2 (default: the base config's train.seeds)",
    )
    sweep.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="without a spec: a fixed override of every run (repeatable)",
    )
    sweep.add_argument("--name", help="without a spec: the sweep's name (default: from the base and the keys)")
    sweep.add_argument(
        "--out", metavar="DIR", help="the sweep directory (default: the spec's out, else reports/sweeps/<name>)"
    )
    sweep.add_argument(
        "--parallel",
        metavar="N",
        help="local backend: N runs side by side, the cores split between them (overrides the spec)",
    )
    sweep.add_argument("--backend", metavar="NAME", help="local or slurm (overrides the spec)")
    sweep.add_argument("--dry-run", action="store_true", help="validate and list the runs; run nothing, write nothing")
    sweep.add_argument("--quiet", action="store_true", help="print only the sweep directory")


def cmd_sweep(args: argparse.Namespace) -> int:
    from replearn.studies.backends import execute
    from replearn.studies.sweep import load_spec, plan_sweep, spec_from_options

    given = [
        o
        for o, v in (
            ("--base", args.base),
            ("--grid", args.grid),
            ("--seeds", args.seeds),
            ("--set", args.overrides),
            ("--name", args.name),
        )
        if v
    ]
    if args.spec and given:
        raise ReplearnError(f"{given[0]} cannot be combined with a spec file", "put it in the spec, or drop the spec")
    if not args.spec and not args.grid:
        raise ReplearnError("no sweep given", "pass a spec file (replearn sweep SPEC.yaml) or --grid KEY=V1,V2")
    raw = load_spec(args.spec) if args.spec else spec_from_options(args.base, args.grid, args.seeds, args.overrides)
    if not args.spec:
        raw["name"] = args.name or "-".join([Path(raw["base"]).stem] + [k.split(".")[-1] for k in raw["grid"]])
    if args.parallel is not None:
        raw["parallel"] = int(args.parallel) if args.parallel.strip().lstrip("-").isdigit() else args.parallel
    if args.backend is not None:
        raw["backend"] = args.backend
    sweep = plan_sweep(raw, args.out)
    if args.dry_run:
        for cell in sweep.cells:
            print(f"{sweep.out / cell.name}: {' '.join(shlex.quote(o) for o in cell.overrides)}")
        return 0
    try:
        execute(sweep, quiet=args.quiet)
    except TrainingInterrupted:
        print(
            f"sweep interrupted; finished runs are kept. Finish it with the same command: it skips complete runs "
            f"and resumes the interrupted one ({sweep.out})",
            file=sys.stderr,
        )
        return 130
    print(sweep.out)
    if not args.quiet:
        print(f"compare the runs with: replearn compare {shlex.quote(str(sweep.out))}", file=sys.stderr)
    return 0
