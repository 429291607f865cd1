"""Is an attribution faithful to the model it explains?

Deletion and insertion (Petsiuk et al. 2018, RISE): pixels are taken in the order of their attribution,
largest first; *deletion* replaces them by a reference image (the dataset mean) a fraction at a time and
follows the class probability as it falls, *insertion* restores them onto the reference and follows it as
it rises. The areas under the curves (fraction of pixels on the x-axis, 0 to 1) summarise them: a faithful
order gives a low deletion AUC and a high insertion AUC; a random order is the reference.

Captum's ``infidelity`` (Yeh et al. 2019: the mean squared error between the attribution's dot product
with a small Gaussian perturbation and the change of the output it causes, normalised) and
``sensitivity_max`` (how much the attribution changes, relative to its norm, under small uniform
perturbations of the input) are computed as Captum defines them, with few perturbations to stay cheap."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from replearn.interpret.explain import seeded

MODES = ("deletion", "insertion")


def pixel_order(maps: np.ndarray) -> torch.Tensor:
    """Pixel indices of each map (N×H×W), most attributed (largest value) first; ties keep reading order."""
    flat = torch.as_tensor(np.ascontiguousarray(maps)).reshape(len(maps), -1).double()
    return torch.argsort(-flat, dim=1, stable=True)


def random_maps(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Maps that rank the pixels at random: the reference order of the curves."""
    return np.random.default_rng(seed).random(shape)


def fractions(steps: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, steps + 1)


@torch.no_grad()
def perturbation_curve(model: nn.Module, x: torch.Tensor, target: torch.Tensor, maps: np.ndarray,
                       reference: torch.Tensor, mode: str = "deletion", steps: int = 16,
                       batch_size: int = 1024) -> np.ndarray:
    """The probability of class ``target`` (softmax of ``model``'s logits) as the pixels are deleted
    (replaced by ``reference``, 1×C×H×W) or inserted (restored onto it) in the order of ``maps``, most
    attributed first: N × (steps + 1) at the fractions ``fractions(steps)`` of the pixels."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    device = next((p.device for p in model.parameters()), next((b.device for b in model.buffers()), x.device))
    x, target = x.to(device), target.to(device)
    reference = reference.to(device, x.dtype).expand_as(x)
    n, c, h, w = x.shape
    order = pixel_order(maps).to(device)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=device).expand(n, -1))  # each pixel's place in the order
    counts = [int(round(f * h * w)) for f in fractions(steps)]
    src = (x, reference) if mode == "deletion" else (reference, x)
    images = []
    for k in counts:
        moved = (rank < k).reshape(n, 1, h, w).to(x.dtype)  # deletion: pixels replaced; insertion: restored
        images.append(src[0] * (1 - moved) + src[1] * moved)
    stacked = torch.stack(images, 1).reshape(-1, c, h, w)  # image-major: N × (steps + 1)
    targets = target.repeat_interleave(len(counts))
    out = []
    for start in range(0, len(stacked), batch_size):
        logits = model(stacked[start:start + batch_size])
        out.append(torch.softmax(logits.float(), 1).gather(1, targets[start:start + batch_size, None])[:, 0])
    return torch.cat(out).reshape(n, len(counts)).cpu().numpy()


def area_under(curves: np.ndarray, xs: np.ndarray | None = None) -> np.ndarray:
    """Trapezoidal area under each row of ``curves`` over ``xs`` (default: evenly from 0 to 1)."""
    xs = np.linspace(0.0, 1.0, curves.shape[-1]) if xs is None else xs
    return ((curves[..., 1:] + curves[..., :-1]) / 2 * np.diff(xs)).sum(-1)


def gaussian_perturbation(sigma: float) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Captum's perturbation function for ``infidelity``: noise I ~ N(0, σ²), perturbed input x − I."""
    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn_like(inputs) * sigma
        return noise, inputs - noise
    return perturb


def infidelity_scores(model: nn.Module, x: torch.Tensor, target: torch.Tensor, attributions: torch.Tensor,
                      samples: int = 8, noise: float = 0.1, seed: int = 0, batch: int = 64) -> np.ndarray:
    """Captum's ``infidelity`` per image (normalised: scale-free), with ``samples`` Gaussian perturbations of
    standard deviation ``noise`` × the inputs' standard deviation."""
    device = attributions.device
    sigma = float(x.detach().std()) * noise or noise
    with seeded(seed, device):
        from captum.metrics import infidelity  # Captum costs a second to import: only when measuring

        scores = infidelity(model, gaussian_perturbation(sigma), x.detach().to(device), attributions,
                            target=target.to(device), n_perturb_samples=samples,
                            max_examples_per_batch=len(x) * samples, normalize=True)
    return scores.detach().cpu().numpy()


def _as_captum(explain: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable:
    """``explain`` as Captum's metrics call it: inputs as a tuple of tensors in, a tuple out. The maps are made
    contiguous: Captum flattens them with ``view``, which a map broadcast over colour channels (Grad-CAM's, one
    map expanded to three channels) cannot take."""
    def wrapped(inputs: torch.Tensor | tuple[torch.Tensor, ...], target: torch.Tensor) -> object:
        if isinstance(inputs, tuple):
            return (explain(inputs[0], target).contiguous(),)
        return explain(inputs, target).contiguous()
    return wrapped


def sensitivity_scores(explain: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                       target: torch.Tensor, samples: int = 4, radius: float = 0.02, seed: int = 0,
                       batch: int = 64) -> np.ndarray:
    """Captum's ``sensitivity_max`` per image: the largest relative change (Frobenius norm) of
    ``explain(inputs, target)`` over ``samples`` uniform perturbations within ``radius`` × the inputs' range."""
    spread = float((x.max() - x.min()).detach()) or 1.0
    device = x.device
    with seeded(seed, device):
        from captum.metrics import sensitivity_max

        scores = sensitivity_max(_as_captum(explain), x.detach(), target=target,
                                 perturb_radius=radius * spread, n_perturb_samples=samples,
                                 max_examples_per_batch=len(x) * samples)
    return scores.detach().cpu().numpy()
