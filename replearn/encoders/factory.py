"""Building encoders from a config section or from a checkpoint's record of one."""
from __future__ import annotations

from typing import Any

from replearn.encoders.base import ENCODERS, Encoder, create_encoder, encoder_kwargs
from replearn.encoders.tapped import tapped_encoder


def build_encoder(model_cfg: Any, in_shape: tuple[int, int, int], seed: int) -> Encoder:
    """A freshly initialised encoder from the ``model`` config section (a plain module when model.layers is set)."""
    if getattr(model_cfg, "layers", None):
        return tapped_encoder(model_cfg.name, dict(model_cfg.kwargs or {}), in_shape, list(model_cfg.layers), seed)
    factory = ENCODERS.get(model_cfg.name)
    return create_encoder(model_cfg.name, encoder_kwargs(factory, model_cfg, in_shape), seed)


def encoder_spec(model_cfg: Any, in_shape: tuple[int, int, int]) -> dict[str, Any]:
    """What a checkpoint stores to rebuild the encoder: its name and arguments (plain values only)."""
    if getattr(model_cfg, "layers", None):
        return {"name": model_cfg.name, "kwargs": dict(model_cfg.kwargs or {}), "in_shape": list(in_shape),
                "layers": list(model_cfg.layers)}
    kwargs = encoder_kwargs(ENCODERS.get(model_cfg.name), model_cfg, in_shape)
    kwargs["in_shape"] = list(kwargs["in_shape"])
    return {"name": model_cfg.name, "kwargs": kwargs}


def encoder_from_spec(spec: dict[str, Any]) -> Encoder:
    """Rebuild an encoder (untrained) from ``encoder_spec``'s record."""
    kwargs = dict(spec["kwargs"])
    if spec.get("layers"):
        return tapped_encoder(spec["name"], kwargs, tuple(spec["in_shape"]), list(spec["layers"]), seed=0)
    kwargs["in_shape"] = tuple(kwargs["in_shape"])
    return create_encoder(spec["name"], kwargs, seed=0)
