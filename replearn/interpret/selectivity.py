"""Units: the class selectivity index of each channel (Morcos et al. 2018, "On the importance of single
directions for generalization"), dead units, and the test images that drive a channel most.

A channel's response to an image is its activation averaged over the spatial positions of its map (for a
vector layer such as the latent, the unit's value). Activations are rectified first, max(a, 0): the conv
encoder's stages end in ReLU and max-pooling, so there this changes nothing; in a signed layer (the linear
latent, or any encoder whose stage can be negative) a negative response counts as no response, the reading
a following ReLU would give. From the per-class mean responses μ_k of a channel,

    selectivity = (μ_max − μ_−max) / (μ_max + μ_−max),   μ_−max = mean of the other classes' μ_k,

1 for a channel that responds to one class only, 0 for one that responds equally to every class. A channel
that never responds (rectified activation 0 on every test image and position) has undefined selectivity
(NaN) and is left out of the distribution. In a non-negative layer such a channel is dead; in a signed layer
a unit that is always negative still carries information, so there a unit is dead when its (unrectified)
activation is the same on every test image and position (``constant_units``).
"""
from __future__ import annotations

import math

import numpy as np
import torch


def channel_responses(features: torch.Tensor, channels: int) -> torch.Tensor:
    """N × channels mean rectified response of each channel, from N × (channels·positions) features laid out
    channel-major (a flattened N×C×H×W map, or N×C for a vector layer)."""
    n = features.shape[0]
    if features.shape[1] % channels:
        raise ValueError(f"{features.shape[1]} features do not split into {channels} channels")
    return features.float().clamp_min(0).reshape(n, channels, -1).mean(-1)


def class_selectivity(responses: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> np.ndarray:
    """Selectivity index of each channel (N × C non-negative responses → C values; NaN for a dead channel).
    Classes without images are left out of the class means."""
    labels = labels.cpu().long()
    responses = responses.double().cpu()
    k = int(num_classes if num_classes is not None else labels.max() + 1)
    present = torch.bincount(labels, minlength=k) > 0
    sums = torch.zeros(k, responses.shape[1], dtype=torch.float64).index_add_(0, labels, responses)
    counts = torch.bincount(labels, minlength=k).clamp_min(1).double()[:, None]
    means = (sums / counts)[present]
    if len(means) < 2:
        return np.full(responses.shape[1], math.nan)
    top, arg = means.max(0)
    rest = (means.sum(0) - top) / (len(means) - 1)
    denom = top + rest
    index = torch.where(denom > 0, (top - rest) / torch.where(denom > 0, denom, 1.0), torch.nan)
    return index.numpy()


def dead_units(responses: torch.Tensor) -> np.ndarray:
    """Whether each channel's (rectified, non-negative) response is 0 on every image."""
    return (responses.max(0).values <= 0).cpu().numpy()


def constant_units(features: torch.Tensor, channels: int, tolerance: float = 1e-7) -> np.ndarray:
    """Whether each channel's raw activation (N × channels·positions, channel-major) is the same on every
    image and position, to ``tolerance`` relative to its largest magnitude: the dead units of a signed layer."""
    per_channel = features.float().reshape(features.shape[0], channels, -1).transpose(0, 1).reshape(channels, -1)
    spread = per_channel.max(1).values - per_channel.min(1).values
    return (spread <= tolerance * (1 + per_channel.abs().max(1).values)).cpu().numpy()


def most_selective(selectivity: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` most selective channels (dead ones never chosen), most selective first."""
    order = np.argsort(-np.nan_to_num(selectivity, nan=-np.inf), kind="stable")
    alive = [int(i) for i in order if np.isfinite(selectivity[i])]
    return np.array(alive[:count], dtype=int)


def top_images(responses: torch.Tensor, channels: np.ndarray, count: int) -> np.ndarray:
    """len(channels) × count indices of the images each channel responds to most, strongest first."""
    if len(channels) == 0:
        return np.zeros((0, count), dtype=int)
    picked = responses[:, torch.as_tensor(channels, dtype=torch.long)]
    return picked.topk(min(count, len(responses)), dim=0).indices.T.cpu().numpy()
