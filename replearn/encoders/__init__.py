"""Encoders: the base class, the registry and the built-in encoders (importing registers them)."""
from replearn.encoders.base import ENCODERS, Encoder, StageInfo, build_module, create_encoder, encoder_kwargs
from replearn.encoders.conv import ConvEncoder
from replearn.encoders.resnet import ResNetEncoder
from replearn.encoders.tapped import TappedModule, tapped_encoder
from replearn.encoders.factory import build_encoder, encoder_from_spec, encoder_spec

__all__ = ["ENCODERS", "ConvEncoder", "Encoder", "ResNetEncoder", "StageInfo", "TappedModule", "build_encoder",
           "build_module", "create_encoder", "encoder_from_spec", "encoder_kwargs", "encoder_spec", "tapped_encoder"]
