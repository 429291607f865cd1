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

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn as nn

from replearn.config.options import build_options, opt
from replearn.encoders import Encoder
from replearn.errors import ConfigError
from replearn.config.registry import Registry, is_import_path


@dataclass(frozen=True)
class DataInfo:
    """What a head needs to know of the data: the image shape, the classes, and the per-channel mean and
    standard deviation (of pixels in [0, 1]) the images were standardised with (None: not known)."""

    image_shape: tuple[int, int, int]
    num_classes: int
    pixel_mean: tuple[float, ...] | None = None
    pixel_std: tuple[float, ...] | None = None


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
    # encoder passes per training image and step, (forward, backward): the Protocol's compute budget
    passes: ClassVar[tuple[int, int]] = (1, 1)
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
        """Per-epoch (or per-split) metrics from the summed statistics of ``images`` images. Two statistic keys
        are reserved, read here for every regime: ``correct`` (correctly classified images → ``accuracy``) and
        ``sq_error`` (→ ``recon_mse``, the report's "reconstruction MSE (clean input)"), which means one thing
        in every regime: the squared error of the deterministic reconstruction of the clean input, what
        ``reconstruct`` returns — a regime that reports it but reconstructs nothing is refused before the run
        (``preflight``). A regime whose loss measures another error (of a corrupted input, of a sampled latent,
        of a regression target) reports it under its own key and turns it into a metric by overriding this."""
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

    def embed(self, encoder: Encoder, head: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        """The embedding the loss compares (a projector's output), for the collapse diagnostics; None when the
        loss reads no embedding beyond the latent."""
        return None

    def after_step(self, encoder: Encoder, head: nn.Module, step: int, total_steps: int) -> None:
        """Called after each optimiser step (``step`` of ``total_steps``, from 1), e.g. to move a target
        network (BYOL); nothing by default."""

    def test_report(self, encoder: Encoder, head: nn.Module, x: torch.Tensor, batch_size: int
                    ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Regime-specific test results: scalars for models.csv and arrays for artifacts/. A scalar named
        like one of ``metrics`` replaces that test metric; a regime that reconstructs but whose ``metrics``
        have no ``recon_mse`` reports it here (``reconstruction_mse``), else models.csv computes it."""
        return {}, {}


MAX_NAME, MAX_LABEL = 60, 60  # characters of a plug-in regime's name (files, tables) and label (legends)


def check_regime(obj: Any, path: str) -> type[Regime]:
    """What a regime import path names must be: a Regime subclass whose declared attributes have the types
    and forms replearn uses them in (a colour matplotlib can draw, a short label, a name that can name
    files, booleans that are booleans, a dataclass ``Options``)."""
    if not (isinstance(obj, type) and issubclass(obj, Regime)):
        raise ConfigError(f"regime import path '{path}' names a {type(obj).__name__}, not a Regime",
                          "point it at a subclass of replearn.regimes.Regime")
    where = f"regime '{path}'"
    for attr in ("name", "label", "head_name", "reads", "reference", "loss_text"):
        if not isinstance(getattr(obj, attr), str):
            raise ConfigError(f"{where} declares {attr} = {_shown(getattr(obj, attr))}, which is not a string",
                              f"set {obj.__name__}.{attr} to a string")
    for attr in ("needs_labels", "batch_dependent_loss"):
        if not isinstance(getattr(obj, attr), bool):
            raise ConfigError(f"{where} declares {attr} = {_shown(getattr(obj, attr))}, which is not True or False",
                              f"set {obj.__name__}.{attr} to True or False")
    if (obj.name and not obj.name.replace("-", "_").isidentifier()) or len(obj.name) > MAX_NAME:
        raise ConfigError(f"{where} has the name {_shown(obj.name)}, which cannot name files",
                          f"give the class a `name` of at most {MAX_NAME} letters, digits and '_'")
    if len(obj.label) > MAX_LABEL or not obj.label.isprintable():
        raise ConfigError(f"{where} declares the label {_shown(obj.label)}, which is not a short printable text",
                          f"give it a label of at most {MAX_LABEL} printable characters (it names the model in "
                          "tables and legends)")
    regime_colour(obj, where)
    if not (isinstance(obj.Options, type) and dataclasses.is_dataclass(obj.Options)):
        raise ConfigError(f"{where} declares Options that are not a dataclass",
                          "subclass replearn.regimes.RegimeOptions with @dataclass and declare each option with "
                          "replearn.config.options.opt")
    return obj


def regime_colour(cls: type[Regime], where: str) -> str:
    """The regime's colour as #rrggbb, or a one-line error if matplotlib cannot draw it (the report's figures
    and legends use it)."""
    from matplotlib.colors import to_hex  # matplotlib is imported only when a plug-in's colour is checked

    colour = cls.color
    try:
        if not isinstance(colour, str):
            raise ValueError(colour)
        return to_hex(colour)
    except ValueError:
        raise ConfigError(f"{where} declares the colour {_shown(colour)}, which is not a colour",
                          "set its color to '#rrggbb' (e.g. '#1f77b4') or a colour name such as 'tab:blue'") from None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "…"


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
    if is_import_path(spec):  # a plug-in's colour as #rrggbb, whatever form it was declared in
        regime.color = regime_colour(cls, f"regime '{spec}'")  # type: ignore[misc]
    if not cls.name:
        regime.name = name  # type: ignore[misc]
        regime.label = cls.label or name  # type: ignore[misc]
    return regime


def reconstructs(regime: Regime) -> bool:
    """Whether the regime reconstructs images (overrides ``reconstruct``)."""
    return type(regime).reconstruct is not Regime.reconstruct


@torch.no_grad()
def reconstruction_mse(regime: Regime, encoder: Encoder, head: nn.Module, x: torch.Tensor,
                       batch_size: int) -> float | None:
    """Mean squared error per pixel of ``regime.reconstruct`` on the clean images ``x`` (on the encoder's
    device, in batches of ``batch_size``), or None for a regime that does not reconstruct."""
    device = next(encoder.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device).contiguous(memory_format=torch.channels_last)
        recon = regime.reconstruct(encoder, head, xb)
        if recon is None:
            return None
        total += float((recon.double() - xb.double()).square().sum())
        count += xb.numel()
    return total / max(count, 1)
