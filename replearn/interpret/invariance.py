"""Invariance by depth: how far a layer's representation of an image moves when the image undergoes a
nuisance transformation, measured against how far it moves between different images of the same class and
of different classes: a relative-displacement measure over the whole layer. It asks the question of Goodfellow
et al. 2009 ("Measuring invariances in deep networks") but is not their score, which is per unit (a unit's
firing rate over transformed copies of its preferred inputs, relative to its global firing rate).

For one layer, with f(x) its features of image x (N test images; the features are centred on the clean
images' mean and divided by one number per layer, the root of their mean variance over the clean images — not
standardised feature by feature, so that a feature almost constant on clean images, such as a border pixel,
cannot dominate the distances once a transformation moves content onto it), and d(a, b) = ‖a − b‖₂ / √D,
the root-mean-square difference per feature:

* ``d_nuisance`` = mean over images of d(f(x), f(T(x))), T the nuisance (a fresh random draw per image);
* ``d_same_class`` = mean of d(f(x), f(x')) over every pair of distinct images of the same class;
* ``d_other_class`` = the same over every pair of images of different classes;
* ``invariance`` = 1 − d_nuisance / d_same_class: 1 when the nuisance does not move the representation at all,
  0 when it moves it as far as replacing the image by another image of its class, below 0 further still;
* ``class_contrast`` = 1 − d_same_class / d_other_class: 0 when images of the same class are no closer than
  images of different classes, towards 1 as the class alone decides where an image lies.

A layer that has abstracted from its input has high invariance and high class contrast at once. Both are
ratios within one layer, so they do not depend on the layer's scale or width. Nuisances are small versions
of the corruptions of ``corruptions`` (``NUISANCES``), applied to unit-range images.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from replearn.interpret.corruptions import brightness, contrast, from_unit, gaussian_noise, rotation, to_unit, translation

FeatureFn = Callable[[torch.Tensor], dict[str, torch.Tensor]]  # normalised images -> layer -> N×D features


def _small_translation(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return translation(x, max(1, round(x.shape[-2] / 16)), generator)


# name -> (unit-range images, generator) -> transformed images; "small" versions of the corruptions
NUISANCES: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "translation": _small_translation,                         # max(1, round(H / 16)) pixels, 8 directions
    "rotation": lambda x, g: rotation(x, 10.0, g),             # ±10°
    "noise": lambda x, g: gaussian_noise(x, 0.05, g),          # σ = 0.05 of the unit range
    "contrast": lambda x, g: contrast(x, 0.7, g),              # deviations from the image mean × 0.7
    "brightness": lambda x, g: brightness(x, 0.1, g),          # + 0.1
}
NUISANCE_HELP = ("translation by max(1, H/16) pixels, rotation by ±10°, Gaussian noise of σ 0.05, contrast × 0.7, "
                 "brightness + 0.1 (unit-range images)")


def transformed(x: torch.Tensor, nuisance: str, mean: Sequence[float], std: Sequence[float], seed: int = 0
                ) -> torch.Tensor:
    """Normalised images with the nuisance applied (seeded; the same draw on every device)."""
    generator = torch.Generator().manual_seed(int(seed))
    return from_unit(NUISANCES[nuisance](to_unit(x, mean, std), generator), mean, std)


def _scaled(clean: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Features centred on the clean images' mean and divided by the root of their mean variance (one number)."""
    clean = clean.double()
    mean = clean.mean(0)
    scale = float(clean.var(0, unbiased=False).mean().sqrt()) if len(clean) > 1 else 0.0
    return [(t.double() - mean) / (scale if scale > 0 else 1.0) for t in (clean, *others)]


def layer_invariance(clean: torch.Tensor, moved: dict[str, torch.Tensor], labels: torch.Tensor) -> list[dict]:
    """Rows (nuisance, d_nuisance, d_same_class, d_other_class, invariance, class_contrast) of one layer, from
    its features of the clean images (N×D) and of their transformed copies (nuisance → N×D), see the module."""
    names = list(moved)
    z, *zs = _scaled(clean, *(moved[n] for n in names))
    labels = labels.cpu()
    width = max(1, z.shape[1])
    if z.shape[1] == 0 or not bool(z.abs().sum() > 0):  # every feature constant: the layer tells nothing apart
        return [{"nuisance": n, "d_nuisance": 0.0, "d_same_class": 0.0, "d_other_class": 0.0,
                 "invariance": math.nan, "class_contrast": math.nan} for n in names]
    pair = torch.cdist(z, z) / math.sqrt(width)
    same = labels[:, None] == labels[None, :]
    distinct = ~torch.eye(len(z), dtype=torch.bool)
    d_same = float(pair[same & distinct].mean()) if (same & distinct).any() else math.nan
    d_other = float(pair[~same].mean()) if (~same).any() else math.nan
    rows = []
    for name, zt in zip(names, zs):
        d_nuis = float(((z - zt).norm(dim=1) / math.sqrt(width)).mean())
        rows.append({"nuisance": name, "d_nuisance": d_nuis, "d_same_class": d_same, "d_other_class": d_other,
                     "invariance": 1 - d_nuis / d_same if d_same > 0 else math.nan,
                     "class_contrast": 1 - d_same / d_other if d_other > 0 else math.nan})
    return rows


def invariance_rows(features: FeatureFn, x: torch.Tensor, labels: torch.Tensor, nuisances: Sequence[str],
                    mean: Sequence[float], std: Sequence[float], seed: int = 0) -> list[dict]:
    """Rows (layer, nuisance, distances, invariance, class_contrast) of every layer ``features`` returns, for
    normalised images ``x`` and each nuisance (one forward pass over the clean and transformed images)."""
    for name in nuisances:
        if name not in NUISANCES:
            from replearn.errors import ConfigError
            raise ConfigError(f"unknown nuisance '{str(name)[:80]}'", f"choose one of: {', '.join(NUISANCES)}")
    batches = [x] + [transformed(x, n, mean, std, seed * 1009 + i) for i, n in enumerate(nuisances)]
    out = features(torch.cat(batches))
    n = len(x)
    rows = []
    for layer, f in out.items():
        f = f.flatten(1).float().cpu()
        moved = {name: f[(i + 1) * n:(i + 2) * n] for i, name in enumerate(nuisances)}
        rows += [{"layer": layer, **row} for row in layer_invariance(f[:n], moved, labels)]
    return rows


def encoder_features(encoder: torch.nn.Module, layers: Sequence[str], max_stage_features: int,
                     device: torch.device | str) -> FeatureFn:
    """An encoder's features of the named layers as ``extract_features`` gives them to the probes (stage maps
    average-pooled to at most ``max_stage_features``)."""
    from replearn.encoders.extract import extract_features

    return lambda x: extract_features(encoder, x, list(layers), max_stage_features, device=device)
