"""What a training objective ("regime") is to replearn, and the registry of them.

A regime puts a head on the encoder (``build_head``) and turns a batch into a loss (``loss``); the trainer
does the rest the same way for every regime: the same initial encoder, optimiser, schedule, batches,
gradient norms by layer, validation, checkpoints and resuming. A regime also says how it should be shown
(label, colour), whether it may see labels (if not, the trainer never passes them), which statistics
it sums per batch and how they become metrics, and optionally how it reconstructs an image and what it
reports on the test set beyond the shared metrics.

Adding one is one file with a ``Regime`` subclass under ``@register_regime("name")``; a user's own
regime comes in by import path (``train.regimes: [supervised, mypkg.objectives:MyRegime]``), and its
options by ``regimes.<name>.<key>`` in the config.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn as nn

from ..options import build_options, opt
from ..encoders import Encoder
from ..errors import ConfigError
from ..registry import Registry


@dataclass(frozen=True)
class DataInfo:
    """What a head needs to know of the data."""

    image_shape: tuple[int, int, int]
    num_classes: int


@dataclass
class RegimeOptions:
    """Options every regime has; a regime's own ``Options`` subclass adds its hyperparameters."""

    epochs: int | None = opt(None, "training epochs of this regime (default: train.epochs; another value needs "
                             "train.budget=per-regime)", min=0)


class Regime:
    """Base class of training objectives. Subclasses set the class attributes and implement ``build_head``
    and ``loss``; the other methods have defaults that suit most regimes."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    color: ClassVar[str] = "#7f7f7f"
    needs_labels: ClassVar[bool] = False
    head_name: ClassVar[str] = "head"
    reads: ClassVar[str] = "the encoder's latent"
    reference: ClassVar[str] = ""
    loss_text: ClassVar[str] = ""
    batch_dependent_loss: ClassVar[bool] = False  # True: evaluate in batches of train.batch_size, not 1000
    Options: ClassVar[type[RegimeOptions]] = RegimeOptions

    def __init__(self, options: RegimeOptions | None = None, spec: str | None = None) -> None:
        self.options = options if options is not None else self.Options()
        self.spec = spec or self.name

    def build_head(self, encoder: Encoder, data: DataInfo) -> nn.Module:
        raise NotImplementedError

    def loss(self, encoder: Encoder, head: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(mean loss to minimise, sums over the batch of the regime's statistics). ``y`` is None unless
        ``needs_labels``; ``generator`` is the only source of randomness (seeded per step, so that an
        interrupted run resumes exactly)."""
        raise NotImplementedError

    def metrics(self, sums: dict[str, float], images: int, pixels: int) -> dict[str, float]:
        """Per-epoch (or per-split) metrics from the summed statistics of ``images`` images."""
        out = {}
        if "correct" in sums:
            out["accuracy"] = sums["correct"] / images
        if "sq_error" in sums:
            out["recon_mse"] = sums["sq_error"] / (images * pixels)
        return out

    def headline(self, metrics: dict[str, float]) -> str:
        """A few words on a validation result, for the per-epoch log line."""
        if "accuracy" in metrics:
            return f"val acc {metrics['accuracy']:.4f}"
        if "recon_mse" in metrics:
            return f"val recon MSE {metrics['recon_mse']:.4f}"
        return f"val loss {metrics['loss']:.4f}"

    def reconstruct(self, encoder: Encoder, head: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        """The model's reconstruction of ``x`` (eval mode, no grad), or None if it does not reconstruct."""
        return None

    def test_report(self, encoder: Encoder, head: nn.Module, x: torch.Tensor, batch_size: int
                    ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Regime-specific test results: scalars for models.csv and arrays for artifacts/."""
        return {}, {}


def check_regime(obj: Any, path: str) -> type[Regime]:
    if not (isinstance(obj, type) and issubclass(obj, Regime)):
        raise ConfigError(f"regime import path '{path}' names a {type(obj).__name__}, not a Regime",
                          "point it at a subclass of replearn.regimes.Regime")
    return obj


REGIMES: Registry[type[Regime]] = Registry("regime", check_regime)


def register_regime(name: str) -> Callable[[type[Regime]], type[Regime]]:
    """Class decorator: register a Regime subclass under ``name`` (which also becomes its ``name``)."""
    def add(cls: type[Regime]) -> type[Regime]:
        cls.name = name
        cls.label = cls.label or name
        return REGIMES.register(name)(cls)

    return add


def regime_name(spec: str) -> str:
    """The short name a regime's files and tables use: its registered name, or for an import path the
    class's ``name`` attribute (else the class name in lower case)."""
    cls = REGIMES.get(spec)
    return cls.name or cls.__name__.lower()


def make_regime(spec: str, raw_options: dict[str, Any] | None = None) -> Regime:
    """The regime ``spec`` (name or import path) with its options validated like any config section."""
    cls = REGIMES.get(spec)
    name = cls.name or cls.__name__.lower()
    if not name.replace("-", "_").isidentifier():
        raise ConfigError(f"regime '{spec}' has the name {name!r}, which cannot name files",
                          "give the class a `name` of letters, digits and '_'")
    options = build_options(cls.Options, f"regimes.{name}", dict(raw_options or {}), owner=f"regime '{name}'")
    regime = cls(options, spec)
    if not cls.name:
        regime.name = name  # type: ignore[misc]
        regime.label = cls.label or name  # type: ignore[misc]
    return regime


def sum_squared_error(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (recon.detach().float() - target.float()).square().sum()
