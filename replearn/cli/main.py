"""The ``replearn`` command: run, report, probe, features, datasets.

Errors in the user's input print one line (problem and fix) and exit with status 2, without a traceback.
"""
from __future__ import annotations

import argparse
import gc
import os
import re
import sys

from replearn.errors import ReplearnError, TrainingInterrupted
from replearn.cli.parsing import UsageError, OneLineParser
from replearn.cli.run import _add_run, cmd_run
from replearn.cli.report import _add_report, cmd_report
from replearn.cli.models import _add_probe, _add_features, cmd_probe, cmd_features
from replearn.cli.sweep import _add_sweep, cmd_sweep
from replearn.cli.compare import _add_compare, cmd_compare
from replearn.cli.similarity import _add_similarity, cmd_similarity
from replearn.cli.datasets import cmd_datasets


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="replearn",
        description="Train one encoder under several objectives (supervised, autoencoders, contrastive, …) from the "
                    "same initial weights and compare what each learned: probes at every layer, similarity and "
                    "dimension by depth, projections, statistics over seeds, and an HTML report.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"replearn {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
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


def _version() -> str:
    from replearn.version import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    """The ``replearn`` command (see ``run_command``). Run from the command line (no ``argv``), the objects
    left at the end are frozen out of the garbage collector, which spares the process a second or so of
    collection at exit; atexit handlers still run."""
    try:
        return run_command(argv)
    finally:
        if argv is None:
            gc.freeze()


def run_command(argv: list[str] | None = None) -> int:
    """The ``replearn`` command. Every failure ends in one line on stderr and exit status 2 (130 when
    interrupted): replearn's own errors name the problem and the fix; any other exception is summarised
    the same way (with REPLEARN_DEBUG=1 it is raised with its traceback instead)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        fix = f"see {exc.prog} --help for the arguments it takes"
        if exc.message.startswith("unrecognized arguments"):
            fix = f"write each option in full (abbreviations are not accepted) and {fix[:1].lower()}{fix[1:]}"
        usage = ReplearnError(exc.message, fix)
        print(f"replearn: error: {usage.one_line()}", file=sys.stderr)
        return 2
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
        asked = re.search(r"allocate (\d+) bytes", detail)
        size = f" {int(asked.group(1)) / 2**30:,.1f} GiB asked at once;" if asked else ""
        return ReplearnError(f"ran out of memory ({type(exc).__name__}{': ' + detail if detail else ''})",
                             f"{size} the plan logged at the start names each phase's predicted peak: lower what "
                             "bounds the largest — the pixels per image (data.image_size), the images analysed "
                             "(analysis.max_images_per_split, analysis.analysis_points, analysis.projection_points) "
                             "or, for training, train.batch_size and model.channels or model.width; rerun with "
                             f"{DEBUG_VARIABLE}=1 to see where")
    if isinstance(exc, OSError):
        where = f" '{exc.filename}'" if getattr(exc, "filename", None) else ""
        return ReplearnError(f"{type(exc).__name__}: {exc.strerror or detail or 'operating system error'}{where}",
                             "check that the path exists and is readable (writable, for outputs), then run again; "
                             f"{debug}")
    from replearn.runtime.distributed import peer_failure

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
