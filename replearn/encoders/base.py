"""What replearn needs of an encoder, and how encoders are built from a config or a checkpoint.

Like timm's feature extraction, an encoder names its layers (``feature_info``: name, channels, spatial
size, reduction and the module that produces it) and returns any of them from ``forward_features``, so
analyses tap layers without hooks. The last entry is always ``latent``: the vector the task heads
read and the probes call the model's representation.

Encoders are plug-ins (``ENCODERS``): a class or function called with ``in_shape``, ``latent_dim`` and
its own keyword arguments, which come from the config keys its signature names (``model.channels``,
``model.kernel_size``) and from ``model.kwargs``. A checkpoint stores the encoder's name and those
arguments, so ``replearn probe`` rebuilds any registered (or importable) encoder.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn as nn

from replearn.errors import ConfigError
from replearn.config.options import build_options, options_dict
from replearn.config.registry import Registry, import_object


@dataclass(frozen=True)
class StageInfo:
    """One named layer: channels, spatial size (1×1 for vectors), reduction from the input (0 for the
    latent vector) and the dotted path of the module that produces it."""

    name: str
    channels: int
    height: int
    width: int
    reduction: int
    module: str = ""

    @property
    def numel(self) -> int:
        return self.channels * self.height * self.width

    @property
    def spatial(self) -> bool:
        return self.name != "latent"


class Encoder(nn.Module):
    """Base class of replearn's encoders. Subclasses set ``in_shape``, ``feature_info`` (ending with a
    ``latent`` entry) and ``latent_dim`` in ``__init__`` and implement ``forward_features``."""

    in_shape: tuple[int, int, int]
    feature_info: list[StageInfo]
    latent_dim: int

    @property
    def layer_names(self) -> list[str]:
        return [s.name for s in self.feature_info]

    def check_layers(self, layers: list[str] | None) -> list[str]:
        """The requested layer names (all by default), or a ConfigError listing the valid ones."""
        if layers is None:
            return self.layer_names
        unknown = [name for name in layers if name not in self.layer_names]
        if unknown:
            raise ConfigError(f"unknown layer(s) {unknown}", f"choose from {', '.join(self.layer_names)}")
        return list(layers)

    def forward_features(self, x: torch.Tensor, layers: list[str] | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def stage_outputs(self, x: torch.Tensor, wanted: set[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Run ``self.stages`` (an ``nn.ModuleDict``) in order, keeping the wanted stages' outputs; stops early,
        returning None as the last output, once every wanted layer is computed."""
        out: dict[str, torch.Tensor] = {}
        for name, stage in self.stages.items():
            if not wanted - out.keys():
                return out, None
            x = stage(x)
            if name in wanted:
                out[name] = x
        return out, x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x, ["latent"])["latent"]

    def describe(self) -> dict[str, Any]:
        return {"in_shape": list(self.in_shape), "layers": [asdict(s) for s in self.feature_info],
                "parameters": sum(p.numel() for p in self.parameters())}


def check_encoder(obj: Any, path: str) -> Callable[..., Encoder]:
    """An import-path encoder must be callable (a class or factory); its product is checked when built."""
    if not callable(obj):
        raise ConfigError(f"encoder import path '{path}' names a {type(obj).__name__}, not an encoder class or "
                          "factory", "point it at a subclass of replearn.encoders.Encoder or a function returning one")
    return obj


ENCODERS: Registry[Callable[..., Encoder]] = Registry("encoder", check_encoder)


COMMON_MODEL_KEYS = ("name", "kwargs", "latent_dim", "layers")


