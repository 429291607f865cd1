"""Encoders: the base class, the registry and the built-in encoders (importing registers them)."""
from .base import (ENCODERS, Encoder, StageInfo, build_encoder, build_module, create_encoder, encoder_from_spec,
                   encoder_kwargs, encoder_spec)
from .conv import ConvEncoder
from .resnet import ResNetEncoder

__all__ = ["ENCODERS", "ConvEncoder", "Encoder", "ResNetEncoder", "StageInfo", "build_encoder", "build_module",
           "create_encoder", "encoder_from_spec", "encoder_kwargs", "encoder_spec"]
