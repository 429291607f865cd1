"""Contrastive learning, SimCLR (Chen et al. 2020): two augmented views of every image, a two-layer
projection head, and the NT-Xent loss; probes read the encoder's latent, before the projection head.

The views are made on the batch in torch, following torchvision's transforms as SimCLR used them:

* ``RandomResizedCrop``: up to ten draws of an area fraction ∈ [crop_min_scale, 1] and a log-uniform
  aspect ratio ∈ [3/4, 4/3], rounded to whole pixels; the first crop that fits is taken, else the
  centre crop (``crop_boxes``); the crop is resized back bilinearly (``resized_crops``);
* ``RandomHorizontalFlip`` (optional);
* on colour images (3 channels), SimCLR's CIFAR colour distortion of strength 0.5: ``ColorJitter``
  (brightness, contrast, saturation 0.4, hue 0.1, in a random order per image as torchvision draws it)
  with probability 0.8, then ``RandomGrayscale`` with probability 0.2, on pixels in [0, 1] — the
  standardised images are mapped back with the dataset's mean and standard deviation and standardised
  again afterwards (``colour_distort``);
* on grey images, brightness and contrast jitter with probability 0.8, as before colour was added.

Every random number comes from the step's generator, so an interrupted run resumes exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from replearn.runtime import distributed
from replearn.config.options import opt
from replearn.encoders import Encoder
from replearn.regimes.base import DataInfo, Regime, register_regime
from replearn.regimes.heads import ProjectionHead
from replearn.regimes.views import ViewOptions

CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop.get_params
CROP_RATIOS = (3 / 4, 4 / 3)
GREY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale
# pixel statistics assumed when a head is built without the dataset's (a DataInfo made by hand)
FALLBACK_MEAN, FALLBACK_STD = 0.5, 0.25


@dataclass
class ContrastiveOptions(ViewOptions):
    temperature: float = opt(0.5, "NT-Xent temperature τ (SimCLR uses 0.5 for small images)", gt=0.0, max=100.0)
    projection_dim: int = opt(128, "output size of the projection head", min=1)
    hidden_dim: int = opt(0, "hidden size of the projection head (0 = the latent size)", min=0)


class ContrastiveHead(ProjectionHead):
    """SimCLR's projection head; it also carries the dataset's per-channel pixel mean and standard deviation
    (non-persistent buffers: not in checkpoints, but on the head's device) for the colour distortion."""

    def __init__(self, latent_dim: int, hidden_dim: int, out_dim: int, data: DataInfo) -> None:
        super().__init__(latent_dim, hidden_dim, out_dim)
        channels = data.image_shape[0]
        mean = data.pixel_mean if data.pixel_mean is not None else (FALLBACK_MEAN,) * channels
        std = data.pixel_std if data.pixel_std is not None else (FALLBACK_STD,) * channels
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32), persistent=False)


def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator,
             device: torch.device) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, device=device, dtype=torch.float64)