def encoder_kwargs(factory: Callable[..., Encoder], model_cfg: Any, in_shape: tuple[int, int, int]) -> dict[str, Any]:
    """The arguments an encoder is built with: ``in_shape``, ``latent_dim`` and its own options.

    An encoder that declares ``Options`` (a dataclass of ``opt`` fields) gets them from the ``model`` section's
    further keys (``model.channels``) and ``model.kwargs``, validated; one that declares none (a class or
    factory by import path) gets ``model.kwargs``, which must all be parameters it takes."""
    kwargs: dict[str, Any] = {"in_shape": tuple(in_shape), "latent_dim": model_cfg.latent_dim}
    own = dict(getattr(model_cfg, "plugin_options", {}) or {})
    extra = dict(model_cfg.kwargs or {})
    options_cls = getattr(factory, "Options", None)
    if dataclasses.is_dataclass(options_cls):
        both = sorted(set(own) & set(extra))
        if both:
            raise ConfigError(f"config keys 'model.{both[0]}' and 'model.kwargs.{both[0]}' both set the encoder's "
                              f"{both[0]}", f"keep one of them (model.{both[0]} is the usual place)")
        options = build_options(options_cls, "model", {**own, **extra},
                                known=[f"model.{k}" for k in COMMON_MODEL_KEYS], owner=f"encoder '{model_cfg.name}'")
        return {**kwargs, **options_dict(options)}
    if own:
        key = next(iter(own))
        raise ConfigError(f"config key 'model.{key}' is not an option of encoder '{model_cfg.name}', which "
                          "declares no options of its own",
                          f"pass its constructor's arguments as model.kwargs (e.g. model.kwargs.{key}), or remove it")
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in extra if k not in params and not takes_any]
    if unknown:
        accepted = [k for k in params if k not in ("self", "in_shape", "latent_dim")]
        raise ConfigError(f"encoder '{model_cfg.name}' does not take argument(s) {unknown} from model.kwargs",
                          f"use its parameters: {', '.join(accepted) or 'none'}")
    return {**kwargs, **extra}


def create_encoder(name: str, kwargs: dict[str, Any], seed: int) -> Encoder:
    """Build encoder ``name`` (registered or an import path) with ``kwargs``, seeded: the same seed always
    gives the same weights, and the global RNG is left untouched."""
    factory = ENCODERS.get(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            encoder = factory(**kwargs)
        except ConfigError:
            raise
        except TypeError as exc:
            raise ConfigError(f"encoder '{name}' could not be built with {sorted(kwargs)} ({exc})",
                              "check model.kwargs against the encoder's parameters") from None
    _check_built(encoder, name)
    return encoder


def _check_built(encoder: Any, name: str) -> None:
    missing = [a for a in ("feature_info", "latent_dim", "in_shape", "forward_features") if not hasattr(encoder, a)]
    if not isinstance(encoder, nn.Module) or missing:
        raise ConfigError(f"encoder '{name}' built a {type(encoder).__name__}, which is not an Encoder"
                          + (f" (it lacks {', '.join(missing)})" if missing else ""),
                          "subclass replearn.encoders.Encoder and set in_shape, feature_info and latent_dim")
    names = [getattr(s, "name", None) for s in encoder.feature_info]
    if not names or names[-1] != "latent" or len(set(names)) != len(names):
        raise ConfigError(f"encoder '{name}' has feature_info names {names}; they must be unique and end with "
                          "'latent'", "name the final representation layer 'latent'")


def build_module(path: str, kwargs: dict[str, Any], option: str, kwargs_option: str) -> nn.Module:
    """The ``nn.Module`` that the class or factory at import path ``path`` builds from ``kwargs``; errors name
    the options the user set them with (``model.name`` / ``--model``)."""
    factory = import_object(path, "model")
    try:
        module = factory(**kwargs)
    except Exception as exc:
        raise ConfigError(f"{option} {path} could not be built with {kwargs} ({type(exc).__name__}: {str(exc)[:100]})",
                          f"check {kwargs_option} against its parameters") from None
    if not isinstance(module, nn.Module):
        raise ConfigError(f"{option} {path} built a {type(module).__name__}, not a torch.nn.Module",
                          f"point {option} at an nn.Module class or a function returning one")
    return module
