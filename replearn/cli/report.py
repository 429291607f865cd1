"""``replearn report``: re-render a run's HTML report from its saved artifacts."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from replearn.cli.parsing import FORCE_HELP
from replearn.rundir import layout


def _add_report(sub: Any) -> None:
    report = sub.add_parser(
        "report",
        help="re-render a run's HTML report from its saved artifacts",
        description="Re-render the HTML report of a run directory from its saved metrics and "
        "arrays; nothing is retrained or re-extracted.",
    )
    report.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by `replearn run`")
    report.add_argument("--out", metavar="FILE", help="write the HTML here (default: RUN_DIR/report.html)")
    report.add_argument("--force", action="store_true", help=FORCE_HELP.format(option="--out"))


def cmd_report(args: argparse.Namespace) -> int:
    from replearn.report.html import render_report
    from replearn.rundir.io import check_output_file, check_run_dir, write_output

    default = check_run_dir(args.run_dir, need="report") / layout.REPORT
    target = Path(args.out) if args.out else default
    option = "--out" if args.out else "report"
    check_output_file(target, option, force=args.force, own_default=target.absolute() == default.absolute())
    print(write_output(target, option, lambda: render_report(args.run_dir, args.out)))
    return 0
