"""``replearn similarity``: several similarity measures between two models' features."""

from __future__ import annotations

import argparse
from typing import Any


def _add_similarity(sub: Any) -> None:
    similarity = sub.add_parser(
        "similarity",
        help="compare two models' representations of the same images by several similarity measures",
        description="Similarity measures (docs/similarity.md; the cheap ones unless --measures) between two "
        "feature exports (`replearn features`: "
        "every layer of A against every layer of B, on their test images) or two run directories (each "
        "regime's latent of A against each of B, per common seed, with the functional measures on their "
        "probes' predictions); writes similarity.html and tables/similarity.csv. Inputs of different "
        "images are refused.",
        epilog="examples:\n  replearn features a.pt --dataset digits --out a.npz   (likewise b.npz)\n"
        "  replearn similarity a.npz b.npz --out reports/ab\n"
        "  replearn similarity reports/digits-a reports/digits-b --measures all",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    similarity.add_argument("a", metavar="A", help="a feature export (.npz) or a run directory")
    similarity.add_argument("b", metavar="B", help="the same kind of input as A, of the same images")
    similarity.add_argument(
        "--measures",
        metavar="M1,M2",
        help="measures to compute, comma-separated, or 'all' (default: the cheap ones; see docs/similarity.md)",
    )
    similarity.add_argument(
        "--images",
        type=int,
        default=1000,
        metavar="N",
        help="at most this many images (a seeded subsample; default 1000)",
    )
    similarity.add_argument(
        "--out",
        metavar="DIR",
        help="output folder (default reports/similarity-<timestamp>); an earlier similarity report there is replaced",
    )


def cmd_similarity(args: argparse.Namespace) -> int:
    from replearn.metrics.similarity_measures import MEASURES
    from replearn.studies.similarity import similarity

    measures = None
    if args.measures:
        measures = (
            list(MEASURES)
            if args.measures.strip() == "all"
            else [m.strip() for m in args.measures.split(",") if m.strip()]
        )
    print(similarity(args.a, args.b, args.out, measures, args.images))
    return 0
