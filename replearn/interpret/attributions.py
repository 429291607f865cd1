"""Attributions of a class logit to the input pixels, all computed by Captum: Integrated Gradients
(Sundararajan et al. 2017) from the dataset-mean image, SmoothGrad (Smilkov et al. 2017: Captum's
``NoiseTunnel`` over plain gradients), gradient × input (``InputXGradient``) and Grad-CAM (Selvaraju et
al. 2017) at a chosen stage, upsampled bilinearly to the image.

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
from captum.attr import (InputXGradient, IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel,
                         Saliency)

from replearn.errors import ConfigError
from replearn.interpret.explain import encoder_of, seeded, stage_module


@dataclass
class Settings:
    """How the methods run. ``baseline``: IG's reference image (1×C×H×W, the dataset mean; zeros when None);
    ``ig_steps``: IG's Riemann steps, evaluated ``internal_batch_size`` inputs at a time; SmoothGrad averages
    ``smoothgrad_samples`` gradients under Gaussian noise of ``smoothgrad_noise`` × the inputs' value range;
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
    values, delta = IntegratedGradients(model).attribute(
        x, baselines=_baseline(x, settings), target=target, n_steps=settings.ig_steps,
        internal_batch_size=settings.internal_batch_size, return_convergence_delta=True)
    return Attribution(values.detach(), delta.detach())


def smoothgrad(model: nn.Module, x: torch.Tensor, target: torch.Tensor, settings: Settings) -> Attribution:
    spread = float((x.max() - x.min()).detach()) or 1.0
    values = NoiseTunnel(Saliency(model)).attribute(
        x, nt_type="smoothgrad", nt_samples=settings.smoothgrad_samples, stdevs=settings.smoothgrad_noise * spread,
        nt_samples_batch_size=max(1, settings.internal_batch_size // max(1, len(x))), target=target, abs=False)
    return Attribution(values.detach())


def gradient_x_input(model: nn.Module, x: torch.Tensor, target: torch.Tensor, settings: Settings) -> Attribution:
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
    (SmoothGrad's noise), leaving the global random state as it was."""
    if method not in METHODS:
        check_methods([method], "method")
    device = next((p.device for p in model.parameters()), next((b.device for b in model.buffers()), x.device))
    x, target = x.detach().to(device).requires_grad_(True), target.to(device)
    with seeded(seed, device), torch.enable_grad():
        return METHODS[method](model, x, target, settings)
