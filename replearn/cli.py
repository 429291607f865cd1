"""The ``replearn`` command: run, report, probe, features, datasets.

Errors in the user's input print one line (problem and fix) and exit with status 2, without a traceback.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import textwrap
from pathlib import Path
from typing import Any

from .errors import ReplearnError, TrainingInterrupted

EXAMPLES_RUN = """\
examples:
  replearn run                                     # default: bundled digits, ~30 s on a laptop CPU
  replearn run experiments/fashion_mnist.yaml      # full Fashion-MNIST comparison
  replearn run experiments/digits.yaml --set train.epochs=3 --set model.latent_dim=16
  replearn run experiments/fashion_mnist.yaml --seeds 3 --set data.train_subset=10000
  replearn run --resume reports/digits-20261124-101500   # continue an interrupted run
"""


THREADS_HELP = ("threads for the phases that run in parallel (default: auto, or $REPLEARN_THREADS): auto puts "
                "large convolutions and products on every available core and keeps small or memory-bound work "
                "on one thread per task, which stays fast when other programs share the CPU; a number fixes "
                "it, e.g. for bit-for-bit reproducible training (recorded in environment.json)")


def _apply_threads(value: str | None) -> None:
    from . import parallel

    if value is not None:
        parallel.set_threads(parallel.parse_threads(value, "--threads"))
    parallel.thread_setting()  # a malformed $REPLEARN_THREADS fails here, before any work
    parallel.quiet_native_pools()


def _config_keys_help() -> str:
    from .plugins import plugin_docs

    lines = ["config keys (set in the YAML file or with --set section.key=value; a plug-in's own keys are marked "
             "with the plug-in they belong to):"]
    for key, type_name, default, help_text in plugin_docs():
        lines.append(f"  {key} ({type_name}, default {default!r})")
        lines.append(textwrap.indent(textwrap.fill(help_text, 74), "      "))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="replearn",
        description="Train one encoder under several objectives (supervised, autoencoders, contrastive, …) from the "
                    "same initial weights and compare what each learned: probes at every layer, similarity and "
                    "dimension by depth, projections, statistics over seeds, and an HTML report.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"replearn {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run(sub)
    _add_report(sub)
    _add_probe(sub)
    _add_features(sub)
    _add_sweep(sub)
    _add_compare(sub)
    _add_similarity(sub)
    datasets = sub.add_parser("datasets", help="list the datasets, their options and whether their files are available",
                              description="List known datasets, what they are, their own options (data.<key>) and "
                                          "where their files were found.")
    datasets.add_argument("--data-root", metavar="DIR", help="also look in this directory")
    return parser


def _add_run(sub: Any) -> None:
    run = sub.add_parser("run", help="train every regime, analyse them and write a report",
                         description="Train the encoder under every configured regime (objective) from the same "
                                     "initial weights, probe every layer of each (and of raw-pixel, PCA and "
                                     "untrained-encoder baselines), measure similarity, dimension and structure by "
                                     "depth, and write everything plus an HTML report into a new run directory.",
                         epilog=EXAMPLES_RUN + "\n" + _config_keys_help(),
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("config", nargs="?", help="experiment YAML (default: the bundled digits experiment)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set train.epochs=3 (repeatable)")
    run.add_argument("--seeds", type=int, metavar="N", help="repeat the comparison with seeds 0..N-1")
    run.add_argument("--data-root", metavar="DIR", help="directory holding the dataset's IDX files")
    run.add_argument("--out", metavar="DIR", help="run directory to create (default: reports/<name>-<timestamp>)")
    run.add_argument("--force", action="store_true", help="replace --out if it is an existing replearn run")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    run.add_argument("--quiet", action="store_true", help="print only the report path")
    run.add_argument("--threads", metavar="N", help=THREADS_HELP)
    run.add_argument("--tensorboard", action="store_true",
                     help="also write TensorBoard logs under RUN_DIR/tensorboard/ (analysis.tensorboard=true; "
                          "pip install 'replearn[tensorboard]'), then: tensorboard --logdir RUN_DIR/tensorboard")
    run.add_argument("--nproc", type=int, metavar="N",
                     help="train with N processes on this machine, started for you by torchrun (one per GPU with "
                          "NCCL, or CPU processes with gloo); the same global batch and results as one process "
                          "(docs/distributed.md). Several machines: torchrun --nnodes … -m replearn run")


FORCE_HELP = ("replace {option} if it is an existing file (never a file of a replearn run, nor anything that is not a "
              "regular file)")


def _add_report(sub: Any) -> None:
    report = sub.add_parser("report", help="re-render a run's HTML report from its saved artifacts",
                            description="Re-render the HTML report of a run directory from its saved metrics and "
                                        "arrays; nothing is retrained or re-extracted.")
    report.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by `replearn run`")
    report.add_argument("--out", metavar="FILE", help="write the HTML here (default: RUN_DIR/report.html)")
    report.add_argument("--force", action="store_true", help=FORCE_HELP.format(option="--out"))


def _add_probe(sub: Any) -> None:
    probe = sub.add_parser("probe", help="linear-probe evaluation of a saved encoder or any model",
                           description="Load a checkpoint written by `replearn run` (safely: weights only), "
                                       "extract features of each layer on a dataset, fit a linear probe with the "
                                       "penalty chosen on the validation split, and report test accuracy. Uses the "
                                       "run's own split and probe settings, so it reproduces the run's numbers. "
                                       "Models replearn did not train: a state_dict with --model (layers by module "
                                       "path, read with forward hooks), or, with --trust-model-code, a torch.export "
                                       ".pt2 program (its output and graph nodes) or a TorchScript file (its output).",
                           epilog="examples:\n  replearn probe reports/fmnist-*/checkpoints/autoencoder_seed0.pt "
                                  "--dataset fashion-mnist --layer latent\n"
                                  "  replearn probe resnet.pt --model mypkg.nets:resnet18 --model-kwargs "
                                  "'{\"num_classes\": 10}' --dataset cifar10 --layer layer3 --layer layer4",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    _model_arguments(probe, "probe")
    probe.add_argument("--knn", action="store_true", help="also run the kNN probe")
    probe.add_argument("--data-root", metavar="DIR", help="directory holding the dataset's IDX files")
    probe.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a data.* or analysis.* setting, e.g. --set data.train_subset=0")
    probe.add_argument("--json", metavar="PATH", help="where to write the results (default: next to the checkpoint)")
    probe.add_argument("--force", action="store_true", help=FORCE_HELP.format(option="--json"))
    probe.add_argument("--threads", metavar="N", help=THREADS_HELP)


def _add_features(sub: Any) -> None:
    features = sub.add_parser("features", help="export a model's features at chosen layers to an .npz file",
                              description="Extract the features of any model (a replearn checkpoint, a state_dict "
                                          "with --model, or a trusted torch.export or TorchScript file) at the "
                                          "chosen layers for the train, validation and test splits, pooled as for "
                                          "probing, in eval mode, "
                                          "and write them with the labels to one .npz file (arrays "
                                          "'<layer>.<split>' and 'labels.<split>') for scikit-learn, rsatoolbox, "
                                          "netrep or any other tool.",
                              epilog="example:\n  replearn features reports/fmnist-*/checkpoints/supervised_seed0.pt "
                                     "--dataset fashion-mnist --layer stage2 --layer latent --out feats.npz",
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    _model_arguments(features, "export")
    features.add_argument("--out", required=True, metavar="FILE", help="the .npz file to write")
    features.add_argument("--force", action="store_true", help=FORCE_HELP.format(option="--out"))
    features.add_argument("--data-root", metavar="DIR", help="directory holding the dataset's files")
    features.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="override a data.* or analysis.* setting, e.g. --set analysis.max_stage_features=4096")
    features.add_argument("--threads", metavar="N", help=THREADS_HELP)


def _model_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
    """The model file, --model, --model-kwargs, --dataset and --layer, shared by `probe` and `features`."""
    parser.add_argument("checkpoint", metavar="MODEL_FILE",
                        help="a .pt file from a run's checkpoints/ folder or a state_dict of the --model (both read "
                             "as weights only: no code in them runs), or, with --trust-model-code, a torch.export "
                             ".pt2 or TorchScript file")
    parser.add_argument("--model", metavar="IMPORT_PATH",
                        help="for a state_dict saved elsewhere: the nn.Module class or factory it belongs to, as "
                             "package.module:Name; --layer then names module paths (e.g. layer1, blocks.3) read "
                             "by forward hooks, and 'latent' is the module's output. For a checkpoint of a plug-in "
                             "encoder: its import path, confirming that replearn may import it")
    parser.add_argument("--trust-model-code", action="store_true",
                        help="allow a TorchScript or torch.export (.pt2) file: loading either RUNS CODE THE FILE "
                             "CONTAINS, so pass it only for files from an author you trust (--layer names a node of "
                             "a .pt2 program's graph; a TorchScript file gives its output only)")
    parser.add_argument("--model-kwargs", metavar="JSON", default="{}",
                        help="keyword arguments for --model as a JSON object, e.g. '{\"num_classes\": 10}'")
    parser.add_argument("--dataset", required=True, metavar="NAME", help=f"dataset to {verb} on (`replearn datasets`)")
    parser.add_argument("--layer", action="append", metavar="L",
                        help=f"layer to {verb}, e.g. stage2 or latent (repeatable; default: every layer of a replearn "
                             "encoder, the output of any other model)")


def _version() -> str:
    from .version import __version__

    return __version__


def cmd_run(args: argparse.Namespace) -> int:
    from . import parallel
    from .experiment import Experiment
    from .log import set_quiet
    from .rundir import RunDir

    set_quiet(args.quiet)
    _apply_threads(args.threads)
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
            raise ReplearnError("--resume continues a run with its saved config and thread setting; CONFIG, --set, "
                                "--seeds, --data-root, --out, --threads and --force cannot be combined with it",
                                "drop those options, or start a new run without --resume")
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
            print(f"interrupted by {stop.signal_name}; the work done so far is saved. "
                  f"Resume with: replearn run --resume {shlex.quote(str(run_dir))}", file=sys.stderr)
        return 130
    finally:
        from .distributed import shutdown

        shutdown()
    if experiment.world.main:
        print(report)
    return 0


def _launch(args: argparse.Namespace, overrides: list[str]) -> int:
    """``replearn run --nproc N``: every check of a run's inputs (config, plug-ins, data, run directory, what N
    processes need) here, in one process, so that bad input is one line; then torchrun starts the N."""
    from .experiment import Experiment
    from .launch import check_nproc, launch, without_nproc

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


def cmd_report(args: argparse.Namespace) -> int:
    from .artifacts import check_output_file, check_run_dir, write_output
    from .report import render_report

    default = check_run_dir(args.run_dir, need="report") / "report.html"
    target = Path(args.out) if args.out else default
    option = "--out" if args.out else "report"
    check_output_file(target, option, force=args.force, own_default=target.absolute() == default.absolute())
    print(write_output(target, option, lambda: render_report(args.run_dir, args.out)))
    return 0


def _model_kwargs(text: str) -> dict:
    import json

    try:
        kwargs = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: arrays or objects nested thousands deep
        kwargs = None
    if not isinstance(kwargs, dict):
        raise ReplearnError(f"--model-kwargs must be a JSON object, got {text[:60]!r}", "write it as '{\"name\": value}'")
    return kwargs


def _data_overrides(args: argparse.Namespace) -> list[str]:
    return list(args.overrides) + ([f"data.root={args.data_root}"] if args.data_root else [])


def _model_source(args: argparse.Namespace) -> Any:
    from .evaluate import ModelSource

    return ModelSource(Path(args.checkpoint), args.model, _model_kwargs(args.model_kwargs), args.trust_model_code)


def cmd_probe(args: argparse.Namespace) -> int:
    from .evaluate import probe_model

    _apply_threads(args.threads)
    table, json_path = probe_model(_model_source(args), args.dataset, args.layer, _data_overrides(args), args.json,
                                   args.knn, args.force)
    print(table)
    print(f"results written to {json_path}")
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from .evaluate import export_features

    _apply_threads(args.threads)
    out = export_features(_model_source(args), args.dataset, args.layer, _data_overrides(args), args.out, args.force)
    print(f"features written to {out}")
    return 0


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
    sweep = sub.add_parser("sweep", help="run the cross product of config values x seeds, one run each",
                           description="Run one replearn run per combination of the grid's values and per seed, "
                                       "each in its own run directory under one sweep directory with a manifest "
                                       "(sweep.json). Every run's config is validated before the first starts. "
                                       "Running the same sweep again skips finished runs and resumes interrupted "
                                       "ones. Compare the runs with `replearn compare SWEEP_DIR`.",
                           epilog=EXAMPLES_SWEEP, formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep.add_argument("spec", nargs="?", metavar="SPEC.yaml", help="a sweep spec (or give --grid instead)")
    sweep.add_argument("--base", metavar="CONFIG", help="without a spec: the base config (default: digits)")
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                       help="without a spec: a swept key and its values, e.g. model.latent_dim=8,32 or "
                            "model.channels=[16,32],[16,32,64] (repeatable: the cross product)")
    sweep.add_argument("--seeds", metavar="S1,S2", help="without a spec: the seeds, e.g. 0,1,2 (default: the base "
                                                        "config's train.seeds)")
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="without a spec: a fixed override of every run (repeatable)")
    sweep.add_argument("--name", help="without a spec: the sweep's name (default: from the base and the keys)")
    sweep.add_argument("--out", metavar="DIR", help="the sweep directory (default: the spec's out, else "
                                                    "reports/sweeps/<name>)")
    sweep.add_argument("--parallel", metavar="N", help="local backend: N runs side by side, the cores split "
                                                       "between them (overrides the spec)")
    sweep.add_argument("--backend", metavar="NAME", help="local or slurm (overrides the spec)")
    sweep.add_argument("--dry-run", action="store_true", help="validate and list the runs; run nothing, write nothing")
    sweep.add_argument("--quiet", action="store_true", help="print only the sweep directory")


def _add_compare(sub: Any) -> None:
    compare = sub.add_parser("compare", help="one HTML report across runs: a sweep's, or any run directories",
                             description="Read the saved results of the runs of sweep directories or of plain run "
                                         "directories and write compare.html with figures/ and tables/: probe "
                                         "accuracy (latent and best layer), each regime's gap to the reference with "
                                         "its paired-bootstrap interval, CKA between regimes and between runs, "
                                         "intrinsic dimension and gradient norms by layer, all against the swept "
                                         "value (the config keys that differ between runs), and a table of every "
                                         "run. Runs on other datasets or encoders are shown side by side.",
                             epilog="examples:\n  replearn compare reports/sweeps/bottleneck\n"
                                    "  replearn compare reports/digits-a reports/digits-b --out reports/ab",
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    compare.add_argument("dirs", nargs="+", metavar="RUN_OR_SWEEP_DIR", help="sweep or run directories")
    compare.add_argument("--out", metavar="DIR", help="output folder (default: SWEEP_DIR/compare for one sweep, "
                                                      "else reports/compare-<timestamp>); an earlier comparison "
                                                      "there is replaced")


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import load_spec, plan_sweep, spec_from_options
    from .sweep_backends import execute

    given = [o for o, v in (("--base", args.base), ("--grid", args.grid), ("--seeds", args.seeds),
                            ("--set", args.overrides), ("--name", args.name)) if v]
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
        print(f"sweep interrupted; finished runs are kept. Finish it with the same command: it skips complete runs "
              f"and resumes the interrupted one ({sweep.out})", file=sys.stderr)
        return 130
    print(sweep.out)
    if not args.quiet:
        print(f"compare the runs with: replearn compare {shlex.quote(str(sweep.out))}", file=sys.stderr)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare

    print(compare(args.dirs, args.out))
    return 0


def _add_similarity(sub: Any) -> None:
    similarity = sub.add_parser(
        "similarity", help="compare two models' representations of the same images by several similarity measures",
        description="Similarity measures (docs/similarity.md; the cheap ones unless --measures) between two "
                    "feature exports (`replearn features`: "
                    "every layer of A against every layer of B, on their test images) or two run directories (each "
                    "regime's latent of A against each of B, per common seed, with the functional measures on their "
                    "probes' predictions); writes similarity.html and tables/similarity.csv. Inputs of different "
                    "images are refused.",
        epilog="examples:\n  replearn features a.pt --dataset digits --out a.npz   (likewise b.npz)\n"
               "  replearn similarity a.npz b.npz --out reports/ab\n"
               "  replearn similarity reports/digits-a reports/digits-b --measures all",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    similarity.add_argument("a", metavar="A", help="a feature export (.npz) or a run directory")
    similarity.add_argument("b", metavar="B", help="the same kind of input as A, of the same images")
    similarity.add_argument("--measures", metavar="M1,M2", help="measures to compute, comma-separated, or 'all' "
                            "(default: the cheap ones; see docs/similarity.md)")
    similarity.add_argument("--images", type=int, default=1000, metavar="N",
                            help="at most this many images (a seeded subsample; default 1000)")
    similarity.add_argument("--out", metavar="DIR", help="output folder (default reports/similarity-<timestamp>); an "
                                                         "earlier similarity report there is replaced")


def cmd_similarity(args: argparse.Namespace) -> int:
    from .similarity_measures import MEASURES
    from .similarity_report import similarity

    measures = None
    if args.measures:
        measures = list(MEASURES) if args.measures.strip() == "all" else \
            [m.strip() for m in args.measures.split(",") if m.strip()]
    print(similarity(args.a, args.b, args.out, measures, args.images))
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from .data import DATASETS, dataset_status
    from .options import option_docs

    width = max(len(n) for n in DATASETS.names())
    for name, source in DATASETS.items():
        print(f"{name:<{width}}  {source.description}")
        print(f"{'':<{width}}  status: {dataset_status(name, args.data_root)}")
        for key, type_name, default, text in option_docs(source.Options, "data"):
            print(f"{'':<{width}}  {key} ({type_name}, default {default}): {text}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The ``replearn`` command. Every failure ends in one line on stderr and exit status 2 (130 when
    interrupted): replearn's own errors name the problem and the fix; any other exception is summarised
    the same way (with REPLEARN_DEBUG=1 it is raised with its traceback instead)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help()
        return 2
    handler = {"run": cmd_run, "report": cmd_report, "probe": cmd_probe, "features": cmd_features,
               "datasets": cmd_datasets, "sweep": cmd_sweep, "compare": cmd_compare,
               "similarity": cmd_similarity}[args.command]
    try:
        return handler(args)
    except ReplearnError as exc:
        print(f"replearn: error: {exc.one_line()}", file=sys.stderr)
        return 2
    except TrainingInterrupted as stop:
        print(f"replearn: interrupted by {stop.signal_name}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("replearn: interrupted", file=sys.stderr)
        return 130
    except (Exception, SystemExit) as exc:  # noqa: BLE001 — not replearn's own: still one line, exit 2
        if os.environ.get(DEBUG_VARIABLE):
            raise
        print(f"replearn: error: {foreign_error(exc).one_line()}", file=sys.stderr)
        return 2


DEBUG_VARIABLE = "REPLEARN_DEBUG"
MEMORY_WORDS = ("out of memory", "can't allocate", "cannot allocate", "failed to allocate", "not enough memory")


def foreign_error(exc: BaseException) -> ReplearnError:
    """The one-line form of an exception that is not a ReplearnError: what it was and what to do about it."""
    detail = " ".join(str(exc).split())
    detail = detail if len(detail) <= 200 else detail[:200] + "…"
    debug = f"rerun with {DEBUG_VARIABLE}=1 to see the traceback"
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and
                                        any(w in detail.lower() for w in MEMORY_WORDS)):
        return ReplearnError(f"ran out of memory ({type(exc).__name__}{': ' + detail if detail else ''})",
                             "use a smaller model (model.channels, model.width, model.latent_dim), a smaller "
                             "train.batch_size or fewer images (data.train_subset, analysis.max_images_per_split)")
    if isinstance(exc, OSError):
        where = f" '{exc.filename}'" if getattr(exc, "filename", None) else ""
        return ReplearnError(f"{type(exc).__name__}: {exc.strerror or detail or 'operating system error'}{where}",
                             "check that the path exists and is readable (writable, for outputs), then run again; "
                             f"{debug}")
    from .distributed import peer_failure

    if peer_failure(exc):
        return ReplearnError(f"another process of this distributed run stopped or stopped answering ({detail})",
                             "see the first error above (torchrun names the rank that failed); the run resumes from "
                             "its last saved state with: replearn run --resume RUN_DIR")
    if isinstance(exc, RecursionError):
        return ReplearnError(f"an input is nested too deeply to process (RecursionError: {detail})",
                             "flatten the JSON, YAML or file contents you passed")
    if isinstance(exc, SystemExit):
        return ReplearnError(f"code run by replearn (a plug-in or a library) called sys.exit({exc.code!r})",
                             "remove the sys.exit call from the plug-in, or run that code on its own")
    return ReplearnError(f"{type(exc).__name__}{': ' + detail if detail else ''}",
                         f"this is not a mistake replearn checks for: {debug}, and report it as a bug if the input "
                         "looks right")


if __name__ == "__main__":
    sys.exit(main())
