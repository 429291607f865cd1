"""The one check every analysis makes of its input: a finite 2-D feature matrix (samples × features).

Probes, CKA, dimension estimates, clustering, neighbour sets and projections all take features as a NumPy
array or a torch tensor and refuse the same things with the same words: not 2-D, too few rows, no
columns, NaN or infinite values. Nothing here imports another replearn module but ``errors``.
"""
from __future__ import annotations

import numpy as np
import torch

from replearn.errors import ReplearnError

ArrayLike = np.ndarray | torch.Tensor


def as_feature_matrix(x: ArrayLike, what: str = "features", min_rows: int = 1,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``x`` as a ``dtype`` tensor (no copy when it already is one), or a ReplearnError naming ``what``
    (a plural noun: "features", "training features") when it is not a 2-D array of at least ``min_rows``
    rows and one column whose values are all finite."""
    if isinstance(x, np.ndarray) and any(step < 0 for step in x.strides):
        x = x.copy()  # a reversed view (x[:, ::-1]): torch cannot share memory with negative strides
    try:
        t = torch.as_tensor(x).detach()
    except (TypeError, ValueError, RuntimeError):
        raise ReplearnError(f"{what} must be a numeric array, got {type(x).__name__}",
                            "pass a NumPy array or torch tensor of numbers") from None
    if t.ndim != 2:
        raise ReplearnError(f"{what} must be a 2-D array (samples × features), got shape {tuple(t.shape)}",
                            "flatten each sample's features into one row")
    if t.shape[0] < min_rows or t.shape[1] < 1:
        rows = f"{min_rows} row{'s' if min_rows != 1 else ''}"
        raise ReplearnError(f"{what} need at least {rows} and one feature, got shape {tuple(t.shape)}"
                            + (" (empty)" if t.numel() == 0 else ""), "pass one row of features per sample")
    if t.dtype != dtype:
        t = t.to(dtype)
    if not torch.isfinite(t).all():
        raise ReplearnError(f"{what} contain NaN or infinite values", "check the model or data that produced them")
    return t
