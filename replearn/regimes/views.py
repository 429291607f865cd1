"""The options of the two-view augmentation pipeline that the Siamese regimes share (SimCLR, BYOL, SimSiam,
Barlow Twins, VICReg, SupCon): a random resized crop, a flip, and colour (or grey-level) jitter, made on the
batch by ``contrastive.random_views``."""
from __future__ import annotations

from dataclasses import dataclass

from replearn.config.options import opt
from replearn.regimes.base import RegimeOptions


@dataclass
class ViewOptions(RegimeOptions):
    """What ``contrastive.random_views`` reads; a regime that trains on augmented views subclasses it."""

    crop_min_scale: float = opt(0.3, "smallest area fraction of a random resized crop (torchvision's "
                                "RandomResizedCrop: up to 10 draws, then the centre crop)", gt=0.0, max=1.0)
    flip: bool = opt(True, "random horizontal flips (turn off for classes a mirror changes, e.g. digits)")
    jitter: float = opt(0.4, "strength of the brightness and contrast jitter (0 = none; SimCLR's CIFAR "
                        "recipe: 0.4)", min=0.0, max=1.0)
    jitter_p: float = opt(0.8, "probability that an image's colour (or grey-level) jitter is applied", min=0.0,
                          max=1.0)
    saturation: float = opt(0.4, "strength of the saturation jitter, colour images only (0 = none)", min=0.0,
                            max=1.0)
    hue: float = opt(0.1, "largest hue shift, as a fraction of the colour circle, colour images only (0 = none)",
                     min=0.0, max=0.5)
    greyscale_p: float = opt(0.2, "probability that a view is turned grey, colour images only", min=0.0, max=1.0)
