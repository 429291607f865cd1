"""Attributions of a class logit to the input pixels: Integrated Gradients (Sundararajan et al. 2017) from the
dataset-mean image, gradient × input (``InputXGradient``) and Grad-CAM (Selvaraju et al. 2017) at a chosen stage,
upsampled bilinearly to the image, computed by Captum; SmoothGrad (Smilkov et al. 2017), the mean of Captum's
plain gradients (``Saliency``) over noisy copies, with its noise drawn here so that it is fixed per image.

SmoothGrad's noise is one seeded tensor of ``smoothgrad_samples`` × C×H×W standard-normal draws, shared by every
image and scaled by each image's own value range (Smilkov et al.'s σ / (x_max − x_min)): an image's map does not
depend on which batch it is in or where, so re-running it on a slightly perturbed copy (``sensitivity_max``)
changes the map only as much as the model's gradients change. Captum's ``NoiseTunnel`` draws fresh noise for
every call, shaped like the batch, which made SmoothGrad's sensitivity its own sampling noise.

``METHODS`` maps each method's name to a function ``(model, x, target, settings) → Attribution``; the
model must be hook-safe (``explain.hookable``: eval mode, no in-place activations). A map is the
attribution summed over the image's channels (N×H×W); ``Attribution.values`` keeps the input's shape for
Captum's metrics."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from replearn.errors import ConfigError
from replearn.interpret.explain import encoder_of, seeded, stage_module


@dataclass
class Settings:
    """How the methods run. ``baseline``: IG's reference image (1×C×H×W, the dataset mean; zeros when None);
    ``ig_steps``: IG's Riemann steps, evaluated ``internal_batch_size`` inputs at a time; SmoothGrad averages
    ``smoothgrad_samples`` gradients under Gaussian noise of ``smoothgrad_noise`` × each image's value range;
    ``stage``: Grad-CAM's layer (an encoder stage name)."""

    baseline: torch.Tensor | None = None
    ig_steps: int = 16
    internal_batch_size: int = 512
    smoothgrad_samples: int = 8
    smoothgrad_noise: float = 0.15
    stage: str | None = None

    def key(self) -> tuple:
        return (self.ig_steps, self.internal_batch_size, self.smoothgrad_samples, self.smoothgrad_noise, self.stage,
                None if self.baseline is None else float(self.baseline.double().sum()))


@dataclass
class Attribution:
    """Attributions with the input's shape (N×C×H×W), and IG's completeness error per image
    (Σ attributions − (F(x) − F(baseline))), None for the other methods."""

    values: torch.Tensor
    delta: torch.Tensor | None = None

    @property
    def maps(self) -> np.ndarray:
        """One map per image: the attribution summed over channels (N×H×W)."""
        return self.values.detach().sum(1).float().cpu().numpy()


def _baseline(x: torch.Tensor, settings: Settings) -> torch.Tensor:
    if settings.baseline is None:
        return torch.zeros_like(x)
    return settings.baseline.to(x.device, x.dtype).expand_as(x).contiguous()


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: torch.Tensor, settings: Settings) -> Attribution:
    from captum.attr import IntegratedGradients  # Captum costs a second to import: only when attributing

    values, delta = IntegratedGradients(model).attribute(
        x, baselines=_baseline(x, settings), target=target, n_steps=settings.ig_steps,
        internal_batch_size=settings.internal_batch_size, return_convergence_delta=True)
    return Attribution(values.detach(), delta.detach())


