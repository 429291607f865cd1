"""Feature extraction: every named layer of an encoder, in eval mode, spatially pooled to a bounded size.

Batch norm uses its running statistics (eval mode) and autograd is off (inference mode). Stage maps are
average-pooled to the largest g×g grid with channels·g² ≤ ``max_stage_features``, so probes see a
bounded, comparable number of features at every depth.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from replearn.runtime import distributed

from replearn.runtime import threads as parallel
from replearn.encoders import Encoder, StageInfo
from replearn.metrics.pca import EXACT_LIMIT, pca_method, principal_components
from replearn.metrics.pca import randomised_components as randomised_components  # re-exported: it lived here

Features = dict[str, dict[str, torch.Tensor]]


@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Put modules in eval mode for the block and restore each one's previous mode afterwards."""
    previous = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, was_training in zip(modules, previous):
            m.train(was_training)


def pooled_grid(info: StageInfo, max_features: int) -> tuple[int, int]:
    """The largest g×g grid (no larger than the map) with channels·g² ≤ max_features, at least 1×1."""
    g = max(1, int((max_features / info.channels) ** 0.5))
    return min(g, info.height), min(g, info.width)


def pooled_dims(encoder: Encoder, max_features: int) -> dict[str, int]:
    """Feature dimension that ``extract_features`` returns for each layer."""
    dims = {}
    for info in encoder.feature_info:
        gh, gw = (1, 1) if info.name == "latent" else pooled_grid(info, max_features)
        dims[info.name] = info.channels * gh * gw
    return dims


def extract_features(encoder: Encoder, x: torch.Tensor, layers: list[str] | None = None,
                     max_stage_features: int = 1024, batch_size: int = 1000,
                     device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Flattened (N × D) features of each requested layer for images ``x``, as float32 on the CPU. The
    encoder is moved to ``device`` and channels-last outside inference mode, so that its weights stay
    ordinary tensors that later gradient-based analyses (attributions) can differentiate through."""
    encoder.to(device=device, memory_format=torch.channels_last)
    with torch.inference_mode():
        return _extract(encoder, x, layers, max_stage_features, batch_size, device)


def _extract(encoder: Encoder, x: torch.Tensor, layers: list[str] | None, max_stage_features: int,
             batch_size: int, device: torch.device | str) -> dict[str, torch.Tensor]:
    layers = layers or encoder.layer_names
    infos = {i.name: i for i in encoder.feature_info}
    grids = {name: pooled_grid(infos[name], max_stage_features) for name in layers if name != "latent"}
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    # one memory format for every encoder (set by the caller), trained here or loaded from a checkpoint:
    # convolution kernels differ between formats in the last bits, and a probe must see the same features
    with eval_mode(encoder):
        fused = fuse_batchnorm(encoder)
    with parallel.use_threads(extraction_threads(fused, x, batch_size, device)):
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].to(device).contiguous(memory_format=torch.channels_last)
            outs = fused.forward_features(xb, layers)
            for name, out in outs.items():
                if name != "latent" and out.ndim == 4:  # feature maps are pooled; vectors are kept as they are
                    out = F.adaptive_avg_pool2d(out, grids[name])
                chunks[name].append(out.flatten(1).float().cpu())
    return {name: torch.cat(parts) for name, parts in chunks.items()}


def fuse_batchnorm(module: nn.Module) -> nn.Module:
    """An eval-mode copy of ``module`` in which every batch norm that directly follows a convolution inside an
    ``nn.Sequential`` is folded into that convolution's weights: the same function (to float rounding) at
    about two thirds of the cost, since eval-mode batch norm is a memory-bound pass of its own."""
    fused = copy.deepcopy(module).eval()
    for seq in [m for m in fused.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = seq._modules[first], seq._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats \
                    and bn.running_mean is not None:
                seq._modules[first] = fuse_conv_bn_eval(conv, bn)
                seq._modules[second] = nn.Identity()
    return fused


def extraction_threads(encoder: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device | str) -> int:
    """Threads for extracting features of ``x``: from the FLOPs of one batch (``parallel.threads_for``)."""
    if len(x) == 0:
        return 1
    with eval_mode(encoder):
        per_image = parallel.forward_flops(encoder, x[:1].to(device).contiguous(memory_format=torch.channels_last))
    return parallel.threads_for(per_image * min(batch_size, len(x)), phase="extraction")


def extract_splits(encoder: Encoder, splits: dict[str, torch.Tensor], max_stage_features: int,
                   device: torch.device | str = "cpu", layers: list[str] | None = None, *,
                   gathered: bool = False) -> Features:
    """``{layer: {split: features}}`` for every split, extracted once. ``gathered``: shared between the
    processes of a distributed run (DINO's gathered extraction): each extracts a contiguous share of every
    split and every rank receives the whole, in dataset order (the same as one process with one)."""
    out: Features = {}
    for split, x in splits.items():
        def rows(lo: int, hi: int) -> dict[str, torch.Tensor]:
            return extract_features(encoder, x[lo:hi], layers, max_stage_features, device=device)

        feats = distributed.gather_rows(rows, len(x)) if gathered else rows(0, len(x))
        for layer, values in feats.items():
            out.setdefault(layer, {})[split] = values
    return out


EXACT_PCA_FEATURES = EXACT_LIMIT  # exact routes (covariance or Gram) while the smaller side is at most this


def pca_baseline(pixels: dict[str, torch.Tensor], dims: int, exact_limit: int = EXACT_PCA_FEATURES) -> Features:
    """Raw pixels projected on their top ``dims`` principal components (fitted on train): the PCA baseline
    of the same dimension as the latent, under the layer name 'latent'.

    The components come from ``pca.principal_components``' cheapest route for the training split's shape:
    the D×D covariance when there are no more pixels than images and at most ``exact_limit`` of them (digits
    and Fashion-MNIST: unchanged from earlier runs), the N×N Gram matrix when there are fewer training images
    than pixels and at most ``exact_limit`` of them (exact; the D×D matrix, 4.6 GiB at 96² colour, is never
    formed), and a seeded randomised SVD otherwise (time O(N·D·dims), memory O((N + D)·dims) beyond the
    pixels, the same subspace to within rounding on images, whose spectra fall off fast)."""
    train = pixels["train"]
    dims = min(dims, train.shape[1])
    method = pca_method(*train.shape, exact_limit)
    if method == "covariance":
        train = train.double()
        mean = train.mean(0)
        _, vecs = torch.linalg.eigh((train - mean).T @ (train - mean))
        basis = vecs[:, -dims:].flip(1)
        return {"latent": {split: ((x.double() - mean) @ basis).float() for split, x in pixels.items()}}
    mean, basis = principal_components(train if method == "gram" else train.float(), dims, exact_limit)
    mean, basis = mean.float(), basis.float()
    offset = mean @ basis  # (x - mean) @ basis without a centred copy of x
    return {"latent": {split: x.float() @ basis - offset for split, x in pixels.items()}}


def pixel_features(splits: dict[str, torch.Tensor]) -> Features:
    """The raw-pixel baseline: each image flattened, as one layer named 'input'."""
    return {"input": {split: x[:].flatten(1).float() for split, x in splits.items()}}
