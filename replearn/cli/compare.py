"""``replearn compare``: one report across runs."""

from __future__ import annotations

import argparse
from typing import Any


def _add_compare(sub: Any) -> None:
    compare = sub.add_parser(
        "compare",
        help="one HTML report across runs: a sweep's, or any run directories",
        description="Read the saved results of the runs of sweep directories or of plain run "
        "directories and write compare.html with figures/ and tables/: probe "
        "accuracy (latent and best layer), each regime's gap to the reference with "
        "its paired-bootstrap interval, CKA between regimes and between runs, "
        "intrinsic dimension and gradient norms by layer, all against the swept "
        "value (the config keys that differ between runs), and a table of every "
        "run. Runs on other datasets or encoders are shown side by side.",
        epilog="examples:\n  replearn compare reports/sweeps/bottleneck\n"
        "  replearn compare reports/digits-a reports/digits-b --out reports/ab",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument("dirs", nargs="+", metavar="RUN_OR_SWEEP_DIR", help="sweep or run directories")
    compare.add_argument(
        "--out",
        metavar="DIR",
        help="output folder (default: SWEEP_DIR/compare for one sweep, "
        "else reports/compare-<timestamp>); an earlier comparison "
        "there is replaced",
    )


def cmd_compare(args: argparse.Namespace) -> int:
    from replearn.studies.compare import compare

    print(compare(args.dirs, args.out))
    return 0