def smoothgrad_noise(samples: int, shape: tuple[int, ...], seed: int, device: torch.device | str = "cpu",
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """SmoothGrad's standard-normal noise, ``samples`` × ``shape`` (one image's C×H×W), from its own generator
    seeded by ``seed``: the same for every image and every batch layout."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
    return torch.randn((samples, *shape), generator=gen, dtype=torch.float64).to(device, dtype)


def smoothgrad(model: nn.Module, x: torch.Tensor, target: torch.Tensor, settings: Settings) -> Attribution:
    """Mean of the plain gradients of the target logit over ``smoothgrad_samples`` noisy copies of each image;
    the noise (``smoothgrad_noise``) is fixed per image, scaled by the image's own value range. Its seed is one
    draw from torch's random state, which ``attribute`` seeds: the same for every batch."""
    x = x.detach()
    seed = int(torch.randint(0, 2**62, (), device="cpu"))
    noise = smoothgrad_noise(settings.smoothgrad_samples, tuple(x.shape[1:]), seed, x.device, x.dtype)
    spread = (x.flatten(1).max(1).values - x.flatten(1).min(1).values)
    sigma = (settings.smoothgrad_noise * torch.where(spread > 0, spread, torch.ones_like(spread))).view(-1, 1, 1, 1)
    from captum.attr import Saliency

    saliency = Saliency(model)
    total = torch.zeros_like(x)
    per_batch = max(1, settings.internal_batch_size // max(1, len(x)))
    for start in range(0, len(noise), per_batch):
        chunk = noise[start:start + per_batch]  # samples × C×H×W, each added to every image
        noisy = (x[None] + sigma[None] * chunk[:, None]).reshape(-1, *x.shape[1:]).requires_grad_(True)
        grads = saliency.attribute(noisy, target=target.repeat(len(chunk)), abs=False)
        total += grads.detach().reshape(len(chunk), *x.shape).sum(0)
    return Attribution(total / len(noise))


def gradient_x_input(model: nn.Module, x: torch.Tensor, target: torch.Tensor, settings: Settings) -> Attribution:
    from captum.attr import InputXGradient

    return Attribution(InputXGradient(model).attribute(x, target=target).detach())


def gradcam(model: nn.Module, x: torch.Tensor, target: torch.Tensor, settings: Settings) -> Attribution:
    encoder = encoder_of(model)
    if encoder is None:
        raise ConfigError("Grad-CAM needs an encoder stage, and this model has none (a probe on pixels)",
                          "leave gradcam out for it")
    stage = settings.stage
    if stage is None:
        from replearn.interpret.explain import default_stage
        stage = default_stage(encoder)
    if stage is None:
        raise ConfigError("Grad-CAM needs a spatial stage and the encoder has none", "leave gradcam out of the methods")
    from captum.attr import LayerAttribution, LayerGradCam

    cam = LayerGradCam(model, stage_module(encoder, stage)).attribute(x, target=target, relu_attributions=True)
    if cam.ndim != 4:
        raise ConfigError(f"the stage '{stage}' gives a {cam.ndim}-D output, not a spatial map, so Grad-CAM cannot "
                          "place it on the image", "choose a convolutional stage")
    up = LayerAttribution.interpolate(cam.detach(), tuple(x.shape[2:]), "bilinear")
    return Attribution((up / x.shape[1]).expand(-1, x.shape[1], -1, -1).contiguous())


METHODS: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor, Settings], Attribution]] = {
    "integrated_gradients": integrated_gradients,
    "smoothgrad": smoothgrad,
    "gradient_x_input": gradient_x_input,
    "gradcam": gradcam,
}
LABELS = {"integrated_gradients": "Integrated Gradients", "smoothgrad": "SmoothGrad",
          "gradient_x_input": "gradient × input", "gradcam": "Grad-CAM"}
NEEDS_STAGE = {"gradcam"}  # methods that read an encoder stage (not defined for a probe on pixels)


def check_methods(names: list[str], key: str) -> list[str]:
    """``names`` if every one is a method of ``METHODS`` (each once), else a ConfigError listing the valid ones."""
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ConfigError(f"config key '{key}' names the attribution method '{unknown[0]}', which does not exist",
                          f"choose from: {', '.join(METHODS)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"config key '{key}' names a method twice", "list each method once")
    return list(names)


def applies(method: str, model: nn.Module) -> bool:
    """Whether the method is defined for the model (Grad-CAM needs an encoder stage)."""
    return method not in NEEDS_STAGE or encoder_of(model) is not None


def attribute(method: str, model: nn.Module, x: torch.Tensor, target: torch.Tensor, settings: Settings,
              seed: int = 0) -> Attribution:
    """Attributions of ``model``'s logit of class ``target`` (one per image) to ``x`` by ``method``; seeded
    (SmoothGrad's noise, fixed per image whatever the batch), leaving the global random state as it was."""
    if method not in METHODS:
        check_methods([method], "method")
    device = next((p.device for p in model.parameters()), next((b.device for b in model.buffers()), x.device))
    x, target = x.detach().to(device).requires_grad_(True), target.to(device)
    with seeded(seed, device), torch.enable_grad():
        return METHODS[method](model, x, target, settings)
