"""Seed derivation: every random stream replearn draws is seeded from the run's seeds by one rule.

A derived seed is a weighted sum of integers (a model seed, an epoch, a step, a draw…) reduced to the
63 bits torch and numpy accept. Each stream names its weights once (the constants below), so two streams
never collide by accident and a resumed run draws exactly what an uninterrupted one would.
"""
from __future__ import annotations

EPOCH_ORDER = (1_000_003, 1)                               # (seed, epoch): the epoch's batch order
AUGMENT = (1_000_003 * 100_003, 100_003, 1)                # (seed, epoch, step): flips and shifts
STEP = (1_000_003 * 100_003 * 7, 100_003 * 7, 7, 1)        # (seed, epoch, step, 1): the regime's own draws
HEAD = (1, 1_000_003)                                      # (seed, 1): the regime's head weights
LABEL_DRAW = (7919, 104_729, 1)                            # (seed, labels per class, draw): label efficiency
LABEL_BUDGET = (15_485_863,)                               # (training seed,): the budget's subsets, nested
CV_FOLDS = (104_723, 1)                                    # (seed, folds): a probe's cross-validation folds


def derive_seed(parts: tuple[int, ...], weights: tuple[int, ...]) -> int:
    """The seed ``sum(part * weight) mod 2**63`` of one random stream (see the stream constants above)."""
    if len(parts) != len(weights):
        raise ValueError(f"derive_seed: {len(parts)} parts for {len(weights)} weights")
    return sum(int(p) * int(w) for p, w in zip(parts, weights)) % 2**63
