"""Collapse diagnostics for label-free objectives, as plain functions of an embedding matrix (n × d).

* ``normalised_std``: the standard deviation over images of each dimension of the ℓ2-normalised embeddings,
  averaged over dimensions (SimSiam, Chen & He 2021, Fig. 2): about 1/√d for embeddings spread over the
  sphere, 0 when every image maps to one point. ``std_ratio`` is it × √d (about 1 healthy, 0 collapsed).
* RankMe (Garrido et al. 2023, ``dimension.rankme``): the effective rank of the embeddings, 1 when they lie
  on one line (dimensional collapse) up to min(n, d).

A regime is flagged as collapsed when the RankMe of its latent or of its projector's output is below
``RANKME_FLOOR`` (a point or a line: both have an effective rank near 1), or when the projector's output,
the embedding its loss compares between views, has ``std_ratio`` < ``STD_RATIO_FLOOR``. A latent's
``std_ratio`` is reported but does not flag alone: a latent need not be centred, and a large mean shared by
every image lowers the normalised deviation without any collapse.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from replearn.metrics.arrays import ArrayLike, as_feature_matrix
from replearn.metrics.dimension import rankme

STD_RATIO_FLOOR = 0.1  # normalised std × √d below this: the embeddings occupy a tenth of a healthy spread
RANKME_FLOOR = 2.0  # effective rank below this: the embeddings lie (almost) on one line


def normalised_std(x: ArrayLike) -> float:
    """Mean over dimensions of the standard deviation over rows of the ℓ2-normalised rows of ``x``."""
    t = as_feature_matrix(x, "the embeddings given to normalised_std", 2, torch.float64)
    unit = t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return float(unit.std(0, correction=0).mean())


def diagnose(x: ArrayLike) -> dict[str, float]:
    """``normalised_std``, ``std_ratio`` (it × √d) and ``rankme`` of one embedding matrix."""
    t = as_feature_matrix(x, "the embeddings given to diagnose", 2, torch.float64)
    std = normalised_std(t)
    return {"normalised_std": std, "std_ratio": std * math.sqrt(t.shape[1]), "rankme": rankme(t)}


def collapsed(diagnostics: dict[str, float], std_floor: float = STD_RATIO_FLOOR,
              rankme_floor: float = RANKME_FLOOR) -> bool:
    """Whether one embedding's ``diagnose`` result says it collapsed (to a point or onto a line)."""
    return diagnostics["std_ratio"] < std_floor or diagnostics["rankme"] < rankme_floor


def collapse_report(latent: ArrayLike, projection: ArrayLike | None = None, **floors: Any) -> dict[str, Any]:
    """The diagnostics of the latent and, when given, of the projector's output (keys prefixed ``latent_`` and
    ``projection_``), and ``collapsed``: the flag of the module's docstring."""
    out: dict[str, Any] = {f"latent_{k}": v for k, v in diagnose(latent).items()}
    flags = [out["latent_rankme"] < floors.get("rankme_floor", RANKME_FLOOR)]
    if projection is not None:
        found = diagnose(projection)
        out.update({f"projection_{k}": v for k, v in found.items()})
        flags.append(collapsed(found, **floors))
    out["collapsed"] = any(flags)
    return out