def crop_boxes(n: int, height: int, width: int, min_scale: float, generator: torch.Generator,
               device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
    """(top, left, crop height, crop width) of ``n`` random resized crops of a height×width image, whole
    pixels, drawn as torchvision's ``RandomResizedCrop.get_params`` draws them (scale (min_scale, 1), ratio
    (3/4, 4/3)): ten attempts of an area fraction and a log-uniform aspect ratio, the first whose rounded
    size fits is kept, else the centre crop with the ratio clamped to (3/4, 4/3)."""
    device = torch.device(device)
    area = height * width
    target = area * _uniform((CROP_ATTEMPTS, n), min_scale, 1.0, generator, device)
    ratio = torch.exp(_uniform((CROP_ATTEMPTS, n), *map(math.log, CROP_RATIOS), generator, device))
    w_try, h_try = torch.round(torch.sqrt(target * ratio)), torch.round(torch.sqrt(target / ratio))
    fits = (w_try > 0) & (w_try <= width) & (h_try > 0) & (h_try <= height)
    first = fits.to(torch.uint8).argmax(0)  # the first attempt that fits (0 when none does)
    found = fits.any(0)
    fallback_h, fallback_w = centre_crop_size(height, width)
    crop_h = torch.where(found, h_try.gather(0, first[None])[0], float(fallback_h)).long()
    crop_w = torch.where(found, w_try.gather(0, first[None])[0], float(fallback_w)).long()
    offsets = torch.rand((2, n), generator=generator, device=device, dtype=torch.float64)
    top = torch.where(found, (offsets[0] * (height - crop_h + 1)).floor().long(), (height - crop_h) // 2)
    left = torch.where(found, (offsets[1] * (width - crop_w + 1)).floor().long(), (width - crop_w) // 2)
    return top.clamp(0, height - 1), left.clamp(0, width - 1), crop_h, crop_w


def centre_crop_size(height: int, width: int) -> tuple[int, int]:
    """torchvision's fallback crop: the whole image, cut to an aspect ratio within (3/4, 4/3)."""
    low, high = CROP_RATIOS
    if width / height < low:
        return int(round(width / low)), width
    if width / height > high:
        return height, int(round(height * high))
    return height, width


def resized_crops(x: torch.Tensor, boxes: tuple[torch.Tensor, ...], mirror: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """Each image of ``x`` cropped to its box (top, left, height, width) and resized back to the full size
    bilinearly, sampling as ``F.interpolate(crop, size, mode="bilinear", align_corners=False)`` does (edge
    pixels repeated, never a pixel outside the crop); images where ``mirror`` is True are then flipped
    left to right."""
    n, _, height, width = x.shape
    top, left, crop_h, crop_w = (b.to(x.device, torch.float64) for b in boxes)

    def source(start: torch.Tensor, size: torch.Tensor, out: int) -> torch.Tensor:
        # pixel coordinate in the image of each output pixel's centre, clamped to the crop
        pos = start[:, None] + (torch.arange(out, device=x.device, dtype=torch.float64)[None] + 0.5) \
            * size[:, None] / out - 0.5
        pos = torch.minimum(torch.maximum(pos, start[:, None]), (start + size - 1)[:, None])
        return (2 * pos + 1) / out - 1  # grid_sample's coordinates (align_corners=False)

    gx, gy = source(left, crop_w, width), source(top, crop_h, height)
    if mirror is not None:
        gx = torch.where(mirror.to(x.device)[:, None], gx.flip(1), gx)
    grid = torch.stack([gx[:, None, :].expand(n, height, width), gy[:, :, None].expand(n, height, width)], -1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def grey(u: torch.Tensor) -> torch.Tensor:
    """torchvision's ``rgb_to_grayscale`` of N×3×H×W images: N×1×H×W."""
    r, g, b = u.unbind(1)
    return (GREY_WEIGHTS[0] * r + GREY_WEIGHTS[1] * g + GREY_WEIGHTS[2] * b)[:, None]


def rgb_to_hsv(u: torch.Tensor) -> torch.Tensor:
    """N×3×H×W RGB in [0, 1] to hue, saturation, value in [0, 1] (torchvision's ``_rgb2hsv``)."""
    r, g, b = u.unbind(1)
    maxc, minc = u.max(1).values, u.min(1).values
    same = maxc == minc
    spread = maxc - minc
    ones = torch.ones_like(maxc)
    s = spread / torch.where(same, ones, maxc)
    divisor = torch.where(same, ones, spread)
    rc, gc, bc = (maxc - r) / divisor, (maxc - g) / divisor, (maxc - b) / divisor
    h = ((maxc == r) * (bc - gc) + ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
         + ((maxc != g) & (maxc != r)) * (4.0 + gc - rc))
    return torch.stack([torch.fmod(h / 6.0 + 1.0, 1.0), s, maxc], 1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """The inverse of ``rgb_to_hsv`` (torchvision's ``_hsv2rgb``)."""
    h, s, v = hsv.unbind(1)
    sector = torch.floor(h * 6.0)
    f = h * 6.0 - sector
    p, q, t = ((v * (1.0 - s)).clamp(0, 1), (v * (1.0 - s * f)).clamp(0, 1), (v * (1.0 - s * (1.0 - f))).clamp(0, 1))
    sector = sector.long() % 6
    channels = [torch.stack(c, 1) for c in ((v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q))]
    pick = sector[:, None]
    return torch.stack([c.gather(1, pick)[:, 0] for c in channels], 1)


def adjust(u: torch.Tensor, op: str, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's ``adjust_brightness`` / ``adjust_contrast`` / ``adjust_saturation`` / ``adjust_hue`` of
    N×3×H×W images in [0, 1], one factor per image (the hue factor is a shift of the colour circle)."""
    f = factor.to(u.dtype)[:, None, None, None]
    if op == "brightness":
        return (u * f).clamp(0.0, 1.0)
    if op == "contrast":
        return (f * u + (1 - f) * grey(u).mean((1, 2, 3), keepdim=True)).clamp(0.0, 1.0)
    if op == "saturation":
        return (f * u + (1 - f) * grey(u)).clamp(0.0, 1.0)
    hsv = rgb_to_hsv(u)
    hue = torch.remainder(hsv[:, :1] + f, 1.0)
    return hsv_to_rgb(torch.cat([hue, hsv[:, 1:]], 1))


def colour_distort(u: torch.Tensor, generator: torch.Generator, options: ViewOptions) -> torch.Tensor:
    """SimCLR's colour distortion of RGB images in [0, 1]: with probability ``jitter_p`` torchvision's
    ``ColorJitter(jitter, jitter, saturation, hue)`` — its four adjustments in a random order drawn per
    image, each factor uniform in [max(0, 1 − s), 1 + s] (hue: a shift in [−hue, hue]) — then with
    probability ``greyscale_p`` ``RandomGrayscale`` (the grey level in all three channels)."""
    n = len(u)
    strengths = {"brightness": options.jitter, "contrast": options.jitter, "saturation": options.saturation,
                 "hue": options.hue}
    applied = torch.rand(n, generator=generator, device=u.device) < options.jitter_p
    order = torch.rand((n, 4), generator=generator, device=u.device).argsort(1)  # a random permutation per image
    factors = {op: (_uniform((n,), -s, s, generator, u.device) if op == "hue"
                    else _uniform((n,), max(0.0, 1 - s), 1 + s, generator, u.device)) for op, s in strengths.items()}
    greyed = torch.rand(n, generator=generator, device=u.device) < options.greyscale_p
    out = u.clone()
    for position in range(4):
        for index, (op, strength) in enumerate(strengths.items()):
            rows = (applied & (order[:, position] == index)).nonzero().squeeze(1)
            if strength > 0 and len(rows):
                out[rows] = adjust(out[rows], op, factors[op][rows])
    rows = greyed.nonzero().squeeze(1)
    if len(rows):
        out[rows] = grey(out[rows]).expand(-1, 3, -1, -1)
    return out


def grey_jitter(x: torch.Tensor, generator: torch.Generator, options: ViewOptions) -> torch.Tensor:
    """Brightness and contrast jitter of standardised images that are not RGB: with probability
    ``jitter_p``, contrast × U(1 ± jitter) about the image's mean and brightness + U(± jitter)."""
    n, jitter = len(x), options.jitter
    apply = (torch.rand(n, generator=generator, device=x.device) < options.jitter_p).to(x.dtype)[:, None, None, None]
    draw = torch.rand((2, n), generator=generator, device=x.device)
    contrast = 1 + ((1 - jitter + 2 * jitter * draw[0])[:, None, None, None] - 1) * apply
    brightness = (-jitter + 2 * jitter * draw[1])[:, None, None, None] * apply
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * contrast + mean + brightness


def random_views(x: torch.Tensor, generator: torch.Generator, options: ViewOptions | None = None,
                 pixel_stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """One random augmentation of every standardised image of ``x`` (N×C×H×W): a random resized crop
    (``crop_boxes``), a horizontal flip with probability ½ if ``options.flip``, then on RGB images the
    colour distortion on pixels in [0, 1] (``pixel_stats``: the per-channel mean and standard deviation the
    images were standardised with; 0.5 and 0.25 if not given), on other images the grey-level jitter."""
    o = options if options is not None else ContrastiveOptions()
    n, channels, height, width = x.shape
    boxes = crop_boxes(n, height, width, o.crop_min_scale, generator, x.device)
    mirror = torch.rand(n, generator=generator, device=x.device) < 0.5 if o.flip else None
    out = resized_crops(x, boxes, mirror)
    if channels == 3:
        mean, std = pixel_stats if pixel_stats is not None else (torch.full((3,), FALLBACK_MEAN),
                                                                  torch.full((3,), FALLBACK_STD))
        mean, std = (s.to(x.device, x.dtype).view(1, 3, 1, 1) for s in (mean, std))
        out = (colour_distort((out * std + mean).clamp(0.0, 1.0), generator, o) - mean) / std
    elif o.jitter > 0:
        out = grey_jitter(out, generator, o)
    return out.contiguous(memory_format=torch.channels_last)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float,
            gather: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """SimCLR's normalised-temperature cross-entropy over the 2N views, and how many views rank their
    partner first among the other 2N − 1. ``gather``: the batch is split across processes, and the N pairs are
    every rank's (``gathered_nt_xent``)."""
    if gather:
        return gathered_nt_xent(z1, z2, temperature)
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = len(z1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets), (logits.argmax(1) == targets).sum()


def gathered_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent of this rank's 2n views against the 2N views of every rank (negatives from the whole global
    batch), averaged over this rank's views; the gathers return gradients to the rank that made each row."""
    all1, offset = distributed.gather_with_grad(z1)
    all2, _ = distributed.gather_with_grad(z2)
    z = F.normalize(torch.cat([all1, all2]).float(), dim=1)
    n, total = len(z1), len(all1)
    mine = torch.cat([torch.arange(offset, offset + n), torch.arange(total + offset, total + offset + n)]).to(z.device)
    logits = z[mine] @ z.T / temperature
    logits[torch.arange(2 * n, device=z.device), mine] = float("-inf")
    targets = torch.cat([mine[n:], mine[:n]])
    return F.cross_entropy(logits, targets), (logits.argmax(1) == targets).sum()


@register_regime("contrastive")
class Contrastive(Regime):
    label = "contrastive (SimCLR)"
    color = "#2ca02c"
    head_name = "projector"
    batch_dependent_loss = True
    loss_text = ("NT-Xent between the projections of two augmented views of each image (temperature τ; views: "
                 "random resized crop, flip, colour jitter and greyscale on colour images)")
    reads = "the encoder's latent, before the projection head"
    reference = "Chen et al. 2020 (SimCLR)"
    passes = (2, 2)
    Options = ContrastiveOptions

    def build_head(self, encoder: Encoder, data: DataInfo) -> nn.Module:
        o = self.options
        return ContrastiveHead(encoder.latent_dim, o.hidden_dim or encoder.latent_dim, o.projection_dim, data)

    def loss(self, encoder: Encoder, head: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        stats = (head.pixel_mean, head.pixel_std) if isinstance(head, ContrastiveHead) else None
        views = torch.cat([random_views(x, generator, self.options, stats) for _ in range(2)])
        z = head(encoder(views))
        loss, top1 = nt_xent(z[:len(x)], z[len(x):], self.options.temperature,
                             gather=distributed.batch_is_sharded())
        return loss, {"partner_top1": top1}

    def embed(self, encoder: Encoder, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return head(encoder(x))

    def metrics(self, sums: dict[str, float], images: int, pixels: int) -> dict[str, float]:
        return {"partner_top1": sums["partner_top1"] / (2 * images)}

    def headline(self, metrics: dict[str, float]) -> str:
        return f"val NT-Xent {metrics['loss']:.4f}, partner top-1 {metrics['partner_top1']:.3f}"
