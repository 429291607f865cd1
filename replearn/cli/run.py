"""``replearn run``: train every regime from the same initial weights, analyse them, write the report (``--nproc``
starts torchrun)."""

from __future__ import annotations

import argparse
import shlex
import sys
import textwrap
from pathlib import Path
from typing import Any

from replearn.cli.parsing import THREADS_HELP, _apply_threads
from replearn.errors import ReplearnError, TrainingInterrupted

EXAMPLES_RUN = """\
examples:
  replearn run                                     # default: bundled digits, ~30 s on a laptop CPU
  replearn run experiments/fashion_mnist.yaml      # full Fashion-MNIST comparison
  replearn run experiments/digits.yaml --set train.epochs=3 --set model.latent_dim=16
  replearn run experiments/fashion_mnist.yaml --seeds 3 --set data.train_subset=10000
  replearn run --resume reports/digits-20261124-101500   # continue an interrupted run
"""


def _config_keys_help() -> str:
    from replearn.experiment.plugins import plugin_docs

    lines = [
        "config keys (set in the YAML file or with --set section.key=value; a plug-in's own keys are marked "
        "with the plug-in they belong to):"
    ]
    for key, type_name, default, help_text in plugin_docs():
        lines.append(f"  {key} ({type_name}, default {default!r})")
        lines.append(textwrap.indent(textwrap.fill(help_text, 74), "      "))
    return "\n".join(lines)


def _add_run(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="train every regime, analyse them and write a report",
        description="Train the encoder under every configured regime (objective) from the same "
        "initial weights, probe every layer of each (and of raw-pixel, PCA and "
        "untrained-encoder baselines), measure similarity, dimension and structure by "
        "depth, and write everything plus an HTML report into a new run directory.",
        epilog=EXAMPLES_RUN,
        epilog_extra=_config_keys_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("config", nargs="?", help="experiment YAML (default: the bundled digits experiment)")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=3 (repeatable)",
    )
    run.add_argument("--seeds", type=int, metavar="N", help="repeat the comparison with seeds 0..N-1")
    run.add_argument("--data-root", metavar="DIR", help="directory holding the dataset's IDX files")
    run.add_argument("--out", metavar="DIR", help="run directory to create (default: reports/<name>-<timestamp>)")
    run.add_argument("--force", action="store_true", help="replace --out if it is an existing replearn run")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    run.add_argument("--quiet", action="store_true", help="print only the report path")
    run.add_argument("--threads", metavar="N", help=THREADS_HELP)
    run.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write TensorBoard logs under RUN_DIR/tensorboard/ (analysis.tensorboard=true; "
        "pip install 'replearn[tensorboard]'), then: tensorboard --logdir RUN_DIR/tensorboard",
    )
    run.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train with N processes on this machine, started for you by torchrun (one per GPU with "
        "NCCL, or CPU processes with gloo); the same global batch and results as one process "
        "(docs/distributed.md). Several machines: torchrun --nnodes … -m replearn run",
    )


def cmd_run(args: argparse.Namespace) -> int:
    from replearn.experiment import second_process
    from replearn.runtime.log import set_quiet

    set_quiet(args.quiet)
    _apply_threads(args.threads)
    if (args.nproc is None or args.nproc == 1) and _may_train_beside(args):
        second_process.speculate()  # its imports overlap this process's
    try:
        return _run(args)
    finally:
        second_process.release_spare()


def _may_train_beside(args: argparse.Namespace) -> bool:
    """Whether the run's config (read as plain YAML, unchecked: the run checks it) leaves
    ``train.second_process`` and ``train.device`` open to a second training process on the CPU."""
    from replearn.config.sections import apply_overrides, load_yaml
    from replearn.rundir import layout

    try:
        if args.resume:
            raw = load_yaml(Path(args.resume) / layout.CONFIG)
        else:
            raw = apply_overrides(load_yaml(args.config) if args.config else {}, list(args.overrides))
        train = raw.get("train") or {}
        return train.get("second_process", "auto") != "never" and train.get("device", "auto") in ("auto", "cpu")
    except Exception:  # a config the run will refuse, with its own message
        return False


def _run(args: argparse.Namespace) -> int:
    from replearn.experiment.experiment import Experiment
    from replearn.rundir.directory import RunDir
    from replearn.runtime import threads as parallel

    overrides = list(args.overrides)
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    if args.seeds is not None:
        if args.seeds < 1:
            raise ReplearnError(f"--seeds must be at least 1, got {args.seeds}", "pass --seeds 1 or more")
        overrides.append(f"train.seeds=[{', '.join(str(s) for s in range(args.seeds))}]")
    if args.tensorboard:
        overrides.append("analysis.tensorboard=true")
    if args.nproc is not None and args.nproc != 1:
        return _launch(args, overrides)
    if args.resume:
        if args.config or overrides or args.out or args.threads or args.force:
            raise ReplearnError(
                "--resume continues a run with its saved config and thread setting; CONFIG, --set, "
                "--seeds, --data-root, --out, --threads and --force cannot be combined with it",
                "drop those options, or start a new run without --resume",
            )
        experiment = Experiment.resume(args.resume, progress=not args.quiet)
        if parallel.thread_setting() is None:
            parallel.set_threads(RunDir(args.resume).recorded_thread_setting())
    else:
        experiment = Experiment(args.config, overrides, out=args.out, force=args.force, progress=not args.quiet)
    run_dir = experiment.run_dir
    try:
        report = experiment.run()
    except TrainingInterrupted as stop:
        if experiment.world.main:
            print(
                f"interrupted by {stop.signal_name}; the work done so far is saved. "
                f"Resume with: replearn run --resume {shlex.quote(str(run_dir))}",
                file=sys.stderr,
            )
        return 130
    finally:
        from replearn.runtime.distributed import shutdown

        shutdown()
    if experiment.world.main:
        print(report)
    return 0


def _launch(args: argparse.Namespace, overrides: list[str]) -> int:
    """``replearn run --nproc N``: every check of a run's inputs (config, plug-ins, data, run directory, what N
    processes need) here, in one process, so that bad input is one line; then torchrun starts the N."""
    from replearn.cli.launch import check_nproc, launch, without_nproc
    from replearn.experiment.experiment import Experiment

    if args.resume:
        experiment, extra = Experiment.resume(args.resume, progress=False), []
    else:
        experiment = Experiment(args.config, overrides, out=args.out, force=args.force, progress=False)
        experiment.run_dir.check_free(args.force)
        extra = [] if args.out else ["--out", str(experiment.run_dir)]
    check_nproc(args.nproc, experiment.config.train, experiment.device)
    experiment.load_data()
    run_dir = experiment.run_dir.path
    del experiment  # its data: the processes load their own
    return launch(args.nproc, without_nproc(args.argv) + extra, run_dir)
