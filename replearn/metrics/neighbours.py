"""Exact nearest-neighbour search, the one every analysis uses: kNN probes, neighbour sets, the nearest
training images, TwoNN distances, UMAP's kNN graph and trustworthiness.

``nearest_neighbours`` searches ``keys`` for each row of ``queries`` in chunks of query rows, so memory
stays O(chunk × keys). Two metrics:

- ``cosine``: both sides L2-normalised in float32; the k largest similarities. On CPUs with native
  bfloat16 matrix multiply, candidates (2k + 8 per query) are found with a bfloat16 product and re-scored
  in float32, about twice as fast; the result equals the float32 search unless a true neighbour falls
  outside the candidates (vanishingly rare).
- ``euclidean``: in the input's dtype, squared distances ‖q‖² + ‖k‖² − 2 q·k clamped at 0; the k smallest
  distances.

``exclude_self`` (queries and keys the same rows) leaves each row out of its own neighbours. For cosine the
search takes k + 1 and drops the row itself — or, when exact duplicates pushed it out of those k + 1, the
farthest of them; for Euclidean the row's own distance is set to infinity before choosing.
"""
from __future__ import annotations

import time
from typing import NamedTuple

import torch
import torch.nn.functional as F

from replearn.errors import ReplearnError

METRICS = ("cosine", "euclidean")


class Neighbours(NamedTuple):
    """Each query's k neighbours, nearest first: cosine similarities or Euclidean distances, and key indices."""

    values: torch.Tensor
    indices: torch.Tensor


_BF16_FAST: bool | None = None


def _bf16_matmul_is_fast() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (e.g. AVX512-BF16/AMX), timed once. An x86 CPU
    whose flags (/proc/cpuinfo) lack both is not timed: its bfloat16 matmuls are emulated, ~100× slower, and
    the timing alone took 1.7 s on an AMD EPYC without them."""
    global _BF16_FAST
    if _BF16_FAST is None:
        flags = _x86_cpu_flags()
        if flags is not None and not flags & {"avx512_bf16", "amx_bf16"}:
            _BF16_FAST = False
            return _BF16_FAST
        a = torch.randn(512, 512)
        b = a.bfloat16()
        timings = []
        for m in (a, b, a, b):
            started = time.perf_counter()
            for _ in range(4):
                m @ m
            timings.append(time.perf_counter() - started)
        _BF16_FAST = min(timings[1], timings[3]) < 0.7 * min(timings[0], timings[2])
    return _BF16_FAST


def _x86_cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str] | None:
    """The first x86 CPU's feature flags, or None where they cannot be read (not Linux, not x86)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return None


@torch.no_grad()
def nearest_neighbours(queries: torch.Tensor, keys: torch.Tensor, k: int, metric: str = "cosine",
                       exclude_self: bool = False, chunk: int = 1024) -> Neighbours:
    """The ``k`` nearest rows of ``keys`` to each row of ``queries`` (fewer when there are fewer keys), exact.

    ``exclude_self``: ``queries`` and ``keys`` hold the same rows in the same order, and no row is its own
    neighbour. See the module's docstring for each metric's arithmetic and tie handling."""
    queries, keys = torch.as_tensor(queries), torch.as_tensor(keys)
    if metric not in METRICS:
        raise ReplearnError(f"unknown neighbour metric '{metric}'", f"use one of: {', '.join(METRICS)}")
    if queries.ndim != 2 or keys.ndim != 2 or queries.shape[1] != keys.shape[1]:
        raise ReplearnError(f"neighbour search needs 2-D queries and keys of equal width, got shapes "
                            f"{tuple(queries.shape)} and {tuple(keys.shape)}", "pass one row of features per sample")
    if exclude_self and len(queries) != len(keys):
        raise ReplearnError(f"excluding each row from its own neighbours needs the same rows as queries and keys "
                            f"({len(queries)} vs {len(keys)})", "pass the same features twice")
    k = min(k, len(keys) - (1 if exclude_self else 0))
    if k < 1:
        raise ReplearnError(f"neighbour search needs at least {2 if exclude_self else 1} key rows and k >= 1",
                            "pass more samples")
    if metric == "euclidean":
        return _euclidean(queries, keys, k, exclude_self, chunk)
    if not exclude_self:
        return _cosine(queries, keys, k, chunk)
    return _drop_self(_cosine(queries, keys, k + 1, chunk), k)


def _cosine(queries: torch.Tensor, keys: torch.Tensor, k: int, chunk: int) -> Neighbours:
    keys = F.normalize(keys.float(), dim=1)
    queries = F.normalize(queries.float(), dim=1)
    candidates = min(len(keys), 2 * k + 8)
    use_bf16 = keys.device.type == "cpu" and keys.shape[1] >= 128 and candidates < len(keys) \
        and _bf16_matmul_is_fast()
    keys_low = keys.bfloat16() if use_bf16 else None
    sims, idxs = [], []
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk]
        if use_bf16:
            _, cand = (q.bfloat16() @ keys_low.T).topk(candidates, dim=1)
            rows = keys.index_select(0, cand.flatten()).view(len(q), candidates, -1)
            exact = torch.bmm(rows, q[:, :, None]).squeeze(2)
            top, pos = exact.topk(k, dim=1)
            idx = cand.gather(1, pos)
        else:
            top, idx = (q @ keys.T).topk(k, dim=1)
        sims.append(top)
        idxs.append(idx)
    return Neighbours(torch.cat(sims), torch.cat(idxs))


def _drop_self(found: Neighbours, k: int) -> Neighbours:
    """k of each row's k + 1 neighbours: without the row itself, or without the farthest when exact
    duplicates pushed the row out of its own k + 1."""
    values, idx = found
    n = len(idx)
    is_self = idx == torch.arange(n)[:, None]
    drop = torch.where(is_self.any(1), is_self.float().argmax(1), torch.full((n,), k))
    keep = torch.ones_like(idx, dtype=torch.bool)
    keep[torch.arange(n), drop] = False
    return Neighbours(values[keep].view(n, k), idx[keep].view(n, k))


def _euclidean(queries: torch.Tensor, keys: torch.Tensor, k: int, exclude_self: bool, chunk: int) -> Neighbours:
    key_sq = (keys * keys).sum(1)
    query_sq = key_sq if exclude_self else (queries * queries).sum(1)
    dists, idxs = [], []
    for start in range(0, len(queries), chunk):
        block = queries[start:start + chunk]
        d2 = (query_sq[start:start + chunk, None] + key_sq[None, :] - 2.0 * block @ keys.T).clamp_min_(0.0)
        if exclude_self:
            rows = torch.arange(len(block))
            d2[rows, rows + start] = float("inf")
        dist, idx = d2.topk(k, dim=1, largest=False)
        dists.append(dist.sqrt())
        idxs.append(idx)
    return Neighbours(torch.cat(dists), torch.cat(idxs))
