"""Feature visualisation: the image that a channel responds to most, found by activation maximisation
regularised as in Olah et al. 2017 ("Feature Visualization", Distill), written here for grey and colour
images (no Lucent).

The image is parameterised in frequency space: a complex spectrum per channel, scaled by 1 / max(f, 1/size)
(the 1/f spectrum of natural images, so that gradient steps favour low frequencies), turned into pixels by
an inverse real FFT (the spectrum starts as Gaussian noise of standard deviation 1, not Lucent's 0.01:
on images of 8 to 32 pixels a near-uniform start leaves many ReLU channels silent, with no gradient), for
colour images mixed by the square root of a typical colour correlation matrix
(Lucent's ImageNet values), and squashed into [0, 1] by a sigmoid. Every step the image is shown to the
encoder after a small random transformation of its own — jitter by up to max(1, H/16) pixels, scaling by
0.95–1.05 and rotation by up to ±5°, mirrored at the edges — so that the result does not rely on a
pattern tied to exact pixel positions (transformation robustness). The objective is the target channel's
mean activation over its map (a vector layer's unit value), maximised with Adam. All targets of one encoder
are optimised together, one image each, in one batch.
"""
from __future__ import annotations

from typing import Sequence

import torch

from replearn.encoders.extract import fuse_batchnorm
from replearn.interpret.corruptions import affine, from_unit
from replearn.training.optimizers import Adam

# the square root of the colour correlation of ImageNet images (Olah et al.; Lucent's values)
COLOUR_CORRELATION_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])


class FourierImage(torch.nn.Module):
    """``batch`` images of ``shape`` (C×H×W) in [0, 1], parameterised by 1/f-scaled spectra."""

    def __init__(self, batch: int, shape: Sequence[int], generator: torch.Generator, decay: float = 1.0,
                 device: torch.device | str = "cpu", init_sd: float = 1.0) -> None:
        super().__init__()
        c, h, w = shape
        self.shape = (c, h, w)
        fy = torch.fft.fftfreq(h)[:, None]
        fx = torch.fft.rfftfreq(w)[None, :]
        freqs = torch.sqrt(fx ** 2 + fy ** 2)
        self.register_buffer("scale", (1.0 / torch.clamp(freqs, min=1.0 / max(h, w)) ** decay).to(device))
        self.spectrum = torch.nn.Parameter(
            (init_sd * torch.randn(batch, c, h, w // 2 + 1, 2, generator=generator)).to(device))

    def forward(self) -> torch.Tensor:
        c, h, w = self.shape
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        image = torch.fft.irfft2(spectrum, s=(h, w), norm="ortho") / 4.0
        if c == 3:
            matrix = COLOUR_CORRELATION_SQRT.to(image.device)
            matrix = matrix / matrix.norm(dim=0).max()
            image = torch.einsum("nchw,dc->ndhw", image, matrix)
        return torch.sigmoid(image)


def random_transform(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image jittered by up to max(1, H/16) pixels, scaled by 0.95–1.05 and rotated by up to ±5°."""
    n, _, h, _ = x.shape
    jitter = max(1, round(h / 16))
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * jitter
    scale = 0.95 + 0.1 * torch.rand(n, generator=generator)
    degrees = (torch.rand(n, generator=generator) * 2 - 1) * 5.0
    return affine(x, degrees, shift, scale, padding="reflection")


def channel_activation(encoder: torch.nn.Module, x: torch.Tensor, targets: Sequence[tuple[str, int]]) -> torch.Tensor:
    """The activation of each image's target (layer, channel), averaged over the channel's map: image b of
    ``x`` (normalised) is read at ``targets[b]``."""
    layers = list(dict.fromkeys(layer for layer, _ in targets))
    out = encoder.forward_features(x, layers)
    values = []
    for b, (layer, channel) in enumerate(targets):
        a = out[layer][b, channel]
        values.append(a.mean() if a.ndim else a)
    return torch.stack(values)


def visualise(encoder: torch.nn.Module, targets: Sequence[tuple[str, int]], mean: Sequence[float],
              std: Sequence[float], steps: int = 64, lr: float = 0.05, seed: int = 0,
              device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Activation maximisation of each (layer, channel) target of an encoder (eval mode, weights untouched):
    ``images`` (one per target, unit range, on the CPU), and the targets' activations on the untransformed
    image before the first step (``before``) and after the last (``after``)."""
    if steps < 1:
        from replearn.errors import ConfigError
        raise ConfigError(f"feature visualisation needs at least 1 step, got {steps}", "set steps to 1 or more")
    device = device or next(encoder.parameters()).device
    generator = torch.Generator().manual_seed(int(seed))
    # a copy: the caller's encoder stays as it was, and weights that feature extraction converted under
    # inference mode (which autograd refuses) become ordinary tensors
    encoder = fuse_batchnorm(encoder).requires_grad_(False)  # an eval-mode copy, batch norm folded in
    image = FourierImage(len(targets), encoder.in_shape, generator, device=device)
    optimiser = Adam(image.parameters(), lr=lr)  # torch.optim.Adam's arithmetic, without its torch._dynamo import

    def objective(transform: bool) -> torch.Tensor:
        x = image()
        if transform:
            x = random_transform(x, generator)
        return channel_activation(encoder, from_unit(x, mean, std), targets)

    with torch.no_grad():
        before = objective(False)
    for _ in range(steps):
        optimiser.zero_grad()
        (-objective(True).sum()).backward()
        optimiser.step()
    with torch.no_grad():
        after = objective(False)
        images = image().float().cpu()
    return {"images": images, "before": before.float().cpu(), "after": after.float().cpu()}


def normalised_for_display(images: torch.Tensor) -> torch.Tensor:
    """Each image stretched to the full [0, 1] range (a sigmoid output rarely spans it)."""
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    high = images.amax(dim=(1, 2, 3), keepdim=True)
    return (images - low) / torch.where(high - low > 1e-8, high - low, torch.ones_like(high))

