"""Encoders: the base class, the registry and the built-in encoders (importing registers them)."""
from .base import ENCODERS, Encoder, StageInfo, build_module, create_encoder, encoder_kwargs
from .conv import ConvEncoder
from .resnet import ResNetEncoder
from .tapped import TappedModule, tapped_encoder
from .factory import build_encoder, encoder_from_spec, encoder_spec

__all__ = ["ENCODERS", "ConvEncoder", "Encoder", "ResNetEncoder", "StageInfo", "TappedModule", "build_encoder",
           "build_module", "create_encoder", "encoder_from_spec", "encoder_kwargs", "encoder_spec", "tapped_encoder"]
